import json
import time

import numpy as np
import pytest

from samdistill.cli import main
from samdistill.deploy.onnx import export_promptable
from samdistill.models.zoo import load_model, save_model


def test_bench_two_tiny_models_writes_table_json_and_png(tmp_path, tiny_model):
    student = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), tmp_path / "student.pt")
    export_promptable(tiny_model, tmp_path / "onnx")
    free = save_model(load_model("test_knowsam_student", teacher=tiny_model).eval(), tmp_path / "free.pt")
    rc = main(["bench", "test_sam", str(student), str(tmp_path / "onnx"), str(free), "--data", "synthetic:n=10,size=64",
               "--out", str(tmp_path / "b"), "--threads", "1"])
    assert rc == 0
    r = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [x["backend"] for x in r["rows"]] == ["torch", "torch", "onnx", "torch"]
    assert all(x["peak_memory_mb_batch16"] is None or x["peak_memory_mb_batch16"] >= 0 for x in r["rows"])
    assert all(0.0 <= x["coco_mask_ap"]["map"] <= 1.0 for x in r["rows"][:3])
    assert r["rows"][3]["n"] == 2 and r["rows"][3]["encoder_gmacs"] > 0  # prompt-free: scored without prompts
    assert r["rows"][0]["speedup_end_to_end_vs_first"] == 1.0
    # the ONNX copy of test_sam gives the same masks as test_sam itself
    assert abs(r["rows"][2]["dice"] - r["rows"][0]["dice"]) < 1e-3
    # ONNX counts the initializers actually in the graphs (unused prompt paths are not exported)
    assert 0.95 * r["rows"][0]["params_total"] < r["rows"][2]["params_total"] <= r["rows"][0]["params_total"]
    assert (tmp_path / "b" / "pareto.png").stat().st_size > 1000
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "img/s @16" in md
    # the latencies a user feels: first click (file in -> mask out) and next click (a new box, embedding cached)
    for x in r["rows"][:3]:
        assert isinstance(x["first_click_ms"], float) and isinstance(x["next_click_ms"], float)
        assert x["next_click_ms"] > 0 and x["first_click_ms"] > 0
        assert x["first_click_ms"] >= x["latency_ms"]["end_to_end"] * 0.5  # the same pass, plus the file read
    free_row = r["rows"][3]
    assert free_row["first_click_ms"] > 0 and free_row["next_click_ms"] is None  # prompt-free: no next click
    assert free_row["next_click_speedup_vs_first"] is None
    assert r["rows"][0]["first_click_speedup_vs_first"] == 1.0 and r["rows"][0]["next_click_speedup_vs_first"] == 1.0
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "| first click ms | next click ms |" in header and "| first click vs first | next click vs first |" in header
    assert "| speed-up vs first |" in header and "| enc ms | dec ms | end-to-end ms |" in header  # kept
    free_line = next(line for line in md.splitlines() if line.startswith(f"| {free}"))
    assert free_line.count("| – |") >= 2  # next click and its ratio
    assert len(free_line.split("|")) == len(header.split("|"))
    assert r["warmup"] == 3 and "after 3 warm-up runs" in md
    # a result written before the click latencies (benchmarks/results/bench_*.json) renders as it was written
    from samdistill.eval.bench import bench_markdown

    old = {**r, "rows": [{k: v for k, v in x.items() if "click" not in k} for x in r["rows"]]}
    old_md = bench_markdown(old)
    assert "click" not in old_md and "after one warm-up" in old_md and "| speed-up vs first | throughput vs first |" in old_md


