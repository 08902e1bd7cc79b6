"""The per-epoch validation score of promptable students on cached entries (no teacher run).

Dice (:func:`samdistill.dice.batch_dice`) of the student's mask under the tight ground-truth box,
in the input frame (the logits upsampled to it when a coarse-grid student's are smaller), per image (images with an empty ground truth cannot be
prompted and are left out), and the embedding MSE to the teacher's cached embedding. Cheap by design: the full metrics come from ``samdistill eval``.
"""

from __future__ import annotations

import torch

from samdistill.dice import batch_dice
from samdistill.losses.targets import target_like


@torch.no_grad()
def promptable_validation(student, loader, device: str = "cpu") -> dict[str, float]:
    from samdistill.data.boxes import tight_boxes
    from samdistill.losses.embedding import embedding_mse

    dices, mses = [], []
    for batch in loader:
        images, emb_t, mask = (batch[k].to(device) for k in ("image", "embedding", "mask"))
        emb_s = student.encode(images)
        mses.append(float(embedding_mse(emb_s, emb_t)))
        keep = mask.flatten(1).amax(1) > 0
        if not keep.any():
            continue
        logits, _ = student.decode(emb_s[keep], boxes=tight_boxes(mask[keep]))
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = torch.nn.functional.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        dices += batch_dice(logits > 0, target_like(mask[keep], logits) > 0).tolist()
    return {"dice": float(sum(dices) / max(len(dices), 1)), "mse": float(sum(mses) / max(len(mses), 1))}
