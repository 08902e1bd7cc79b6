"""The searchable student encoder: mixed operations, searchable widths, expected MACs.

Layout (input S, teacher grid g = S/4; e.g. LiteMedSAM 256 -> 64): a fixed stem (two 3x3 stride-2
convs) to g x g, then stages at g, g/2, g/4 (each after a fixed 3x3 stride-2 conv), each with
``layers`` searchable layers, then a fusion neck: a 1x1 lateral per stage, resized to g and summed,
3x3 conv, 1x1 to 256 channels, LayerNorm — the teacher's embedding grid.

Architecture parameters: ``alpha`` (one vector per layer over the candidate ops), ``beta`` (one per
stage over its width choices; the stage runs at its widest and a soft channel mask
``sum_w p(w) 1[c < w]`` selects the width), ``gamma`` (per stage after the first: keep its lateral
input to the neck, or ``zero`` = drop it). ``expected_macs`` is differentiable in all three and uses
the exact per-op MACs of :mod:`ops`, so ``loss + beta_macs * E[MACs] / budget`` trades accuracy for cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from samdistill.models.nas.ops import OPS, op_macs
from samdistill.models.layernorm import LayerNorm2d


@dataclass
class SearchSpace:
    input_size: int = 256
    stem_width: int = 16
    widths: list[list[int]] = field(default_factory=lambda: [[24, 32, 48], [48, 64, 96], [96, 128, 192]])
    layers: list[int] = field(default_factory=lambda: [2, 3, 3])
    neck_width: int = 64
    ops: list[str] = field(default_factory=lambda: list(OPS))

    @property
    def grid(self) -> int:
        return self.input_size // 4

    def resolution(self, stage: int) -> int:
        return self.grid // (2**stage)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def make_neck(in_widths: list[int], neck_width: int) -> tuple[nn.ModuleList, nn.Sequential]:
    laterals = nn.ModuleList(nn.Conv2d(w, neck_width, 1) for w in in_widths)
    fuse = nn.Sequential(nn.Conv2d(neck_width, neck_width, 3, padding=1, bias=False), nn.BatchNorm2d(neck_width),
                         nn.GELU(), nn.Conv2d(neck_width, 256, 1), LayerNorm2d(256))
    return laterals, fuse


class SuperNet(nn.Module):
    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        wmax = [max(w) for w in space.widths]
        self.stem = nn.Sequential(conv_bn(3, space.stem_width, stride=2), conv_bn(space.stem_width, wmax[0], stride=2))
        self.down = nn.ModuleList(conv_bn(wmax[i - 1], wmax[i], stride=2) for i in range(1, len(wmax)))
        self.layers = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(OPS[o](wmax[s]) for o in space.ops) for _ in range(n))
            for s, n in enumerate(space.layers)
        )
        self.laterals, self.fuse = make_neck(wmax, space.neck_width)
        n_layers = sum(space.layers)
        self.alpha = nn.Parameter(1e-3 * torch.randn(n_layers, len(space.ops)))
        self.beta = nn.ParameterList(nn.Parameter(torch.zeros(len(w))) for w in space.widths)
        self.gamma = nn.Parameter(torch.zeros(len(wmax) - 1, 2))  # [keep lateral, zero]
        for s, w in enumerate(space.widths):
            self.register_buffer(f"_mask{s}", (torch.arange(max(w))[None] < torch.tensor(w)[:, None]).float(),
                                 persistent=False)
        self.sampling, self.tau = "softmax", 1.0

    # ------------------------------------------------------------------ parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, *self.beta, self.gamma]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        if self.sampling == "gumbel" and self.training:
            return F.gumbel_softmax(logits, tau=self.tau, hard=False, dim=-1)
        return logits.softmax(-1)

    def probabilities(self) -> dict[str, torch.Tensor]:
        return {"alpha": self.alpha.softmax(-1), "beta": [b.softmax(-1) for b in self.beta],
                "gamma": self.gamma.softmax(-1)}

    # ------------------------------------------------------------------ forward
    def _channel_mask(self, stage: int) -> torch.Tensor:
        p = self._probs(self.beta[stage])
        return (p[:, None] * getattr(self, f"_mask{stage}")).sum(0)[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self._probs(self.alpha)
        gamma = self._probs(self.gamma)
        feats = []
        li = 0
        x = self.stem(x)
        for s, layers in enumerate(self.layers):
            if s > 0:
                x = self.down[s - 1](x)
            mask = self._channel_mask(s)
            x = x * mask
            for mixed in layers:
                x = sum(a * op(x) for a, op in zip(alpha[li], mixed)) * mask
                li += 1
            feats.append(x)
        g = self.space.grid
        out = None
        for s, (lat, f) in enumerate(zip(self.laterals, feats)):
            y = lat(f)
            if y.shape[-1] != g:
                y = F.interpolate(y, size=(g, g), mode="bilinear", align_corners=False)
            if s > 0:
                y = y * gamma[s - 1, 0]
            out = y if out is None else out + y
        return self.fuse(out)

    # ------------------------------------------------------------------ cost
    def expected_macs(self) -> torch.Tensor:
        """Differentiable expected MACs (batch 1) under the current architecture probabilities."""
        sp = self.space
        pb = [b.softmax(-1) for b in self.beta]
        pa, pg = self.alpha.softmax(-1), self.gamma.softmax(-1)
        t = lambda v: torch.tensor(v, dtype=torch.float32, device=self.alpha.device)  # noqa: E731
        half = sp.input_size // 2
        total = t(float(3 * sp.stem_width * 9 * half * half))
        g = sp.grid
        total = total + (pb[0] * t([sp.stem_width * w * 9 * g * g for w in sp.widths[0]])).sum()
        li = 0
        for s, widths in enumerate(sp.widths):
            r = sp.resolution(s)
            if s > 0:
                table = t([[wi * wo * 9 * r * r for wo in widths] for wi in sp.widths[s - 1]])
                total = total + (pb[s - 1][:, None] * pb[s][None, :] * table).sum()
            for _ in range(sp.layers[s]):
                table = t([[op_macs(o, w, r, r) for w in widths] for o in sp.ops])  # ops x widths
                total = total + (pa[li][:, None] * pb[s][None, :] * table).sum()
                li += 1
            lat = (pb[s] * t([w * sp.neck_width * r * r for w in widths])).sum()
            total = total + (lat if s == 0 else pg[s - 1, 0] * lat)
        total = total + float(sp.neck_width * sp.neck_width * 9 * g * g + sp.neck_width * 256 * g * g)
        return total

    # ------------------------------------------------------------------ result
    def derive(self, max_skip: int | None = None) -> dict:
        """The most likely architecture, as a genotype dict (see :mod:`genotype`).

        Against DARTS' known collapse onto skip connections, at most ``max_skip`` layers per stage
        (default: all but one) keep ``skip``; the others take their most likely real operation.
        """
        sp = self.space
        stages, li = [], 0
        skip = sp.ops.index("skip") if "skip" in sp.ops else None
        for s, widths in enumerate(sp.widths):
            rows = self.alpha[li : li + sp.layers[s]].detach()
            choice = [int(r.argmax()) for r in rows]
            limit = sp.layers[s] - 1 if max_skip is None else max_skip
            skipped = [i for i, c in enumerate(choice) if c == skip]
            if skip is not None and len(skipped) > limit:
                # keep the skips the search is surest of; the rest get their best real op
                skipped.sort(key=lambda i: float(rows[i].softmax(-1)[skip]), reverse=True)
                for i in skipped[limit:]:
                    r = rows[i].clone()
                    r[skip] = -float("inf")
                    choice[i] = int(r.argmax())
            ops = [sp.ops[c] for c in choice]
            li += sp.layers[s]
            keep = True if s == 0 else bool(self.gamma[s - 1].argmax() == 0)
            stages.append({"width": int(widths[int(self.beta[s].argmax())]), "ops": ops, "lateral": keep})
        return {"format": "samdistill-genotype/1", "input_size": sp.input_size, "stem_width": sp.stem_width,
                "neck_width": sp.neck_width, "stages": stages}
