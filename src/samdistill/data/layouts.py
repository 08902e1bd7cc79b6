"""Where the image/mask pairs of a dataset are: the generic ``folder`` layout and the public layouts.

Every layout turns a root folder into :class:`Record` s (one image, its mask file(s), how to read
the mask) plus the problems it found while pairing files (image without mask, mask without image)
and files it ignored (not images). A layout never reads pixels; that happens when a sample loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from samdistill.data.images import IMAGE_EXTS, LOSSY_EXTS, MaskKind


@dataclass(frozen=True)
class Record:
    """One sample: ``id`` (unique stem), the image file, the mask file(s) OR-ed together."""

    id: str
    image: Path | None
    masks: tuple[Path, ...]
    mask_kind: MaskKind = "binary"
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass
class Scan:
    records: list[Record] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    ignored: list[str] = field(default_factory=list)
    split: dict[str, list[str]] | None = None  # a split implied by the layout itself (ISIC folders)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def _mask_kind_for(path: Path) -> MaskKind:
    return "noisy" if path.suffix.lower() in LOSSY_EXTS else "binary"


def has_folder_layout(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir()


def scan_folder(root: Path) -> Scan:
    """``images/`` + ``masks/`` with the same stem (any of png/jpg/tif/bmp). JPEG masks are noisy."""
    scan = Scan()
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for sub, table in (("images", images), ("masks", masks)):
        for p in sorted((root / sub).iterdir()):
            if p.name.startswith("."):
                continue
            if not _is_image(p):
                scan.ignored.append(str(p))
                continue
            if p.stem in table:
                scan.problems.append((str(p), f"two {sub} files share the stem {p.stem!r} ({table[p.stem].name})"))
                continue
            table[p.stem] = p
    for stem, img in images.items():
        if stem not in masks:
            scan.problems.append((str(img), "image without mask"))
            continue
        scan.records.append(Record(stem, img, (masks[stem],), _mask_kind_for(masks[stem])))
    for stem, m in masks.items():
        if stem not in images:
            scan.problems.append((str(m), "mask without image"))
    return scan


def scan_images(root: Path) -> Scan:
    """Every image below ``root`` (any depth; hidden files and folders left out), each without a mask: the
    unlabeled images of a semi-supervised run. An id is the image's path below ``root`` (``day2/scan 1.png``)."""
    scan = Scan()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or p.is_dir():
            continue
        if not _is_image(p):
            scan.ignored.append(str(p))
            continue
        scan.records.append(Record(rel.as_posix(), p, ()))
    return scan


# --------------------------------------------------------------------------- public layouts
def detect_cvc(root: Path) -> bool:
    return _cvc_dirs(root) is not None


def _cvc_dirs(root: Path) -> tuple[Path, Path] | None:
    for base in (root, root / "TIF", root / "PNG", root / "CVC-ClinicDB"):
        if (base / "Original").is_dir() and (base / "Ground Truth").is_dir():
            return base / "Original", base / "Ground Truth"
    return None


def scan_cvc(root: Path) -> Scan:
    """CVC-ClinicDB: ``Original/N.tif`` + ``Ground Truth/N.tif`` (or the PNG release)."""
    dirs = _cvc_dirs(root)
    assert dirs is not None
    orig, gt = dirs
    scan = Scan()
    masks = {p.stem: p for p in gt.iterdir() if _is_image(p)}
    seen = set()
    for img in sorted(orig.iterdir()):
        if not _is_image(img):
            if not img.name.startswith("."):
                scan.ignored.append(str(img))
            continue
        seen.add(img.stem)
        if img.stem not in masks:
            scan.problems.append((str(img), "image without mask"))
        else:
            scan.records.append(Record(img.stem, img, (masks[img.stem],), _mask_kind_for(masks[img.stem])))
    scan.problems += [(str(m), "mask without image") for s, m in sorted(masks.items()) if s not in seen]
    return scan


_ISIC_IMG = re.compile(r"^(ISIC_\d{7})\.(jpg|jpeg|png)$", re.I)
_ISIC_MASK = re.compile(r"^(ISIC_\d{7})_segmentation\.png$", re.I)
_ISIC_SPLITS = (("train", "training"), ("val", "validation"), ("test", "test"))


def detect_isic(root: Path) -> bool:
    return any(_ISIC_MASK.match(p.name) for p in root.rglob("ISIC_*_*egmentation.png"))


def scan_isic(root: Path) -> Scan:
    """ISIC 2016/2017: ``ISIC_xxxxxxx.jpg`` + ``ISIC_xxxxxxx_segmentation.png`` anywhere below root.

    When the official folders (``...Training...``, ``...Validation...``, ``...Test...``) are present,
    they give the split.
    """
    scan = Scan()
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(root.rglob("ISIC_*")):
        if m := _ISIC_IMG.match(p.name):
            images[m.group(1)] = p
        elif m := _ISIC_MASK.match(p.name):
            masks[m.group(1)] = p
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for sid, img in sorted(images.items()):
        if sid not in masks:
            scan.problems.append((str(img), "image without mask"))
            continue
        scan.records.append(Record(sid, img, (masks[sid],), "binary"))
        folder = str(img.parent.relative_to(root)).lower()
        for key, word in _ISIC_SPLITS:
            if word in folder:
                split[key].append(sid)
                break
    scan.problems += [(str(m), "mask without image") for s, m in sorted(masks.items()) if s not in images]
    if sum(len(v) for v in split.values()) == len(scan.records) and split["train"] and split["test"]:
        scan.split = split
    return scan


