"""benchmarks/: the shared Markdown table renderer, and every committed results .md is what its script's
renderer makes of the committed .json (so a results file can be re-rendered without rerunning a benchmark).

The scripts run as ``python benchmarks/<name>.py`` (their folder is then sys.path[0]); the tests load them the
same way, with that folder prepended for the duration of the test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
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
    + [("knowsam", "speed_markdown", s) for s in _committed("knowsam_*_speed*.json")]
    + [("knowsam", "markdown", s) for s in _committed("knowsam_*.json", lambda s: "_rows" not in s and "_speed" not in s)]
    + [("teachers", "markdown", s) for s in _committed("teachers.json")]
    + [("litemedsam_reference", "markdown", s) for s in _committed("litemedsam_reference_*.json")]
    + [("deploy", "markdown", s) for s in _committed("bench_*.json")]
    + [("student", "markdown", s) for s in _committed("student_*.json",
                                                      lambda s: "_ablations" not in s and "_valgap" not in s)]
    + [("student", "ablation_markdown", s) for s in _committed("student_*_ablations*.json")]
    + [("student", "valgap_markdown", s) for s in _committed("student_*_valgap*.json")]
    + [("int8", "markdown", s) for s in _committed("int8_*.json")]
    + [("grid", "markdown", s) for s in _committed("grid_*.json")]
    + [("zoom", "markdown", s) for s in _committed("zoom_*.json")]
)


def test_every_results_family_is_covered():
    assert {script for script, _, _ in CASES} == {"kdsam", "knowsam", "teachers", "deploy", "student", "int8", "grid",
                                                  "zoom"}
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


# ------------------------------------------------------------------ knowsam: the step-budget protocol (issue 24)
def test_knowsam_convergence_rule_on_hand_made_curves(monkeypatch):
    ks = _script("knowsam", monkeypatch)
    flat = [(100, 0.3), (200, 0.6)] + [(100 * i, 0.70 + 0.001 * i) for i in range(3, 11)]  # +0.002 in the last 20 %
    c = ks.convergence(flat, 1000)
    assert c["converged"] and c["gain"] == pytest.approx(0.002) and c["tail_from_step"] == 800 and c["val_points"] == 10
    rising = flat[:8] + [(900, 0.75), (1000, 0.72)]  # the best of the tail gains 0.042 over the best before
    c = ks.convergence(rising, 1000)
    assert not c["converged"] and c["gain"] == pytest.approx(0.75 - 0.708)
    noisy_dip = flat[:8] + [(900, 0.60), (1000, 0.705)]  # worse in the tail: no gain, converged
    assert ks.convergence(noisy_dip, 1000)["converged"]
    stuck = ks.convergence([(100 * i, 0.0) for i in range(1, 11)], 1000)  # flat at 0: never learned
    assert stuck["gain"] == 0 and not stuck["converged"] and "not learning" in stuck["reason"]
    few = ks.convergence(flat[:9], 1000)  # 9 points: not assessable, never "converged"
    assert not few["converged"] and few["gain"] is None and ">= 10" in few["reason"]


def test_knowsam_targets_and_protocol_render(monkeypatch):
    ks = _script("knowsam", monkeypatch)
    dice = {"a": 0.60, "b": 0.68, "c": 0.75, "d": 0.65, "e": 0.70}
    rows = [{"run": k, "seed": s, "dice": v + 0.01 * s, "iou": v - 0.1, "hd95": 40.0, "n": 200, "steps": 4000,
             "train_minutes": 60.0, "images_per_s": 4.5, "device": "cpu"} for s in (0, 1) for k, v in dice.items()]
    t = ks.targets(rows, {"0": True, "1": False})
    assert t["mean_dice"]["c"] == pytest.approx(0.755) and t["c_minus_a"]["value"] == pytest.approx(0.15)
    assert t["c_minus_a"]["met"] and not t["c_converged"]["met"]  # one seed not converged: the target is missed
    assert t["gap_closed"]["value"] == pytest.approx(0.08 / 0.15) and t["gap_closed"]["met"]
    assert t["b_minus_d"]["met"] and t["e_minus_d"]["met"]
    assert not ks.targets([x for x in rows if x["run"] != "e"], {"0": True})["e_minus_d"]["met"]  # (e) missing
    runs = {f"{x['run']}_seed{x['seed']}": {"variant": ks.VARIANTS["abcde".index(x["run"])], "n_labeled": 70,
                                            "n_unlabeled": 630, "config": {"batch_size": 8}, "resumed": x["run"] == "b"}
            for x in rows}
    conv = {"0": ks.convergence([(400, 0.2)] + [(400 * i, 0.7) for i in range(2, 11)], 4000),
            "1": ks.convergence([], 4000)}
    r = {"dataset": "kvasir_seg", "machine": "cpu x", "rows": rows, "runs": runs, "targets": t, "convergence": conv,
         "c_converged": {"0": True, "1": False}, "c_curve": "knowsam_kvasir_seg_c_curve.png", "labeled": 0.1,
         "threads": 2, "sam_decode": "foreground", "adapters": "none", "kd_rampup": 0.4, "input_size": 128,
         "max_steps": 4000, "smoke": False, "gpu": None, "data_note": "", "wall_seconds": 60.0,
         "teacher": {"dice": 0.93, "iou": 0.88, "hd95": 20.0, "source": "x"}}
    md = ks.markdown(r)
    assert "(e) Mean Teacher + SKD" in md and "| (b) KnowSAM* | 1 |" in md
    assert "- (c) converged by the rule: NOT met" in md and "(b - a) / (c - a) = 0.53 -> met" in md
    assert "- seed 0: gain +0.0000 over steps 3200-4000 (10 validation points) -> converged" in md
    assert "- seed 1: not assessable" in md


def test_knowsam_combine_takes_the_targets_on_the_mean_over_seed_files(monkeypatch, tmp_path):
    """--combine: one comparison per seed, each at its own step budget, the targets on the mean Dice; a seed in two
    files, a rows file or one file alone is refused."""
    ks = _script("knowsam", monkeypatch)
    monkeypatch.setattr(ks, "RESULTS", tmp_path)

    def comparison(stem, seed, steps, dice, converged):
        rows = [{"run": k, "seed": seed, "dice": v, "iou": v - 0.1, "hd95": 40.0, "n": 200, "steps": steps,
                 "train_minutes": 60.0, "images_per_s": 4.5, "device": "cpu"} for k, v in dice.items()]
        conv = {str(seed): {"val_points": 12, "tail_from_step": int(0.8 * steps), "steps": steps,
                            "gain": 0.0 if converged else 0.05, "converged": converged, "reason": ""}}
        r = {"dataset": "kvasir_seg", "machine": f"cpu {seed}", "rows": rows, "runs": {}, "convergence": conv,
             "c_converged": {str(seed): converged}, "targets": ks.targets(rows, {str(seed): converged}),
             "c_curve": f"{stem}_c_curve.png", "labeled": 0.1, "input_size": 128, "adapters": "none", "gpu": None,
             "max_steps": steps, "smoke": False, "teacher": {"dice": 0.93}, "written": "then"}
        (tmp_path / f"{stem}.json").write_text(json.dumps(r))

    comparison("s0", 0, 4000, {"a": 0.60, "b": 0.72, "c": 0.76, "d": 0.70, "e": 0.74}, True)
    comparison("s1", 1, 6000, {"a": 0.56, "b": 0.66, "c": 0.78, "d": 0.68, "e": 0.70}, True)
    r = ks.combined_results(["s0", "s1"])
    t = r["targets"]
    assert t["mean_dice"]["b"] == pytest.approx(0.69) and t["c_minus_a"]["value"] == pytest.approx(0.19)
    assert t["b_minus_d"]["value"] == pytest.approx(-0.0) and not t["b_minus_d"]["met"]  # 0.69 vs 0.69: not >
    assert r["per_seed_targets"]["0"]["b_minus_d"]["met"] and not r["per_seed_targets"]["1"]["b_minus_d"]["met"]
    assert [x["steps"] for x in r["rows"] if x["run"] == "a"] == [4000, 6000]
    assert {x["machine"] for x in r["rows"]} == {"cpu 0", "cpu 1"}
    md = ks.markdown(r)
    assert "| (b) KnowSAM | 1 | 6000 | 60.0 | cpu 1 | 4.50 | 0.6600 |" in md and "- (b) > (d): +0.0000 -> NOT met" in md
    comparison("s1b", 1, 6000, {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.5}, False)
    with pytest.raises(SystemExit, match="seed 1 is in both s1 and s1b"):
        ks.combined_results(["s0", "s1", "s1b"])
    with pytest.raises(SystemExit, match="two or more"):
        ks.combined_results(["s0"])
    (tmp_path / "s0_rows.json").write_text((tmp_path / "s1b.json").read_text())
    with pytest.raises(SystemExit, match="not a comparison"):
        ks.combined_results(["s0", "s0_rows"])


def test_knowsam_curve_png_is_written(monkeypatch, tmp_path):
    ks = _script("knowsam", monkeypatch)
    curve = [(100 * i, 0.5 + 0.02 * i) for i in range(1, 11)]
    ks.plot_c_curves({"0": curve}, {"0": ks.convergence(curve, 1000)}, tmp_path / "c.png", title="t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_knowsam_rows_file_of_the_step_budget_reports_c_convergence(monkeypatch, tmp_path):
    """--train-only rows of the step-budget protocol: training minutes, images/s and (c)'s convergence (and its
    curve) before all five rows exist; a rows file written before the step budget keeps its old table."""
    ks = _script("knowsam", monkeypatch)

    def row(variant, curve):
        return {"variant": variant, "run": ks.RUN[variant], "seed": 0, "n_labeled": 70, "n_unlabeled": 0, "steps": 1000,
                "epochs": 3, "config": {"batch_size": 4}, "train_seconds": 1800.0, "throughput": 5.25, "val_curve": curve,
                "test": {"dice": 0.7, "iou": 0.6, "hd95": 30.0}}

    rising = [(100 * i, 0.3 + 0.04 * i) for i in range(1, 11)]  # +0.08 in the last 20 %: not converged
    runs = {"supervised": row("supervised", rising[:3]), "all_labels": row("all_labels", rising)}

    class Args:
        max_steps, smoke, device, precision = 1000, False, "cpu", "auto"
    conv = ks.c_convergence("kvasir_seg", runs, Args, tmp_path / "c.png")
    assert list(conv) == ["0"] and not conv["0"]["converged"] and conv["0"]["gain"] == pytest.approx(0.08)
    assert (tmp_path / "c.png").exists()  # drawn from (c) alone: (a)'s curve is not a convergence question
    r = {"dataset": "kvasir_seg", "seed": "0", "runs": runs, "machine": "cpu x", "threads": 1, "max_steps": 1000,
         "convergence": conv, "c_curve": "c.png"}
    md = ks.rows_markdown(r)
    assert "| (c) all labels (upper bound) | 0 | 70 / 0 | 1000 (batch 4) | 30.0 | 5.25 | 0.7000 |" in md
    assert md.index("(a) labeled subset alone") < md.index("(c) all labels")
    assert "- seed 0: gain +0.0800 over steps 800-1000 (10 validation points) -> NOT converged" in md
    # the targets the rows so far decide, by the comparison's own rule; the others wait for their rows
    r["runs"]["all_labels"]["test"] = {"dice": 0.8, "iou": 0.7, "hd95": 20.0}
    md = ks.rows_markdown({**r, "c_converged": {"0": False}})
    assert "- (c) - (a) >= 0.10: +0.1000 -> met" in md and "- (c) converged by the rule: NOT met" in md
    assert "- (b) > (d): - -> waits for its rows" in md
    assert "Targets" not in ks.rows_markdown({**r, "runs": {"all_labels": runs["all_labels"]}})  # one row decides nothing
    old = ks.rows_markdown({k: v for k, v in r.items() if k not in ("max_steps", "convergence")})
    assert "| supervised | 1000 (3) | 4 | 0.7000 |" in old and "Convergence" not in old
    assert not ks.c_convergence("kvasir_seg", {"supervised": runs["supervised"]}, Args, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_knowsam_reuses_a_row_of_the_same_seed_and_config_only(monkeypatch, tmp_path):
    """The comparison of seed 1 takes (c) from seed 1's --train-only rows file (its run dir may be gone), never a
    row of another seed or of another step budget; the seeds a file holds come from its name."""
    ks = _script("knowsam", monkeypatch)
    assert ks.file_seeds("knowsam_kvasir_seg") == [0] and ks.file_seeds("knowsam_kvasir_seg_seed1") == [1]
    assert ks.file_seeds("knowsam_kvasir_seg_steps6000_rows_seed0_1_gpu") == [0, 1]
    now = {"max_steps": 6000, "labeled": 1.0}

    class Cfg:
        @staticmethod
        def model_dump(mode):
            return dict(now)
    monkeypatch.setattr(ks, "RESULTS", tmp_path)
    monkeypatch.setattr(ks, "variant_config", lambda name, data, variant, args, seed=0: (0, None))
    monkeypatch.setattr(ks, "section", lambda cfg: Cfg)
    monkeypatch.setattr(ks, "data_note", lambda data: "")

    class Args:
        device, precision, max_steps, smoke = "cpu", "auto", 6000, False

    def row(seed, steps, dice):
        return {"variant": "all_labels", "run": "c", "seed": seed, "config": {**now, "max_steps": steps},
                "test": {"dice": dice}}
    (tmp_path / "knowsam_kvasir_seg.json").write_text(json.dumps(  # seed 0's comparison, 4000 steps
        {"rows": [], "runs": {"c_seed0": row(0, 4000, 0.75)}}))
    (tmp_path / "knowsam_kvasir_seg_steps6000_rows.json").write_text(json.dumps(
        {"runs": {"all_labels": row(0, 6000, 0.76)}, "written": "w0"}))
    with pytest.raises(SystemExit, match=r"no earlier \(all_labels\) run of seed 1"):
        ks.reused_variant("kvasir_seg", None, "all_labels", Args, seed=1)  # seed 0's rows are not seed 1's
    (tmp_path / "knowsam_kvasir_seg_steps6000_rows_seed1.json").write_text(json.dumps(
        {"runs": {"all_labels_seed1": row(1, 6000, 0.78)}, "written": "w1", "machine": "cpu x"}))
    got = ks.reused_variant("kvasir_seg", None, "all_labels", Args, seed=1)
    assert got["test"]["dice"] == 0.78 and got["reused_from"].startswith("knowsam_kvasir_seg_steps6000_rows_seed1.json")
    assert "file written w1" in got["reused_from"]  # a row from before rows recorded when they were trained
    (tmp_path / "knowsam_kvasir_seg_steps6000_rows_seed1.json").write_text(json.dumps(
        {"runs": {"all_labels_seed1": {**row(1, 6000, 0.78), "trained": "t1"}}, "written": "w1", "machine": "cpu x"}))
    got = ks.reused_variant("kvasir_seg", None, "all_labels", Args, seed=1)
    assert "trained t1" in got["reused_from"] and "w1" not in got["reused_from"]  # its own time, not the file's
    assert ks.reused_variant("kvasir_seg", None, "all_labels", Args, seed=0)["test"]["dice"] == 0.76
    now["max_steps"] = 4000  # the seed-0 comparison's budget: its own row
    assert ks.reused_variant("kvasir_seg", None, "all_labels", Args, seed=0)["test"]["dice"] == 0.75
    with pytest.raises(SystemExit, match="differs in"):
        ks.reused_variant("kvasir_seg", None, "all_labels", Args, seed=1)


def test_knowsam_rows_of_other_machines_keep_their_machine_and_get_a_column(monkeypatch):
    """A rows file written on another CPU than an earlier row's: that row keeps its machine, and the table
    names each row's; rows of one machine keep the one-line header."""
    ks = _script("knowsam", monkeypatch)

    def row(variant, machine=None):
        x = {"variant": variant, "run": ks.RUN[variant], "seed": 1, "n_labeled": 70, "n_unlabeled": 0, "steps": 6000,
             "config": {"batch_size": 4}, "train_seconds": 600.0, "throughput": 5.0,
             "test": {"dice": 0.7, "iou": 0.6, "hd95": 30.0}}
        return x if machine is None else {**x, "machine": machine}
    prev = {"machine": "Intel Xeon", "runs": {"all_labels_seed1": row("all_labels"), "supervised_seed1": row("supervised")}}
    rows = ks.merge_rows(prev, {"supervised_seed1": row("supervised", "AMD EPYC")})
    assert rows["all_labels_seed1"]["machine"] == "Intel Xeon" and rows["supervised_seed1"]["machine"] == "AMD EPYC"
    r = {"dataset": "kvasir_seg", "seed": "1", "runs": rows, "machine": "AMD EPYC", "threads": 1, "max_steps": 6000}
    md = ks.rows_markdown(r)
    assert "| (c) all labels (upper bound) | 1 | 70 / 0 | 6000 (batch 4) | 10.0 | Intel Xeon | 5.00 |" in md
    assert "| (a) labeled subset alone | 1 | 70 / 0 | 6000 (batch 4) | 10.0 | AMD EPYC | 5.00 |" in md
    assert "Machine: CPU per row" in md
    one = ks.rows_markdown({**r, "runs": {"supervised_seed1": rows["supervised_seed1"]}})
    assert "Machine: AMD EPYC," in one and "| machine |" not in one


