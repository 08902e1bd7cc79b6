"""Two CPU processes over gloo: disjoint data per rank, equal gradients after a step, rank 0 writes."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from samdistill.config import OptimConfig
from samdistill.train import distributed as dist_utils
from samdistill.train.trainer import Phase, Trainer


class Set(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(4, generator=g), "y": torch.tensor([float(i % 3)]), "id": str(i)}


class Method:
    def __init__(self, model):
        self.model, self.seen = model, []

    def parameters(self):
        return list(self.model.parameters())

    def train(self):
        self.model.train()

    def eval(self):
        self.model.eval()

    def step(self, batch):
        self.seen += batch["id"]
        return {"loss": (self.model(batch["x"]) - batch["y"]).pow(2).mean()}

    def validate(self, loader):
        return {"dice": -float(sum((self.model(b["x"]) - b["y"]).pow(2).mean() for b in loader))}


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = dist_utils.init_from_env("cpu")
    torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = torch.nn.Linear(4, 1)
    method = Method(model)
    phase = Phase("p", method, Set(), Set(), epochs=2, batch_size=2, optim=OptimConfig(lr=0.05, warmup_steps=0))
    written = []
    trainer = Trainer(model=model, phases=[phase], out_dir=out, seed=3, progress=False,
                      on_epoch_end=lambda h: written.append(rank))
    res = trainer.fit()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.save({"rank": ctx.rank, "seen": method.seen, "grads": grads, "state": model.state_dict(),
                "written": written, "steps": res["steps"], "history": res["history"]}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_split_data_agree_on_gradients_and_only_rank0_writes(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    per_epoch = 16 // 2
    for e in range(2):  # in each epoch the ranks saw disjoint halves of the data
        a, b = set(r0["seen"][e * per_epoch:(e + 1) * per_epoch]), set(r1["seen"][e * per_epoch:(e + 1) * per_epoch])
        assert not a & b and len(a | b) == 16
    assert r0["steps"] == r1["steps"] == 2 * 16 // (2 * 2)
    for n in r0["grads"]:
        assert torch.allclose(r0["grads"][n], r1["grads"][n]) and r0["grads"][n].abs().sum() > 0
        assert torch.equal(r0["state"][n], r1["state"][n])
    assert r0["written"] == [0, 0] and r1["written"] == []
    assert (tmp_path / "metrics.csv").exists() and (tmp_path / "checkpoints" / "last.pt").exists()
    assert r0["history"][-1]["train_loss"] == pytest.approx(r1["history"][-1]["train_loss"])  # all-reduced


def test_sharded_batch_sampler_is_disjoint_and_balanced():
    batches = [[i] for i in range(7)]
    shards = [list(dist_utils.ShardedBatchSampler(batches, r, 3)) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 2]
    flat = [b[0] for s in shards for b in s]
    assert len(set(flat)) == 6


def test_torchrun_distill_cli_on_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "samdistill", "distill", "--teacher", "test_sam", "--student", "test_resnet18",
           "--data", "synthetic:n=16,size=64,seed=4", "--out", str(out), f"cache.dir={tmp_path / 'cache'}",
           "stage1.epochs=1", "stage2.epochs=1", "stage1.batch_size=2", "stage2.batch_size=2", "progress=false",
           "threads=1", "overlays=0"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and (out / "student.pt").exists()
    assert r.stdout.count("best val Dice") == 1  # rank 0 reports, rank 1 stays quiet


def test_torchrun_nas_search_on_two_cpu_processes(tmp_path):
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "samdistill", "nas", "search", "--teacher", "test_sam", "--data", "synthetic:n=24,size=64,seed=4",
           "--out", str(out), f"cache.dir={tmp_path / 'cache'}", "nas.search.epochs=2", "nas.search.batch_size=2",
           "nas.search.widths=[[8,16],[16,24]]", "nas.search.layers=[1,1]", "nas.search.neck_width=16",
           "progress=false", "threads=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["world_size"] == 2 and (out / "genotype.json").exists()
    assert r.stdout.count("found encoder") == 1
