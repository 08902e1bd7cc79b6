"""Mean Teacher (Tarvainen & Valpola 2017, as in the SSL4MIS code): the standard semi-supervised rival
to KnowSAM, on the same UNet, labeled subset and data pipeline; optionally with SAM-induced KD (SKD).

One training step on a batch of labeled (L) and unlabeled (U) images (``labeled`` flags):

1. Per-sample flips for all images; the student predicts ``s`` (``BxCxSxS``) on them, the EMA teacher
   (no gradient) on the flipped unlabeled images plus clipped Gaussian noise.
2. Losses: supervised CE + Dice on L; consistency = MSE between the student's and the teacher's softmax
   on U only, its weight ramped up as exp(-5 (1 - t)²) over ``consistency_rampup`` of the run.
3. With ``skd``: SAM (frozen encoder, cached embedding; KnowSAM's learnable prompt generator and decoder
   adapters) segments the unflipped image with the student's detached prediction as the mask prompt;
   SAM learns from CE + Dice on L, and the student gets ``skd_weight * T² KL(softmax(sam/T) ||
   softmax(s/T))`` on all images (SAM's output detached), so SKD adds exactly that term to the student's
   loss. With ``skd=false`` no SAM part is built or run.
4. After each optimiser step the teacher's weights move towards the student's:
   ``θ' ← α θ' + (1 - α) θ``, ``α = min(1 - 1/(k + 1), ema_decay)`` at step ``k`` (0-based), as in the
   reference code (its buffers, BatchNorm statistics, are its own).

The EMA teacher lives in :class:`MeanTeacherParts` (checkpointed: a resumed run continues it exactly);
the student alone is saved as ``student.pt``. This file is the whole method: its run config
(:class:`MeanTeacherRunConfig`, section ``meanteacher``), its :func:`build` (registered in ``METHODS``)
and its step (:class:`MeanTeacherMethod`).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from samdistill.config import DistillConfig, OptimConfig, Strict
from samdistill.data.cache import CachedSet, EmbeddingCache, build_unlabeled
from samdistill.data.transforms import apply_flips, clipped_noise, random_flips, to_frame
from samdistill.dice import batch_dice
from samdistill.errors import UserError
from samdistill.losses.ramps import sigmoid_rampup
from samdistill.losses.semi import ce_dice, consistency_mse, softmax_kd
from samdistill.methods.registry import METHODS, Built
from samdistill.models.prompt_generator import learned_prompt_logits
from samdistill.models.zoo import MODELS, load_model, populate
from samdistill.train.trainer import Phase


class MeanTeacherConfig(Strict):
    """Mean Teacher on a prompt-free UNet, optionally with SAM-induced KD (``method: meanteacher``)."""

    student: str = Field("unet_student", description="prompt-free student family (unet_student; "
                         "knowsam_student also works, trained as one network)")
    input_size: int | None = Field(None, ge=32, description="student's input frame (px); None: the teacher's")
    labeled: float = Field(0.1, gt=0, description="<= 1: fraction of the train split (1 = all); > 1: a count")
    epochs: int = Field(10, ge=0, description="one epoch = one pass over the unlabeled images")
    max_steps: int | None = Field(None, ge=1, description="optimiser-step budget in place of epochs: the run "
                                  "trains exactly this many steps; the LR decay and the ramp-up follow it")
    batch_size: int = Field(8, ge=2)
    labeled_bs: int = Field(4, ge=1, description="labeled images per batch; the rest are unlabeled")
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="linear",
                                     warmup_steps=0, min_lr_ratio=0.0, clip_grad=None)
    ema_decay: float = Field(0.99, ge=0, lt=1, description="EMA teacher decay (α cap)")
    sup: float = Field(1.0, ge=0, description="weight of CE + Dice on labeled images")
    consistency: float = Field(0.1, ge=0, description="weight of the student-teacher MSE on unlabeled images")
    consistency_rampup: float = Field(1.0, ge=0, description="fraction of the run over which the consistency "
                                      "weight ramps up (SSL4MIS: the whole run); 0: constant")
    noise: float = Field(0.1, ge=0, description="std of the Gaussian noise on the teacher's input (clipped at 2x)")
    skd: bool = Field(False, description="add SAM-induced KD (KnowSAM's SAM with learnable prompts) to the student")
    skd_weight: float = Field(1.0, ge=0, description="weight of T² KL(SAM || student) on all images")
    temperature: float = Field(10.0, gt=0, description="KD temperature T")
    prompt_tokens: int = Field(2, ge=1, description="learned prompt tokens per class (skd)")
    decoder_adapters: bool = Field(True, description="adapters in SAM's mask decoder (skd), as KnowSAM")
    adapter_ratio: float = Field(0.25, gt=0, le=1)
    sam_decode: Literal["per_class", "foreground"] = Field(
        "per_class", description="foreground: one SAM decode for binary tasks (half the SAM cost)")
    sam_optim: OptimConfig = OptimConfig(name="adam", lr=1e-4, weight_decay=0.0, schedule="linear", warmup_steps=0,
                                         min_lr_ratio=0.0, clip_grad=None)


class MeanTeacherRunConfig(DistillConfig):
    """A Mean Teacher run: the shared fields + the ``meanteacher`` section."""

    method: Literal["meanteacher"] = "meanteacher"
    promptable = False  # a prompt-free student: no data.zoom
    meanteacher: MeanTeacherConfig = MeanTeacherConfig()


class MeanTeacherParts(nn.Module):
    """Everything checkpointed: the student, its EMA teacher (no gradients), SAM's prompt generator and
    decoder adapters (``skd`` only, else None) and the step counters (ramp-up, EMA warm-up)."""

    def __init__(self, student: nn.Module, prompt_generator: nn.Module | None = None,
                 decoder_adapters: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.student = student
        self.ema = copy.deepcopy(student)
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.prompt_generator = prompt_generator
        self.decoder_adapters = decoder_adapters
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # steps taken (drives the ramp-up)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> float:
    """``θ' ← α θ' + (1 - α) θ`` for every parameter, ``α = min(1 - 1/(step + 1), decay)`` (the warm-up
    makes the teacher the student at step 0). Returns ``α``."""
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.mul_(alpha).add_(p.detach(), alpha=1.0 - alpha)
    return alpha


class MeanTeacherMethod:
    def __init__(self, *, parts: MeanTeacherParts, teacher, cfg: MeanTeacherConfig, total_steps: int,
                 device: str = "cpu") -> None:
        self.parts, self.teacher, self.cfg = parts, teacher, cfg
        self.student, self.ema = parts.student, parts.ema
        self.total_steps = max(1, total_steps)
        self.device = device
        self.use_sam = cfg.skd and parts.prompt_generator is not None

    # ------------------------------------------------------------------ trainer protocol
    def sam_parameters(self) -> list[nn.Parameter]:
        if not self.use_sam:
            return []
        ps = list(self.parts.prompt_generator.parameters())
        return ps + (list(self.parts.decoder_adapters.parameters()) if self.parts.decoder_adapters is not None else [])

    def parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters()) + self.sam_parameters()

    def param_groups(self):
        groups = [("student", list(self.student.parameters()), self.cfg.optim)]
        if self.use_sam:
            groups.append(("sam", self.sam_parameters(), self.cfg.sam_optim))
        return groups

    def train(self) -> None:
        self.parts.train()

    def eval(self) -> None:
        self.parts.eval()

    def after_step(self) -> None:
        """The EMA teacher follows the student after each optimiser step."""
        ema_update(self.ema, self.student, self.cfg.ema_decay, int(self.parts.ema_updates))
        self.parts.ema_updates += 1

    # ------------------------------------------------------------------ one step
    def sam_logits(self, embeddings: torch.Tensor, student_logits: torch.Tensor, size: int | None = None,
                   grad_rows: torch.Tensor | None = None) -> torch.Tensor:
        """SAM's ``BxCxSxS`` logits from the cached embedding, learned prompts and the student's mask prompt
        (``grad_rows``: the rows SAM learns from, see ``learned_prompt_logits``)."""
        return learned_prompt_logits(self.teacher, self.parts.prompt_generator, embeddings, student_logits,
                                     foreground=self.cfg.sam_decode == "foreground", size=size, grad_rows=grad_rows)

    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.cfg
        x, labels = to_frame(batch["image"].to(self.device), batch["mask"].to(self.device).long(),
                             self.student.input_size)
        lab = batch["labeled"].to(self.device).bool()
        unl = ~lab
        progress = float(self.parts.step) / self.total_steps
        self.parts.step += 1

        hf, vf = random_flips(x.shape[0], x.device)
        xa, ya = apply_flips(x, hf, vf), apply_flips(labels, hf, vf)
        s = self.student(xa)
        teacher_in = clipped_noise(xa[unl], c.noise, 2 * c.noise) if unl.any() else None  # drawn before SAM runs
        out: dict[str, torch.Tensor] = {}
        zero = x.new_zeros(())
        out["sup"] = ce_dice(s[lab], ya[lab]) if lab.any() else zero
        loss = c.sup * out["sup"]
        if c.consistency > 0 and teacher_in is not None:
            with torch.no_grad():
                t = self.ema(teacher_in)
            out["consistency"] = self.consistency(s.softmax(1), t.softmax(1), unl)
            loss = loss + c.consistency * sigmoid_rampup(progress, c.consistency_rampup) * out["consistency"]
        if self.use_sam:
            emb = batch["embedding"].to(self.device)
            # SAM learns from the labeled rows only; on the others it is a detached KD target
            sam_a = apply_flips(self.sam_logits(emb, apply_flips(s, hf, vf), grad_rows=lab), hf, vf)
            out["sam_sup"] = ce_dice(sam_a[lab], ya[lab]) if lab.any() else zero
            out["skd"] = softmax_kd(s, sam_a, c.temperature)
            loss = loss + c.sup * out["sam_sup"] + c.skd_weight * out["skd"]
        out["loss"] = loss
        return out

    @staticmethod
    def consistency(student_p: torch.Tensor, teacher_p: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
        """MSE between the student's probabilities on the unlabeled images (``unlabeled`` flags of the
        batch, ``BxCxSxS``) and the teacher's on those images (``UxCxSxS``, the target)."""
        return consistency_mse(student_p[unlabeled], teacher_p)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, loader) -> dict[str, float]:
        """Dice (foreground, input frame, per image; empty vs empty = 1) of the student, the EMA teacher
        and (with ``skd``) SAM with its learned prompts."""
        scores: dict[str, list[float]] = {"dice": [], "dice_ema": []}
        if self.use_sam:
            scores["dice_sam"] = []
        for batch in loader:
            x = batch["image"].to(self.device)
            y = batch["mask"].to(self.device) > 0
            xs = to_frame(x, None, self.student.input_size)[0]
            s = self.student(xs)
            preds = {"dice": s, "dice_ema": self.ema(xs)}
            if self.use_sam:
                preds["dice_sam"] = self.sam_logits(batch["embedding"].to(self.device), s, size=y.shape[-1])
            for k, logits in preds.items():
                if logits.shape[-2:] != y.shape[-2:]:
                    logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
                scores[k] += batch_dice(logits.argmax(1) > 0, y).tolist()
        return {k: float(sum(v) / max(len(v), 1)) for k, v in scores.items()}


