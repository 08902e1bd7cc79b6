import csv
import json

import numpy as np
import pytest

from samdistill.data.datasets import open_dataset
from samdistill.eval.evaluate import PromptProtocol, evaluate
from samdistill.eval.metrics import dice
from samdistill.data.prompts import box_filled_mask, tight_box


def test_evaluate_writes_per_image_and_summary(tmp_path, tiny_model, synth_folder):
    ds = open_dataset(synth_folder)
    s = evaluate(tiny_model, ds, out_dir=tmp_path / "ev", model_name="test_sam", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "ev" / "per_image.csv")))
    assert [r["id"] for r in rows] == ds.ids("test")
    assert s["n"] == len(rows) == 4
    assert s["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))
    for key in ("model", "dataset", "split", "n", "dice", "iou", "nsd", "hd95", "params", "encoder_gmacs", "latency_ms"):
        assert key in s
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["n"] == 4
    # seeded split saved next to the run, never into the dataset
    assert json.loads((tmp_path / "ev" / "split.json").read_text())["test"] == ds.ids("test")
    # the filled-box baseline column is the Dice of the filled tight box
    sample = ds.load(rows[0]["id"])
    expected = dice(box_filled_mask(tight_box(sample.mask), sample.mask.shape), sample.mask)
    assert float(rows[0]["dice_box_filled"]) == pytest.approx(expected)


def test_empty_ground_truth_is_excluded_and_counted(tmp_path, tiny_model, synth_folder):
    from PIL import Image

    for sid in ("case_0000", "case_0001"):
        m = np.asarray(Image.open(synth_folder / "masks" / f"{sid}.png"))
        Image.fromarray(np.zeros_like(m)).save(synth_folder / "masks" / f"{sid}.png")
    ds = open_dataset(synth_folder)
    s = evaluate(tiny_model, ds, out_dir=tmp_path / "ev", model_name="t", split="all", progress=False)
    assert s["excluded_empty_gt"]["count"] == 2 and s["n"] == 18


def test_jitter_and_component_protocols_change_prompts():
    m = np.zeros((40, 40), bool)
    m[5:10, 5:10] = True
    m[20:30, 20:35] = True
    tight = PromptProtocol().make(m, "a")["boxes"]
    assert tight.tolist() == [[5, 5, 34, 29]]
    comps = PromptProtocol(kind="components").make(m, "a")["boxes"]
    assert comps.shape == (2, 4)
    jit = PromptProtocol(jitter=4).make(m, "a")["boxes"]
    assert not np.array_equal(jit, tight) and np.all(np.abs(jit - tight) <= 4)
    pts = PromptProtocol(kind="point").make(m, "a")
    assert pts["points"].shape == (1, 1, 2) and pts["labels"].tolist() == [[1]]