def detect_ph2(root: Path) -> bool:
    return any(root.rglob("*_Dermoscopic_Image"))


def scan_ph2(root: Path) -> Scan:
    """PH2: ``IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp`` + ``IMDnnn/IMDnnn_lesion/IMDnnn_lesion.bmp``."""
    scan = Scan()
    for img_dir in sorted(root.rglob("*_Dermoscopic_Image")):
        sid = img_dir.name[: -len("_Dermoscopic_Image")]
        imgs = [p for p in img_dir.iterdir() if _is_image(p)]
        lesion = img_dir.parent / f"{sid}_lesion"
        masks = [p for p in lesion.iterdir() if _is_image(p)] if lesion.is_dir() else []
        if not imgs:
            scan.problems.append((str(img_dir), "folder without image"))
        elif not masks:
            scan.problems.append((str(imgs[0]), "image without mask"))
        else:
            scan.records.append(Record(sid, imgs[0], (masks[0],), "binary"))
    return scan


_BUSI = re.compile(r"^(benign|malignant|normal) \((\d+)\)(_mask(?:_(\d+))?)?\.png$", re.I)


def detect_busi(root: Path) -> bool:
    return any(_BUSI.match(p.name) for p in root.rglob("* (*)_mask.png"))


def scan_busi(root: Path) -> Scan:
    """BUSI: ``benign (12).png`` + ``benign (12)_mask.png`` (+ ``_mask_1.png`` ... merged by OR).

    Ids are normalised to ``benign_012`` so that a split made for the normalised copy applies.
    """
    scan = Scan()
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*.png")):
        m = _BUSI.match(p.name)
        if not m:
            continue
        sid = f"{m.group(1).lower()}_{int(m.group(2)):03d}"
        if m.group(3):
            masks.setdefault(sid, []).append(p)
        else:
            images[sid] = p
    for sid, img in sorted(images.items()):
        if sid not in masks:
            scan.problems.append((str(img), "image without mask"))
            continue
        scan.records.append(Record(sid, img, tuple(sorted(masks[sid])), "binary", {"class": sid.split("_")[0]}))
    scan.problems += [(str(ms[0]), "mask without image") for s, ms in sorted(masks.items()) if s not in images]
    return scan


_HC18_ANN = re.compile(r"^(\d+(?:_\d+)?_?\d*HC)_Annotation\.png$", re.I)


def detect_hc18(root: Path) -> bool:
    return any(root.rglob("*HC_Annotation.png"))


def scan_hc18(root: Path) -> Scan:
    """HC18: ``NNN_HC.png`` + ``NNN_HC_Annotation.png`` (ellipse outline, filled on load)."""
    scan = Scan()
    anns = {p.name[: -len("_Annotation.png")]: p for p in root.rglob("*HC_Annotation.png")}
    for img in sorted(root.rglob("*HC.png")):
        sid = img.stem
        if sid not in anns:
            scan.problems.append((str(img), "image without annotation"))
            continue
        scan.records.append(Record(sid, img, (anns[sid],), "outline"))
    images = {p.stem for p in root.rglob("*HC.png")}
    scan.problems += [(str(a), "annotation without image") for s, a in sorted(anns.items()) if s not in images]
    return scan


# --------------------------------------------------------------------------- manifests
MANIFEST_EXTS = (".csv", ".jsonl")


def scan_manifest(path: Path) -> Scan:
    """A CSV (columns ``image,mask[,split][,id]``) or JSONL (one ``{"image", "mask", "split"?, "id"?}``
    per line) listing image/mask pairs; relative paths are relative to the manifest's folder. Nothing
    is listed or opened on disk here, so millions of files cost one read of the manifest. A ``split``
    column gives the split; ``id`` defaults to the image path relative to the manifest, minus suffix."""
    import csv
    import json

    base = path.parent
    rows: list[dict] = []
    scan = Scan()
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"image", "mask"} <= set(reader.fieldnames or []):
                raise ValueError(f"manifest {path} needs the columns image,mask (got {reader.fieldnames})")
            rows = list(reader)
    else:
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                scan.problems.append((f"{path}:{i}", "manifest line is not valid JSON"))
                continue
            if not isinstance(row, dict) or "image" not in row or "mask" not in row:
                scan.problems.append((f"{path}:{i}", "manifest line needs 'image' and 'mask'"))
                continue
            rows.append(row)
    split: dict[str, list[str]] = {}
    seen: set[str] = set()
    for row in rows:
        img, msk = Path(row["image"]), Path(row["mask"])
        img, msk = (img if img.is_absolute() else base / img), (msk if msk.is_absolute() else base / msk)
        sid = str(row.get("id") or Path(row["image"]).with_suffix("").as_posix())
        if sid in seen:
            scan.problems.append((str(img), f"the manifest lists the id {sid!r} twice"))
            continue
        seen.add(sid)
        scan.records.append(Record(sid, img, (msk,), _mask_kind_for(msk)))
        if row.get("split"):
            split.setdefault(str(row["split"]), []).append(sid)
    scan.split = split or None
    return scan
