"""KD SAM: two-stage distillation of a SAM-family teacher into a promptable student.

Stage 1 (encoder): the student's image encoder reproduces the teacher's cached embedding,
``loss = mse * MSE(e_s, e_t) + perceptual * P(e_s, e_t | box)`` where P compares the teacher's own
mask decoder activations on both embeddings (or VGG16 features of the decoded masks).

Stage 2 (decoder, and by default the encoder too), with jittered ground-truth boxes:
``loss = dice * Dice + bce * BCE + kd * KL(teacher mask | student mask, T) + iou * IoU-head MSE
+ iou_kd * MSE(iou_s, iou_t) + token_kd * MSE(output tokens_s, output tokens_t)
+ feature_kd * MSE(mask features_s, pool(mask features_t)) + mse * MSE(e_s, e_t)``;
the teacher's logits, IoU predictions and output tokens (IoU + mask tokens after its two-way
transformer) come from its decoder on the cached embedding under the same prompt, so the teacher's
encoder never runs during training. The mask terms are computed at the teacher's low-res mask size
(the student's logits upsampled to it), so a student on a coarser grid (``student.grid``) is taught
the teacher's mask at the teacher's resolution.

Prompt-in-the-loop (``stage2.loop_iters`` rounds, EdgeSAM's idea adapted to a cached teacher): after
the box, a point is drawn where the student's and the teacher's masks disagree (positive where the
teacher says foreground), both decode again with the box and every point so far, and the loss above is
taken on every round (averaged), so the student learns to follow corrections the way the teacher does.

Photometric jitter (``stage1.photometric`` / ``stage2.photometric``, off by default): the student's input image
gets a per-sample brightness shift, contrast scale and noise (:func:`samdistill.data.transforms.photometric`)
while every target (the cached embedding, the teacher's decodes, the mask) stays the clean image's, so the
student learns the teacher's answer on images that look unlike the training set's.

This file is the whole method: its run config (:class:`KDSAMConfig`), its :func:`build` (student and
phases, registered in ``METHODS``) and its step (:class:`KDSAMStage`).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import torch
from pydantic import Field

from samdistill.config import DistillConfig, OptimConfig, Strict
from samdistill.data.cache import CachedSet, EmbeddingCache
from samdistill.errors import UserError
from samdistill.methods.registry import METHODS, Built
from samdistill.models.zoo import load_model
from samdistill.train.trainer import Phase
from samdistill.train.validation import promptable_validation
import torch.nn.functional as F

from samdistill.data.clicks import disagreement_points
from samdistill.losses.perceptual import capture_decoder_tokens
from samdistill.losses.targets import target_like
from samdistill.losses.embedding import embedding_mse
from samdistill.losses.kd import logit_kd
from samdistill.losses.segmentation import bce_loss, dice_loss, iou_head_mse
from samdistill.data.boxes import jitter, tight_boxes
from samdistill.data.transforms import photometric


class StudentConfig(Strict):
    name: str = "efficientvit_b1"
    decoder: Literal["teacher", "slim"] = "teacher"
    grid: Optional[int] = Field(None, ge=4)  # embedding grid; None: the teacher's (64 for LiteMedSAM)
    slim_depth: int = Field(1, ge=1)  # decoder=slim: two-way transformer blocks (the teacher has 2)
    slim_mlp_dim: int = Field(512, ge=8)  # decoder=slim: MLP width of each block (the teacher: 2048)
    neck_width: Optional[int] = Field(None, ge=4)
    # a detail path: the encoder's features at a quarter of the grid's stride added to the decoder's mask
    # features; auto: wherever the backbone has that map (a grid coarser than the input / 4)
    detail: Union[Literal["auto"], bool] = "auto"
    pretrained: Optional[str] = None  # local timm weights file


class Stage1Config(Strict):
    """Encoder distillation: embedding MSE + perceptual (teacher decoder activations)."""

    epochs: int = Field(10, ge=0)
    # at least this many batches (optimiser steps, counted at one process): a small training set runs more
    # epochs than ``epochs``, whole ones (train.trainer.Phase.floored_epochs); None: ``epochs`` as given. An
    # ``epochs`` override without a ``min_steps`` beside it drops the recipe's floor (config.load_config)
    min_steps: Optional[int] = Field(None, ge=1, json_schema_extra={"added_neutral": True})
    batch_size: int = Field(8, ge=1)
    optim: OptimConfig = OptimConfig()
    mse: float = Field(1.0, ge=0)
    perceptual: float = Field(0.1, ge=0)
    perceptual_net: Literal["decoder", "vgg16"] = "decoder"
    vgg16_weights: Optional[str] = None
    # strength of the student-only photometric jitter (0: off); targets stay the clean image's
    photometric: float = Field(0.0, ge=0, json_schema_extra={"added_neutral": True})


class Stage2Config(Strict):
    """Decoder (and encoder) training with prompts: Dice + BCE + logit KD + IoU head + embedding MSE."""

    epochs: int = Field(5, ge=0)
    min_steps: Optional[int] = Field(None, ge=1, json_schema_extra={"added_neutral": True})  # as stage 1's
    batch_size: int = Field(8, ge=1)
    optim: OptimConfig = OptimConfig(lr=3e-4)
    train_encoder: bool = True
    box_jitter: float = Field(5.0, ge=0)  # px in the input frame, uniform 0..s per side (LiteMedSAM trained with 0..5 at 256)
    dice: float = Field(1.0, ge=0)
    bce: float = Field(1.0, ge=0)
    kd: float = Field(0.5, ge=0)
    temperature: float = Field(1.0, gt=0)
    iou: float = Field(0.1, ge=0)
    iou_kd: float = Field(0.0, ge=0)  # MSE to the teacher's IoU predictions
    token_kd: float = Field(0.0, ge=0)  # MSE to the teacher's IoU + mask tokens after its transformer
    # MSE to the teacher's mask features (what its hypernetworks read, 4x its grid) average-pooled to the
    # student's (4x the student's grid, detail map included)
    feature_kd: float = Field(0.0, ge=0, json_schema_extra={"added_neutral": True})
    loop_iters: int = Field(0, ge=0)  # prompt-in-the-loop: corrective points after the box, decoded again
    mse: float = Field(0.5, ge=0)
    # strength of the student-only photometric jitter (0: off); targets stay the clean image's
    photometric: float = Field(0.0, ge=0, json_schema_extra={"added_neutral": True})


class KDSAMConfig(DistillConfig):
    """A KD SAM run: the shared fields + the student, the two stages and which of them run."""

    method: Literal["kdsam"] = "kdsam"
    student: StudentConfig = StudentConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    stages: list[Literal[1, 2]] = [1, 2]


class KDSAMStage:
    """One stage of KD SAM as a trainer method (``step`` / ``validate`` / ``parameters``)."""

    def __init__(self, *, stage: int, student, teacher, cfg: Stage1Config | Stage2Config, perceptual=None,
                 device: str = "cpu") -> None:
        self.stage, self.student, self.teacher, self.cfg = stage, student, teacher, cfg
        self.perceptual = perceptual
        self.device = device

    def parameters(self) -> list[torch.nn.Parameter]:
        if self.stage == 1:
            return self.student.train_only("image_encoder")
        enc = ("image_encoder",) if self.cfg.train_encoder else ()
        return self.student.train_only("prompt_encoder", "mask_decoder", *enc)

    def train(self) -> None:
        self.student.train()

    def eval(self) -> None:
        self.student.eval()

    def _batch(self, batch: dict[str, Any]):
        return (batch["image"].to(self.device), batch["embedding"].to(self.device), batch["mask"].to(self.device))

    def step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, emb_t, mask = self._batch(batch)
        if self.cfg.photometric > 0:
            images = photometric(images, self.cfg.photometric)
        emb_s = self.student.encode(images)
        size = self.student.input_size
        if self.stage == 1:
            out = {"mse": embedding_mse(emb_s, emb_t)}
            loss = self.cfg.mse * out["mse"]
            if self.cfg.perceptual > 0 and self.perceptual is not None:
                boxes = jitter(tight_boxes(mask), 0.0, size)
                out["perceptual"] = self.perceptual(emb_s, emb_t, boxes)
                loss = loss + self.cfg.perceptual * out["perceptual"]
            out["loss"] = loss
            return out
        c: Stage2Config = self.cfg  # type: ignore[assignment]
        boxes = jitter(tight_boxes(mask), c.box_jitter, size)
        points = None
        logits, t_logits, terms = self._round(emb_s, emb_t, mask, boxes, points)
        rounds = [terms]
        for _ in range(c.loop_iters):  # a corrective point where the two disagree, then both decode again
            new = disagreement_points(logits.detach()[:, 0] > 0, t_logits[:, 0] > 0, size)
            points = new if points is None else (torch.cat([points[0], new[0]], 1), torch.cat([points[1], new[1]], 1))
            logits, t_logits, terms = self._round(emb_s, emb_t, mask, boxes, points)
            rounds.append(terms)
        out = {k: sum(t[k] for t in rounds) / len(rounds) for k in rounds[0]}
        loss = sum(getattr(c, k) * v for k, v in out.items())
        if c.mse > 0 and c.train_encoder:
            out["mse"] = embedding_mse(emb_s, emb_t)
            loss = loss + c.mse * out["mse"]
        out["loss"] = loss
        return out

    def _round(self, emb_s, emb_t, mask, boxes, points):
        """One decode of student and teacher under the same prompt; the mask terms at the teacher's
        low-res size. Returns (student logits there, teacher logits, {term: value})."""
        c: Stage2Config = self.cfg  # type: ignore[assignment]
        features = c.feature_kd > 0
        with capture_decoder_tokens(self.student.mask_decoder, features) as cap_s:
            logits, iou_pred = self.student.decode(emb_s, boxes=boxes, points=points)
        t_logits = None
        if c.kd > 0 or c.iou_kd > 0 or c.token_kd > 0 or features or c.loop_iters > 0:
            with torch.no_grad(), capture_decoder_tokens(self.teacher.mask_decoder, features) as cap_t:
                t_logits, t_iou = self.teacher.decode(emb_t, boxes=boxes, points=points)
        size = self.teacher.mask_prompt_size  # the teacher's low-res mask side
        if logits.shape[-1] != size:
            logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        target = target_like(mask, logits)
        out = {"dice": dice_loss(logits, target), "bce": bce_loss(logits, target)}
        if c.kd > 0:
            out["kd"] = logit_kd(logits, t_logits, c.temperature)
        if c.iou > 0:
            out["iou"] = iou_head_mse(iou_pred, logits, target)
        if c.iou_kd > 0:
            out["iou_kd"] = F.mse_loss(iou_pred, t_iou)
        if c.token_kd > 0:
            out["token_kd"] = F.mse_loss(cap_s.output_tokens, cap_t.output_tokens)
        if features:
            f_s = cap_s.mask_features
            out["feature_kd"] = F.mse_loss(f_s, F.adaptive_avg_pool2d(cap_t.mask_features, f_s.shape[-2:]))
        return logits, t_logits, out

    def validate(self, loader) -> dict[str, float]:
        """Dice of the student in the input frame, tight box, and embedding MSE to the teacher."""
        return promptable_validation(self.student, loader, self.device)


@METHODS.register("kdsam", config=KDSAMConfig, cli_keys={"student": "student.name"})
def build(cfg: KDSAMConfig, teacher, cache: EmbeddingCache, train_keys, val_keys) -> Built:
    """KD SAM: a promptable student and its two stages (encoder, then decoder)."""
    student = load_model(
        cfg.student.name, teacher=teacher, decoder=cfg.student.decoder, neck_width=cfg.student.neck_width,
        pretrained=cfg.student.pretrained, grid=cfg.student.grid, detail=cfg.student.detail,
        slim={"depth": cfg.student.slim_depth, "mlp_dim": cfg.student.slim_mlp_dim},
    ).to(cfg.device)
    mem = cfg.cache.in_memory
    all_train = [k for k in train_keys.values()]
    prompted = [k for k in all_train if k not in cache.empty_keys]
    val_set = CachedSet(cache, list(val_keys.values()), mem)
    phases = []
    if 1 in cfg.stages:
        stage1_set = prompted if cfg.stage1.perceptual > 0 else all_train
        perceptual = None
        if cfg.stage1.perceptual > 0:
            from samdistill.losses.perceptual import DecoderPerceptual

            if cfg.stage1.perceptual_net == "vgg16":
                if not cfg.stage1.vgg16_weights:
                    raise UserError("stage1.perceptual_net=vgg16 needs stage1.vgg16_weights=PATH (never downloaded)")
                raise UserError("the VGG16 perceptual loss compares decoded masks and is available in stage 2 "
                                "experiments only; use perceptual_net=decoder for stage 1")
            perceptual = DecoderPerceptual(teacher, grid=student.embedding_grid).to(cfg.device)
        phases.append(Phase("stage1", KDSAMStage(stage=1, student=student, teacher=teacher, cfg=cfg.stage1,
                                                 perceptual=perceptual, device=cfg.device),
                            CachedSet(cache, stage1_set, mem), val_set, cfg.stage1.epochs, cfg.stage1.batch_size,
                            cfg.stage1.optim, min_steps=cfg.stage1.min_steps))
    if 2 in cfg.stages:
        phases.append(Phase("stage2", KDSAMStage(stage=2, student=student, teacher=teacher, cfg=cfg.stage2,
                                                 device=cfg.device),
                            CachedSet(cache, prompted, mem), val_set, cfg.stage2.epochs, cfg.stage2.batch_size,
                            cfg.stage2.optim, min_steps=cfg.stage2.min_steps))
    extra = {"n_train_entries": len(all_train), "n_train_prompted": len(prompted),
             "epochs": {p.name: p.floored_epochs() for p in phases}}
    return Built(model=student, student=student, phases=phases, student_name=cfg.student.name, extra=extra,
                 resume_hint="student.detail=false for a kdsam run started before the detail path existed")
