"""``test_sam``: a tiny random-init promptable model (64 px input, 16x16x256 embedding) for tests.

It has the real SAM prompt encoder and mask decoder (shrunk), so every code path that a teacher
takes is exercised in milliseconds. Its weights are seeded: the same ``seed`` gives the same model.
"""

from __future__ import annotations

import torch
from torch import nn

from samdistill.models.preprocess import Preprocess
from samdistill.models.promptable import PromptableModel
from samdistill.models.zoo import MODELS, freeze


class TinyEncoder(nn.Module):
    """``Bx3xSxS -> Bx256x(S/4)x(S/4)``: two strided convs and a projection."""

    def __init__(self, width: int = 32, out_chans: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, out_chans, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_sam_heads(grid: int, input_size: int) -> tuple[nn.Module, nn.Module]:
    """segment-anything's PromptEncoder + MaskDecoder at their smallest sensible size (256 channels)."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(input_size, input_size), mask_in_chans=4
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=64, num_heads=2),
        transformer_dim=256,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    return prompt_encoder, mask_decoder


@MODELS.register("test_sam", kind="teacher", input_size=64, weights="random (seeded)")
def build_test_sam(
    pretrained: bool = True, checkpoint: str | None = None, seed: int = 0, input_size: int = 64
) -> PromptableModel:
    """Tiny random-init SAM (64 px) for tests; never use for real work."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        prompt_encoder, mask_decoder = tiny_sam_heads(input_size // 4, input_size)
        encoder = TinyEncoder()
    model = PromptableModel(
        image_encoder=encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
        preprocess=Preprocess(input_size=input_size, normalize="minmax"),
        family="test_sam",
        config={"seed": seed, "input_size": input_size},
    )
    if checkpoint is not None:
        from samdistill.models.zoo import load_state, read_torch_file

        state = read_torch_file(checkpoint, expected="a test_sam state dict")
        load_state(model, state.get("state_dict", state), source=str(checkpoint), expected="test_sam")
    return freeze(model)
