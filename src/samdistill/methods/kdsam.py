"""KD SAM: two-stage distillation of a SAM-family teacher into a promptable student.

Stage 1 (encoder): the student's image encoder reproduces the teacher's cached embedding,
``loss = mse * MSE(e_s, e_t) + perceptual * P(e_s, e_t | box)`` where P compares the teacher's own
mask decoder activations on both embeddings (or VGG16 features of the decoded masks).

Stage 2 (decoder, and by default the encoder too), with jittered ground-truth boxes:
``loss = dice * Dice + bce * BCE + kd * KL(teacher mask | student mask, T) + iou * IoU-head MSE
+ mse * MSE(e_s, e_t)``; the teacher's logits come from its decoder on the cached embedding under
the same box, so the teacher's encoder never runs during training.
"""

from __future__ import annotations

from typing import Any

import torch

from samdistill.config import Stage1Config, Stage2Config
from samdistill.eval.validation import promptable_validation
from samdistill.losses.targets import target_like
from samdistill.losses.embedding import embedding_mse
from samdistill.losses.kd import logit_kd
from samdistill.losses.segmentation import bce_loss, dice_loss, iou_head_mse
from samdistill.data.boxes import jitter, tight_boxes


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
        logits, iou_pred = self.student.decode(emb_s, boxes=boxes)
        target = target_like(mask, logits)
        out = {"dice": dice_loss(logits, target), "bce": bce_loss(logits, target)}
        loss = c.dice * out["dice"] + c.bce * out["bce"]
        if c.kd > 0:
            with torch.no_grad():
                t_logits, _ = self.teacher.decode(emb_t, boxes=boxes)
            out["kd"] = logit_kd(logits, t_logits, c.temperature)
            loss = loss + c.kd * out["kd"]
        if c.iou > 0:
            out["iou"] = iou_head_mse(iou_pred, logits, target)
            loss = loss + c.iou * out["iou"]
        if c.mse > 0 and c.train_encoder:
            out["mse"] = embedding_mse(emb_s, emb_t)
            loss = loss + c.mse * out["mse"]
        out["loss"] = loss
        return out

    def validate(self, loader) -> dict[str, float]:
        """Dice of the student in the input frame, tight box, and embedding MSE to the teacher."""
        return promptable_validation(self.student, loader, self.device)
