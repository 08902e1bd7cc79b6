"""Helpers shared by the benchmark scripts: where the shared data is, writing results."""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SHARED_DATA = Path(os.environ.get("SAMDISTILL_SHARED_DATA", ROOT.parent.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "images").is_dir():
        raise SystemExit(f"dataset {name} not found at {path}; set SAMDISTILL_SHARED_DATA to the folder holding it")
    return path


def data_note(data: Path) -> str:
    """The first line of the dataset's SOURCE.md when it is a copy (benchmarks/shrink_dataset.py), else ''."""
    src = data / "SOURCE.md"
    line = src.read_text().splitlines()[0] if src.is_file() else ""
    return line if line.startswith("Copy of") else ""


def write_results(stem: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{stem}.md").write_text(markdown)
    print(f"wrote {RESULTS / (stem + '.json')} and .md")
