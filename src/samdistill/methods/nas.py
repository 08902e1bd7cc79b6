"""EfficientMedSAM: what one step of the architecture search, and of distilling the found student, computes.

**Search** (DARTS, first-order bi-level): the supernet's encoder output goes through the teacher's
frozen prompt encoder + mask decoder with the (jittered) ground-truth box.
``task = Dice + BCE`` of that mask, ``distill = MSE(e_s, e_t)`` to the cached teacher embedding.
The weight step minimises ``task + distill`` on the train half with only the operation weights
trainable; the architecture step minimises ``task + distill + beta * R`` on the other half with only
the architecture parameters trainable, where ``R = max(0, E[MACs] / budget - 1)`` (``hinge``, the
default: free below the budget) or ``E[MACs] / budget`` (``linear``: always cheaper).

**Distillation of the found architecture**: stage 1, the encoder on ``mse * MSE + saliency *
S(embedding)``; stage 2, encoder and decoder on ``dice * Dice + bce * BCE + kd * KL(teacher mask ||
student mask, T) + saliency * (S(embedding) + S(decoder image tokens)) + mse * MSE``, where S is the
saliency loss between normalised channel-pooled activation maps of matched teacher/student stages
(the image embedding, and the mask decoder's attention-refined image tokens), or input-gradient
saliency of the mask logits (``saliency_kind=input_gradient``; runs the teacher's encoder each step).

This file is the whole method: its run config (:class:`NASRunConfig`, section ``nas``), the search's
step (:class:`SearchStep`, run by ``samdistill nas search``), and for ``nas train`` its :func:`build`
(registered in ``METHODS``) and step (:class:`NASDistillStage`).
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Optional

import torch
from pydantic import Field
from torch import nn

from samdistill.config import DistillConfig, OptimConfig, Strict
from samdistill.data.cache import CachedSet, EmbeddingCache
from samdistill.errors import UserError
from samdistill.methods.registry import METHODS, Built
from samdistill.models.zoo import load_model
from samdistill.train.trainer import Phase
from samdistill.train.validation import promptable_validation
from samdistill.losses.targets import target_like
from samdistill.losses.embedding import embedding_mse
from samdistill.losses.kd import logit_kd
from samdistill.losses.perceptual import capture_decoder_tokens
from samdistill.losses.saliency import activation_saliency, input_gradient_saliency, saliency_loss
from samdistill.losses.segmentation import bce_loss, dice_loss
from samdistill.data.boxes import jitter, tight_boxes


class NASSearchConfig(Strict):
    """Differentiable architecture search of the student encoder (``samdistill nas search``)."""

    epochs: int = Field(4, ge=1)  # passes over the weight half of the train split
    warmup_epochs: int = Field(1, ge=0)  # weights only, before architecture steps start
    batch_size: int = Field(4, ge=1)
    # operation weights (first-order DARTS, on the weight half) and architecture parameters (on the other
    # half): constant learning rates; weight gradients clipped at 5, architecture ones not
    w_optim: OptimConfig = OptimConfig(name="adamw", lr=1e-3, weight_decay=1e-4, warmup_steps=0, min_lr_ratio=1.0,
                                       clip_grad=5.0)
    a_optim: OptimConfig = OptimConfig(name="adam", lr=1e-2, weight_decay=1e-3, betas=(0.5, 0.999), warmup_steps=0,
                                       min_lr_ratio=1.0, clip_grad=None)
    beta: float = Field(0.5, ge=0)  # weight of the resource term in the architecture objective
    resource: Literal["hinge", "linear"] = "hinge"  # hinge: max(0, E[MACs]/budget - 1); linear: E[MACs]/budget
    max_skip: Optional[int] = Field(None, ge=0)  # skips kept per stage when deriving (default: layers - 1)
    macs_budget: Optional[float] = Field(None, gt=0)  # encoder GMACs; default: teacher encoder / 30
    sampling: Literal["softmax", "gumbel"] = "softmax"
    tau: float = Field(1.0, gt=0)
    widths: Optional[list[list[int]]] = None  # per stage; default [[24,32,48],[48,64,96],[96,128,192]]
    layers: Optional[list[int]] = None  # searchable layers per stage; default [2, 3, 3]
    neck_width: Optional[int] = Field(None, ge=8)
    box_jitter: float = Field(5.0, ge=0)


class NASTrainConfig(Strict):
    """Distillation of the found architecture (``samdistill nas train --genotype g.json``)."""

    genotype: Optional[str] = None
    stage1_epochs: int = Field(8, ge=0)
    stage2_epochs: int = Field(6, ge=0)
    batch_size: int = Field(8, ge=1)
    optim1: OptimConfig = OptimConfig(lr=2e-3)
    optim2: OptimConfig = OptimConfig(lr=5e-4)
    mse: float = Field(1.0, ge=0)
    saliency: float = Field(1.0, ge=0)
    saliency_kind: Literal["activation", "input_gradient"] = "activation"
    kd: float = Field(0.5, ge=0)
    temperature: float = Field(1.0, gt=0)
    dice: float = Field(1.0, ge=0)
    bce: float = Field(1.0, ge=0)
    box_jitter: float = Field(10.0, ge=0)


class NASConfig(Strict):
    search: NASSearchConfig = NASSearchConfig()
    train: NASTrainConfig = NASTrainConfig()


class NASStudentConfig(Strict):
    """The found student's decoder (its encoder is the genotype)."""

    decoder: Literal["teacher", "slim"] = "teacher"