def test_rows_carry_their_own_threads_from_metrics_csv(monkeypatch, tmp_path):
    """A run resumed on other threads says so per row; runs from before the column say they do not know."""
    ks = _script("knowsam", monkeypatch)
    common = _script("_common", monkeypatch)
    run = tmp_path / "run"
    run.mkdir()
    head = "phase,epoch,step,train_seconds,images_per_s"
    (run / "metrics.csv").write_text(f"{head},threads\nk,1,10,5,2\nk,2,20,5,2,1\nk,3,30,5,4,2\nk,4,40,5,4,1\n")
    assert common.threads_used(run) == "1, 2 (epochs before 2 not recorded)"
    (run / "metrics.csv").write_text(f"{head}\nk,1,10,5,2\n")  # a run from before the column: its last call's
    (run / "config.yaml").write_text("method: knowsam\nthreads: 2\n")
    assert common.threads_used(run) == "2 (last call)"

    def row(variant, threads):
        x = {"variant": variant, "run": ks.RUN[variant], "seed": 0, "n_labeled": 70, "n_unlabeled": 0, "steps": 1000,
             "epochs": 3, "config": {"batch_size": 4}, "train_seconds": 1800.0, "throughput": 5.25,
             "test": {"dice": 0.7, "iou": 0.6, "hd95": 30.0}}
        return x if threads is None else {**x, "threads": threads}
    r = {"dataset": "kvasir_seg", "seed": "0", "machine": "cpu x", "threads": 2, "max_steps": 1000,
         "runs": {"supervised": row("supervised", "1"), "knowsam": row("knowsam", "1, 2")}}
    md = ks.rows_markdown(r)
    assert "| (a) labeled subset alone | 0 | 70 / 0 | 1000 (batch 4) | 30.0 | 1 | 5.25 |" in md
    assert "| 30.0 | 1, 2 | 5.25 |" in md and "2 torch threads per run" not in md and "torch threads per row" in md
    old = ks.rows_markdown({**r, "runs": {"supervised": row("supervised", None)}})  # a file from before: as it was
    assert "2 torch threads per run" in old and "| 30.0 | 5.25 |" in old