def test_first_click_times_the_file_read_and_next_click_only_the_decoder(tmp_path, monkeypatch):
    """A slow disk shows in the first click only; a slow encoder in the first click, not the next; a slow
    postprocess in both clicks, not in the encoder. (Tiny models on a busy CPU are too close to compare unslowed.)"""
    from samdistill.data.datasets import open_dataset
    from samdistill.eval import bench

    ds = open_dataset("synthetic:n=10,size=64")
    ids = ds.ids("test")
    slow = 0.25

    def slowed(fn):
        return lambda *a: (time.sleep(slow), fn(*a))[1]

    def row(part: str) -> dict:
        pred, info = real_describe("test_sam")
        if part == "read":
            monkeypatch.setattr(bench, "read_image", slowed(real_read))
        elif part == "encode":
            monkeypatch.setattr(bench, "read_image", real_read)
            monkeypatch.setattr(pred, "_encode", slowed(pred._encode))
        else:  # postprocess: inside Predictor.predict only (the batch-16 pass calls _decode directly)
            class SlowPost:  # Preprocess is frozen: wrap it
                def __init__(self, pre):
                    self.pre, self.logits_to_original = pre, slowed(pre.logits_to_original)

                def __getattr__(self, name):
                    return getattr(self.pre, name)

            monkeypatch.setattr(pred, "preprocess", SlowPost(pred.preprocess))
        monkeypatch.setattr(bench, "_describe", lambda spec, threads=None, zoom=None: (pred, info))
        return bench.bench_model("test_sam", ds, ids, progress=False, threads=1, image_dir=tmp_path)

    real_read, real_describe, ms = bench.read_image, bench._describe, slow * 1e3
    r = row("read")
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(f"{i}.png" for i in ids)  # first click reads files
    assert r["first_click_ms"] >= r["latency_ms"]["end_to_end"] + ms and r["next_click_ms"] < ms
    r = row("encode")
    assert r["first_click_ms"] >= ms > r["next_click_ms"] > 0  # next < first: the embedding is cached
    r = row("postprocess")
    assert r["next_click_ms"] >= ms > r["latency_ms"]["preprocess_plus_encoder"]
    assert r["first_click_ms"] >= r["latency_ms"]["preprocess_plus_encoder"] + ms


def test_next_click_box_is_the_tight_box_moved_a_few_pixels_inside_the_image():
    from samdistill.eval.bench import JITTER_PX, jittered_box

    rng = np.random.default_rng(0)
    boxes = [jittered_box(np.array([0, 0, 63, 47]), (48, 64), rng)[0] for _ in range(50)]
    boxes += [jittered_box(np.array([20, 10, 20, 10]), (48, 64), rng)[0] for _ in range(50)]
    for b in boxes:
        assert 0 <= b[0] < b[2] <= 63 and 0 <= b[1] < b[3] <= 47
    inner = np.array(boxes[50:])
    assert np.abs(inner - [20, 10, 20, 10]).max() <= JITTER_PX + 1 and len({tuple(b) for b in inner}) > 1
    again = np.random.default_rng(0)
    assert (jittered_box(np.array([0, 0, 63, 47]), (48, 64), again)[0] == boxes[0]).all()  # seeded


def test_bench_clicks_reuse_the_timed_embedding_and_match_the_click_protocol(tmp_path, tiny_model, monkeypatch):
    from samdistill.data.datasets import open_dataset
    from samdistill.deploy.predictor import Predictor
    from samdistill.eval.bench import run_bench
    from samdistill.eval.interactive import click_summary

    student = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), tmp_path / "student.pt")
    free = save_model(load_model("test_knowsam_student", teacher=tiny_model).eval(), tmp_path / "free.pt")
    data = "synthetic:n=10,size=64"
    ref = click_summary(tiny_model, open_dataset(data), split="test", clicks=2)
    encodes = []
    real = Predictor.set_image
    monkeypatch.setattr(Predictor, "set_image", lambda self, im: (encodes.append(1), real(self, im))[1])
    models = ["test_sam", str(student), str(free)]
    run_bench(models, data, out_dir=tmp_path / "b0", threads=1, progress=False)
    without = len(encodes)
    r = run_bench(models, data, out_dir=tmp_path / "b", threads=1, progress=False, clicks=2)
    teacher, _, prompt_free = r["rows"]
    assert teacher["clicks"]["dice_clicks"] == ref["dice_clicks"] and teacher["clicks"]["noc"] == ref["noc"]
    assert len(teacher["clicks"]["dice_clicks"]) == 3 and "clicks" not in prompt_free
    assert len(encodes) == 2 * without  # the clicks add no encoder pass


def test_models_are_timed_image_by_image_in_rotating_order(tmp_path, tiny_model, monkeypatch):
    """A slow spell of a shared machine must land on every row alike: each image passes through all models before
    the next image, and the model that goes first moves on by one per image."""
    from samdistill.data.datasets import open_dataset
    from samdistill.deploy.predictor import Predictor
    from samdistill.eval import bench

    student = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), tmp_path / "student.pt")
    calls = []
    real = Predictor.set_image
    monkeypatch.setattr(Predictor, "set_image", lambda self, im: (calls.append(self.name), real(self, im))[1])
    ds = open_dataset("synthetic:n=10,size=64")
    ids = [i for i in ds.ids("test") if next(ds.iter_samples([i])).mask.any()]
    rows = bench.bench_models(["test_sam", str(student)], ds, ids, progress=False, threads=1, image_dir=tmp_path)
    assert len(ids) >= 2 and [r["n"] for r in rows] == [len(ids), len(ids)]
    # first image: each model's 3 warm-ups right before its timed pass; then one set_image per model per image
    first = ["test_sam"] * (bench.WARMUP + 1) + ["student"] * (bench.WARMUP + 1)
    assert calls[: len(first)] == first
    rest = calls[len(first):]
    expected = [m for i in range(1, len(ids)) for m in (["test_sam", "student"] if i % 2 == 0 else ["student", "test_sam"])]
    assert rest == expected


