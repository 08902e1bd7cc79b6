"""Claim: bad input and faults give a clear one-line error or a counted skip, never a crash trace or
silent loss; killed runs resume to the same weights.

Each case is tried through the real CLI (`samdistill.cli.main`, in process; the kill cases in a child
process) on small synthetic data with the tiny test teacher, and the outcome is recorded: exit code,
the first line of stderr, whether a Python traceback appeared, and counts of skipped files.
Writes benchmarks/results/reliability.{json,md}.

    python benchmarks/reliability.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results  # noqa: E402


def cli(argv: list[str]) -> dict:
    from samdistill.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(argv)
        except Exception as exc:  # a crash: recorded as such
            rc = f"crash: {type(exc).__name__}"
    e = err.getvalue()
    lines = [ln for ln in e.splitlines() if ln.strip() and "Warning" not in ln]
    first = next((ln for ln in lines if ln.startswith("error")), lines[0] if lines else "")
    return {"rc": rc, "stderr": first[:220], "traceback": "Traceback" in e, "stdout": out.getvalue()}


def folder(root: Path, name: str, n: int = 6) -> Path:
    from samdistill.data.synthetic import write_folder

    return write_folder(root / name, n, seed=7, size=64)


def eval_case(data: Path, out: Path) -> dict:
    args = ["eval", "--model", "test_sam", "--data", str(data), "--split", "all", "--no-progress"]
    raised = cli(args + ["--out", str(out / "raise")])
    skipped = cli(args + ["--out", str(out / "skip"), "--on-error", "skip"])
    summary = out / "skip" / "summary.json"
    s = json.loads(summary.read_text()) if summary.exists() else {}
    return {"raise": raised, "skip": skipped, "n_scored": s.get("n"), "n_skipped": s.get("skipped", {}).get("count"),
            "n_excluded_empty": s.get("excluded_empty_gt", {}).get("count"), "n_ignored": s.get("ignored_files")}


def data_cases(root: Path) -> list[dict]:
    rows = []

    def add(name: str, what: str, mutate, expect: str):
        d = folder(root, name)
        mutate(d)
        r = eval_case(d, root / f"out_{name}")
        rows.append({"case": name, "tried": what, "expect": expect, **r})

    img = lambda d, i=0: d / "images" / f"case_{i:04d}.png"  # noqa: E731
    msk = lambda d, i=0: d / "masks" / f"case_{i:04d}.png"  # noqa: E731

    def truncate(d):
        b = img(d).read_bytes()
        img(d).write_bytes(b[: len(b) // 3])

    add("truncated_image", "PNG cut to a third of its bytes", truncate, "error naming the file / counted skip")
    add("zero_byte_image", "0-byte image file", lambda d: img(d).write_bytes(b""), "error naming the file / counted skip")
    add("garbage_image", "random bytes saved as .png", lambda d: img(d).write_bytes(os.urandom(500)),
        "error naming the file / counted skip")
    add("zero_byte_mask", "0-byte mask file", lambda d: msk(d).write_bytes(b""), "error naming the file / counted skip")

    def to16(d):
        a = np.asarray(Image.open(img(d)).convert("L")).astype(np.uint16) * 257
        Image.fromarray(a).save(img(d))

    add("image_16bit", "16-bit greyscale PNG", to16, "read (min-max to 8 bit), scored")
    add("image_rgba", "RGBA PNG", lambda d: Image.open(img(d)).convert("RGBA").save(img(d)), "read as RGB, scored")
    add("image_palette", "palette (P mode) PNG", lambda d: Image.open(img(d)).convert("P").save(img(d)),
        "read as RGB, scored")
    add("mask_size_mismatch", "mask 10 px narrower than its image",
        lambda d: Image.open(msk(d)).crop((0, 0, 54, 64)).save(msk(d)), "error naming both files / counted skip")
    add("all_zero_mask", "mask with no foreground",
        lambda d: Image.fromarray(np.zeros_like(np.asarray(Image.open(msk(d))))).save(msk(d)),
        "excluded from prompted eval and counted (no prompt can be made)")

    def grey_mask(d):
        m = np.asarray(Image.open(msk(d))).copy()
        m[m > 0] = 128
        m[0, 0] = 255
        Image.fromarray(m).save(msk(d))

    add("mask_values_0_128_255", "mask with values {0, 128, 255}", grey_mask,
        "error: not binary (declare --mask-threshold for noisy masks) / counted skip")
    add("non_image_file", "notes.txt and a .DS_Store in images/",
        lambda d: ((d / "images" / "notes.txt").write_text("hi"), (d / "images" / ".DS_Store").write_bytes(b"\0")),
        "ignored and counted, not an error")

    def unicode(d):
        img(d).rename(d / "images" / "Fall 1 – Bärbel ü.png")
        msk(d).rename(d / "masks" / "Fall 1 – Bärbel ü.png")

    add("unicode_spaces", "unicode and spaces in file names", unicode, "read and scored")
    add("image_without_mask", "an image whose mask is missing", lambda d: msk(d).unlink(),
        "error naming the file / counted skip")
    add("mask_without_image", "a mask whose image is missing", lambda d: img(d).unlink(),
        "error naming the file / counted skip")
    return rows


def model_config_cases(root: Path) -> list[dict]:
    import torch

    from samdistill.models.zoo import load_model, save_model

    rows = []
    t = load_model("test_sam")
    lite_like = root / "other_model_state.pt"
    torch.save(t.state_dict(), lite_like)
    ds = "synthetic:n=6,size=64"
    base = ["eval", "--data", ds, "--out", str(root / "o"), "--no-progress"]
    r = cli(base + ["--model", "sam_vit_b", "--checkpoint", str(lite_like)])
    rows.append({"case": "checkpoint_of_another_model", "tried": "test_sam weights given as a sam_vit_b checkpoint",
                 "expect": "one-line error, exit 2", "raise": r})
    ck = root / "student.pt"
    save_model(load_model("test_resnet18", teacher=t), ck)
    torn = root / "torn.pt"
    torn.write_bytes(ck.read_bytes()[:5000])
    rows.append({"case": "truncated_checkpoint", "tried": "student checkpoint cut to 5 kB", "expect": "one-line error, exit 2",
                 "raise": cli(base + ["--model", str(torn)])})
    junk = root / "weights.pth"
    torch.save({"a": torch.zeros(2)}, junk)
    rows.append({"case": "foreign_checkpoint", "tried": "a .pth that is not a samdistill checkpoint",
                 "expect": "one-line error naming --checkpoint usage, exit 2", "raise": cli(base + ["--model", str(junk)])})
    dist = ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", ds, "--out", str(root / "d")]
    rows.append({"case": "config_unknown_key", "tried": "stage1.epoch=2 (typo)", "expect": "exit 2, names key + closest",
                 "raise": cli(dist + ["stage1.epoch=2"])})
    rows.append({"case": "config_bad_value", "tried": "stage2.box_jitter=-3", "expect": "exit 2, names key and value",
                 "raise": cli(dist + ["stage2.box_jitter=-3"])})
    rows.append({"case": "config_wrong_type", "tried": "knowsam.labeled=lots", "expect": "exit 2, names key and value",
                 "raise": cli(dist + ["--method", "knowsam", "knowsam.labeled=lots"])})
    img = root / "one.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(img)
    (root / "boxes.csv").write_text("image,x0,y0,x1,y1\none.png,10,10,80,30\n")
    rows.append({"case": "box_outside_image", "tried": "predict with a box reaching x=80 on a 50 px wide image",
                 "expect": "one-line error, exit 2",
                 "raise": cli(["predict", "test_sam", "--input", str(img), "--prompts", str(root / "boxes.csv"),
                               "--out", str(root / "p")])})
    return rows


def runtime_cases(root: Path) -> list[dict]:
    import torch

    from samdistill.data.cache import EmbeddingCache
    from samdistill.data.datasets import open_dataset
    from samdistill.models.zoo import load_model
    from samdistill.train.checkpoint import load_training_state

    rows = []
    # a cache entry from another teacher placed under this teacher's key
    ds = open_dataset("synthetic:n=4,size=64")
    a, b = load_model("test_sam", seed=0), load_model("test_sam", seed=1)
    ca, cb = EmbeddingCache(root / "cache", a), EmbeddingCache(root / "cache", b)
    ka = ca.build(ds, ds.ids("all"), progress=False)
    kb = cb.build(ds, ds.ids("all"), progress=False)
    victim = next(iter(ka.values()))
    shutil.copy(cb.path(next(iter(kb.values()))), ca.path(victim))
    ca2 = EmbeddingCache(root / "cache", a)
    ca2.build(ds, ds.ids("all"), progress=False)
    ok = torch.equal(ca2.read(victim)["embedding"], a.encode(a.preprocess.image(ds.load(ds.ids("all")[0]).image)[None])[0].half())
    rows.append({"case": "cache_entry_of_another_teacher", "tried": "entry of teacher B copied over an entry of teacher A",
                 "expect": "detected, counted as corrupt, recomputed",
                 "outcome": f"corrupt={ca2.stats.corrupt}, recomputed={ca2.stats.misses}, correct embedding after: {ok}"})
    # torn last.pt falls back to last.prev.pt
    run = root / "run"
    r = cli(["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=12,size=64",
             "--out", str(run), f"cache.dir={root / 'cache2'}", "stage1.epochs=2", "stage2.epochs=1", "progress=false",
             "overlays=0"])
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    state = load_training_state(run / "checkpoints")
    rows.append({"case": "torn_checkpoint", "tried": "last.pt cut to 1 kB after a finished run",
                 "expect": "resume uses last.prev.pt", "outcome": f"run rc={r['rc']}; resumed state from phase "
                 f"{state['phase']} epoch {state['epoch']} (the previous checkpoint)"})
    # NaN losses
    from samdistill.config import OptimConfig
    from samdistill.train.trainer import Phase, Trainer, TrainingDiverged

    class NaNMethod:
        def __init__(self):
            self.m = torch.nn.Linear(1, 1)

        def parameters(self):
            return list(self.m.parameters())

        def train(self):
            pass

        def eval(self):
            pass

        def step(self, batch):
            return {"loss": self.m(batch["x"]).sum() * float("nan")}

        def validate(self, loader):
            return {"dice": 0.0}

    meth = NaNMethod()
    data = [{"x": torch.ones(1), "id": str(i)} for i in range(12)]
    before = meth.m.weight.detach().clone()
    try:
        Trainer(model=meth.m, phases=[Phase("p", meth, data, None, 1, 1, OptimConfig())], out_dir=root / "nan",
                progress=False).fit()
        outcome = "no error (unexpected)"
    except TrainingDiverged as exc:
        outcome = f"TrainingDiverged: {str(exc)[:120]}; weights unchanged: {torch.equal(before, meth.m.weight)}"
    rows.append({"case": "nan_loss", "tried": "every loss NaN", "expect": "steps skipped, clear stop after 5 in a row, no NaN weights",
                 "outcome": outcome})
    # real kills
    for sig in (signal.SIGKILL, signal.SIGTERM):
        rows.append(kill_case(root, sig))
    return rows


def kill_case(root: Path, sig) -> dict:
    import torch

    args = ["--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=24,size=64,seed=5",
            "stage1.epochs=4", "stage2.epochs=2", "stage1.batch_size=2", "stage2.batch_size=2", "progress=false",
            "threads=1", "overlays=0", "checkpoint_every=3", f"cache.dir={root / 'kcache'}"]
    ref = root / f"ref_{sig.name}"
    run = root / f"kill_{sig.name}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "samdistill", "distill", *args]
    subprocess.run(base + ["--out", str(ref)], env=env, capture_output=True, check=True)
    p = subprocess.Popen(base + ["--out", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (run / "checkpoints" / "last.pt").exists() and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(sig)
    _, err = p.communicate()
    at = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    r = subprocess.run(base + ["--out", str(run), "--resume"], env=env, capture_output=True, text=True)
    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    same = all(torch.equal(a[k], b[k]) for k in a)
    msg = next((ln for ln in err.splitlines() if "stopped" in ln), "")
    return {"case": f"{sig.name.lower()}_during_training", "tried": f"{sig.name} after the first checkpoint, then --resume",
            "expect": "resume to bit-identical final weights" + (" (SIGTERM: checkpoint first, exit 143)" if sig == signal.SIGTERM else ""),
            "outcome": f"killed rc={p.returncode} at step {at}; {msg[:90]}; resume rc={r.returncode}; identical weights: {same}"}


def describe(row: dict) -> str:
    if "outcome" in row:
        return row["outcome"]
    parts = []
    r = row["raise"]
    parts.append(f"raise: exit {r['rc']}" + (f", `{r['stderr']}`" if r["stderr"] else "") + (", TRACEBACK" if r["traceback"] else ""))
    if "skip" in row:
        s = row["skip"]
        parts.append(f"skip: exit {s['rc']}, scored {row['n_scored']}, skipped {row['n_skipped']}, "
                     f"excluded-empty {row['n_excluded_empty']}, ignored files {row['n_ignored']}")
    return "; ".join(parts)


def main() -> None:
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="samdistill-reliability-"))
    try:
        rows = data_cases(root) + model_config_cases(root) + runtime_cases(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tracebacks = [r["case"] for r in rows if r.get("raise", {}).get("traceback") or r.get("skip", {}).get("traceback")]
    crashes = [r["case"] for r in rows if isinstance(r.get("raise", {}).get("rc"), str)]
    md = ["# Reliability: bad input and faults", "",
          f"Each case through the real CLI on small synthetic data (6 images, 64 px) with the tiny test teacher; "
          f"{len(rows)} cases in {time.time() - t0:.0f} s. Tracebacks seen: {tracebacks or 'none'}; crashes: {crashes or 'none'}.",
          "`raise` = default `--on-error raise`; `skip` = `--on-error skip` (scored / skipped / excluded counts from summary.json).",
          "", "| case | tried | expected | outcome |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['case']} | {r['tried']} | {r['expect']} | {describe(r).replace('|', '/').replace(str(root), '<tmp>')} |")
    payload = {"rows": [{k: v for k, v in r.items()} for r in rows], "tracebacks": tracebacks, "crashes": crashes,
               "seconds": time.time() - t0}
    write_results("reliability", payload, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