class NASRunConfig(DistillConfig):
    """An EfficientMedSAM run (``nas search`` and ``nas train``): the shared fields + the ``nas`` section."""

    method: Literal["nas"] = "nas"
    student: NASStudentConfig = NASStudentConfig()
    nas: NASConfig = NASConfig()


#: batch keys of the architecture half: a search batch holds a weight batch (``image``, ``embedding``, ...) and,
#: once architecture steps have started, an architecture batch beside it (``arch_image``, ``arch_embedding``, ...)
ARCH = "arch_"


class SearchStep:
    """Weight and architecture steps of the search; ``budget_macs`` normalises the MACs term.

    Also the method the one Trainer runs for ``samdistill nas search``: :meth:`updates` does the weight step
    on a batch's weight half and then, after ``warmup_epochs``, the architecture step on its ``arch_`` half
    with the updated weights (first-order DARTS), each with its own optimiser (``w_optim``, ``a_optim``), and
    records one row per step (losses, expected MACs, every architecture probability) in :attr:`rows`,
    which the checkpoint keeps (:meth:`state_dict`).
    """

    def __init__(self, supernet, teacher, *, beta: float, budget_macs: float, box_jitter: float = 5.0,
                 resource: str = "hinge", device: str = "cpu", warmup_epochs: int = 0,
                 w_optim: OptimConfig | None = None, a_optim: OptimConfig | None = None) -> None:
        self.net, self.beta, self.budget, self.jitter = supernet, beta, budget_macs, box_jitter
        self.resource = resource
        defaults = NASSearchConfig()
        self.w_optim, self.a_optim = w_optim or defaults.w_optim, a_optim or defaults.a_optim
        self.warmup_epochs, self.epoch = warmup_epochs, 0
        self.rows: list[dict[str, Any]] = []
        from samdistill.models.promptable import PromptableModel

        # the teacher's heads, frozen, as a model whose decode() batches like every other
        self.heads = PromptableModel(image_encoder=nn.Identity(), prompt_encoder=copy.deepcopy(teacher.prompt_encoder),
                                     mask_decoder=copy.deepcopy(teacher.mask_decoder), preprocess=teacher.preprocess,
                                     family="heads").eval()
        for p in self.heads.parameters():
            p.requires_grad_(False)
        self.input_size, self.device = teacher.input_size, device

    def _only(self, arch: bool) -> None:
        for p in self.net.weight_parameters():
            p.requires_grad_(not arch)
        for p in self.net.arch_parameters():
            p.requires_grad_(arch)

    def losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, emb_t, mask = (batch[k].to(self.device) for k in ("image", "embedding", "mask"))
        emb_s = self.net(images)
        out = {"mse": embedding_mse(emb_s, emb_t)}
        keep = mask.flatten(1).amax(1) > 0
        if keep.any():
            boxes = jitter(tight_boxes(mask[keep]), self.jitter, self.input_size)
            logits, _ = self.heads.decode(emb_s[keep], boxes=boxes)
            t = target_like(mask[keep], logits)
            out["dice"], out["bce"] = dice_loss(logits, t), bce_loss(logits, t)
        out["task"] = out["mse"] + out.get("dice", 0.0) + out.get("bce", 0.0)
        return out

    def weight_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss for the operation weights (architecture parameters get no gradient)."""
        self._only(arch=False)
        out = self.losses(batch)
        out["loss"] = out["task"]
        return out

    def arch_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Loss for the architecture parameters (operation weights get no gradient)."""
        self._only(arch=True)
        out = self.losses(batch)
        out["macs_g"] = self.net.expected_macs() / 1e9
        ratio = out["macs_g"] * 1e9 / self.budget
        # hinge: only the cost above the budget is penalised, so below it the task decides
        out["resource"] = torch.relu(ratio - 1) if self.resource == "hinge" else ratio
        out["loss"] = out["task"] + self.beta * out["resource"]
        return out

    # ------------------------------------------------ what the Trainer calls (train/trainer.py's hooks)
    def parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def param_groups(self) -> list[tuple[str, list[nn.Parameter], OptimConfig]]:
        return [("weights", list(self.net.weight_parameters()), self.w_optim),
                ("arch", list(self.net.arch_parameters()), self.a_optim)]

    def train(self) -> None:
        self.net.train()

    def eval(self) -> None:
        self.net.eval()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def searching(self) -> bool:
        """Architecture steps in this epoch (the first ``warmup_epochs`` train the weights only)."""
        return self.epoch >= self.warmup_epochs

    def updates(self, batch: dict[str, Any]):
        """The weight step on the batch's weight half, then (when :attr:`searching`) the architecture step
        on its ``arch_`` half; the Trainer applies each before the next is computed."""
        wl = self.weight_step({k: v for k, v in batch.items() if not k.startswith(ARCH)})
        yield "weights", wl
        row: dict[str, Any] = {"step": len(self.rows), "epoch": self.epoch + 1, "w_loss": float(wl["loss"].detach())}
        if self.searching:
            arch = {k[len(ARCH):]: v for k, v in batch.items() if k.startswith(ARCH)}
            if not arch:
                raise ValueError(f"an architecture step needs the batch's architecture half ({ARCH}* keys)")
            al = self.arch_step(arch)
            yield "arch", al
            row.update({"a_loss": float(al["loss"].detach()), "a_task": float(al["task"].detach())})
        row.update(self.record())
        self.rows.append(row)

    @torch.no_grad()
    def record(self) -> dict[str, float]:
        """Expected encoder GMACs and every architecture probability, now."""
        net = self.net
        row = {"expected_gmacs": float(net.expected_macs()) / 1e9}
        probs = net.probabilities()
        for li, p in enumerate(probs["alpha"]):
            row.update({f"alpha{li}_{o}": float(v) for o, v in zip(net.space.ops, p)})
        for si, p in enumerate(probs["beta"]):
            row.update({f"beta{si}_{w}": float(v) for w, v in zip(net.space.widths[si], p)})
        for si, p in enumerate(probs["gamma"]):
            row[f"gamma{si + 1}_keep"] = float(p[0])
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state["rows"]]