@METHODS.register("meanteacher", config=MeanTeacherRunConfig,
                  cli_keys={"student": "meanteacher.student", "labeled": "meanteacher.labeled", "unlabeled": "data.unlabeled"})
def build(cfg: MeanTeacherRunConfig, teacher, cache: EmbeddingCache, train_keys, val_keys) -> Built:
    """Mean Teacher: a prompt-free UNet, its EMA teacher (+ SAM with learned prompts with skd=true)."""
    from samdistill.data.semi import TwoStreamBatchSampler, semi_train_set
    from samdistill.models.adapters import add_decoder_adapters
    from samdistill.models.prompt_generator import PromptGenerator
    from samdistill.models.students import cpu_channels_last

    k = cfg.meanteacher
    populate()
    pre = teacher.preprocess.to_dict()
    if k.input_size:
        pre["input_size"] = k.input_size
    if not MODELS.entry(k.student).meta.get("prompt_free"):  # (an unknown name: the registry's error)
        free = [e.name for e in MODELS if e.meta.get("prompt_free")]
        raise UserError(f"meanteacher.student must be a prompt-free student ({', '.join(free)}), not {k.student!r}")
    student = cpu_channels_last(load_model(k.student, preprocess=pre).to(cfg.device), cfg.device)
    prompt_generator = decoder_adapters = None
    if k.skd:  # only then: with skd=false no SAM part exists
        prompt_generator = PromptGenerator(student.num_classes, k.prompt_tokens).to(cfg.device)
        if k.decoder_adapters:
            decoder_adapters = add_decoder_adapters(teacher.mask_decoder, k.adapter_ratio)
    parts = MeanTeacherParts(student, prompt_generator, decoder_adapters)
    folder_keys = build_unlabeled(cfg, cache, cfg.progress)  # data.unlabeled: images without masks
    train_set, labeled, n_unlabeled = semi_train_set(lambda keys: CachedSet(cache, keys, cfg.cache.in_memory),
                                                     train_keys, k.labeled, seed=cfg.data.seed,
                                                     unlabeled_keys=folder_keys)
    lab_idx, unl_idx = train_set.labeled_indices, train_set.unlabeled_indices

    def sampler(g):
        return TwoStreamBatchSampler(lab_idx, unl_idx, k.batch_size, k.labeled_bs, generator=g)

    steps = k.max_steps or len(sampler(None)) * k.epochs  # what the ramp-up spans (the trainer's LR schedule too)
    method = MeanTeacherMethod(parts=parts, teacher=teacher, cfg=k, total_steps=steps, device=cfg.device)
    val_set = CachedSet(cache, list(val_keys.values()), cfg.cache.in_memory)
    phase = Phase("meanteacher", method, train_set, val_set, k.epochs, k.batch_size, k.optim, batch_sampler=sampler,
                  max_steps=k.max_steps)
    extra = {"n_labeled": len(labeled), "n_unlabeled": n_unlabeled,
             "n_unlabeled_folder": len({sid for sid, _ in folder_keys}), "skd": k.skd}
    return Built(model=parts, student=student, phases=[phase], student_name=k.student, extra=extra,
                 labeled_ids=labeled)