def test_interleaved_rows_equal_each_model_benched_alone(tmp_path, tiny_model, monkeypatch):
    """Interleaving changes only when each model runs: every row scores the same images (a promptable model skips
    an image without foreground, a prompt-free one scores it) with the same Dice, and the promptable models see
    the same next-click boxes."""
    import dataclasses

    from samdistill.data.datasets import open_dataset
    from samdistill.deploy.predictor import Predictor
    from samdistill.eval import bench

    student = save_model(load_model("test_efficientvit_b0", teacher=tiny_model).eval(), tmp_path / "student.pt")
    free = save_model(load_model("test_knowsam_student", teacher=tiny_model).eval(), tmp_path / "free.pt")
    base = open_dataset("synthetic:n=20,size=64")
    ids = base.ids("test")

    class OneEmpty:  # the first test image loses its foreground
        by_id: dict = {}

        def iter_samples(self, wanted):
            for s in base.iter_samples(wanted):
                yield dataclasses.replace(s, mask=np.zeros_like(s.mask)) if s.id == ids[0] else s

    boxes: dict[str, list] = {}
    real = Predictor.predict

    def record(self, boxes_=None, **kw):
        boxes.setdefault(self.name, []).append(None if boxes_ is None else np.asarray(boxes_).tolist())
        return real(self, boxes_, **kw)

    monkeypatch.setattr(Predictor, "predict", lambda self, boxes=None, **kw: record(self, boxes, **kw))
    models = ["test_sam", str(student), str(free)]
    (tmp_path / "a").mkdir()
    rows = bench.bench_models(models, OneEmpty(), ids, progress=False, threads=1, image_dir=tmp_path / "a")
    together = dict(boxes)
    boxes.clear()
    alone = [bench.bench_model(m, OneEmpty(), ids, progress=False, threads=1, image_dir=tmp_path / "a") for m in models]
    assert len(ids) >= 3
    assert [r["n"] for r in rows] == [len(ids) - 1, len(ids) - 1, len(ids)]
    for r, a in zip(rows, alone):
        assert r["n"] == a["n"] and r["dice"] == pytest.approx(a["dice"], abs=1e-6)
    assert together["test_sam"] == together["student"] == boxes["test_sam"] == boxes["student"]
    assert len({str(b) for b in together["student"]}) > 2  # tight and jittered boxes of several images


def test_a_zoomed_row_scores_like_the_zoomed_predictor_and_says_so(tmp_path, tiny_model):
    """``zooms``: the same model benched plain and zoomed in one run; the zoomed row's Dice is the zoomed
    Predictor's, its enc/dec split is None (the crop is encoded inside predict) and bench.md names the zoom."""
    from samdistill.data.datasets import open_dataset
    from samdistill.data.prompts import tight_box
    from samdistill.deploy.predictor import Predictor
    from samdistill.eval.bench import run_bench
    from samdistill.eval.metrics import dice

    data = "synthetic:n=10,size=64"
    r = run_bench(["test_sam", "test_sam"], data, out_dir=tmp_path / "b", threads=1, progress=False,
                  zooms=[None, 2.0])
    plain, zoomed = r["rows"]
    assert "zoom" not in plain and zoomed["zoom"] == 2.0
    assert zoomed["latency_ms"]["preprocess_plus_encoder"] is None and zoomed["first_click_ms"] > 0
    assert plain["latency_ms"]["preprocess_plus_encoder"] > 0
    ds = open_dataset(data)
    p = Predictor.load("test_sam", zoom=2.0)
    scores = []
    for s in ds.iter_samples(ds.ids("test")):
        if s.mask.any():
            p.set_image(s.image)
            scores.append(dice(p.predict(boxes=tight_box(s.mask)[None])[0][0], s.mask))
    assert zoomed["dice"] == pytest.approx(float(np.mean(scores)), abs=1e-9)
    assert zoomed["dice"] != pytest.approx(plain["dice"], abs=1e-6)
    assert "test_sam (zoom x2)" in (tmp_path / "b" / "bench.md").read_text()
