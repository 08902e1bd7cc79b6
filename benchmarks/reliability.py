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

from _common import write_results


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
    tmp = lambda text: text.replace(_TMP[0], "<tmp>") if _TMP else text  # noqa: E731  (no machine paths in results)
    return {"rc": rc, "stderr": tmp(first)[:220], "traceback": "Traceback" in e, "stdout": tmp(out.getvalue())}


_TMP: list[str] = []  # the scratch folder of this run, written as <tmp> in the results


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


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes): to show that a refused command changed nothing."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()} \
        if folder.exists() else {}


def _row(case: str, tried: str, expect: str, r: dict, ok: bool, **extra) -> dict:
    """A case through the CLI whose outcome is checked: ``ok`` says whether what was expected happened."""
    return {"case": case, "tried": tried, "expect": expect, "raise": r, "as_expected": bool(ok), **extra}


def _tiny_image(path: Path, h: int = 40, w: int = 50, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _box_csv(path: Path, image: str, box: str = "5,5,30,25") -> Path:
    path.write_text(f"image,x0,y0,x1,y1\n{image},{box}\n")
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` with a few bytes of pixel data: a decompression bomb's
    header, cheap to make; only a check on the header (not on the file size) can refuse it in time."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class _MakesAFile:
    """A pickle payload: a full unpickler calls open(path, "w") while loading it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def run_folder_cases(root: Path) -> list[dict]:
    """Issue 21: a run folder is data (no code runs from it) and has one writer at a time."""
    import torch

    rows = []
    run = root / "run with spaces ü"
    base = ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", "synthetic:n=8,size=64",
            f"cache.dir={root / 'rcache'}", "stage1.epochs=1", "stage2.epochs=1", "progress=false", "overlays=0"]
    first = cli(base + ["--out", str(run)])
    before = _files(run)
    rows.append(_row("distill_path_spaces_unicode", "distill into a run folder named 'run with spaces ü'",
                     "trains, exit 0", first, first["rc"] == 0 and (run / "student.pt").is_file()))
    # a pickle payload planted as last.pt
    marker = root / "PWNED"
    torch.save({"model": _MakesAFile(str(marker)), "phase": 0}, run / "checkpoints" / "last.pt")
    r = cli(base + ["--out", str(run), "--resume"])
    rows.append(_row("planted_pickle_last_pt", "last.pt replaced by a pickle whose loading would call open(PWNED, 'w'); "
                     "then --resume", "one-line refusal, exit 2, payload never runs, no fallback to last.prev.pt", r,
                     r["rc"] == 2 and not marker.exists() and "refused" in r["stderr"],
                     outcome_extra=f"payload file created: {marker.exists()}"))
    (run / "checkpoints" / "last.pt").unlink()
    shutil.copy(run / "checkpoints" / "last.prev.pt", run / "checkpoints" / "last.pt")
    # a second run on the same --out while the first holds it (a live child process holds the lock)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from samdistill.train.runlock import acquire; "
                               "acquire(sys.argv[1], 'holder'); print('held', flush=True); time.sleep(120)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    before = _files(run)
    r = cli(base + ["--out", str(run), "--resume"])
    holder.kill()
    holder.wait()
    after = {k: v for k, v in _files(run).items() if k != ".lock"}
    rows.append(_row("two_runs_one_out", "a second distill --resume on a run folder another live process holds",
                     "one-line refusal naming pid/host, exit 2, run folder unchanged", r,
                     r["rc"] == 2 and "in use by another run" in r["stderr"]
                     and after == {k: v for k, v in before.items() if k != ".lock"}))
    # the holder was killed: its lock is stale now
    r = cli(base + ["--out", str(run), "--resume"])
    rows.append(_row("stale_lock", "the lock holder killed (SIGKILL), then distill --resume",
                     "stale lock taken over with a note, run completes, exit 0, no lock left", r,
                     r["rc"] == 0 and not (run / ".lock").exists()))
    r = cli(base + ["--out", str(run)])
    rows.append(_row("fresh_run_into_finished_run", "distill without --resume into a folder holding a finished run",
                     "one-line refusal ('add --resume'), exit 2, nothing overwritten", r,
                     r["rc"] == 2 and "--resume" in r["stderr"]))
    f = root / "a_file"
    f.write_text("keep me")
    for verb, argv in (("distill", base + ["--out", str(f)]),
                       ("eval", ["eval", "--model", "test_sam", "--data", "synthetic:n=4,size=64", "--out", str(f),
                                 "--no-progress"]),
                       ("export", ["export", "test_sam", "--out", str(f)]),
                       ("predict", ["predict", "test_sam", "--input", str(_tiny_image(root / "one.png")),
                                    "--prompts", str(_box_csv(root / "one.csv", "one.png")), "--out", str(f)])):
        r = cli(argv)
        rows.append(_row(f"out_is_a_file_{verb}", f"{verb} --out pointing at an existing file",
                         "one-line error, exit 2, the file untouched", r,
                         r["rc"] == 2 and f.read_text() == "keep me"))
    return rows


def read_only_case(root: Path) -> list[dict]:
    """A read-only mount (a real one: tmpfs mounted ro; needs root, else recorded as not run)."""
    ro = root / "ro_mount"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0
    if not mounted:
        return [{"case": "read_only_mount", "tried": "eval --out on a read-only mount", "expect": "one-line error, exit 2",
                 "outcome": "not run: this machine does not allow mounting a tmpfs (needs root)", "as_expected": None}]
    try:
        r = cli(["eval", "--model", "test_sam", "--data", "synthetic:n=4,size=64", "--out", str(ro / "eval"),
                 "--no-progress"])
        r2 = cli(["predict", "test_sam", "--input", str(_tiny_image(root / "ro_in.png")),
                  "--prompts", str(_box_csv(root / "ro_in.csv", "ro_in.png")), "--out", str(ro / "pred")])
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)
    return [_row("read_only_mount_eval", "eval --out on a real read-only mount (tmpfs -o ro)",
                 "one-line error naming the folder, exit 2", r, r["rc"] == 2 and "not writable" in r["stderr"]),
            _row("read_only_mount_predict", "predict --out on a real read-only mount",
                 "one-line error, exit 2", r2, r2["rc"] == 2)]


def predict_cases(root: Path) -> list[dict]:
    """Issue 21: predict checks everything before it writes, and its --out is whole or as it was."""
    rows = []

    def inputs(name: str, names: list[str]) -> Path:
        d = root / name
        d.mkdir()
        for i, n in enumerate(names):
            _tiny_image(d / n, seed=i)
        return d

    def csv_for(path: Path, names: list[str], box: str = "5,5,30,25") -> Path:
        path.write_text("image,x0,y0,x1,y1\n" + "".join(f"{n},{box}\n" for n in names))
        return path

    def pred(inp: Path, prompts: Path, out: Path, *extra: str) -> dict:
        return cli(["predict", "test_sam", "--input", str(inp), "--prompts", str(prompts), "--out", str(out),
                    "--no-progress", *extra])

    d = inputs("same_stem", ["a.png", "a.jpg"])
    r = pred(d, csv_for(root / "same.csv", ["a.png", "a.jpg"]), root / "p_same")
    rows.append(_row("predict_same_stem", "inputs a.png and a.jpg (masks are named by stem)",
                     "one-line error naming both before any work, exit 2, no --out", r,
                     r["rc"] == 2 and not (root / "p_same").exists()))
    d = inputs("nan_box", ["a.png"])
    r = pred(d, csv_for(root / "nan.csv", ["a.png"], "5,5,nan,25"), root / "p_nan")
    rows.append(_row("predict_nan_box", "a CSV box with x1 = nan", "one-line error naming the line, exit 2", r,
                     r["rc"] == 2 and not (root / "p_nan").exists()))
    d = inputs("torn", ["a.png", "b.png", "c.png"])
    b = (d / "b.png").read_bytes()
    (d / "b.png").write_bytes(b[: len(b) // 2])
    prompts = csv_for(root / "torn.csv", ["a.png", "b.png", "c.png"])
    r = pred(d, prompts, root / "p_torn")
    rows.append(_row("predict_unreadable_image_raise", "3 images, the second cut in half (header fine, pixels torn)",
                     "one-line error naming it, exit 2, no --out folder and no temp folder left", r,
                     r["rc"] == 2 and not (root / "p_torn").exists()
                     and not any(p.name.startswith(".p_torn") for p in root.iterdir())))
    r = pred(d, prompts, root / "p_torn", "--on-error", "skip")
    skipped = (root / "p_torn" / "skipped.csv")
    rows.append(_row("predict_unreadable_image_skip", "the same with --on-error skip",
                     "exit 0, 2 masks + areas.csv, the bad image listed in skipped.csv and counted", r,
                     r["rc"] == 0 and len(list((root / "p_torn" / "masks").glob("*.png"))) == 2
                     and skipped.is_file() and "b.png" in skipped.read_text()))
    before = _files(root / "p_torn")
    r = pred(d, prompts, root / "p_torn", "--force")
    rows.append(_row("predict_failed_run_keeps_old_out", "a --force rerun into that folder that fails on the torn image",
                     "exit 2, the previous folder byte-identical", r, r["rc"] == 2 and _files(root / "p_torn") == before))
    d = inputs("missing", ["a.png", "b.png", "c.png"])
    r = pred(d, csv_for(root / "missing.csv", ["a.png", "b.png"]), root / "p_missing")
    rows.append(_row("predict_missing_prompt", "3 images, prompts for 2", "one-line error listing c.png before any work",
                     r, r["rc"] == 2 and "c.png" in r["stderr"] and not (root / "p_missing").exists()))
    (root / "short.csv").write_text("image,x0,y0,x1,y1\na.png,5,5,30,25\nb.png,5,5\n")
    r = pred(inputs("short", ["a.png", "b.png"]), root / "short.csv", root / "p_short")
    rows.append(_row("predict_short_csv_row", "a CSV row with 3 of 5 values", "one-line error naming line 3, exit 2",
                     r, r["rc"] == 2 and "line 3" in r["stderr"]))
    for name, text in (("list", "[1, 2]"), ("box3", '{"a.png": {"boxes": [[1, 2, 3]]}}'),
                       ("labels2", '{"a.png": {"points": [[5, 5]], "labels": [2]}}')):
        (root / f"{name}.json").write_text(text)
        r = pred(inputs(f"json_{name}", ["a.png"]), root / f"{name}.json", root / f"p_{name}")
        rows.append(_row(f"predict_json_{name}", f"prompts JSON of the wrong shape: {text}", "one-line error, exit 2",
                         r, r["rc"] == 2))
    (root / "excel.csv").write_bytes(b"\xef\xbb\xbfimage,x0,y0,x1,y1\r\na.png,5,5,30,25\r\n,,,,\r\n")
    r = pred(inputs("excel", ["a.png"]), root / "excel.csv", root / "p_excel")
    rows.append(_row("predict_excel_csv", "a CSV saved by Excel: UTF-8 BOM, Windows line endings, an empty ',,,,' row",
                     "read, exit 0, one mask", r, r["rc"] == 0 and (root / "p_excel" / "masks" / "a.png").is_file()))
    out = root / "p_busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = pred(inputs("busy", ["a.png"]), csv_for(root / "busy.csv", ["a.png"]), out)
    rows.append(_row("predict_nonempty_out", "--out is a folder holding someone's notes.txt",
                     "one-line refusal naming --force, exit 2, notes.txt kept", r,
                     r["rc"] == 2 and (out / "notes.txt").read_text() == "mine"))
    d = inputs("bomb", ["a.png"])
    (d / "b.png").write_bytes(_png_header_only(20000, 20000))
    r = pred(d, csv_for(root / "bomb.csv", ["a.png", "b.png"]), root / "p_bomb")
    rows.append(_row("predict_png_header_bomb", "an image whose header says 20000x20000 (a few hundred bytes on disk)",
                     "refused from its header with the limit named, exit 2, nothing decoded", r,
                     r["rc"] == 2 and "over the limit" in r["stderr"]))
    return rows


def export_cases(root: Path) -> list[dict]:
    """Issue 21: export owns its folder; the loaders read its manifest."""
    from samdistill.models.zoo import load_model, save_model

    t = load_model("test_sam")
    able = save_model(load_model("test_efficientvit_b0", teacher=t).eval(), root / "able.pt")
    free = save_model(load_model("test_knowsam_student", teacher=t).eval(), root / "free.pt")
    rows = []
    out = root / "onnx export ü"
    r0 = cli(["export", str(free), "--out", str(out)])
    before = _files(out)
    r = cli(["export", str(able), "--out", str(out)])
    rows.append(_row("export_over_another_export", "export a promptable student into a folder holding a prompt-free "
                     "export (model.onnx)", "one-line refusal naming --force, exit 2, folder unchanged", r,
                     r0["rc"] == 0 and r["rc"] == 2 and _files(out) == before))
    r = cli(["export", str(able), "--out", str(out), "--force"])
    names = sorted(p.name for p in out.iterdir())
    img = _tiny_image(root / "e.png")
    (root / "e.csv").write_text("image,x0,y0,x1,y1\ne.png,5,5,30,25\n")
    rp = cli(["predict", str(out), "--input", str(img), "--prompts", str(root / "e.csv"), "--out", str(root / "e_pred")])
    rows.append(_row("export_force_replaces_whole", "the same with --force, then predict from the folder",
                     "exit 0; only the new graphs + manifest remain (no stale model.onnx); predict runs them", r,
                     r["rc"] == 0 and "model.onnx" not in names and "manifest.json" in names and rp["rc"] == 0,
                     outcome_extra=f"folder: {', '.join(names)}; predict rc={rp['rc']}"))
    enc = out / "encoder.onnx"
    data = bytearray(enc.read_bytes())
    data[len(data) // 2] ^= 0xFF
    enc.write_bytes(bytes(data))
    r = cli(["predict", str(out), "--input", str(img), "--prompts", str(root / "e.csv"), "--out", str(root / "e_pred2")])
    rows.append(_row("export_tampered_graph", "one byte of encoder.onnx changed after export, then predict",
                     "one-line 're-export' error (sha256 differs), exit 2", r, r["rc"] == 2 and "re-export" in r["stderr"]))
    return rows


def data_guard_cases(root: Path) -> list[dict]:
    """Issue 21: silent wrong results (leaky splits, label maps) and decoded-size limits."""
    rows = []
    d = folder(root, "overlap", n=8)
    (d / "split.json").write_text(json.dumps({"train": ["case_0000", "case_0001", "case_0002"], "val": ["case_0003"],
                                              "test": ["case_0002", "case_0004"]}))
    for verb, argv in (("eval", ["eval", "--model", "test_sam", "--data", str(d), "--out", str(root / "ov_e"),
                                 "--no-progress"]),
                       ("distill", ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", str(d),
                                    "--out", str(root / "ov_d"), "progress=false"])):
        r = cli(argv)
        rows.append(_row(f"split_overlap_{verb}", f"{verb} on a split.json whose train and test share case_0002",
                         "one-line refusal naming the lists and the id, exit 2", r,
                         r["rc"] == 2 and "case_0002" in r["stderr"]))
    d = folder(root, "labelmap", n=6)
    for i, m in enumerate(sorted((d / "masks").iterdir())):
        a = (np.asarray(Image.open(m)) > 0).astype(np.uint8)
        a[: a.shape[0] // 2] *= 2  # the top half of each object is label 2, the bottom label 1
        Image.fromarray(a).save(m)
    args = ["eval", "--model", "test_sam", "--data", str(d), "--split", "all", "--no-progress"]
    r = cli(args + ["--out", str(root / "lm1")])
    rows.append(_row("label_map_mask", "masks are label maps with values {0, 1, 2}",
                     "one-line error naming it a multi-class label map and suggesting --labels 1,2", r,
                     r["rc"] == 2 and "label map" in r["stderr"] and "--labels" in r["stderr"]))
    r = cli(args + ["--out", str(root / "lm2"), "--mask-threshold", "128"])
    rows.append(_row("label_map_old_advice", "the same with the old advice --mask-threshold 128",
                     "one-line error (it would leave every mask empty), exit 2, not a silent drop", r, r["rc"] == 2))
    r = cli(args + ["--out", str(root / "lm3"), "--labels", "1,2"])
    s = json.loads((root / "lm3" / "summary.json").read_text()) if (root / "lm3" / "summary.json").exists() else {}
    rows.append(_row("label_map_labels", "the same with --labels 1,2", "scored with both labels as foreground, exit 0", r,
                     r["rc"] == 0 and s.get("n") == 6, outcome_extra=f"scored {s.get('n')}, Dice {s.get('dice', 0):.3f}"))
    d = folder(root, "bomb", n=6)
    (d / "images" / "case_0000.png").write_bytes(_png_header_only(20000, 20000))
    r = eval_case(d, root / "bomb_out")
    rows.append({"case": "png_header_bomb_eval", "tried": "an image whose header says 20000x20000 (400 MP, 300 bytes)",
                 "expect": "refused from the header naming size and limit / counted skip; no PIL warning",
                 **r, "as_expected": r["raise"]["rc"] == 2 and "over the limit" in r["raise"]["stderr"]
                 and r["n_skipped"] == 1})
    env = os.environ.get("SAMDISTILL_MAX_PIXELS")
    os.environ["SAMDISTILL_MAX_PIXELS"] = "lots"
    try:
        r = cli(["eval", "--model", "test_sam", "--data", str(folder(root, "envbad")), "--out", str(root / "envbad_o"),
                 "--no-progress"])
    finally:
        os.environ.pop("SAMDISTILL_MAX_PIXELS") if env is None else os.environ.__setitem__("SAMDISTILL_MAX_PIXELS", env)
    rows.append(_row("pixel_limit_env_bad", "SAMDISTILL_MAX_PIXELS=lots", "one-line error naming the variable, exit 2",
                     r, r["rc"] == 2 and "SAMDISTILL_MAX_PIXELS" in r["stderr"]))
    rows += volume_cases(root)
    return rows


def volume_cases(root: Path) -> list[dict]:
    """NIfTI and DICOM as they arrive: decompression bombs, missing tags."""
    import gzip

    import nibabel as nib

    rows = []
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1024, 1024, 300))
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    bomb = root / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4))
    r = cli(["predict", "test_sam", "--input", str(bomb), "--box", "1,1,5,5", "--slice", "0", "--out", str(root / "vb")])
    rows.append(_row("nifti_header_bomb", "a .nii.gz of ~100 bytes whose header says 1024x1024x300 (315 M voxels)",
                     "refused from the header naming voxels and limit, exit 2", r,
                     r["rc"] == 2 and "voxels" in r["stderr"] and "limit" in r["stderr"]))
    from samdistill.demo.service import DemoError, DemoService
    from samdistill.deploy.predictor import Predictor
    from samdistill.models.zoo import load_model

    svc = DemoService({"t": Predictor.from_torch(load_model("test_sam"), name="t")})
    raw = gzip.compress(nib.Nifti1Image(np.zeros((640, 640, 640), np.uint8), np.eye(4)).to_bytes())
    try:
        svc.add_volume(raw, "b.nii.gz")
        outcome, ok = "accepted (unexpected)", False
    except DemoError as exc:
        outcome, ok = f"DemoError: {str(exc)[:140]}", "limit" in str(exc)
    rows.append({"case": "demo_gz_bomb", "tried": f"demo upload: a {len(raw) / 1e6:.1f} MB .nii.gz that decompresses to "
                 "262 M voxels", "expect": "refused from the header before decompressing", "outcome": outcome,
                 "as_expected": ok})
    # DICOM series with the geometry tags missing (as some exports send them)
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    series = root / "dicom series"
    series.mkdir()
    uid = generate_uid()
    for z in range(12):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(series / f"{z}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, uid
        ds.Modality, ds.Rows, ds.Columns = "CT", 40, 48
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        yy, xx = np.mgrid[:40, :48]
        ds.PixelData = (((yy - 20) ** 2 + (xx - 24) ** 2 < 64) * 1000).astype(np.uint16).tobytes()
        ds.save_as(series / f"{z}.dcm", enforce_file_format=True)  # no PixelSpacing, positions, slope: all missing
    (series / "README.txt").write_text("exported by PACS")
    r = cli(["predict", "test_sam", "--input", str(series), "--box", "14,10,34,30", "--slice", "6",
             "--out", str(root / "dcm_out")])
    rows.append(_row("dicom_missing_tags", "a DICOM series without PixelSpacing, ImagePositionPatient, SliceThickness, "
                     "InstanceNumber or RescaleSlope, with a README.txt among the slices",
                     "segmented with stated fallbacks (notes), exit 0", r,
                     r["rc"] == 0 and (root / "dcm_out" / "volumes.csv").is_file()))
    return rows


def unlabeled_cases(root: Path) -> list[dict]:
    """distill --unlabeled (a folder of images without masks), and a call that fails before it holds a run."""
    from samdistill.data.datasets import open_dataset
    from samdistill.data.synthetic import phantom

    rows = []
    lab = folder(root, "semi_lab", n=10)
    unl = root / "semi_unl"
    (unl / "day2").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(phantom(11, i, 64)[0]).save(unl / ("day2" if i % 2 else ".") / f"scan_{i}.png")
    base = ["distill", "--method", "meanteacher", "--teacher", "test_sam", "--student", "test_unet_student",
            "--data", str(lab), f"cache.dir={root / 'semi_cache'}", "meanteacher.epochs=1", "meanteacher.batch_size=4",
            "meanteacher.labeled_bs=2", "progress=false", "overlays=0"]
    test_id = open_dataset(lab).ids("test")[0]  # the run's seeded split (data.seed 0)
    leak = unl / "leak.png"
    shutil.copy(lab / "images" / f"{test_id}.png", leak)
    out = root / "semi_runs" / "leak"
    r = cli(base + ["--unlabeled", str(unl), "--out", str(out)])
    rows.append(_row("unlabeled_copy_of_a_test_image", "--unlabeled folder holding a copy of a test image of --data",
                     "one-line refusal naming the file and its split, exit 2, before the teacher loads; no --out made", r,
                     r["rc"] == 2 and "leak.png" in r["stderr"] and "test split)" in r["stderr"]
                     and not (root / "semi_runs").exists()))
    leak.unlink()
    r = cli(base + ["--unlabeled", str(lab), "--out", str(out)])
    rows.append(_row("unlabeled_is_a_labeled_dataset", "--unlabeled pointing at a labeled dataset (images/ + masks/)",
                     "one-line refusal, exit 2, no --out made", r,
                     r["rc"] == 2 and "holds a labeled dataset" in r["stderr"] and not out.exists()))
    r = cli(["distill", "--teacher", "test_sam", "--data", str(lab), "--unlabeled", str(unl), "--out", str(out)])
    rows.append(_row("unlabeled_for_kdsam", "--unlabeled with the kdsam method (trains on masks only)",
                     "one-line refusal naming the methods that take it, exit 2", r,
                     r["rc"] == 2 and "knowsam, meanteacher" in r["stderr"] and not out.exists()))
    out = root / "semi_runs" / "ok"
    r = cli(base + ["--unlabeled", str(unl), "--out", str(out)])
    s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    rows.append(_row("unlabeled_trains", "meanteacher with --unlabeled: 4 images without masks, two of them a folder down",
                     "trains, exit 0; every train mask kept (--labeled 1) and the 4 images unlabeled", r,
                     r["rc"] == 0 and s.get("n_unlabeled_folder") == 4 and s.get("n_labeled") == s.get("n_train_images"),
                     outcome_extra=f"labeled {s.get('n_labeled')} of {s.get('n_train_images')}, "
                                   f"unlabeled {s.get('n_unlabeled')} ({s.get('n_unlabeled_folder')} from the folder)"))
    before = _files(out)
    r = cli(base + ["--out", str(out), "--resume"])
    rows.append(_row("unlabeled_forgotten_on_resume", "--resume of that run without --unlabeled (other images, "
                     "and --labeled back to the recipe's 0.1)", "one-line refusal naming both keys, exit 2, the run "
                     "folder unchanged", r, r["rc"] == 2 and "data.unlabeled" in r["stderr"]
                     and "meanteacher.labeled" in r["stderr"] and _files(out) == before))
    r = cli(base + ["--unlabeled", str(lab / "masks"), "--out", str(root / "semi_runs" / "masks")])
    rows.append(_row("unlabeled_is_the_masks_folder", "--unlabeled pointing at --data's masks/ folder",
                     "one-line refusal naming a mask of --data, exit 2", r,
                     r["rc"] == 2 and "mask of case_" in r["stderr"] and not (root / "semi_runs" / "masks").exists()))
    r = cli(base + ["--unlabeled", str(unl), "--out", str(unl / "run")])
    rows.append(_row("out_inside_unlabeled", "--out inside the --unlabeled folder",
                     "one-line refusal (its overlays would become training images), exit 2, no folder made", r,
                     r["rc"] == 2 and "lies inside --unlabeled" in r["stderr"] and not (unl / "run").exists()))
    bad = folder(root, "semi_bad", n=4)
    (bad / "masks" / "case_0001.png").unlink()
    kd = ["distill", "--teacher", "test_sam", "--student", "test_resnet18", "--data", str(bad), "progress=false"]
    r = cli(kd + ["--out", str(root / "fresh" / "deeper" / "run")])
    rows.append(_row("failed_start_new_folder", "distill on data with an image without mask into a new nested --out",
                     "one-line error, exit 2; no folder left behind (not even the parents it made)", r,
                     r["rc"] == 2 and "image without mask" in r["stderr"] and not (root / "fresh").exists()))
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    r = cli(kd + ["--out", str(mine)])
    rows.append(_row("failed_start_user_folder", "the same into an existing folder that holds the user's notes.txt",
                     "one-line error, exit 2; the folder holds notes.txt only (no config.yaml, log.txt)", r,
                     r["rc"] == 2 and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]))
    return rows


def force_cases(root: Path) -> list[dict]:
    """--force replaces an earlier output, never what the command reads; eval's --out is whole like predict's; a
    recipe that is empty or not text is refused (found by a new-user review, 2026-12-08)."""
    from samdistill.models.zoo import load_model, save_model

    rows = []
    d = root / "force_in"
    d.mkdir()
    _tiny_image(d / "a.png")
    prompts = _box_csv(d / "p.csv", "a.png")
    before = _files(d)
    r = cli(["predict", "test_sam", "--input", str(d), "--prompts", str(prompts), "--out", str(d), "--force"])
    rows.append(_row("predict_force_out_is_input", "predict --force with --out = the --input folder (which holds the "
                     "prompt file)", "one-line refusal ('--force would delete it'), exit 2, the images untouched", r,
                     r["rc"] == 2 and "would delete it" in r["stderr"] and _files(d) == before))
    run = root / "force_run"
    ck = run / "student.pt"
    save_model(load_model("test_resnet18", teacher=load_model("test_sam")), ck)
    r = cli(["predict", str(ck), "--input", str(d / "a.png"), "--prompts", str(prompts), "--out", str(run), "--force"])
    rows.append(_row("predict_force_out_holds_model", "predict --force with --out = the folder holding the model's "
                     "student.pt", "one-line refusal, exit 2, student.pt kept", r,
                     r["rc"] == 2 and "would delete it" in r["stderr"] and ck.exists()))
    data = folder(root, "force_data", n=4)
    theirs = root / "force_theirs"
    theirs.mkdir()
    (theirs / "summary.json").write_text("a colleague's")
    base = ["eval", "--model", "test_sam", "--data", str(data), "--split", "all", "--no-progress"]
    r = cli(base + ["--out", str(theirs)])
    rows.append(_row("eval_nonempty_out", "eval --out a folder holding someone's summary.json",
                     "one-line refusal naming --force, exit 2, their file untouched", r,
                     r["rc"] == 2 and "--force" in r["stderr"] and (theirs / "summary.json").read_text() == "a colleague's"))
    before = _files(data)
    r = cli(base + ["--out", str(data), "--force"])
    rows.append(_row("eval_force_out_is_data", "eval --force with --out = the --data folder",
                     "one-line refusal, exit 2, the dataset untouched", r,
                     r["rc"] == 2 and "would delete it" in r["stderr"] and _files(data) == before))
    (root / "empty.yaml").write_text("# to fill in\n")
    (root / "weights.pt").write_bytes(b"PK\x03\x04\x81\xff\x00binary")
    for case, recipe, words in (("recipe_empty", "empty.yaml", "is empty"), ("recipe_binary", "weights.pt", "not a YAML")):
        out = root / f"{case}_out"
        r = cli(["distill", "--recipe", str(root / recipe), "--data", str(data), "--out", str(out)])
        rows.append(_row(case, f"distill --recipe {recipe} ({'comments only' if 'empty' in case else 'a binary file'})",
                         "one-line error, exit 2, no run folder", r,
                         r["rc"] == 2 and words in r["stderr"] and not out.exists()))
    return rows


def describe(row: dict) -> str:
    if "outcome" in row:
        return row["outcome"]
    parts = []
    if "as_expected" in row and row["as_expected"] is not None:
        parts.append("as expected" if row["as_expected"] else "NOT AS EXPECTED")
    r = row["raise"]
    parts.append(f"raise: exit {r['rc']}" + (f", `{r['stderr']}`" if r["stderr"] else "") + (", TRACEBACK" if r["traceback"] else ""))
    if "skip" in row:
        s = row["skip"]
        parts.append(f"skip: exit {s['rc']}, scored {row['n_scored']}, skipped {row['n_skipped']}, "
                     f"excluded-empty {row['n_excluded_empty']}, ignored files {row['n_ignored']}")
    if row.get("outcome_extra"):
        parts.append(row["outcome_extra"])
    return "; ".join(parts)


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    t0 = time.time()
    root = Path(tempfile.mkdtemp(prefix="samdistill-reliability-"))
    _TMP.append(str(root))
    try:
        rows = (data_cases(root) + model_config_cases(root) + runtime_cases(root) + run_folder_cases(root)
                + read_only_case(root) + predict_cases(root) + export_cases(root) + data_guard_cases(root)
                + unlabeled_cases(root) + force_cases(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    tracebacks = [r["case"] for r in rows if r.get("raise", {}).get("traceback") or r.get("skip", {}).get("traceback")]
    crashes = [r["case"] for r in rows if isinstance(r.get("raise", {}).get("rc"), str)]
    unexpected = [r["case"] for r in rows if r.get("as_expected") is False]
    md = ["# Reliability: bad input and faults", "",
          f"Each case through the real CLI on small synthetic data (6 images, 64 px) with the tiny test teacher; "
          f"{len(rows)} cases in {time.time() - t0:.0f} s on {machine()}. Tracebacks seen: {tracebacks or 'none'}; "
          f"crashes: {crashes or 'none'}; outcomes not as expected: {unexpected or 'none'}.",
          "Rows that say `as expected` were checked by the script itself (exit code, message, and the files on disk: "
          "e.g. that a refused command left its folder byte-identical, that a planted payload never ran).",
          "`raise` = default `--on-error raise`; `skip` = `--on-error skip` (scored / skipped / excluded counts from summary.json).",
          "", "| case | tried | expected | outcome |", "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['case']} | {r['tried']} | {r['expect']} | {describe(r).replace('|', '/').replace(str(root), '<tmp>')} |")
    payload = {"rows": [{k: v for k, v in r.items()} for r in rows], "tracebacks": tracebacks, "crashes": crashes,
               "not_as_expected": unexpected, "machine": machine(),
               "seconds": time.time() - t0}
    payload = json.loads(json.dumps(payload).replace(str(root), "<tmp>"))
    write_results("reliability", payload, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
