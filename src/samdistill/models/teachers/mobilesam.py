"""MobileSAM: TinyViT-5M encoder at 1024 px + SAM heads (architecture from the ``mobilesam`` extra).

Weights: pass the official ``mobile_sam.pt`` with ``--checkpoint``; they are never downloaded.
"""

from __future__ import annotations

import warnings

from samdistill.errors import CheckpointError
from samdistill.models.promptable import PromptableModel
from samdistill.models.teachers.sam import SAM_PREPROCESS, build_from_sam
from samdistill.models.zoo import MODELS


@MODELS.register("mobilesam", kind="teacher", input_size=1024, weights="--checkpoint mobile_sam.pt")
def build_mobilesam(pretrained: bool = True, checkpoint: str | None = None) -> PromptableModel:
    """MobileSAM (TinyViT-5M, 1024 px); official mobile_sam.pt path; needs the `mobilesam` extra."""
    try:
        with warnings.catch_warnings():
            # mobile_sam re-registers TinyViT names in timm's registry and uses deprecated timm paths.
            warnings.simplefilter("ignore")
            from mobile_sam import sam_model_registry
    except ImportError:
        raise CheckpointError(
            "MobileSAM's architecture comes from the `mobilesam` extra: pip install 'samdistill[mobilesam]'"
        ) from None
    sam = sam_model_registry["vit_t"](checkpoint=None)
    return build_from_sam(
        sam, family="mobilesam", preprocess=SAM_PREPROCESS, pretrained=pretrained, checkpoint=checkpoint,
        expected="mobile_sam.pt",
    )
