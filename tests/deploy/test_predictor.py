"""Predictor: PyTorch and ONNX backends agree; folder + box CSV; prompts outside the image fail."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samdistill import Predictor
from samdistill.cli import main
from samdistill.deploy.onnx import export_promptable
from samdistill.errors import UserError
from samdistill.eval.evaluate import predict_with_timing


def test_torch_and_onnx_backends_agree_and_match_eval_path(tmp_path, tiny_model):
    export_promptable(tiny_model, tmp_path / "onnx")
    image = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    boxes = np.array([[10, 10, 60, 70], [40, 5, 110, 80]], float)
    results = []
    for p in (Predictor.from_torch(tiny_model), Predictor.load(tmp_path / "onnx")):
        p.set_image(image)
        masks, iou = p.predict(boxes=boxes)
        assert masks.shape == (2, 90, 120) and iou.shape == (2,)
        results.append(masks)
    assert (results[0] == results[1]).mean() > 0.999
    ref, _ = predict_with_timing(tiny_model, image, {"boxes": boxes[:1]}, "cpu")
    assert (results[0][0] == ref).mean() > 0.999
    p = Predictor.from_torch(tiny_model)
    p.set_image(image)
    pm, _ = p.predict(points=[[30, 40]], labels=[[1]])
    assert pm.shape == (1, 90, 120)


def test_prompts_outside_the_image_and_bad_boxes_are_errors(tiny_model):
    p = Predictor.from_torch(tiny_model)
    with pytest.raises(UserError, match="set_image"):
        p.predict(boxes=[[0, 0, 5, 5]])
    p.set_image(np.zeros((50, 60), np.uint8))
    with pytest.raises(UserError, match="outside the 60x50 image"):
        p.predict(boxes=[[0, 0, 70, 20]])
    with pytest.raises(UserError, match="x1 >= x0"):
        p.predict(boxes=[[30, 10, 20, 20]])


def test_cli_predict_on_a_folder_with_a_box_csv(tmp_path, tiny_model, synth_folder):
    rows = []
    for f in sorted((synth_folder / "masks").glob("*.png"))[:3]:
        m = np.asarray(Image.open(f)) > 0
        ys, xs = np.nonzero(m)
        rows.append([f.name, xs.min(), ys.min(), xs.max(), ys.max()])
    with open(tmp_path / "boxes.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "x0", "y0", "x1", "y1"])
        w.writerows(rows)
    inp = tmp_path / "in"
    inp.mkdir()
    for r in rows:
        (inp / r[0]).write_bytes((synth_folder / "images" / r[0]).read_bytes())
    assert main(["predict", "test_sam", "--input", str(inp), "--prompts", str(tmp_path / "boxes.csv"),
                 "--out", str(tmp_path / "pred")]) == 0
    areas = list(csv.DictReader(open(tmp_path / "pred" / "areas.csv")))
    assert [a["image"] for a in areas] == [r[0] for r in rows]
    assert len(list((tmp_path / "pred" / "masks").glob("*.png"))) == 3
    (tmp_path / "bad.csv").write_text("image,x,y\nfoo.png,1,2\n")
    assert main(["predict", "test_sam", "--input", str(inp), "--prompts", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "p2")]) == 2
    # --zoom: each box segmented on its crop, the mask at the original size with nothing outside the crop
    from samdistill.data.prompts import zoom_window

    assert main(["predict", "test_sam", "--input", str(inp), "--prompts", str(tmp_path / "boxes.csv"),
                 "--out", str(tmp_path / "zoomed"), "--zoom", "1.2"]) == 0
    for name, *box in rows:
        m = np.asarray(Image.open(tmp_path / "zoomed" / "masks" / Path(name).with_suffix(".png").name)) > 0
        x0, y0, x1, y1 = zoom_window(np.array(box, float), m.shape, 1.2)
        outside = m.copy()
        outside[y0:y1, x0:x1] = False
        assert m.shape == np.asarray(Image.open(inp / name)).shape[:2] and not outside.any()
    assert main(["predict", "test_sam", "--input", str(inp), "--prompts", str(tmp_path / "boxes.csv"),
                 "--out", str(tmp_path / "z2"), "--zoom", "0.5"]) == 2
