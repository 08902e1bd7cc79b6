"""The demo's request handlers with tiny models: image in, box in -> masks, timings, Dice; bad input -> a
message and the next request works; volumes propagate and come back as NIfTI with the input's geometry."""

from __future__ import annotations

import base64
import gzip
import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from samdistill.demo.service import DemoError, DemoService
from samdistill.eval.metrics import dice
from tests.demo.conftest import disk_image, make_service, multipart, png


def _decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_box_gives_every_models_mask_as_the_api_does(service, tiny_pair):
    from samdistill.deploy.predictor import Predictor

    info = service.add_upload(png(disk_image()), "disk.png")
    assert (info["width"], info["height"], info["has_gt"]) == (160, 120, False)
    box = [50, 28, 118, 92]
    out = service.segment(info["image_id"], box=box)
    assert [m["name"] for m in out["models"]] == ["test_sam", "student"]
    image = np.repeat(disk_image()[:, :, None], 3, axis=2)
    for m, model in zip(out["models"], tiny_pair):
        ref = Predictor.from_torch(model)
        ref.set_image(image)
        want = ref.predict(boxes=[box])[0][0]
        mask = _decode(m["mask_png"]) > 0
        assert mask.shape == (120, 160) and (mask == want).all() and m["area_px"] == int(want.sum())
        assert _decode(m["overlay_png"]).shape == (120, 160, 3)
        assert m["encoder_ms"] > 0 and m["decoder_ms"] > 0 and m["encoder_cached"] is False
        # a new box costs this request's decoder + postprocess; this first one also read and encoded the image
        assert m["next_click_ms"] == m["decoder_ms"] and m["first_click_ms"] >= m["encoder_ms"] + m["decoder_ms"]
        assert m["dice_gt"] is None
    a, b = (_decode(m["mask_png"]) > 0 for m in out["models"])
    assert out["dice_between"] == [{"a": "test_sam", "b": "student", "dice": round(dice(a, b), 4)}]
    assert out["prompt"]["box"] == [50.0, 28.0, 118.0, 92.0]


def test_new_box_reuses_the_embedding(service, monkeypatch):
    info = service.add_upload(png(disk_image()), "disk.png")
    first = service.segment(info["image_id"], box=[50, 28, 118, 92])
    calls = []
    for pred in service.predictors.values():
        monkeypatch.setattr(pred, "_encode", lambda x, _c=calls: _c.append(1))
    second = service.segment(info["image_id"], box=[10, 10, 60, 60], points=[[30, 30]], labels=[0])
    assert calls == []  # no encoder ran for the second prompt
    for m1, m2 in zip(first["models"], second["models"]):
        assert m2["encoder_cached"] is True and m2["encoder_ms"] == m1["encoder_ms"]
        assert m2["next_click_ms"] == m2["decoder_ms"] > 0 and m2["first_click_ms"] is None  # embedding cached
    assert second["prompt"]["points"] == [[30.0, 30.0]] and second["prompt"]["labels"] == [0]


def test_sixteen_bit_grey_upload_and_dataset_ground_truth(tiny_pair):
    from samdistill.data.datasets import open_dataset

    svc = make_service(tiny_pair, dataset=open_dataset("synthetic:n=10,size=64"))
    info = svc.add_upload(png(disk_image(dtype=np.uint16)), "ct16.png")
    img = svc.images[info["image_id"]].image
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8 and img.max() == 255 and img.min() == 0
    assert svc.describe()["dataset"]["items"]  # the test split of the dataset is offered
    pick = svc.add_from_dataset(0)
    assert pick["has_gt"]
    out = svc.segment(pick["image_id"], box=[5, 5, 50, 50])
    gt = svc.images[pick["image_id"]].gt
    for m in out["models"]:
        assert m["dice_gt"] == round(dice(_decode(m["mask_png"]) > 0, gt), 4)
    assert (_decode(out["gt_png"]) > 0).sum() == gt.sum()
    with pytest.raises(DemoError, match="does not exist"):
        svc.add_from_dataset(999)


