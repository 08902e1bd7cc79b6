"""SAM ViT-B/L/H and MedSAM ViT-B: segment-anything's architectures with an official checkpoint.

The checkpoints cannot be downloaded by this tool: pass the file you have
(``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``, ``medsam_vit_b.pth``).
SAM preprocesses with ImageNet mean/std at 1024 px (longest side, padded); MedSAM's official pipeline
stretches the image to 1024x1024 and min-max normalises it to [0, 1].
"""

from __future__ import annotations

from typing import Callable

from samdistill.errors import CheckpointError
from samdistill.models.preprocess import SAM_PIXEL_MEAN, SAM_PIXEL_STD, Preprocess
from samdistill.models.promptable import PromptableModel
from samdistill.models.zoo import MODELS, freeze, load_state, read_torch_file

SAM_PREPROCESS = Preprocess(input_size=1024, normalize="meanstd", mean=SAM_PIXEL_MEAN, std=SAM_PIXEL_STD)
MEDSAM_PREPROCESS = Preprocess(input_size=1024, normalize="minmax", resize="stretch")

_OFFICIAL_FILES = {
    "sam_vit_b": "sam_vit_b_01ec64.pth",
    "sam_vit_l": "sam_vit_l_0b3195.pth",
    "sam_vit_h": "sam_vit_h_4b8939.pth",
    "medsam_vit_b": "medsam_vit_b.pth",
}


def _segment_anything_builder(arch: str) -> Callable:
    try:
        import segment_anything
    except ImportError:  # pragma: no cover - core dependency
        raise CheckpointError("segment-anything is not installed: pip install segment-anything") from None
    return segment_anything.sam_model_registry[arch]


def build_from_sam(
    sam, *, family: str, preprocess: Preprocess, pretrained: bool, checkpoint: str | None, expected: str
) -> PromptableModel:
    """Wrap a segment-anything-style ``Sam`` and load an official state dict into it."""
    model = PromptableModel(
        image_encoder=sam.image_encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=sam.mask_decoder,
        preprocess=preprocess,
        family=family,
    )
    if checkpoint is None and pretrained:
        raise CheckpointError(
            f"{family} needs its checkpoint file PATH/{expected}: pass it as --checkpoint (info, eval, predict, "
            "export, demo) or --teacher-checkpoint (distill, cache, nas); weights are never downloaded by samdistill, and "
            "`litemedsam` works without one"
        )
    if checkpoint is not None:
        state = read_torch_file(checkpoint, expected=f"the official {expected}")
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{checkpoint} does not hold a state dict; expected the official {expected}")
        load_state(model, state, source=str(checkpoint), expected=f"{family} ({expected})")
    return freeze(model)


def _register(name: str, arch: str, preprocess: Preprocess, doc: str) -> None:
    def build(pretrained: bool = True, checkpoint: str | None = None) -> PromptableModel:
        sam = _segment_anything_builder(arch)(checkpoint=None)
        return build_from_sam(
            sam, family=name, preprocess=preprocess, pretrained=pretrained, checkpoint=checkpoint,
            expected=_OFFICIAL_FILES[name],
        )

    build.__doc__ = doc
    build.__name__ = f"build_{name}"
    MODELS.register(name, kind="teacher", input_size=1024, weights=f"--checkpoint {_OFFICIAL_FILES[name]}")(build)


_register("sam_vit_b", "vit_b", SAM_PREPROCESS, "SAM ViT-B (91M encoder params, 1024 px); official checkpoint path.")
_register("sam_vit_l", "vit_l", SAM_PREPROCESS, "SAM ViT-L (308M encoder params, 1024 px); official checkpoint path.")
_register("sam_vit_h", "vit_h", SAM_PREPROCESS, "SAM ViT-H (637M encoder params, 1024 px); official checkpoint path.")
_register("medsam_vit_b", "vit_b", MEDSAM_PREPROCESS, "MedSAM ViT-B (1024 px, min-max, stretched); medsam_vit_b.pth path.")
