"""KnowSAM: semi-supervised, SAM-induced distillation into a prompt-free UNet + VNet student.

One training step on a batch of labeled (L) and unlabeled (U) images (``labeled`` flags):

1. Weak augmentation (per-sample flips) for all images, strong (flips + photometric jitter + noise)
   for unlabeled ones; both sub-networks and the Hybrid Aggregation Module predict
   ``u, v, f`` (``BxCxSxS``).
2. SAM (the teacher, with the learnable prompt generator, adapters in its mask decoder
   (``decoder_adapters``, as in the authors' code) and, with ``adapters=encoder``, adapters in its
   image encoder) segments the *unflipped* image once per class (or, with
   ``sam_decode=foreground`` on binary tasks, once, as logits ``[0, l]``): the prompt generator's tokens
   replace boxes and the fused student prediction (detached, unflipped) is the dense mask prompt.
   SAM's logits are flipped into the augmented frame. With ``adapters=none`` SAM's embedding is the
   cached one, so the teacher encoder never runs.
3. Losses: supervised CE + Dice on L for u, v, f and SAM; SAM-induced KD
   ``T² KL(softmax(sam/T) || softmax(u/T))`` (and for v) on all pixels; co-training consistency
   (MSE of probabilities over all classes, each sub-network towards the other, ramped up);
   entropy minimisation (KD and entropy constant as published, or ramped in over ``kd_rampup``);
   after ``mix_after`` of the run, uncertainty-guided mixing: the most
   confident cells of each unlabeled image (SAM's pseudo-label) are pasted into its labeled partner
   and vice versa, and the mixed pairs are trained with CE + Dice.
Students learn from SAM's detached output and SAM from the labels only, so one backward pass over
the sum updates each part with its own terms. Every term has a weight (0 switches it off).

This file is the whole method: its run config (:class:`KnowSAMRunConfig`, section ``knowsam``), its
:func:`build` (registered in ``METHODS``) and its step (:class:`KnowSAMMethod`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from samdistill.config import DistillConfig, OptimConfig, Strict
from samdistill.data.cache import CachedSet, EmbeddingCache, build_unlabeled
from samdistill.errors import UserError
from samdistill.methods.registry import METHODS, Built
from samdistill.models.zoo import load_model
from samdistill.train.trainer import Phase
from samdistill.data.transforms import apply_flips, confident_regions, paste, photometric, random_flips, to_frame
from samdistill.dice import batch_dice
from samdistill.losses.ramps import sigmoid_rampup
from samdistill.losses.semi import ce_dice, consistency_mse, entropy_loss, softmax_kd
from samdistill.models.prompt_generator import learned_prompt_logits
from samdistill.models.students.fusion import entropy_map


class KnowSAMConfig(Strict):
    """Semi-supervised SAM-induced distillation into a prompt-free UNet + VNet (``method: knowsam``)."""

    student: str = "knowsam_student"
    input_size: int | None = Field(None, ge=32)  # student's input frame; None: the teacher's (SAM still sees its own)
    labeled: float = Field(0.1, gt=0)  # <= 1: fraction of the train split (1 = all); > 1: a count
    unlabeled: bool = True  # false: train on the labeled subset alone (the supervised baseline)
    adapters: Literal["none", "encoder"] = "none"  # none: frozen encoder, cached embeddings (CPU-friendly)
    decoder_adapters: bool = True  # adapters in SAM's mask decoder (the authors' code has them; work with adapters=none)
    adapter_ratio: float = Field(0.25, gt=0, le=1)
    prompt_tokens: int = Field(2, ge=1)
    sam: bool = True  # false: no SAM at all (co-training only)
    sam_decode: Literal["per_class", "foreground"] = "per_class"  # foreground: one decode, logits [0, l] (binary)
    fusion: bool = True  # false: plain logit average instead of the Hybrid Aggregation Module
    epochs: int = Field(10, ge=0)  # one epoch = one pass over the unlabeled images
    max_steps: int | None = Field(None, ge=1, description="optimiser-step budget in place of epochs: the run "
                                  "trains exactly this many steps; the LR decay and ramp-ups follow it")
    batch_size: int = Field(8, ge=2)
    labeled_bs: int = Field(4, ge=1)
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, schedule="linear",
                                     warmup_steps=0, min_lr_ratio=0.0, clip_grad=None)
    sam_optim: OptimConfig = OptimConfig(name="adam", lr=1e-4, weight_decay=0.0, schedule="linear", warmup_steps=0,
                                         min_lr_ratio=0.0, clip_grad=None)
    sup: float = Field(1.0, ge=0)
    kd: float = Field(1.0, ge=0)
    temperature: float = Field(10.0, gt=0)
    consistency: float = Field(1.0, ge=0)
    consistency_rampup: float = Field(0.4, ge=0)  # fraction of the run over which consistency ramps up
    entropy: float = Field(0.9, ge=0)
    kd_rampup: float = Field(0.0, ge=0)  # fraction of the run over which KD and entropy ramp up; 0: constant (published)
    mix: float = Field(1.0, ge=0)
    mix_after: float = Field(0.2, ge=0, le=1)  # fraction of the run before uncertainty-guided mixing starts
    mix_grid: int = Field(4, ge=1)
    mix_top_k: int = Field(5, ge=1)
    strong_aug: float = Field(0.2, ge=0)


class KnowSAMRunConfig(DistillConfig):
    """A KnowSAM run: the shared fields + the ``knowsam`` section."""

    method: Literal["knowsam"] = "knowsam"
    promptable = False  # a prompt-free student: no data.zoom
    knowsam: KnowSAMConfig = KnowSAMConfig()


class KnowSAMParts(nn.Module):
    """Everything that trains (and is checkpointed): the student, SAM's prompt generator, its encoder
    adapters (``adapters``) and decoder adapters, and the step counter that drives ramp-ups."""

    def __init__(self, student: nn.Module, prompt_generator: nn.Module | None, adapters: nn.ModuleList | None,
                 decoder_adapters: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.student = student
        self.prompt_generator = prompt_generator
        self.adapters = adapters
        self.decoder_adapters = decoder_adapters
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


class KnowSAMMethod:
    def __init__(self, *, parts: KnowSAMParts, teacher, cfg, total_steps: int, device: str = "cpu") -> None:
        self.parts, self.teacher, self.cfg = parts, teacher, cfg
        self.student = parts.student
        self.total_steps = max(1, total_steps)
        self.device = device
        self.use_sam = cfg.sam and parts.prompt_generator is not None
        self.num_classes = self.student.num_classes

    # ------------------------------------------------------------------ trainer protocol
    def sam_parameters(self) -> list[nn.Parameter]:
        if not self.use_sam:
            return []
        ps = list(self.parts.prompt_generator.parameters())
        for extra in (self.parts.adapters, self.parts.decoder_adapters):
            if extra is not None:
                ps += list(extra.parameters())
        return ps

    def parameters(self) -> list[nn.Parameter]:
        return list(self.student.parameters()) + self.sam_parameters()

    def param_groups(self):
        groups = [("students", list(self.student.parameters()), self.cfg.optim)]
        if self.use_sam:
            groups.append(("sam", self.sam_parameters(), self.cfg.sam_optim))
        return groups

    def train(self) -> None:
        self.parts.train()

    def eval(self) -> None:
        self.parts.eval()

    # ------------------------------------------------------------------ SAM side
    def sam_logits(self, images: torch.Tensor, embeddings: torch.Tensor | None, fused: torch.Tensor,
                   size: int | None = None, grad_rows: torch.Tensor | None = None) -> torch.Tensor:
        """SAM's ``BxCxSxS`` logits: a decode per class with learned tokens + the fused mask prompt.
        ``S`` = ``size``, by default the student's frame (``fused``'s size); ``grad_rows``: the rows SAM
        learns from (the others are decoded without a graph, see ``learned_prompt_logits``)."""
        t = self.teacher
        emb = t.encode(images) if self.parts.adapters is not None or embeddings is None else embeddings
        return learned_prompt_logits(t, self.parts.prompt_generator, emb, fused,
                                     foreground=self.cfg.sam_decode == "foreground", size=size, grad_rows=grad_rows)

    # ------------------------------------------------------------------ one step
    def to_student_frame(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        """Teacher-frame images (and masks) -> the student's input frame (``knowsam.input_size``)."""
        return to_frame(images, masks, self.student.input_size)

    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.cfg
        x_sam = batch["image"].to(self.device)  # SAM's frame
        x, labels = self.to_student_frame(x_sam, batch["mask"].to(self.device).long())
        lab = batch["labeled"].to(self.device).bool()
        unl = ~lab
        emb = batch["embedding"].to(self.device) if "embedding" in batch else None
        progress = float(self.parts.step) / self.total_steps
        self.parts.step += 1

        hf, vf = random_flips(x.shape[0], x.device)
        xa = apply_flips(x, hf, vf)
        ya = apply_flips(labels, hf, vf)
        if unl.any() and c.strong_aug > 0:
            xa = torch.where(unl.view(-1, 1, 1, 1), photometric(xa, c.strong_aug), xa)
        u, v, f = self.student.forward_all(xa)
        pu, pv, pf = u.softmax(1), v.softmax(1), f.softmax(1)

        out: dict[str, torch.Tensor] = {}
        zero = x.new_zeros(())
        if lab.any():
            out["sup"] = 0.5 * (ce_dice(u[lab], ya[lab]) + ce_dice(v[lab], ya[lab]))
            out["sup_fusion"] = ce_dice(f[lab], ya[lab])
        else:
            out["sup"] = out["sup_fusion"] = zero
        loss = c.sup * (out["sup"] + out["sup_fusion"])

        sam_a = None
        # KD and entropy pull towards SAM / towards confidence; optionally ramped in like consistency
        # (SAM's learned prompts start random, so early KD targets are noise)
        ramp_kd = sigmoid_rampup(progress, c.kd_rampup)
        if self.use_sam:
            # SAM learns from CE + Dice on the labeled rows only; elsewhere its output is a detached target
            sam = self.sam_logits(x_sam, emb, apply_flips(f, hf, vf), grad_rows=lab)
            sam_a = apply_flips(sam, hf, vf)
            out["sam_sup"] = ce_dice(sam_a[lab], ya[lab]) if lab.any() else zero
            loss = loss + c.sup * out["sam_sup"]
            if c.kd > 0:
                out["kd"] = 0.5 * (softmax_kd(u, sam_a, c.temperature) + softmax_kd(v, sam_a, c.temperature))
                loss = loss + c.kd * ramp_kd * out["kd"]
        ramp = sigmoid_rampup(progress, c.consistency_rampup)
        if c.consistency > 0:
            out["consistency"] = 0.5 * (consistency_mse(pu, pv) + consistency_mse(pv, pu))
            loss = loss + c.consistency * ramp * out["consistency"]
        if c.entropy > 0:
            out["entropy"] = 0.5 * (entropy_loss(pu) + entropy_loss(pv))
            loss = loss + c.entropy * ramp_kd * out["entropy"]
        if c.mix > 0 and progress >= c.mix_after and lab.any() and unl.any():
            out["mix"] = self._mix_loss(xa, ya, lab, unl, pf, sam_a)
            loss = loss + c.mix * out["mix"]
        out["loss"] = loss
        return out

    def _mix_loss(self, xa, ya, lab, unl, pf, sam_a) -> torch.Tensor:
        """Uncertainty-guided mixing of labeled/unlabeled pairs; CE + Dice on the mixed labels."""
        c = self.cfg
        li, ui = lab.nonzero()[:, 0], unl.nonzero()[:, 0]
        n = min(len(li), len(ui))
        li, ui = li[:n], ui[:n]
        with torch.no_grad():
            teacher_p = sam_a.softmax(1) if sam_a is not None else pf
            pseudo = teacher_p[ui].argmax(1)
            region_u = confident_regions(entropy_map(teacher_p[ui])[:, 0], c.mix_grid, c.mix_top_k)
            region_l = confident_regions(entropy_map(pf[li])[:, 0], c.mix_grid, c.mix_top_k)
        img_l, lab_l = paste(xa[li], ya[li], xa[ui], pseudo, region_u)  # confident unlabeled cells -> labeled
        img_u, lab_u = paste(xa[ui], pseudo, xa[li], ya[li], region_l)  # confident labeled cells -> unlabeled
        mu, mv, mf = self.student.forward_all(torch.cat([img_l, img_u]))
        y = torch.cat([lab_l, lab_u])
        return 0.5 * (ce_dice(mu, y) + ce_dice(mv, y)) + ce_dice(mf, y)

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, loader) -> dict[str, float]:
        """Dice (foreground, input frame, per image; empty vs empty = 1) of the fused student, each
        sub-network and (when used) SAM with its learned prompts."""
        scores: dict[str, list[float]] = {"dice": [], "dice_unet": [], "dice_vnet": []}
        if self.use_sam:
            scores["dice_sam"] = []
        for batch in loader:
            x = batch["image"].to(self.device)
            y = batch["mask"].to(self.device) > 0
            u, v, f = self.student.forward_all(self.to_student_frame(x)[0])
            preds = {"dice": f, "dice_unet": u, "dice_vnet": v}
            if self.use_sam:
                emb = batch["embedding"].to(self.device) if "embedding" in batch else None
                preds["dice_sam"] = self.sam_logits(x, emb, f, size=y.shape[-1])
            for k, logits in preds.items():
                if logits.shape[-2:] != y.shape[-2:]:
                    logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
                pred = logits.argmax(1) > 0
                scores[k] += batch_dice(pred, y).tolist()
        return {k: float(sum(v) / max(len(v), 1)) for k, v in scores.items()}