def test_knowsam_runs_of_another_arithmetic_get_their_own_dirs_and_the_speed_table(monkeypatch):
    ks = _script("knowsam", monkeypatch)

    class Args:
        device, precision, max_steps, smoke = "cpu", "auto", 4000, False
    assert ks.precision_tag(Args) == "" and ks.run_root("kvasir_seg", Args).name == "knowsam_kvasir_seg_steps4000"
    Args.precision = "fp32"  # what auto is on a CPU: the same runs
    assert ks.precision_tag(Args) == ""
    Args.precision = "bf16"
    assert ks.run_root("kvasir_seg", Args).name == "knowsam_kvasir_seg_steps4000_bf16"
    Args.device = "cuda"  # bf16 is what auto is on CUDA; fp32 there is the other arithmetic
    assert ks.precision_tag(Args) == ""
    Args.precision = "fp32"
    assert ks.run_root("kvasir_seg", Args).name == "knowsam_kvasir_seg_steps4000_fp32_gpu"

    rows = [{"variant": v, "run": ks.RUN[v], "precision": p, "steps": 20, "images_per_s": ips, "seconds_per_step": 8 / ips}
            for v, p, ips in [("knowsam", "fp32", 1.5), ("knowsam", "bf16", 3.0), ("supervised", "fp32", 6.0),
                              ("supervised", "bf16", 7.5)]]
    md = ks.speed_markdown({"dataset": "kvasir_seg", "machine": "cpu x", "threads": 1, "device": "cpu", "steps": 20,
                            "input_size": 128, "sam_decode": "foreground", "rows": rows, "written": "today",
                            "load_average": [3.04, 2.96], "variants": ["knowsam", "supervised"], "baseline_batch": 4})
    assert "| (b) KnowSAM | 1.50 | 5.33 | 3.00 | 2.67 | 2.00x |" in md
    assert "| (a) labeled subset alone | 6.00 | 1.33 | 7.50 | 1.07 | 1.25x |" in md
    assert md.index("(b) KnowSAM") < md.index("(a) labeled")  # in the order the runs were timed
    assert "Load average (1 min) at the start / end: 3.0 / 3.0" in md
    assert "`python benchmarks/knowsam.py --datasets kvasir_seg --speed 20 --variants knowsam supervised --threads 1`" in md

    # --speed-base: the older commit's fp32 row comes first and both of today's are divided by it
    base = [{**rows[0], "code": "base", "images_per_s": 0.75, "seconds_per_step": 8 / 0.75}] + rows[:2]
    md = ks.speed_markdown({"dataset": "kvasir_seg", "machine": "cpu x", "threads": 1, "device": "cpu", "steps": 20,
                            "input_size": 128, "sam_decode": "foreground", "rows": base, "written": "today",
                            "variants": ["knowsam"], "baseline_batch": 4, "base": "abc1234 step cuts"})
    assert "| (b) KnowSAM | 0.75 | 10.67 | 1.50 | 5.33 | 3.00 | 2.67 | 2.00x | 2.00x | 4.00x |" in md
    assert "--speed-base abc1234`" in md and 'commit abc1234 ("step cuts")' in md


