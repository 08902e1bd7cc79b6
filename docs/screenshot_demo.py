"""Regenerate docs/demo.png: `samdistill demo` with the bundled LiteMedSAM teacher and the quickstart's
student (and any other students given), a Kvasir-SEG test image picked on the page, its ground-truth box drawn with the mouse.

    samdistill quickstart                      # writes runs/quickstart/student.pt
    python docs/screenshot_demo.py --data ../shared/data/kvasir_seg --item 3 \
        --student benchmarks/results/runs/kdsam_kvasir_seg/student.pt --student runs/quickstart/student.pt

Needs Debian's Chromium (/usr/bin/chromium) and playwright (dev extra).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/kvasir_seg")
    ap.add_argument("--student", action="append", help="repeat for several (default: runs/quickstart/student.pt)")
    ap.add_argument("--item", type=int, default=0, help="index in the test split offered on the page")
    ap.add_argument("--port", type=int, default=7861)
    ap.add_argument("--out", default=str(Path(__file__).with_name("demo.png")))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from samdistill.data.datasets import open_dataset
    from samdistill.data.prompts import tight_box

    ds = open_dataset(args.data)
    sample = ds.load(ds.ids("test")[args.item])
    box = tight_box(sample.mask)
    h, w = sample.mask.shape
    students = [a for s in (args.student or ["runs/quickstart/student.pt"]) for a in ("--student", s)]
    server = subprocess.Popen([sys.executable, "-m", "samdistill", "demo", *students, "--data", args.data,
                               "--port", str(args.port), "--threads", "2"])
    try:
        base = f"http://127.0.0.1:{args.port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/api/info", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(180_000)
            page.goto(base)
            page.wait_for_selector("body[data-ready='1']")
            page.select_option("#dataset-select", str(args.item))
            page.click("#dataset-load")
            page.wait_for_function(f"document.getElementById('canvas').width === {w}")
            r = page.eval_on_selector("#canvas", "c => { const b = c.getBoundingClientRect(); return [b.left, b.top, b.width, b.height]; }")
            sx, sy = r[2] / w, r[3] / h
            page.mouse.move(r[0] + box[0] * sx, r[1] + box[1] * sy)
            page.mouse.down()
            page.mouse.move(r[0] + (box[0] + box[2]) / 2 * sx, r[1] + (box[1] + box[3]) / 2 * sy)
            page.mouse.move(r[0] + box[2] * sx, r[1] + box[3] * sy)
            page.mouse.up()
            page.wait_for_function("window.lastResult !== null")
            png = page.screenshot(full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    im = Image.open(io.BytesIO(png)).convert("RGB")
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
