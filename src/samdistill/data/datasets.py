"""Datasets: a registry of named layouts, splits, and loading samples with the bad-input policy.

``open_dataset("../shared/data/kvasir_seg")`` detects the layout; ``open_dataset("busi", root=...)``
names it; ``open_dataset("synthetic")`` (or ``synthetic:n=40,size=256,seed=0``) needs no files.
Large collections: a manifest file (``pairs.csv`` / ``pairs.jsonl`` of image/mask paths, optional
split column; no directory scan) or a list of folders (ids become ``<folder>/<stem>``).

Bad input (unreadable image, mask size differs, non-binary mask, image without mask, mask without
image) raises :class:`DataError` naming the file, or with ``on_error="skip"`` is skipped and counted
in ``dataset.skipped``. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from samdistill.data import layouts as L
from samdistill.data.images import read_image, read_mask
from samdistill.data.synthetic import phantom
from samdistill.errors import DataError, UserError
from samdistill.registry import Registry

OnError = Literal["raise", "skip"]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Layout:
    """How to recognise (``detect``) and list (``scan``) one dataset layout below a root folder."""

    detect: Callable[[Path], bool]
    scan: Callable[[Path], L.Scan]


def _public(detect: Callable[[Path], bool], scan: Callable[[Path], L.Scan]) -> Layout:
    # Every named dataset also reads the normalised copy (images/ + masks/), e.g. ../shared/data/<name>.
    return Layout(
        detect=lambda r: L.has_folder_layout(r) or detect(r),
        scan=lambda r: L.scan_folder(r) if L.has_folder_layout(r) else scan(r),
    )


DATASETS: Registry[Layout] = Registry("dataset")
DATASETS.register("folder", summary="images/ + masks/ with the same stem (png/jpg/tif/bmp)")(
    Layout(L.has_folder_layout, L.scan_folder)
)
DATASETS.register("kvasir_seg", summary="Kvasir-SEG: images/*.jpg + masks/*.jpg (JPEG masks thresholded at 128)")(
    Layout(L.has_folder_layout, L.scan_folder)
)
DATASETS.register("cvc_clinicdb", summary="CVC-ClinicDB: Original/*.tif + 'Ground Truth'/*.tif")(
    _public(L.detect_cvc, L.scan_cvc)
)
DATASETS.register("isic2017", summary="ISIC 2016/2017: ISIC_x.jpg + ISIC_x_segmentation.png; official split folders")(
    _public(L.detect_isic, L.scan_isic)
)
DATASETS.register("ph2", summary="PH2: IMDx/IMDx_Dermoscopic_Image/IMDx.bmp + IMDx_lesion/IMDx_lesion.bmp")(
    _public(L.detect_ph2, L.scan_ph2)
)
DATASETS.register("busi", summary="BUSI: 'benign (n).png' + '_mask.png' (+ '_mask_1.png' merged by OR)")(
    _public(L.detect_busi, L.scan_busi)
)
DATASETS.register("hc18", summary="HC18: NNN_HC.png + NNN_HC_Annotation.png (ellipse outlines, filled)")(
    _public(L.detect_hc18, L.scan_hc18)
)
DATASETS.register("synthetic", summary="seeded phantoms with known masks (no files; tests and quickstart)")(
    Layout(lambda r: False, lambda r: L.Scan())
)

# Order in which a bare path is tried: the public layouts (their own file names) before the generic folder.
_DETECT_ORDER = (
    ("busi", L.detect_busi),
    ("hc18", L.detect_hc18),
    ("isic2017", L.detect_isic),
    ("ph2", L.detect_ph2),
    ("cvc_clinicdb", L.detect_cvc),
    ("folder", L.has_folder_layout),
)


@dataclass
class Sample:
    id: str
    image: np.ndarray  # HxWx3 uint8
    mask: np.ndarray  # HxW bool
    meta: dict = field(default_factory=dict)


class SegDataset:
    """The records of one dataset, its split, and ``load`` with the bad-input policy."""

    def __init__(
        self,
        name: str,
        root: Path | None,
        scan: L.Scan,
        *,
        on_error: OnError = "raise",
        mask_threshold: int | None = None,
        labels: list[int] | tuple[int, ...] | None = None,
        split: dict[str, list[str]] | None = None,
        split_source: str = "",
        seed: int = 0,
        generator: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise UserError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.name, self.root, self.on_error = name, root, on_error
        self.mask_threshold = mask_threshold
        self.labels = check_labels(labels, mask_threshold)
        self.records = scan.records
        self.by_id = {r.id: r for r in self.records}
        self.ignored = scan.ignored
        self.skipped: list[tuple[str, str]] = []
        self._generator = generator
        self.zoom: float | None = None  # set: every sample is the crop of zoom x its mask's tight box (see load)
        for path, reason in scan.problems:
            self._problem(DataError(f"{reason}: {path}", path))
        if split is None:
            split, split_source = seeded_split([r.id for r in self.records], seed), f"seeded 70/10/20 (seed {seed})"
        self.split_source = split_source
        self.split = self._check_split(split)

    # ---------------------------------------------------------------- bad input
    def _problem(self, err: DataError) -> None:
        if self.on_error == "raise":
            raise err
        self.skipped.append((err.path or "?", str(err)))

    def _check_split(self, split: dict[str, list[str]]) -> dict[str, list[str]]:
        """Parts disjoint and without repeats (always an error: a test image seen in training, or
        counted twice, inflates the scores silently); ids the dataset lacks: error, or with
        ``on_error="skip"`` left out and counted in ``skipped`` (one entry per id)."""
        src = (f"split file {self.split_source}" if self.split_source.endswith(".json")
               else f"split of {self.name} ({self.split_source or 'given'})")
        unknown = set(split) - set(SPLITS)
        if unknown:
            raise UserError(f"{src} has unknown parts {sorted(unknown)}; expected {list(SPLITS)}")
        parts = {part: [str(i) for i in split.get(part, [])] for part in SPLITS}
        wrong = []
        for part, ids in parts.items():
            repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
            if repeated:
                wrong.append(f"{part!r} lists {_some_ids(repeated)} more than once")
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = sorted(set(parts[a]) & set(parts[b]))
            if shared:
                wrong.append(f"{a!r} and {b!r} share {_some_ids(shared)}")
        if wrong:
            raise DataError(f"{src}: {'; '.join(wrong)}; each id must be in one list, once (fix the split file)",
                            src)
        out = {}
        for part, ids in parts.items():
            missing = [i for i in ids if i not in self.by_id]
            if missing and self.on_error == "raise":
                raise DataError(f"{src}: {part!r} lists {_some_ids(missing)} with no image/mask pair in the "
                                "dataset; fix the split file, or pass --on-error skip to leave them out (counted)", src)
            self.skipped += [(i, f"{src}: {part!r} lists {i!r} but the dataset has no such image/mask pair")
                             for i in missing]
            out[part] = [i for i in ids if i in self.by_id]
        return out

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.records)

    def ids(self, split: str = "all", limit: int | None = None) -> list[str]:
        if split == "all":
            ids = [r.id for r in self.records]
        elif split in self.split:
            ids = self.split[split]
        else:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}, all")
        return ids[:limit] if limit is not None else list(ids)

    def load(self, sid: str) -> Sample:
        """Read one sample; raises :class:`DataError` on bad files (the caller applies ``on_error``). With
        ``zoom`` set, the sample is the square crop of ``zoom`` x its mask's tight box around it
        (:func:`samdistill.data.prompts.zoom_window`; an empty mask keeps the whole image): what a Predictor
        with the same ``zoom`` encodes at a box."""
        sample = self._read(sid)
        if self.zoom is None or not sample.mask.any():
            return sample
        from samdistill.data.prompts import tight_box, zoom_window

        x0, y0, x1, y1 = zoom_window(tight_box(sample.mask), sample.mask.shape, self.zoom)
        return Sample(sid, np.ascontiguousarray(sample.image[y0:y1, x0:x1]),
                      np.ascontiguousarray(sample.mask[y0:y1, x0:x1]), {**sample.meta, "zoom_window": [x0, y0, x1, y1]})

    def _read(self, sid: str) -> Sample:
        rec = self.by_id[sid]
        if self._generator is not None:
            image, mask = self._generator(int(rec.meta["index"]))
            return Sample(sid, image, mask, dict(rec.meta))
        image = read_image(rec.image)
        kind = "noisy" if self.mask_threshold is not None and rec.mask_kind == "binary" else rec.mask_kind
        thr = self.mask_threshold if self.mask_threshold is not None else 128
        mask = None
        for mp in rec.masks:
            m = read_mask(mp, kind, thr, labels=self.labels)
            if m.shape != image.shape[:2]:
                raise DataError(
                    f"mask {mp} is {m.shape[1]}x{m.shape[0]} but its image {rec.image} is "
                    f"{image.shape[1]}x{image.shape[0]}",
                    str(mp),
                )
            mask = m if mask is None else (mask | m)
        if mask is None:  # an unlabeled image (open_unlabeled): an empty mask, never shown to a loss
            mask = np.zeros(image.shape[:2], bool)
        return Sample(sid, image, mask, dict(rec.meta))

    def iter_samples(self, ids: list[str]):
        """Yield samples of ``ids``; bad files raise or are skipped and counted (``on_error``)."""
        for sid in ids:
            try:
                yield self.load(sid)
            except DataError as err:
                self._problem(err)

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "root": str(self.root) if self.root else None,
            "n_images": len(self.records),
            "split_source": self.split_source,
            "split_sizes": {k: len(v) for k, v in self.split.items()},
            **({"labels": list(self.labels)} if self.labels else {}),
        }


def _some_ids(ids: list[str], show: int = 5) -> str:
    """``3 ids (a, b, c)``; at most ``show`` of them named."""
    more = ", ..." if len(ids) > show else ""
    return f"{len(ids)} id{'s' if len(ids) != 1 else ''} ({', '.join(ids[:show])}{more})"


def parse_labels(text: str, flag: str = "--labels") -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (the ``--labels`` option); a one-line error otherwise."""
    try:
        labels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        labels = []
    if not labels:
        raise UserError(f"{flag} must be mask values separated by commas, e.g. {flag} 1,2 (got {text!r})")
    return labels