def test_knowsam_speed_base_passes_only_the_keys_that_differ_from_the_defaults(monkeypatch, tmp_path):
    ks = _script("knowsam", monkeypatch)
    import subprocess

    from samdistill.config import load_config
    seen = {}
    monkeypatch.setattr(subprocess, "run", lambda cmd, env, **kw: seen.update(cmd=cmd, env=env) or
                        subprocess.CompletedProcess(cmd, 0, "", ""))
    cfg = load_config("knowsam", {"knowsam": {"max_steps": 16, "input_size": 128, "unlabeled": False}, "threads": 1})
    ks._distill_at(tmp_path / "src", cfg, tmp_path / "out")
    over = seen["cmd"][seen["cmd"].index(str(tmp_path / "out")) + 1:]
    assert sorted(over) == ["knowsam.input_size=128", "knowsam.max_steps=16", "knowsam.unlabeled=false", "threads=1"]
    assert seen["env"]["PYTHONPATH"] == str(tmp_path / "src")


def test_student_ablations_are_scored_against_the_default_of_the_same_seed(monkeypatch):
    st = _script("student", monkeypatch)
    assert st.ablation_tag(["stage2.feature_kd=1", "precision=bf16"]) == "stage2-feature_kd-1_precision-bf16"
    assert st.ablation_tag(["student.name=a/b"]) == "student-name-a-b"  # never a path separator
    # one setting however it is spelt; checked (and refused in one line) before anything trains
    assert st.canonical_overrides(["stage2.kd=1", "precision=bf16"]) == st.canonical_overrides(
        ["precision=bf16", "stage2.kd=1.0"]) == ["precision=bf16", "stage2.kd=1.0"]
    from samdistill.errors import UserError
    with pytest.raises(UserError, match="did you mean 'stage2.feature_kd'"):
        st.canonical_overrides(["stage2.feature_kdd=1"])
    with pytest.raises(UserError, match="that is the default recipe"):
        st.canonical_overrides(["stage2.kd=0.5"])

    def row(overrides, seed, dice):
        return {"overrides": overrides, "seed": seed, "val_dice": dice, "best_phase": "stage2", "best_epoch": 7,
                "distill_minutes": 50.0, "run": f"benchmarks/results/runs/student_kvasir_seg_s{seed}"}
    rows = [row(["stage2.feature_kd=1"], 0, 0.8400), row([], 0, 0.8320), row(["stage2.feature_kd=1"], 1, 0.8300)]
    md = st.ablation_markdown({"dataset": "kvasir_seg", "machine": {"cpu": "cpu x", "cores": 2, "torch": "2"},
                               "threads": 2, "rows": rows, "written": "today"})
    assert "| default recipe | 0 | 0.8320 | | stage2 epoch 7 | 50.0 |" in md
    assert "| `stage2.feature_kd=1` | 0 | 0.8400 | +0.0080 |" in md
    assert "| `stage2.feature_kd=1` | 1 | 0.8300 | | " in md  # no default of seed 1 to compare with
    assert md.index("default recipe") < md.index("feature_kd")
    assert "2 threads" in md and "torch threads |" not in md  # a file from before rows carried their threads
    rows[0]["threads"] = "1"
    md = st.ablation_markdown({"dataset": "kvasir_seg", "machine": {"cpu": "cpu x", "cores": 2, "torch": "2"},
                               "threads": 2, "rows": rows, "written": "today"})
    assert "| `stage2.feature_kd=1` | 0 | 0.8400 | +0.0080 | stage2 epoch 7 | 50.0 | 1 |" in md
    assert "| default recipe | 0 | 0.8320 | | stage2 epoch 7 | 50.0 | not recorded |" in md
    assert "per-row torch threads" in md and "2 threads" not in md
    rows[1]["student"] = "efficientvit_b1"  # rows written since record the default's student
    md = st.ablation_markdown({"dataset": "kvasir_seg", "machine": {"cpu": "cpu x", "cores": 2, "torch": "2"},
                               "threads": 2, "rows": rows, "written": "today"})
    assert "| default recipe (efficientvit_b1) | 0 | 0.8320 | |" in md


