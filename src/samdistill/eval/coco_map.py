"""COCO-style mask mAP@[.5:.95] (the EfficientMedSAM paper's metric) with pycocotools.

Each image contributes its ground-truth foreground as one instance (none when it is empty) and the
model's mask as one detection scored by the model's confidence (the IoU head of promptable models,
the mean foreground probability of prompt-free ones). ``COCOeval(iouType="segm")`` then gives AP
averaged over IoU thresholds 0.50:0.05:0.95, and AP50 / AP75.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np


class CocoMaskAP:
    def __init__(self) -> None:
        self.images, self.gts, self.dets = [], [], []

    def add(self, gt: np.ndarray, pred: np.ndarray, score: float) -> None:
        from pycocotools import mask as mask_utils

        iid = len(self.images) + 1
        h, w = gt.shape
        self.images.append({"id": iid, "height": h, "width": w})
        if gt.any():
            rle = mask_utils.encode(np.asfortranarray(gt.astype(np.uint8)))
            self.gts.append({"id": len(self.gts) + 1, "image_id": iid, "category_id": 1, "segmentation": rle,
                             "area": float(gt.sum()), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
        if pred.any():
            rle = mask_utils.encode(np.asfortranarray(pred.astype(np.uint8)))
            self.dets.append({"image_id": iid, "category_id": 1, "segmentation": rle, "score": float(score)})

    def __len__(self) -> int:
        return len(self.images)

    def compute(self) -> dict[str, float]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        if not self.gts:
            return {"map": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
        gt = COCO()
        gt.dataset = {"images": self.images, "annotations": self.gts, "categories": [{"id": 1, "name": "foreground"}]}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes(self.dets) if self.dets else COCO()
            ev = COCOeval(gt, dt, iouType="segm")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {"map": float(ev.stats[0]), "ap50": float(ev.stats[1]), "ap75": float(ev.stats[2])}
