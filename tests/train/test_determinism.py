"""Same commit, same seed, same thread count -> bit-identical weights; another seed -> other weights.

Two tiny KD SAM runs (test_sam teacher, synthetic images, stage 1 + stage 2 with box jitter and the
prompt-in-the-loop random points): the first builds the teacher-embedding cache, the second reads it back
(fp16), so the test also guards that a cache hit trains exactly like the run that computed it."""

import torch

from samdistill.cli import main


def _args(cache, out, seed: int) -> list[str]:
    return ["distill", "--method", "kdsam", "--teacher", "test_sam", "--student", "test_resnet18",
            "--data", "synthetic:n=8,size=64,seed=2", "--out", str(out), f"cache.dir={cache}",
            "stage1.epochs=1", "stage2.epochs=1", "stage1.batch_size=4", "stage2.batch_size=4",
            "stage2.loop_iters=2", "stage2.box_jitter=5", f"seed={seed}", "progress=false", "threads=1", "overlays=0"]


def _weights(run) -> dict[str, dict[str, torch.Tensor]]:
    student = torch.load(run / "student.pt", weights_only=True, map_location="cpu")["state_dict"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")["model"]
    return {"student.pt": student, "last.pt": last}


def _metrics(run) -> list[list[str]]:
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()]
    keep = [i for i, h in enumerate(rows[0]) if "seconds" not in h and "per_s" not in h]  # timings vary
    return [[r[i] for i in keep] for r in rows]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    cache = tmp_path / "cache"
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert main(_args(cache, tmp_path / name, seed)) == 0
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    for f in a:
        assert a[f].keys() == b[f].keys()
        differ = [k for k in a[f] if not torch.equal(a[f][k], b[f][k])]
        assert differ == [], f"{f}: same seed, {len(differ)} tensors differ, e.g. {differ[:3]}"
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    floats = [k for k, v in a["last.pt"].items() if v.is_floating_point()]
    assert any(not torch.equal(a["last.pt"][k], c["last.pt"][k]) for k in floats), "seed 1 trained the same weights as seed 0"