def test_student_ablations_keep_an_earlier_defaults_rows_apart(monkeypatch, tmp_path):
    """After the default changed, its old row stays (labelled earlier) and each setting is compared with the
    default it was run against; running the new default again does not replace the old one's row."""
    st = _script("student", monkeypatch)
    rid = st.default_recipe_id()
    assert len(rid) == 10 and rid == st.default_recipe_id()
    from samdistill.config import load_config
    base = load_config("kdsam").stage1.epochs
    monkeypatch.setattr(st, "default_recipe_id", lambda: "new")

    def row(overrides, dice, recipe):
        return {"overrides": overrides, "seed": 0, "val_dice": dice, "best_phase": "stage2", "best_epoch": 4,
                "distill_minutes": 30.0, "run": "benchmarks/results/runs/x", "student": "efficientvit_b1",
                **({"default_recipe": recipe} if recipe else {})}
    rows = [row([], 0.8942, None), row(["data.zoom=1.5"], 0.9092, None), row([], 0.9092, "old"),
            row(["stage1.min_steps=1760"], 0.9151, "old"), row([], 0.9151, "new"), row(["stage2.kd=1.0"], 0.9101, "new")]
    md = st.ablation_markdown({"dataset": "busi", "machine": {"cpu": "cpu x", "cores": 2, "torch": "2"},
                               "threads": 2, "rows": rows, "written": "today", "default_recipe": "new"})
    assert "| earlier default recipe (efficientvit_b1) | 0 | 0.8942 | |" in md
    assert "| `data.zoom=1.5` | 0 | 0.9092 | +0.0150 * |" in md
    assert "| earlier default recipe (efficientvit_b1), `old` | 0 | 0.9092 | |" in md
    assert "| `stage1.min_steps=1760` | 0 | 0.9151 | +0.0059 |" in md
    assert "| default recipe (efficientvit_b1) | 0 | 0.9151 | |" in md
    assert "| `stage2.kd=1.0` | 0 | 0.9101 | -0.0050 |" in md
    assert md.index("0.8942") < md.index("`old`") < md.index("stage2.kd")  # oldest default first
    # writing: the new default's row joins the file, the old default's row stays
    (tmp_path / "student_busi_ablations.json").write_text(json.dumps({"rows": rows[:4]}))
    monkeypatch.setattr(st, "RESULTS", tmp_path)
    monkeypatch.setattr(st, "write_results", lambda stem, r, md: (tmp_path / f"{stem}.json").write_text(json.dumps(r)))
    monkeypatch.setattr(st, "ablation_row", lambda name, seed, args, extra: row(list(extra), 0.95, "new"))
    st.run_ablation("busi", type("A", (), {"smoke": False, "seeds": [0], "ablate": ["stage2.kd=1.0"], "threads": 2})())
    kept = json.loads((tmp_path / "student_busi_ablations.json").read_text())
    assert [(x["overrides"], x.get("default_recipe")) for x in kept["rows"]] == [
        ([], None), (["data.zoom=1.5"], None), ([], "old"), (["stage1.min_steps=1760"], "old"),
        ([], "new"), (["stage2.kd=1.0"], "new")]
    assert kept["default_recipe"] == "new" and base == load_config("kdsam").stage1.epochs


