import numpy as np
import pytest

from samdistill.data.clicks import next_click
from samdistill.data.datasets import open_dataset
from samdistill.data.prompts import interior_point, prompt_rng, sample_points, tight_box
from samdistill.errors import UserError
from samdistill.eval.interactive import click_curve, click_summary, noc
from samdistill.eval.metrics import dice


def _disk(hw, x, y, r):
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r**2


class PaintPredictor:
    """A hand-made predictor: the filled box (or a disk around the first point), then each positive point
    paints a disk of radius ``r`` in, each negative one paints it out. Records every call."""

    name, prompt_free = "paint", False

    def __init__(self, r=3):
        self.r, self.images, self.calls = r, 0, []

    def set_image(self, image):
        self.images += 1
        self.hw = image.shape[:2]

    def predict(self, boxes=None, points=None, labels=None):
        self.calls.append((None if boxes is None else np.array(boxes), None if points is None else np.array(points),
                           None if labels is None else np.array(labels)))
        m = np.zeros(self.hw, bool)
        if boxes is not None:
            x0, y0, x1, y1 = np.asarray(boxes)[0].astype(int)
            m[y0 : y1 + 1, x0 : x1 + 1] = True
        for (x, y), lab in zip(points[0] if points is not None else [], labels[0] if labels is not None else []):
            d = _disk(self.hw, x, y, self.r)
            m = (m | d) if lab == 1 else (m & ~d)
        return m[None], np.ones(1)


def _image_and_gt():
    gt = _disk((48, 64), 30, 24, 12)
    return np.zeros((48, 64, 3), np.uint8), gt


def test_curve_has_k_plus_one_entries_and_clicks_are_applied_in_order():
    image, gt = _image_and_gt()
    p = PaintPredictor()
    curve = click_curve(p, image, gt, first="box", clicks=4)
    assert len(curve) == 5 and p.images == 1  # encoded once
    assert len(p.calls) == 5
    assert np.array_equal(p.calls[0][0], tight_box(gt)[None]) and p.calls[0][1] is None
    # replay: each call holds the box, every earlier click, and the click the simulated user gives for
    # the previous prediction; the curve is the Dice of each prediction
    pred = PaintPredictor()
    pred.set_image(image)
    mask = pred.predict(boxes=tight_box(gt)[None])[0][0]
    assert curve[0] == dice(mask, gt)
    pts, labs = [], []
    for i, (boxes, points, labels) in enumerate(p.calls[1:], start=1):
        c = next_click(mask, gt)
        pts.append([c.x, c.y])
        labs.append(int(c.positive))
        assert np.array_equal(boxes, tight_box(gt)[None])
        assert points.shape == (1, i, 2) and points[0].tolist() == pts and labels[0].tolist() == labs
        mask = pred.predict(boxes=boxes, points=points, labels=labels)[0][0]
        assert curve[i] == dice(mask, gt)
    assert labs[0] == 0  # the box's corners are false positives: the first click takes them out


def test_first_point_is_the_interior_point_of_the_ground_truth():
    image, gt = _image_and_gt()
    p = PaintPredictor(r=5)
    curve = click_curve(p, image, gt, first="point", clicks=2)
    assert len(curve) == 3
    boxes, points, labels = p.calls[0]
    assert boxes is None and points[0].tolist() == [list(interior_point(gt))] and labels[0].tolist() == [1]
    # the same point as the `--prompt point` protocol (sample_points' first positive point)
    assert points[0].tolist() == sample_points(gt, 1, 0, prompt_rng(0, "x"))[0].tolist()
    assert p.calls[1][1].shape == (1, 2, 2)  # first point + one click, no box


class PerfectAfterOne(PaintPredictor):
    def predict(self, boxes=None, points=None, labels=None):
        self.calls.append((boxes, points, labels))
        if points is None:
            m = np.zeros(self.hw, bool)
            m[:5, :5] = True
            return m[None], np.ones(1)
        return self.gt[None], np.ones(1)


def test_curve_repeats_the_last_dice_once_the_prediction_is_exact():
    image, gt = _image_and_gt()
    p = PerfectAfterOne()
    p.gt = gt
    curve = click_curve(p, image, gt, clicks=5)
    assert curve[1:] == [1.0] * 5 and curve[0] < 1
    assert len(p.calls) == 2  # no decode once nothing is left to correct
    assert click_curve(p, image, gt, clicks=0) == [curve[0]]