@METHODS.register("knowsam", config=KnowSAMRunConfig,
                  cli_keys={"student": "knowsam.student", "labeled": "knowsam.labeled", "unlabeled": "data.unlabeled"})
def build(cfg: KnowSAMRunConfig, teacher, cache: EmbeddingCache, train_keys, val_keys) -> Built:
    """KnowSAM: the prompt-free student, SAM's prompt generator (+ adapters) and one semi-supervised phase."""
    from samdistill.data.semi import TwoStreamBatchSampler, semi_train_set
    from samdistill.models.adapters import add_adapters, add_decoder_adapters
    from samdistill.models.prompt_generator import PromptGenerator
    from samdistill.models.students import cpu_channels_last

    k = cfg.knowsam
    pre = teacher.preprocess.to_dict()
    if k.input_size:
        pre["input_size"] = k.input_size
    student = cpu_channels_last(load_model(k.student, preprocess=pre, fusion=k.fusion).to(cfg.device), cfg.device)
    prompt_generator = adapters = decoder_adapters = None
    if k.sam:
        prompt_generator = PromptGenerator(student.num_classes, k.prompt_tokens).to(cfg.device)
        if k.adapters == "encoder":
            adapters = add_adapters(teacher.image_encoder, k.adapter_ratio)
        if k.decoder_adapters:
            decoder_adapters = add_decoder_adapters(teacher.mask_decoder, k.adapter_ratio)
    parts = KnowSAMParts(student, prompt_generator, adapters, decoder_adapters)
    if cfg.data.unlabeled and not k.unlabeled:
        raise UserError("knowsam.unlabeled=false trains on the labeled images alone; drop --unlabeled (data.unlabeled)")
    folder_keys = build_unlabeled(cfg, cache, cfg.progress)  # data.unlabeled: images without masks
    train_set, labeled, n_unlabeled = semi_train_set(lambda keys: CachedSet(cache, keys, cfg.cache.in_memory),
                                                     train_keys, k.labeled, unlabeled=k.unlabeled, seed=cfg.data.seed,
                                                     unlabeled_keys=folder_keys)
    lab_idx, unl_idx = train_set.labeled_indices, train_set.unlabeled_indices

    def sampler(g):
        return TwoStreamBatchSampler(lab_idx, unl_idx, k.batch_size, k.labeled_bs, generator=g)

    steps = k.max_steps or len(sampler(None)) * k.epochs  # what the ramp-ups span (the trainer's LR schedule too)
    method = KnowSAMMethod(parts=parts, teacher=teacher, cfg=k, total_steps=steps, device=cfg.device)
    val_set = CachedSet(cache, list(val_keys.values()), cfg.cache.in_memory)
    phase = Phase("knowsam", method, train_set, val_set, k.epochs, k.batch_size, k.optim, batch_sampler=sampler,
                  max_steps=k.max_steps)
    extra = {"n_labeled": len(labeled), "n_unlabeled": n_unlabeled,
             "n_unlabeled_folder": len({sid for sid, _ in folder_keys}), "adapters": k.adapters}
    return Built(model=parts, student=student, phases=[phase], student_name=k.student, extra=extra,
                 labeled_ids=labeled)