def test_student_distill_time_counts_every_epoch_of_a_resumed_run(monkeypatch):
    st = _script("student", monkeypatch)
    one_call = {"total_seconds": 100.0, "train_seconds": 90.0, "epoch_seconds": 80.0}  # 10 s validation in it
    assert st.distill_seconds(one_call) == 100.0
    resumed = {"total_seconds": 40.0, "train_seconds": 30.0, "epoch_seconds": 80.0}  # the last call trained 30 of 80
    assert st.distill_seconds(resumed) == 90.0
    assert st.distill_seconds({"total_seconds": 40.0, "train_seconds": 30.0}) == 40.0  # a summary without epochs
    # a summary that counts every call itself is taken as written
    assert st.distill_seconds({**resumed, "total_seconds_all_calls": 97.0}) == 97.0


def test_two_ablations_side_by_side_both_keep_their_rows(monkeypatch, tmp_path):
    """Each call reads the ablations file when it writes, not when it starts: a setting that finished while
    another trained stays in the file."""
    st = _script("student", monkeypatch)
    common = sys.modules["_common"]
    monkeypatch.setattr(st, "RESULTS", tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path)

    def fake_row(name, seed, args, extra):
        if extra == ["a=1"]:  # while "a=1" trains, another call finishes "b=1" and writes the file
            (tmp_path / "student_kvasir_seg_ablations.json").write_text(json.dumps({"rows": [
                {"overrides": ["b=1"], "seed": 0, "val_dice": 0.8}, {"overrides": [], "seed": 0, "val_dice": 0.7}]}))
        return {"overrides": list(extra), "seed": seed, "val_dice": 0.9 if extra else 0.7, "best_phase": "stage2",
                "best_epoch": 1, "distill_minutes": 1.0, "run": "r", "threads": "1"}
    monkeypatch.setattr(st, "ablation_row", fake_row)
    monkeypatch.setattr(st, "ablation_markdown", lambda r: "")

    class Args:
        seeds, smoke, threads, ablate = [0], False, 1, ["a=1"]
    st.run_ablation("kvasir_seg", Args)
    rows = json.loads((tmp_path / "student_kvasir_seg_ablations.json").read_text())["rows"]
    assert sorted((tuple(x["overrides"]), x["val_dice"]) for x in rows) == [((), 0.7), (("a=1",), 0.9), (("b=1",), 0.8)]


