"""Make a smaller copy of a shared dataset (images/ + masks/ + split.json) for moving it to another machine.

Images are resized so their longest side is at most ``--max-side`` (Lanczos) and saved as JPEG
(``--quality``); masks are resized with nearest neighbour and saved as PNG; split.json is copied.
Only images named in split.json are kept. The LiteMedSAM teacher and the students work at 256 px, so a
512 px copy changes their inputs little, but metrics computed "at the original resolution" are then at
the copy's resolution (HD95 in its pixels): results on such a copy say so.

    python benchmarks/shrink_dataset.py ../shared/data/kvasir_seg /tmp/kvasir_512 --max-side 512
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from PIL import Image


def shrink(src: Path, dst: Path, max_side: int, quality: int, limit: int | None = None) -> dict:
    split = json.loads((src / "split.json").read_text())
    if limit:  # the first `limit` ids of each split (smoke runs)
        split = {k: v[:limit] for k, v in split.items()}
    ids = {i for v in split.values() for i in v}
    images = {p.stem: p for p in (src / "images").iterdir() if p.stem in ids}
    masks = {p.stem: p for p in (src / "masks").iterdir() if p.stem in ids}
    missing = sorted(ids - (set(images) & set(masks)))
    if missing:
        raise SystemExit(f"{len(missing)} split ids have no image/mask in {src}, e.g. {missing[0]}")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    for sid in sorted(ids):
        img = Image.open(images[sid]).convert("RGB")
        scale = min(1.0, max_side / max(img.size))
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img.resize(size, Image.LANCZOS).save(dst / "images" / f"{sid}.jpg", quality=quality)
        m = Image.open(masks[sid]).convert("L")
        m = m.point(lambda v: 255 if v >= 128 else 0)  # binarise first (JPEG masks are noisy)
        m.resize(size, Image.NEAREST).save(dst / "masks" / f"{sid}.png")
    (dst / "split.json").write_text(json.dumps(split, indent=1))
    subset = f", first {limit} ids of each split" if limit else ""
    (dst / "SOURCE.md").write_text(f"Copy of {src.name} made by benchmarks/shrink_dataset.py: longest side <= {max_side} px, "
                                   f"JPEG quality {quality}, masks nearest-neighbour PNG{subset}.\n")
    return {"n": len(ids), "max_side": max_side, "quality": quality, "limit": limit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--limit", type=int, default=None, help="keep only the first N ids of each split (smoke runs)")
    a = ap.parse_args()
    if not (a.src / "split.json").is_file():
        raise SystemExit(f"{a.src} has no split.json")
    print(shrink(a.src, a.dst, a.max_side, a.quality, a.limit))


if __name__ == "__main__":
    main()