@pytest.mark.parametrize("data,name,match", [
    (b"this is not an image", "notes.txt", "not an image"),
    (b"", "empty.png", "empty file"),
    (png(disk_image())[:60], "cut.png", "truncated|not an image"),
    (b"\x00" * 400, "scan.nii.gz", "volume"),
])
def test_bad_uploads_are_messages(service, data, name, match):
    with pytest.raises(DemoError, match=match):
        service.add_upload(data, name)
    assert service.segment(service.add_upload(png(disk_image()), "ok.png")["image_id"], box=[1, 1, 50, 50])["models"]


def test_limits_and_bad_prompts(tiny_pair):
    svc = make_service(tiny_pair, max_image_mp=0.01, max_upload_mb=0.5)
    with pytest.raises(DemoError, match="0.0 MP|limit is"):
        svc.add_upload(png(disk_image()), "big.png")  # 160x120 = 0.019 MP > 0.01 MP
    with pytest.raises(DemoError, match="MB"):
        svc.add_upload(b"x" * (2**20), "huge.png")
    image_id = svc.add_upload(png(disk_image(60, 80, 30, 40, 12)), "small.png")["image_id"]
    with pytest.raises(DemoError, match="outside the 80x60 image"):
        svc.segment(image_id, box=[10, 10, 300, 50])
    with pytest.raises(DemoError, match="box is empty"):
        svc.segment(image_id, box=[20, 20, 20, 40])
    with pytest.raises(DemoError, match="four numbers"):
        svc.segment(image_id, box=[1, 2, 3])
    with pytest.raises(DemoError, match="draw a box"):
        svc.segment(image_id)
    with pytest.raises(DemoError, match="point is outside"):
        svc.segment(image_id, points=[[100, 5]])
    with pytest.raises(DemoError, match="no longer loaded"):
        svc.segment("img999", box=[1, 1, 5, 5])
    assert svc.segment(image_id, box=[20, 10, 60, 50])["models"][0]["area_px"] >= 0  # still serving


def test_prompt_free_student_needs_no_prompt(tiny_pair):
    from samdistill.deploy.predictor import Predictor
    from samdistill.models.zoo import load_model

    ks = load_model("test_knowsam_student", teacher=tiny_pair[0]).eval()
    svc = DemoService({"knowsam": Predictor.from_torch(ks, "knowsam")})
    out = svc.segment(svc.add_upload(png(disk_image()), "d.png")["image_id"])
    ref = Predictor.from_torch(ks)
    ref.set_image(np.repeat(disk_image()[:, :, None], 3, axis=2))
    assert out["models"][0]["prompt_free"] and out["models"][0]["area_px"] == int(ref.predict()[0].sum())
    assert out["models"][0]["next_click_ms"] is None and out["models"][0]["first_click_ms"] > 0  # no prompt


class _Slow:
    """A promptable stand-in whose encoder and decoder take known times."""

    prompt_free, backend = False, "fake"
    encode_s, decode_s = 0.2, 0.05

    def set_image(self, image):
        time.sleep(self.encode_s)
        self.state = image.shape[:2]

    def get_state(self):
        return self.state

    def set_state(self, state):
        self.state = state

    def predict(self, boxes=None, points=None, labels=None):
        time.sleep(self.decode_s)
        return np.zeros((1, *self.state), bool), np.ones(1)


def test_next_click_is_the_decoder_and_first_click_adds_read_and_encoder(monkeypatch):
    import samdistill.data.images as images

    decode = images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda *a, **k: (time.sleep(0.1), decode(*a, **k))[1])
    svc = DemoService({"slow": _Slow()})
    image_id = svc.add_upload(png(disk_image()), "d.png")["image_id"]
    first = svc.segment(image_id, box=[50, 28, 118, 92])["models"][0]
    assert 50 <= first["next_click_ms"] < 200 and first["encoder_ms"] >= 200
    assert first["first_click_ms"] >= 100 + 200 + 50  # read (upload decode) + encoder + decoder
    again = svc.segment(image_id, box=[40, 20, 110, 90])["models"][0]
    assert 50 <= again["next_click_ms"] < 200 and again["first_click_ms"] is None


class _Threshold:
    """A promptable stand-in: foreground = bright pixels inside the box (propagation becomes checkable)."""

    prompt_free, backend = False, "fake"

    def set_image(self, image):
        self.image = image

    def predict(self, boxes=None, points=None, labels=None):
        x0, y0, x1, y1 = (int(round(v)) for v in np.asarray(boxes).reshape(-1)[:4])
        m = np.zeros(self.image.shape[:2], bool)
        grey = self.image if self.image.ndim == 2 else self.image[..., 0]
        m[y0 : y1 + 1, x0 : x1 + 1] = grey[y0 : y1 + 1, x0 : x1 + 1] > 128
        return m[None], np.ones(1)