class NASDistillStage:
    """Stage 1 (encoder) or 2 (encoder + decoder) of distilling the found architecture."""

    def __init__(self, *, stage: int, student, teacher, cfg, device: str = "cpu") -> None:
        self.stage, self.student, self.teacher, self.cfg, self.device = stage, student, teacher, cfg, device

    def parameters(self) -> list[nn.Parameter]:
        if self.stage == 1:
            return self.student.train_only("image_encoder")
        return self.student.train_only("image_encoder", "prompt_encoder", "mask_decoder")

    def train(self) -> None:
        self.student.train()

    def eval(self) -> None:
        self.student.eval()

    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.cfg
        images, emb_t, mask = (batch[k].to(self.device) for k in ("image", "embedding", "mask"))
        if c.saliency_kind == "input_gradient" and self.stage == 2:
            images = images.clone().requires_grad_(True)
        emb_s = self.student.encode(images)
        out = {"mse": embedding_mse(emb_s, emb_t)}
        loss = c.mse * out["mse"]
        if c.saliency > 0 and c.saliency_kind == "activation":
            out["sal_embedding"] = saliency_loss(activation_saliency(emb_s), activation_saliency(emb_t))
            loss = loss + c.saliency * out["sal_embedding"]
        if self.stage == 1:
            out["loss"] = loss
            return out
        keep = mask.flatten(1).amax(1) > 0
        if not keep.any():
            out["loss"] = loss
            return out
        s, t = self.student, self.teacher
        boxes = jitter(tight_boxes(mask[keep]), c.box_jitter, s.input_size)
        sal_act = c.saliency > 0 and c.saliency_kind == "activation"
        with capture_decoder_tokens(s.mask_decoder) as cap_s:
            logits, _ = s.decode(emb_s[keep], boxes=boxes)
        target = target_like(mask[keep], logits)
        out["dice"], out["bce"] = dice_loss(logits, target), bce_loss(logits, target)
        loss = loss + c.dice * out["dice"] + c.bce * out["bce"]
        with torch.no_grad(), capture_decoder_tokens(t.mask_decoder) as cap_t:
            t_logits, _ = t.decode(emb_t[keep], boxes=boxes)
        if c.kd > 0:
            out["kd"] = logit_kd(logits, t_logits, c.temperature)
            loss = loss + c.kd * out["kd"]
        if sal_act:  # the decoders' image tokens, recorded during the two decode calls above
            g = s.embedding_grid
            keys_s, keys_t = cap_s.image_tokens, cap_t.image_tokens
            to_map = lambda k: k.transpose(1, 2).reshape(k.shape[0], -1, g, g)  # noqa: E731
            out["sal_decoder"] = saliency_loss(activation_saliency(to_map(keys_s)), activation_saliency(to_map(keys_t)))
            loss = loss + c.saliency * out["sal_decoder"]
        elif c.saliency > 0:  # input-gradient saliency of the mask logits, teacher encoder run on the images
            sal_s = input_gradient_saliency(logits, images, create_graph=True)[keep]
            x_t = images.detach()[keep].clone().requires_grad_(True)
            with torch.enable_grad():
                tl, _ = t.decode(t.encode(x_t), boxes=boxes)
                sal_t = input_gradient_saliency(tl, x_t)
            out["sal_input"] = saliency_loss(sal_s, sal_t)
            loss = loss + c.saliency * out["sal_input"]
        out["loss"] = loss
        return out

    def validate(self, loader) -> dict[str, float]:
        return promptable_validation(self.student, loader, self.device)


