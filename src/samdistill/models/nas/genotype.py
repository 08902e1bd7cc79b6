"""A found architecture: readable JSON, an encoder built from it, and the registered ``nas`` student.

Genotype JSON::

    {"format": "samdistill-genotype/1", "input_size": 256, "stem_width": 16, "neck_width": 64,
     "stages": [{"width": 24, "ops": ["mbconv_k3_e3", "skip"], "lateral": true}, ...]}

``load_model("nas", teacher=t, genotype="g.json")`` gives a promptable student whose image encoder
is this architecture (the teacher's prompt encoder and mask decoder, as every KD SAM student).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from samdistill.errors import UserError
from samdistill.models.nas.ops import OPS
from samdistill.models.nas.supernet import conv_bn, make_neck
from samdistill.models.zoo import MODELS

FORMAT = "samdistill-genotype/1"


def read_genotype(g: str | Path | dict) -> dict:
    if isinstance(g, dict):
        data = g
    else:
        p = Path(g)
        if not p.is_file():
            raise UserError(f"genotype file not found: {p}")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"genotype {p} is not valid JSON: {exc}") from None
    if data.get("format") != FORMAT or not data.get("stages"):
        raise UserError(f"not a samdistill genotype (expected 'format': '{FORMAT}' and 'stages')")
    for st in data["stages"]:
        bad = [o for o in st["ops"] if o not in OPS]
        if bad:
            raise UserError(f"unknown operation(s) {bad} in the genotype; known: {', '.join(OPS)}")
    if not any(st.get("lateral", True) for st in data["stages"]):
        raise UserError("the genotype feeds no stage into the neck")
    return data


def write_genotype(g: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(g, indent=2))
    return p


class GenotypeEncoder(nn.Module):
    """``Bx3xSxS -> Bx256x(S/4)x(S/4)`` built from a genotype."""

    def __init__(self, genotype: dict) -> None:
        super().__init__()
        g = read_genotype(genotype)
        self.genotype = g
        self.grid = g["input_size"] // 4
        widths = [st["width"] for st in g["stages"]]
        self.stem = nn.Sequential(conv_bn(3, g["stem_width"], stride=2), conv_bn(g["stem_width"], widths[0], stride=2))
        self.down = nn.ModuleList(conv_bn(widths[i - 1], widths[i], stride=2) for i in range(1, len(widths)))
        self.stages = nn.ModuleList(nn.Sequential(*(OPS[o](st["width"]) for o in st["ops"])) for st in g["stages"])
        self.keep = [bool(st.get("lateral", True)) for st in g["stages"]]
        laterals, self.fuse = make_neck(widths, g["neck_width"])
        self.laterals = nn.ModuleList(lat if k else nn.Identity() for lat, k in zip(laterals, self.keep))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = None
        for s, stage in enumerate(self.stages):
            if s > 0:
                x = self.down[s - 1](x)
            x = stage(x)
            if not self.keep[s]:
                continue
            y = self.laterals[s](x)
            if y.shape[-1] != self.grid:
                y = F.interpolate(y, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return self.fuse(out)


@MODELS.register("nas", kind="student", input_size="genotype's", weights="distilled")
def build_nas_student(pretrained: Any = None, checkpoint: str | None = None, teacher=None, genotype: Any = None,
                      preprocess: dict | None = None, grid: int | None = None, heads: dict | None = None,
                      decoder: str = "teacher", **_: Any):
    """Promptable student whose encoder is a searched architecture (``genotype=PATH`` from `samdistill nas search`)."""
    from samdistill.models.preprocess import Preprocess
    from samdistill.models.promptable import PromptableModel
    from samdistill.models.students.promptable import SLIM_DECODER, _copy_matching, heads_config, sam_heads

    if genotype is None:
        raise UserError("the nas student needs genotype=PATH (written by `samdistill nas search`)")
    if pretrained:
        raise UserError("a searched student has no pretrained weights; it is distilled with `samdistill nas train`")
    g = read_genotype(genotype)
    if teacher is not None:
        pp, grid, heads = teacher.preprocess, teacher.embedding_grid, heads_config(teacher)
        if g["input_size"] != pp.input_size:
            raise UserError(f"the genotype was searched at {g['input_size']} px but the teacher takes {pp.input_size} px")
    elif preprocess is None or grid is None or heads is None:
        raise UserError("a nas student needs a teacher, or preprocess + grid + heads from its checkpoint")
    else:
        pp = Preprocess.from_dict(preprocess)
    encoder = GenotypeEncoder(g)
    pe, md = sam_heads({**heads, **SLIM_DECODER} if decoder == "slim" else dict(heads), grid, pp.input_size)
    if teacher is not None:
        pe.load_state_dict(teacher.prompt_encoder.state_dict())
        _copy_matching(md, teacher.mask_decoder)
    return PromptableModel(image_encoder=encoder, prompt_encoder=pe, mask_decoder=md, preprocess=pp, family="nas",
                           config={"genotype": g, "preprocess": pp.to_dict(), "grid": grid, "heads": heads,
                                   "decoder": decoder}).train()
