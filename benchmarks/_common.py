"""Helpers shared by the benchmark scripts: where the shared data is, result tables, writing results.

The scripts run as ``python benchmarks/<name>.py``, so this folder is ``sys.path[0]`` and ``import _common``
finds this file; nothing else imports the scripts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

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


def device_tag(device: str) -> str:
    """``_gpu`` for runs on a GPU (their own run dirs and results files), ``''`` on the CPU."""
    return "_gpu" if device != "cpu" else ""


def throughput(run_dir: Path) -> dict:
    """Training throughput of each phase from the run's metrics.csv: images / training seconds over all its
    epochs (validation excluded), and of its first epoch alone (warm-up, cuDNN autotuning)."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for phase in dict.fromkeys(r["phase"] for r in rows):
        rs = [r for r in rows if r["phase"] == phase]
        secs = [float(r["train_seconds"]) for r in rs]
        imgs = [float(r["images_per_s"]) * s for r, s in zip(rs, secs)]
        out[phase] = {"epochs": len(rs), "images": sum(imgs), "train_seconds": sum(secs),
                      "images_per_s": sum(imgs) / sum(secs), "first_epoch_images_per_s": float(rs[0]["images_per_s"]),
                      "later_epochs_images_per_s": (sum(imgs[1:]) / sum(secs[1:])) if len(rs) > 1 else None}
    return out


def threads_used(run_dir: Path) -> str:
    """The torch threads a run's epochs trained on, from its metrics.csv: ``"1"``, ``"1, 2"`` (resumed on more
    threads), ``"1, 2 (epochs before 7 not recorded)"``; a run whose epochs all predate that column: its last
    training call's, from config.yaml, ``"2 (last call)"``."""
    import csv

    import yaml

    with open(run_dir / "metrics.csv", newline="") as fh:
        per_epoch = [r.get("threads") for r in csv.DictReader(fh)]
    known = [int(t) for t in per_epoch if t not in (None, "")]
    if not known:
        return f"{yaml.safe_load((run_dir / 'config.yaml').read_text())['threads']} (last call)"
    text = ", ".join(map(str, dict.fromkeys(known)))
    first = next(i for i, t in enumerate(per_epoch) if t not in (None, ""))
    return text + (f" (epochs before {first + 1} not recorded)" if first else "")


def rows_carry_threads(rows: Iterable[dict]) -> bool:
    """Whether a results file's rows state their own torch threads (:func:`threads_used`; files written before
    that state them per file)."""
    return any("threads" in x for x in rows)


def markdown_table(rows: Iterable[Sequence[Any]], columns: Sequence[str]) -> str:
    """A Markdown table (no trailing newline): the header, ``|---|`` separators, one line per row.

    Cells are written with ``str`` (format numbers before: each table states its own precision); ``None`` or
    ``""`` is an empty cell (``| |``). A row with another number of cells than ``columns`` is a ValueError.
    """
    def line(cells: Sequence[Any]) -> str:
        text = ["" if c is None else str(c) for c in cells]
        return "|" + "|".join(f" {t} " if t else " " for t in text) + "|"

    out = [line(columns), "|" + "|".join("---" for _ in columns) + "|"]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells for {len(columns)} columns: {list(row)}")
        out.append(line(row))
    return "\n".join(out)


def render_only(stems: Iterable[str], markdown: Callable[[dict], str]) -> None:
    """Rewrite ``results/<stem>.md`` from ``results/<stem>.json`` for each stem (no benchmark runs)."""
    for stem in stems:
        payload = json.loads((RESULTS / f"{stem}.json").read_text())
        (RESULTS / f"{stem}.md").write_text(markdown(payload))
        print(f"rendered {RESULTS / (stem + '.md')} from its .json")


def portable(text: str) -> str:
    """``text`` with this machine's absolute paths made portable: the repository root becomes a path relative
    to it, the shared data folder ``../shared/data``, the temp folder ``<tmp>``. Results name runs and data so
    that they read the same on any checkout."""
    import tempfile

    repo = str(ROOT.parent.resolve())
    for prefix, to in ((str(SHARED_DATA.resolve()), "../shared/data"), (repo + "/", ""), (repo, "."),
                       (str(Path(tempfile.gettempdir()).resolve()), "<tmp>")):
        text = text.replace(prefix, to)
    return text


def write_results(stem: str, payload: dict, markdown: str) -> None:
    """``results/<stem>.json`` and ``.md``, with no absolute path of this machine in either (:func:`portable`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(portable(json.dumps(payload, indent=2)))
    (RESULTS / f"{stem}.md").write_text(portable(markdown))
    print(f"wrote {RESULTS / (stem + '.json')} and .md")


def machine_line(machine: dict, threads: int | str) -> str:
    """The results' closing sentence on where they were measured (``threads``: a count, or words such as
    ``"per-row torch"`` where a table states each row's)."""
    return (f"Machine: {machine.get('cpu', '')}, {machine.get('cores', '')} cores, {threads} threads, "
            f"torch {machine.get('torch', '')}.")


def dataset_main(doc: str, prefix: str, run: Callable[[Any], dict], markdown: Callable[[dict], str], *,
                 limit: int | None, limit_help: str, add_arguments: Callable[[Any], None] = lambda ap: None) -> None:
    """The command line of a one-dataset benchmark writing ``results/<prefix>_<dataset>.{json,md}``:
    ``--dataset``, ``--threads``, ``--limit``, ``--quiet``, ``--render-only`` (+ ``add_arguments``)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=f"Example: python benchmarks/{prefix}.py --dataset kvasir_seg")
    ap.add_argument("--dataset", default="kvasir_seg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=limit, help=limit_help)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md files from the .json files")
    add_arguments(ap)
    args = ap.parse_args()
    if args.render_only:
        render_only(sorted(p.stem for p in RESULTS.glob(f"{prefix}_*.json")), markdown)
        return
    r = run(args)
    write_results(f"{prefix}_{args.dataset}", r, markdown(r))