def test_student_run_stopped_by_sigterm_says_how_to_resume(monkeypatch, tmp_path):
    """A distill run SIGTERMed mid-way ends the call with one line (it crashed on the missing summary keys, and
    --train-only printed 'distilled' for a student that did not exist)."""
    import samdistill.api

    st = _script("student", monkeypatch)
    monkeypatch.setattr(st, "RESULTS", tmp_path)
    monkeypatch.setattr(samdistill.api, "distill", lambda cfg, out, resume: {"interrupted": True, "reason": "SIGTERM",
                                                                              "step": 2112})

    class Args:
        seeds, smoke, threads, quiet = [0], False, 1, True
    with pytest.raises(SystemExit, match=r"student_kvasir_seg_s0_stage2-feature_kd-1 stopped \(SIGTERM\) after 2112 "
                                         r"steps; call the same command again"):
        st.distill_run("kvasir_seg", 0, Args, ["stage2.feature_kd=1"])


def test_knowsam_run_stopped_by_sigterm_says_how_to_resume(monkeypatch, tmp_path):
    """A run SIGTERMed mid-way (its checkpoint saved) ends the call with one line, not an evaluation of a student
    that does not exist yet."""
    import samdistill.api

    ks = _script("knowsam", monkeypatch)
    monkeypatch.setattr(ks, "variant_config", lambda *a, **k: (26, type("Cfg", (), {"method": "knowsam"})()))
    monkeypatch.setattr(ks, "run_root", lambda name, args: tmp_path)
    monkeypatch.setattr(samdistill.api, "distill", lambda cfg, out, resume: {"interrupted": True, "reason": "SIGTERM",
                                                                              "step": 1784})
    monkeypatch.setattr(samdistill.api, "evaluate_model", lambda *a, **k: pytest.fail("evaluated an unfinished run"))
    with pytest.raises(SystemExit, match=r"\(b\) knowsam stopped \(SIGTERM\) after 1784 steps; call the same command"):
        ks.run_variant("kvasir_seg", tmp_path, "knowsam", object())


def test_student_zoomed_rows_leave_the_targets_on_the_plain_rows(monkeypatch):
    """Zoomed rows are stated beside the targets: adding them changes no target, and their block averages the zoomed
    students against the plain and the zoomed teacher."""
    st = _script("student", monkeypatch)

    def row(model, backend, seed, dice, zoom=None, ms=(100.0, 10.0)):
        return {"model": model, "backend": backend, "seed": seed, "zoom": zoom, "dice": dice, "dice_clicks": [dice] * 4,
                "encoder_gmacs": 1.0, "decoder_gmacs": 1.0, "first_click_ms": ms[0], "next_click_ms": ms[1]}

    plain = [row("teacher", "torch", None, 0.90, ms=(1000.0, 60.0)), row("teacher", "onnx", None, 0.90),
             row("student", "torch", 0, 0.86), row("student", "onnx", 0, 0.86), row("student", "onnx-int8", 0, 0.86),
             row("student", "torch", 1, 0.84)]
    zoomed = [row("teacher", "torch", None, 0.88, 1.5), row("student", "torch", 0, 0.89, 1.5),
              row("student", "torch", 1, 0.87, 1.5)]
    train = {"0": {"train_minutes": 90}, "1": {"train_minutes": 100}}
    base, both = st.targets("kvasir_seg", plain, train), st.targets("kvasir_seg", plain + zoomed, train)
    assert "zoom" not in base and {k: v for k, v in both.items() if k != "zoom"} == base
    assert base["dice_gap"] == pytest.approx(-0.05) and not base["met"]["dice_within_0.015"]
    z = both["zoom"]
    assert z["student_dice_mean_over_seeds"] == pytest.approx(0.88)
    assert z["gap_to_plain_teacher"] == pytest.approx(-0.02) and z["gap_to_zoomed_teacher"] == pytest.approx(0.0)
    assert z["gap_to_best_teacher"] == pytest.approx(-0.02) and z["first_click_speedup"] == pytest.approx(10.0)



