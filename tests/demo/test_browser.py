"""A real browser on the demo page: Debian's Chromium, headless, driven by Playwright with mouse events.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; `.ci/run` installs it) and the ``playwright``
Python package (in the dev extra); without them the test is skipped with that reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.demo.conftest import disk_image

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture()
def page():
    if CHROMIUM is None:
        pytest.skip("no Chromium at /usr/bin/chromium: apt-get install chromium to run the browser test")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 860})
            pg.set_default_timeout(60_000)
            yield pg
        finally:
            browser.close()


def drag_box(page, box, steps=(0.3, 0.7, 1.0)) -> None:
    """Drag the mouse over the canvas from (x0, y0) to (x1, y1), given in image pixels (pixel centres)."""
    r = page.eval_on_selector("#canvas", "c => { const b = c.getBoundingClientRect(); "
                                         "return [b.left, b.top, b.width / c.width, b.height / c.height]; }")
    at = lambda x, y: (r[0] + (x + 0.5) * r[2], r[1] + (y + 0.5) * r[3])  # noqa: E731
    page.mouse.move(*at(box[0], box[1]))
    page.mouse.down()
    for t in steps:
        page.mouse.move(*at(box[0] + t * (box[2] - box[0]), box[1] + t * (box[3] - box[1])))
    page.mouse.up()


def test_draw_a_box_and_see_both_models(server, page, tiny_pair, tmp_path):
    from samdistill.deploy.predictor import Predictor

    base, _ = server
    image = disk_image(120, 160, 60, 84, 28)
    Image.fromarray(image).save(tmp_path / "disk.png")
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert "test_sam" in page.inner_text("#model-list") and "student" in page.inner_text("#model-list")
    page.set_input_files("#file", str(tmp_path / "disk.png"))
    page.wait_for_selector("#canvas", state="visible")
    page.wait_for_function("document.getElementById('canvas').width === 160")
    # the box around the disk, in image pixels, drawn with the mouse in page coordinates
    want = [52, 28, 116, 92]
    drag_box(page, want)
    page.wait_for_function("document.querySelectorAll('.card.result img.overlay').length === 2 && "
                           "[...document.querySelectorAll('.card.result img.overlay')].every(i => i.complete && i.naturalWidth === 160)")
    result = page.evaluate("window.lastResult")
    box = result["prompt"]["box"]
    assert np.allclose(box, want, atol=1.5), box  # mouse position -> image pixels
    assert page.inner_text("#message") and "error" not in (page.get_attribute("#message", "class") or "")
    areas = {el.get_attribute("data-model"): int(el.get_attribute("data-area"))
             for el in page.query_selector_all(".card.result")}
    assert set(areas) == {"test_sam", "student"}
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    for name, model in zip(["test_sam", "student"], tiny_pair):  # the same tiny models through the API, same box
        ref = Predictor.from_torch(model)
        ref.set_image(rgb)
        api_area = int(ref.predict(boxes=[box])[0][0].sum())
        assert abs(areas[name] - api_area) <= 0.1 * max(api_area, 1), (name, areas[name], api_area)
    assert "decoder" in page.inner_text(".card.result") and page.is_visible("#json-link")
    # a second box only re-runs the decoders: the page says the encoder time is cached
    drag_box(page, [10, 10, 60, 60], steps=(1.0,))
    page.wait_for_function("window.lastResult && window.lastResult.prompt.box[2] < 70")
    page.wait_for_selector(".card.result >> text=cached")
    # bad input shows a message on the page and the next request still works
    (tmp_path / "notes.txt").write_text("not an image")
    page.set_input_files("#file", str(tmp_path / "notes.txt"))
    page.wait_for_selector("#message.error")
    assert "not an image" in page.inner_text("#message")
    page.set_input_files("#file", str(tmp_path / "disk.png"))
    page.wait_for_function("!document.getElementById('message').classList.contains('error')")
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    assert (tmp_path / "demo.png").stat().st_size > 10_000



def test_volume_slices_propagate_and_download(server, page, tmp_path):
    nib = pytest.importorskip("nibabel")
    zz, yy, xx = np.meshgrid(np.arange(40), np.arange(48), np.arange(12), indexing="ij")
    ball = (zz - 20) ** 2 + (yy - 24) ** 2 + ((xx - 6) * 3) ** 2 <= 100
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(np.where(ball, 300, -50).astype(np.int16), affine), str(tmp_path / "ct.nii.gz"))
    base, svc = server
    page.goto(base + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#file", str(tmp_path / "ct.nii.gz"))
    page.wait_for_selector("#volume", state="visible")
    page.wait_for_function("document.getElementById('slice-label').textContent === '6 / 11'")
    page.eval_on_selector("#slice", "s => { s.value = 5; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("document.getElementById('slice-label').textContent === '5 / 11'")
    drag_box(page, [14, 10, 34, 30], steps=(1.0,))
    page.wait_for_function("window.lastResult && window.lastResult.models.length === 2")
    page.click("#propagate")
    page.wait_for_selector("#nifti-link", state="visible")
    status = svc.volume_status(next(iter(svc.volumes)))
    assert status["state"] == "done" and status["done"] >= 1
    assert page.inner_text("#prop-text") == status["message"]
    with page.expect_download() as dl:
        page.click("#nifti-link")
    path = tmp_path / "mask.nii.gz"
    dl.value.save_as(str(path))
    out = nib.load(str(path))
    assert out.shape == (40, 48, 12) and np.allclose(out.affine, affine)
    assert int(np.asarray(out.dataobj).sum()) == status["voxels"]