@METHODS.register("nas", config=NASRunConfig)
def build(cfg: NASRunConfig, teacher, cache: EmbeddingCache, train_keys, val_keys) -> Built:
    """EfficientMedSAM: the searched architecture as a promptable student; logit + saliency distillation."""
    t = cfg.nas.train
    if not t.genotype:
        raise UserError("nas training needs a genotype: --genotype runs/search/genotype.json (from `samdistill nas search`)")
    student = load_model("nas", teacher=teacher, genotype=t.genotype, decoder=cfg.student.decoder).to(cfg.device)
    mem = cfg.cache.in_memory
    all_train = list(train_keys.values())
    prompted = [k for k in all_train if k not in cache.empty_keys]
    val_set = CachedSet(cache, list(val_keys.values()), mem)
    phases = [
        Phase("stage1", NASDistillStage(stage=1, student=student, teacher=teacher, cfg=t, device=cfg.device),
              CachedSet(cache, all_train, mem), val_set, t.stage1_epochs, t.batch_size, t.optim1),
        Phase("stage2", NASDistillStage(stage=2, student=student, teacher=teacher, cfg=t, device=cfg.device),
              CachedSet(cache, prompted, mem), val_set, t.stage2_epochs, t.batch_size, t.optim2),
    ]
    extra = {"n_train_entries": len(all_train), "n_train_prompted": len(prompted), "genotype": str(t.genotype)}
    return Built(model=student, student=student, phases=phases, student_name="nas", extra=extra)