def check_labels(labels: list[int] | tuple[int, ...] | None, mask_threshold: int | None = None) -> tuple[int, ...] | None:
    """Validate the foreground labels of label-map masks (sorted, unique) or None when not given."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)) or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                   for v in labels):
        raise UserError(f"labels must be a list of integers such as [1, 2], got {labels!r}")
    if not labels:
        raise UserError("labels is empty: give the mask values that are foreground, e.g. --labels 1,2")
    if min(labels) < 1:
        raise UserError(f"labels {list(labels)}: 0 is background; give the foreground values (1 or more)")
    if mask_threshold is not None:
        raise UserError("give --labels (label-map masks) or --mask-threshold (noisy binary masks), not both")
    return tuple(sorted({int(v) for v in labels}))


def seeded_split(ids: list[str], seed: int = 0, fractions: tuple[float, float] = (0.7, 0.1)) -> dict[str, list[str]]:
    """Shuffle the sorted ids with ``random.Random(seed)``; 70/10/20 by count; each part sorted."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_train = int(round(fractions[0] * len(order)))
    n_val = int(round(fractions[1] * len(order)))
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def _read_split_file(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read split file {path}: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise UserError(f"split file {path} must be {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    return {k: [str(s) for s in v] for k, v in data.items()}


def _parse_synthetic(spec: str) -> dict[str, int]:
    opts = {"n": 40, "size": 256, "seed": 0}
    _, _, rest = spec.partition(":")
    for part in filter(None, rest.split(",")):
        key, _, val = part.partition("=")
        if key not in opts or not val.strip().isdigit():
            raise UserError(f"bad synthetic option {part!r}; use e.g. synthetic:n=40,size=256,seed=0")
        opts[key] = int(val)
    return opts


def synthetic_dataset(n: int = 40, size: int = 256, seed: int = 0) -> SegDataset:
    records = [L.Record(f"synth_{i:04d}", None, (), meta={"index": i}) for i in range(n)]
    return SegDataset(
        f"synthetic:n={n},size={size},seed={seed}", None, L.Scan(records=records),
        generator=lambda i: phantom(seed, i, size), seed=seed,
    )


def resolve_root(name: str) -> Path:
    """Where a named dataset lives: ``$SAMDISTILL_DATA/<name>`` (``:``-separated roots), or ``./data/<name>``."""
    roots = [Path(p) for p in os.environ.get("SAMDISTILL_DATA", "").split(os.pathsep) if p] + [Path("data")]
    for r in roots:
        if (r / name).is_dir():
            return r / name
    raise UserError(
        f"dataset {name!r} not found in {', '.join(str(r) for r in roots)}; pass its folder "
        f"(--data PATH/{name}) or set SAMDISTILL_DATA to the folder that holds it"
    )


def _open_many(specs: list, **kw) -> SegDataset:
    """Several folders as one dataset: ids ``<folder name>/<id>``, splits merged (seeded if any lacks one)."""
    parts = [open_dataset(s, **kw) for s in specs]
    names = [p.root.resolve().name if p.root else p.name for p in parts]
    if len(set(names)) != len(names):
        raise UserError(f"the data folders must have distinct names to keep ids apart: {names}")
    records, split = [], {k: [] for k in SPLITS}
    has_split = all(not p.split_source.startswith("seeded") for p in parts)
    for name, p in zip(names, parts):
        for r in p.records:
            records.append(L.Record(f"{name}/{r.id}", r.image, r.masks, r.mask_kind, dict(r.meta)))
        for k in SPLITS:
            split[k] += [f"{name}/{i}" for i in p.split[k]]
    scan = L.Scan(records=records, ignored=[x for p in parts for x in p.ignored])
    ds = SegDataset("+".join(names), None, scan, on_error=kw.get("on_error", "raise"),
                    mask_threshold=kw.get("mask_threshold"), labels=kw.get("labels"), split=split if has_split else None,
                    split_source="merged split.json of each folder" if has_split else "", seed=kw.get("seed", 0))
    ds.skipped = [x for p in parts for x in p.skipped]
    return ds


def open_dataset(
    spec: str | os.PathLike | list,
    *,
    layout: str | None = None,
    on_error: OnError = "raise",
    mask_threshold: int | None = None,
    labels: list[int] | tuple[int, ...] | None = None,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
) -> SegDataset:
    """Open a dataset by path, manifest file, list of folders, or registered name (module docstring).

    ``labels``: masks are label maps; foreground = a value in ``labels``, other values background."""
    if isinstance(spec, (list, tuple)):
        if len(spec) == 1:
            spec = spec[0]
        else:
            return _open_many(list(spec), layout=layout, on_error=on_error, mask_threshold=mask_threshold,
                              labels=labels, seed=seed)
    spec = str(spec)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return synthetic_dataset(**_parse_synthetic(spec))
    path = Path(spec)
    if not path.exists():
        if spec in DATASETS:
            layout = layout or spec
            path = resolve_root(spec)
        else:
            raise UserError(f"data not found: {spec} (neither a folder nor a dataset name: {', '.join(DATASETS.names())})")
    if path.is_file() and path.suffix.lower() in L.MANIFEST_EXTS:
        try:
            scan = L.scan_manifest(path)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read manifest {path}: {exc}") from None
        if not scan.records and not scan.problems:
            raise UserError(f"manifest {path} lists no image/mask pairs")
        return SegDataset(path.stem, path.parent, scan, on_error=on_error, mask_threshold=mask_threshold,
                          labels=labels, split=scan.split, split_source=f"split column of {path}" if scan.split else "", seed=seed)
    if not path.is_dir():
        raise UserError(f"--data must be a folder or a manifest (.csv/.jsonl), got a file: {path}")
    if layout is None:
        layout = next((n for n, detect in _DETECT_ORDER if detect(path)), None)
        if layout is None:
            raise UserError(
                f"no known layout in {path}: expected images/ + masks/ (same stems) or a public layout "
                f"({', '.join(n for n, _ in _DETECT_ORDER[:-1])}); name it with --layout"
            )
    lay = DATASETS.get(layout)
    if not lay.detect(path):
        raise UserError(f"{path} does not look like the {layout!r} layout ({DATASETS.entry(layout).meta['summary']})")
    scan = lay.scan(path)
    if not scan.records and not scan.problems:
        raise UserError(f"no image/mask pairs found in {path} ({layout} layout)")
    split_path = Path(split_file) if split_file else path / "split.json"
    if split_path.is_file():
        split, source = _read_split_file(split_path), str(split_path)
    elif split_file:
        raise UserError(f"split file not found: {split_path}")
    elif scan.split is not None:
        split, source = scan.split, f"{layout} official folders"
    else:
        split, source = None, ""
    name = path.resolve().name if layout == "folder" else layout
    return SegDataset(
        name, path, scan, on_error=on_error, mask_threshold=mask_threshold, labels=labels, split=split,
        split_source=source, seed=seed,
    )


def open_unlabeled(folder: str | os.PathLike, *, on_error: OnError = "raise") -> SegDataset:
    """A folder of images without masks (any depth, :func:`~samdistill.data.layouts.scan_images`), every one
    in the ``train`` split with an empty mask: the unlabeled images of a semi-supervised run."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"--unlabeled must be a folder of images, got {'a file' if path.exists() else 'no such folder'}: "
                        f"{path}")
    held = next((n for n, detect in _DETECT_ORDER if detect(path)), None)
    if held is not None:
        raise UserError(f"{path} holds a labeled dataset ({held} layout): --unlabeled takes a folder of images "
                        "without masks (pass this one as --data)")
    scan = L.scan_images(path)
    if not scan.records and not scan.problems:
        raise UserError(f"no images in {path} (--unlabeled takes a folder of "
                        f"{'/'.join(e.lstrip('.') for e in L.IMAGE_EXTS)} files)")
    return SegDataset(f"unlabeled:{path.resolve().name}", path, scan, on_error=on_error,
                      split={"train": [r.id for r in scan.records]}, split_source="every image unlabeled")


def shared_files(a: SegDataset, b: SegDataset) -> list[tuple[Path, Path, str, str]]:
    """Image files of ``a`` whose bytes equal an image or mask file of ``b`` (the same file, or a byte-identical
    copy): ``(a's file, b's file, "image" | "mask", b's record id)``. File sizes are compared first; only files of a
    size both hold are read and hashed."""
    import hashlib

    digests: dict[Path, str] = {}

    def digest(p: Path) -> str:
        if p not in digests:
            digests[p] = hashlib.sha256(p.read_bytes()).hexdigest()
        return digests[p]

    by_size: dict[int, list[tuple[Path, str, str]]] = {}
    for r in b.records:
        for f, kind in ([(r.image, "image")] if r.image is not None else []) + [(m, "mask") for m in r.masks]:
            by_size.setdefault(f.stat().st_size, []).append((f, kind, r.id))
    shared = []
    for r in a.records:
        if r.image is None:
            continue
        match = next((m for m in by_size.get(r.image.stat().st_size, []) if digest(m[0]) == digest(r.image)), None)
        if match is not None:
            shared.append((r.image, *match))
    return shared


def list_datasets() -> list[str]:
    return DATASETS.names()
