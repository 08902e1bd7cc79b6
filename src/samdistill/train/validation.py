"""The per-epoch validation score of promptable students on cached entries (no teacher run).

Dice (:func:`samdistill.dice.batch_dice`) of the student's mask under the tight ground-truth box,
in the input frame (the logits upsampled to it when a coarse-grid student's are smaller), per image (images with an
empty ground truth cannot be prompted and are left out), and the embedding MSE to the teacher's cached embedding.
Cheap by design: the full metrics come from ``samdistill eval``. :func:`promptable_scores` keeps the per-image
figures (``benchmarks/student.py --val-gap`` compares teacher and student image by image).
"""

from __future__ import annotations

import torch

from samdistill.dice import batch_dice
from samdistill.losses.targets import target_like


@torch.no_grad()
def promptable_scores(model, loader, device: str = "cpu", *, cached: bool = False
                      ) -> tuple[list[float], list[float], list[float]]:
    """Per image with a foreground: Dice under the tight box and the foreground's share of the frame; per batch:
    the embedding MSE to the cached teacher embedding. ``cached=True`` decodes the cached embedding instead of
    encoding the image (the teacher's own score, MSE 0)."""
    from samdistill.data.boxes import tight_boxes
    from samdistill.losses.embedding import embedding_mse

    dices, areas, mses = [], [], []
    for batch in loader:
        images, emb_t, mask = (batch[k].to(device) for k in ("image", "embedding", "mask"))
        emb = emb_t if cached else model.encode(images)
        mses.append(float(embedding_mse(emb, emb_t)))
        keep = mask.flatten(1).amax(1) > 0
        if not keep.any():
            continue
        logits, _ = model.decode(emb[keep], boxes=tight_boxes(mask[keep]))
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        target = target_like(mask[keep], logits) > 0
        dices += batch_dice(logits > 0, target).tolist()
        areas += target.flatten(1).float().mean(1).tolist()
    return dices, areas, mses


def promptable_validation(student, loader, device: str = "cpu") -> dict[str, float]:
    dices, _, mses = promptable_scores(student, loader, device)
    return {"dice": float(sum(dices) / max(len(dices), 1)), "mse": float(sum(mses) / max(len(mses), 1))}