def test_noc_on_hand_made_curves():
    assert noc([0.95, 0.96]) == 0
    assert noc([0.5, 0.8, 0.9, 0.95]) == 2  # reaching the threshold exactly counts
    assert noc([0.5, 0.89, 0.899]) is None
    assert noc([0.5, 0.7, 0.8], threshold=0.7) == 1


def test_errors():
    image, gt = _image_and_gt()
    with pytest.raises(ValueError):
        click_curve(PaintPredictor(), image, np.zeros_like(gt))
    with pytest.raises(ValueError):
        click_curve(PaintPredictor(), image, gt, first="scribble")
    free = PaintPredictor()
    free.prompt_free = True
    with pytest.raises(UserError, match="prompt-free"):
        click_curve(free, image, gt)


def test_tiny_model_curve_and_summary(tiny_model):
    from samdistill.deploy.predictor import Predictor

    ds = open_dataset("synthetic:n=6,size=64")
    sample = ds.load(ds.ids("test")[0])
    curve = click_curve(tiny_model, sample.image, sample.mask, first="box", clicks=3)
    assert len(curve) == 4 and all(0.0 <= d <= 1.0 for d in curve)
    p = Predictor.from_torch(tiny_model)
    p.set_image(sample.image)
    assert curve[0] == dice(p.predict(boxes=tight_box(sample.mask)[None])[0][0], sample.mask)

    s = click_summary(tiny_model, ds, split="all", limit=4, first="point", clicks=2, threshold=0.5)
    assert s["n"] == 4 and len(s["dice_clicks"]) == 3 and len(s["per_image"]) == 4
    assert s["noc"]["reached"] + s["noc"]["never"] == 4
    per = np.array([r["dice_clicks"] for r in s["per_image"]])
    assert s["dice_clicks"] == pytest.approx(per.mean(0).tolist())
    reached = [r["noc"] for r in s["per_image"] if r["noc"] is not None]
    assert s["noc"]["mean"] == (pytest.approx(np.mean(reached)) if reached else None)
    # the same simulated user: a second run gives the same curves and clicks
    assert click_summary(tiny_model, ds, split="all", limit=4, first="point", clicks=2, threshold=0.5) == s


def test_summary_excludes_empty_ground_truth_and_counts_noc():
    from samdistill.data.datasets import Sample

    image, gt = _image_and_gt()

    class Two:
        name = "two"

        def ids(self, split, limit):
            return ["a", "empty", "b"][:limit]

        def iter_samples(self, ids):
            for sid in ids:
                yield Sample(sid, image, np.zeros_like(gt) if sid == "empty" else gt)

    s = click_summary(PaintPredictor(), Two(), clicks=3, threshold=0.999)
    assert s["n"] == 2 and s["excluded_empty_gt"] == {"count": 1, "ids": ["empty"]}
    assert s["noc"]["reached"] + s["noc"]["never"] == 2
    curve = click_curve(PaintPredictor(), image, gt, clicks=3)
    assert s["dice_clicks"] == pytest.approx(curve)


def test_parse_click_prompt():
    from samdistill.eval.interactive import parse_click_prompt

    assert parse_click_prompt("box") is None and parse_click_prompt("point") is None
    assert parse_click_prompt("clicks:5") == ("box", 5)
    assert parse_click_prompt("clicks:3:point") == ("point", 3)
    for bad in ("clicks", "clicks:", "clicks:0", "clicks:-1", "clicks:x", "clicks:2:scribble", "clicks:2:box:1"):
        with pytest.raises(UserError, match="clicks:K"):
            parse_click_prompt(bad)


def test_write_per_image_clicks(tmp_path):
    import csv
    import json

    from samdistill.eval.interactive import write_per_image_clicks

    s = {"clicks": 2, "per_image": [{"id": "a", "dice_clicks": [0.5, 0.8, 0.95], "noc": 2, "clicks": [[3, 4, 1], [5, 6, 0]]},
                                    {"id": "b", "dice_clicks": [0.1, 0.2, 0.2], "noc": None, "clicks": [[1, 1, 1]]}]}
    write_per_image_clicks(s, tmp_path / "c.csv")
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert list(rows[0]) == ["id", "noc", "dice_0", "dice_1", "dice_2", "clicks"]
    assert rows[0]["noc"] == "2" and rows[1]["noc"] == "" and float(rows[0]["dice_2"]) == 0.95
    assert json.loads(rows[0]["clicks"]) == [[3, 4, 1], [5, 6, 0]]