def test_volume_upload_propagate_and_download_keep_geometry():
    nib = pytest.importorskip("nibabel")
    zz, yy, xx = np.meshgrid(np.arange(40), np.arange(48), np.arange(30), indexing="ij")
    ball = (zz - 20) ** 2 + (yy - 24) ** 2 + (xx - 15) ** 2 <= 64
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-10, 5, 30]
    raw = gzip.compress(nib.Nifti1Image(np.where(ball, 300, -50).astype(np.int16), affine).to_bytes())
    svc = DemoService({"threshold": _Threshold()})
    with pytest.raises(DemoError, match="not a NIfTI"):
        svc.add_volume(raw, "scan.png")
    with pytest.raises(DemoError, match="not a readable .gz"):
        svc.add_volume(b"garbage", "scan.nii.gz")
    v = svc.add_volume(raw, "ct.nii.gz")
    assert v["shape"] == [40, 48, 30] and v["slices"] == 30
    sl = svc.volume_slice(v["volume_id"], 15)
    assert (sl["width"], sl["height"]) == (48, 40) and sl["mask_overlay_png"] is None
    with pytest.raises(DemoError, match="no mask yet"):
        svc.volume_mask_nifti(v["volume_id"])
    with pytest.raises(DemoError, match="outside the volume"):
        svc.volume_slice(v["volume_id"], 30)
    job = svc.start_propagation(v["volume_id"], "threshold", [14, 10, 34, 30], 15)
    assert job["state"] == "running"
    deadline = time.time() + 30
    while svc.volume_status(v["volume_id"])["state"] == "running":
        assert time.time() < deadline
        time.sleep(0.05)
    status = svc.volume_status(v["volume_id"])
    assert status["state"] == "done", status["message"]
    assert status["voxels"] == int(ball.sum()) and status["done"] >= 15
    data, name = svc.volume_mask_nifti(v["volume_id"])
    out = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    assert name == "ct_mask.nii.gz" and np.allclose(out.affine, affine)
    assert (np.asarray(out.dataobj) > 0).tolist() == ball.tolist()
    assert svc.volume_slice(v["volume_id"], 15)["mask_overlay_png"] is not None


def _request(url, data=None, content_type=None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_http_server_answers_bad_input_with_400_and_keeps_serving(server):
    base, _ = server
    status, page = _request(base + "/")
    assert status == 200 and b"samdistill demo" in page
    assert _request(base + "/static/demo.js")[0] == 200
    status, body = _request(base + "/api/image", *multipart("file", "notes.txt", b"hello"))
    assert status == 400 and "not an image" in json.loads(body)["error"]
    status, body = _request(base + "/api/segment", b"{not json", "application/json")
    assert status == 400 and "not JSON" in json.loads(body)["error"]
    status, body = _request(base + "/api/image", *multipart("file", "disk.png", png(disk_image())))
    assert status == 200
    image_id = json.loads(body)["image_id"]
    status, body = _request(base + "/api/segment", json.dumps({"image_id": image_id, "box": [5, 5, 5, 30]}).encode(),
                            "application/json")
    assert status == 400 and "empty" in json.loads(body)["error"]
    status, body = _request(base + "/api/segment", json.dumps({"image_id": image_id, "box": [50, 28, 118, 92]}).encode(),
                            "application/json")
    assert status == 200 and len(json.loads(body)["models"]) == 2
    status, body = _request(base + f"/api/image/{image_id}.png")
    assert status == 200 and np.asarray(Image.open(io.BytesIO(body))).shape == (120, 160, 3)


def test_cli_demo_bad_arguments_are_one_line_errors(tmp_path, capsys, monkeypatch):
    import socket

    from samdistill.cli import main

    monkeypatch.chdir(tmp_path)  # no runs/quickstart/student.pt here
    assert main(["demo", "--teacher", "none"]) == 2
    assert "no models" in capsys.readouterr().err
    assert main(["demo", "--student", str(tmp_path / "missing.pt")]) == 2
    assert "student not found" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["demo", "--teacher", "test_sam", "--port", str(port)]) == 2
        assert f"cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err