def test_student_distilled_on_crops_is_judged_on_its_own_zoomed_rows(monkeypatch):
    """A default student distilled on crops (data.zoom) zooms as Predictor.load gives it: those rows are the shipped
    ones the targets read (labelled with their zoom), and a --zoom teacher row beside them is not."""
    st = _script("student", monkeypatch)

    def row(model, backend, seed, dice, zoom=None, shipped=True, ms=(100.0, 10.0)):
        return {"model": model, "backend": backend, "seed": seed, "zoom": zoom, "shipped": shipped, "dice": dice,
                "dice_clicks": [dice] * 4, "encoder_gmacs": 1.0, "decoder_gmacs": 1.0, "first_click_ms": ms[0],
                "next_click_ms": ms[1]}

    rows = [row("teacher", "torch", None, 0.90, ms=(1000.0, 60.0)), row("teacher", "onnx", None, 0.90),
            row("student", "torch", 0, 0.895, 1.5), row("student", "onnx", 0, 0.895, 1.5),
            row("student", "onnx-int8", 0, 0.893, 1.5), row("student", "torch", 1, 0.885, 1.5),
            row("teacher", "torch", None, 0.80, 1.5, shipped=False, ms=(10.0, 1.0))]
    tg = st.targets("kvasir_seg", rows, {"0": {"train_minutes": 90}, "1": {"train_minutes": 100}})
    assert tg["dice_gap"] == pytest.approx(-0.01) and tg["met"]["dice_within_0.015"]
    assert tg["next_click_speedup"] == pytest.approx(6.0) and "zoom" not in tg  # the plain teacher, no extra block
    assert st._row(rows, "teacher", "torch")["dice"] == 0.90
    assert st._row(rows, "teacher", "torch", shipped=False, zoom=1.5)["dice"] == 0.80

def test_student_2h_target_judges_the_runs_trained_at_the_bench_threads(monkeypatch):
    st = _script("student", monkeypatch)
    train = {"0": {"train_minutes": 134.0, "threads": "1"}, "1": {"train_minutes": 114.7, "threads": "1"},
             "2": {"train_minutes": 79.4, "threads": "2"}}
    assert st.judged_runs(train, 2) == ["2"]
    assert st.judged_runs(train, 1) == ["0", "1"]
    assert st.judged_runs({k: v for k, v in train.items() if k != "2"}, 2) == ["0", "1"]  # none at 2: all judged
    assert st.judged_runs({"0": {"train_minutes": 90, "threads": "1, 2"}}, 2) == ["0"]  # mixed: not wholly at 2


def test_zoom_benchmark_predict_zoomed_sees_the_crop_and_pastes_its_mask_back(monkeypatch):
    import numpy as np

    predict_zoomed = _script("zoom", monkeypatch).predict_zoomed
    seen = {}

    class Model:
        def predict(self, image, boxes):
            seen["shape"], seen["box"] = image.shape, boxes[0].tolist()
            m = np.zeros((1,) + image.shape[:2], bool)
            x0, y0, x1, y1 = boxes[0].astype(int)
            m[0, y0:y1 + 1, x0:x1 + 1] = True
            return m

    image = np.zeros((100, 200, 3), np.uint8)
    box = np.array([40.0, 30.0, 49.0, 49.0])
    mask = predict_zoomed(Model(), image, box, 2.0)
    assert seen["shape"] == (40, 40, 3) and seen["box"] == [15.0, 10.0, 24.0, 29.0]  # the box in the crop's frame
    assert mask.shape == (100, 200) and mask.sum() == 200 and mask[30:50, 40:50].all()


def test_student_bench_reexports_int8_calibrated_at_another_zoom(monkeypatch, tmp_path):
    """An int8 folder is kept only when its calibration followed the zoom the model records; an fp32 one by
    its manifest and age alone."""
    import samdistill.deploy.onnx as onnx_mod

    st = _script("student", monkeypatch)
    manifest = {}
    monkeypatch.setattr(onnx_mod, "read_export", lambda folder: onnx_mod.ExportFolder(
        folder=Path(folder), kind="promptable", graphs={}, preprocess={}, manifest=manifest))
    manifest.update(zoom=1.5)
    assert st._complete(tmp_path, None)  # fp32: no quantization record
    manifest.update(quantization={"calibration": {"zoom": 1.5}})
    assert st._complete(tmp_path, None)
    manifest.update(quantization={"calibration": {"zoom": None}})
    assert not st._complete(tmp_path, None)  # calibrated on whole images for a zoomed student
    manifest.update(quantization={"calibration": {}})
    assert not st._complete(tmp_path, None)  # from before calibration recorded its zoom
    manifest.update(zoom=None, quantization={"calibration": {"zoom": None}})
    assert st._complete(tmp_path, None)
