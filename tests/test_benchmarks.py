"""benchmarks/: the shared Markdown table renderer, and every committed results .md is what its script's
renderer makes of the committed .json (so a results file can be re-rendered without rerunning a benchmark).

The scripts run as ``python benchmarks/<name>.py`` (their folder is then sys.path[0]); the tests load them the
same way, with that folder prepended for the duration of the test.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = BENCH / "results"


def _script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_markdown_table_on_a_hand_made_table(monkeypatch):
    common = _script("_common", monkeypatch)
    table = common.markdown_table([["teacher", "0.9320", 9.79, None], ["ellipse in box", "0.8410", "", ""]],
                                  ["model", "Dice", "params M", "enc ms"])
    assert table == ("| model | Dice | params M | enc ms |\n"
                     "|---|---|---|---|\n"
                     "| teacher | 0.9320 | 9.79 | |\n"
                     "| ellipse in box | 0.8410 | | |")
    assert common.markdown_table([], ["", "mean Dice"]) == "| | mean Dice |\n|---|---|"
    with pytest.raises(ValueError, match="row 1 has 1 cells for 2 columns"):
        common.markdown_table([["a", "b"], ["c"]], ["x", "y"])


# written by an older renderer than today's; re-rendering them would change the committed file, so they stay as
# they were written: kdsam_cache_speed (before the neck-width sentence), bench_hc18 / bench_kvasir_seg (before
# bench's mAP and peak-memory columns), litemedsam_reference_kvasir_seg (its reference was scored with a numpy Dice
# and samdistill's with MONAI's, as its table says; the script now scores both with the one Dice)
OLDER_RENDERER = {"kdsam_cache_speed", "bench_hc18", "bench_kvasir_seg", "litemedsam_reference_kvasir_seg"}


def _committed(pattern: str, keep=lambda stem: True) -> list[str]:
    return sorted(p.stem for p in RESULTS.glob(pattern) if keep(p.stem) and p.stem not in OLDER_RENDERER
                  and p.with_suffix(".md").exists())


CASES = (
    [("kdsam", "speed_markdown", s) for s in _committed("kdsam_cache_speed*.json")]
    + [("kdsam", "markdown", s) for s in _committed("kdsam_*.json", lambda s: not s.startswith("kdsam_cache_speed"))]
    + [("knowsam", "rows_markdown", s) for s in _committed("knowsam_*_rows*.json")]
    + [("knowsam", "markdown", s) for s in _committed("knowsam_*.json", lambda s: "_rows" not in s)]
    + [("teachers", "markdown", s) for s in _committed("teachers.json")]
    + [("litemedsam_reference", "markdown", s) for s in _committed("litemedsam_reference_*.json")]
    + [("deploy", "markdown", s) for s in _committed("bench_*.json")]
    + [("student", "markdown", s) for s in _committed("student_*.json")]
)


def test_every_results_family_is_covered():
    assert {script for script, _, _ in CASES} == {"kdsam", "knowsam", "teachers", "deploy"}
    assert len(CASES) >= 20


@pytest.mark.parametrize(("script", "renderer", "stem"), CASES, ids=[c[2] for c in CASES])
def test_committed_markdown_is_the_render_of_its_json(script, renderer, stem, monkeypatch):
    render = getattr(_script(script, monkeypatch), renderer)
    payload = json.loads((RESULTS / f"{stem}.json").read_text())
    assert render(payload) == (RESULTS / f"{stem}.md").read_text()


def test_committed_nas_results_are_the_report_of_their_json(monkeypatch):
    nas = _script("nas", monkeypatch)
    written = {}
    monkeypatch.setattr(nas, "write_results", lambda stem, payload, md: written.update({stem: (payload, md)}))
    nas.report(json.loads((RESULTS / "nas_kvasir.json").read_text()))
    payload, md = written["nas_kvasir"]
    assert md == (RESULTS / "nas_kvasir.md").read_text()
    assert payload == json.loads((RESULTS / "nas_kvasir.json").read_text())  # the targets it recomputes: the same


def test_litemedsam_reference_renders_its_committed_json_but_for_the_dice_labels(monkeypatch):
    render = _script("litemedsam_reference", monkeypatch).markdown
    stem = "litemedsam_reference_kvasir_seg"
    md = render(json.loads((RESULTS / f"{stem}.json").read_text()))
    then = md.replace("| reference (official recipe) |", "| reference (official recipe, numpy Dice) |").replace(
        "| samdistill eval |", "| samdistill eval (MONAI Dice) |")
    assert md != then and then == (RESULTS / f"{stem}.md").read_text()


def test_results_name_no_absolute_path_of_a_machine(monkeypatch):
    import re
    import tempfile

    common = _script("_common", monkeypatch)
    repo = str(BENCH.parent.resolve())
    text = f'{{"a": "{repo}/benchmarks/results/runs/x/student.pt", "b": "{common.SHARED_DATA.resolve()}/busi", ' \
           f'"c": "{Path(tempfile.gettempdir()).resolve()}/s/x.png"}}'
    assert common.portable(text) == '{"a": "benchmarks/results/runs/x/student.pt", "b": "../shared/data/busi", ' \
                                    '"c": "<tmp>/s/x.png"}'
    absolute = re.compile(r'"(/(?:work|tmp|root|home)/[^"]*)"|`(/(?:work|tmp|root|home)/[^`]*)`')
    found = {p.name: m.group(0) for p in sorted((BENCH / "results").glob("*")) if p.suffix in (".json", ".md")
             for m in [absolute.search(p.read_text())] if m}
    assert not found, found