def test_volume_over_the_voxel_limit_is_refused_before_decompressing(tmp_path, monkeypatch):
    """A small .nii.gz whose header says 315 M voxels: the service's message, and no memory spent on it."""
    import tracemalloc

    pytest.importorskip("nibabel")
    from tests.deploy.test_volumes import nifti_header_only

    monkeypatch.delenv("SAMDISTILL_MAX_VOXELS", raising=False)
    raw = nifti_header_only(tmp_path / "bomb.nii.gz", (1024, 1024, 300)).read_bytes()
    svc = DemoService({"threshold": _Threshold()})
    assert svc.describe()["limits"]["volume_mvoxels"] == pytest.approx(134.217728)
    tracemalloc.start()
    try:
        with pytest.raises(DemoError) as exc:
            svc.add_volume(raw, "bomb.nii.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(exc.value) == ("bomb.nii.gz is 1024 x 1024 x 300 = 314.6 M voxels, over the limit of 134.2 M voxels "
                              "(set SAMDISTILL_MAX_VOXELS to change it)")
    assert peak < 20 * 2**20 and not svc.volumes
    # the limit is on voxels, whatever the file's size: a small volume under a small limit is refused too
    nib = pytest.importorskip("nibabel")
    small = gzip.compress(nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4)).to_bytes())
    with pytest.raises(DemoError, match=r"ct\.nii\.gz is 10 x 10 x 10 = 0\.0 M voxels"):
        DemoService({"threshold": _Threshold()}, max_volume_voxels=999).add_volume(small, "ct.nii.gz")
    monkeypatch.setenv("SAMDISTILL_MAX_VOXELS", "1000")
    assert DemoService({"threshold": _Threshold()}).add_volume(small, "ct.nii.gz")["shape"] == [10, 10, 10]


def test_huge_image_upload_is_refused_from_its_header_without_a_pil_warning(service, monkeypatch):
    import warnings

    from tests.data.test_limits import png_header_only

    monkeypatch.delenv("SAMDISTILL_MAX_PIXELS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for w, h in ((20000, 20000), (10000, 10000)):
            with pytest.raises(DemoError, match=rf"^big\.png is {w}x{h} = [\d.]+ MP, over the limit of 40\.0 MP"):
                service.add_upload(png_header_only(w, h), "big.png")
    assert not [c for c in caught if issubclass(c.category, Image.DecompressionBombWarning)]
    monkeypatch.setenv("SAMDISTILL_MAX_PIXELS", "100")  # the environment sets the demo's limit too
    svc = DemoService(service.predictors)
    with pytest.raises(DemoError, match=r"160x120 = 0\.0 MP, over the limit of 0\.0 MP"):
        svc.add_upload(png(disk_image()), "disk.png")


def test_a_zooming_predictor_encodes_the_crop_once_and_the_demo_times_it_as_encoder(tiny_pair):
    """A student distilled on crops zooms in the demo too: the first box encodes its crop (encoder time, not next-click
    time), and a next click inside the crop reuses that embedding across requests."""
    from samdistill.deploy.predictor import Predictor

    pred = Predictor.from_torch(tiny_pair[1], name="zoomed", zoom=1.5)
    encodes = []
    real = pred._encode
    pred._encode = lambda x: (encodes.append(x.shape), real(x))[1]
    svc = DemoService({"zoomed": pred})
    image_id = svc.add_upload(png(disk_image()), "d.png")["image_id"]
    first = svc.segment(image_id, box=[56, 32, 112, 88])["models"][0]
    assert len(encodes) == 1 and first["encoder_cached"] is False and first["encoder_ms"] > 0
    assert first["first_click_ms"] >= first["encoder_ms"] + first["next_click_ms"]
    again = svc.segment(image_id, box=[58, 34, 110, 86])["models"][0]
    assert len(encodes) == 1 and again["encoder_cached"] is True and again["first_click_ms"] is None
    ref = Predictor.from_torch(tiny_pair[1], zoom=1.5)
    ref.set_image(disk_image())
    ref.predict(boxes=[[56, 32, 112, 88]])  # the second box is decoded on the first box's crop, as in the demo
    assert again["area_px"] == int(ref.predict(boxes=[[58, 34, 110, 86]])[0].sum())
