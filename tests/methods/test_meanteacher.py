"""Mean Teacher (+ SAM-induced KD) with the tiny teacher on synthetic labeled + unlabeled data, and the
step budget (``max_steps``) that it shares with KnowSAM."""

import copy
import json

import pytest
import torch

import samdistill.methods.knowsam as knowsam_module
import samdistill.methods.meanteacher as mt
from samdistill.config import load_config
from samdistill.distill import distill
from samdistill.errors import UserError
from samdistill.losses.semi import softmax_kd
from samdistill.methods.meanteacher import MeanTeacherConfig, MeanTeacherMethod, MeanTeacherParts, ema_update
from samdistill.models.prompt_generator import PromptGenerator
from samdistill.models.zoo import load_model

DATA = "synthetic:n=20,size=64,seed=2"  # 14 train images: 4 labeled (0.25), 10 unlabeled -> 5 batches of 2 + 2


def _cfg(tmp_path, method="meanteacher", run=None, **section):
    k = {"labeled": 0.25, "epochs": 3, "batch_size": 4, "labeled_bs": 2,
         "optim": {"name": "sgd", "lr": 0.05, "schedule": "linear", "warmup_steps": 0}}
    k["student"] = "test_unet_student" if method == "meanteacher" else "test_knowsam_student"
    k.update(section)
    return load_config(method, {"teacher": "test_sam", "data": {"path": DATA}, method: k, "threads": 1,
                                "cache": {"dir": str(tmp_path / "cache")}, "progress": False, "overlays": 0,
                                **(run or {})})


def _batch(seed=0, n=4, n_lab=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 64, 64, generator=g)
    mask = torch.zeros(n, 64, 64)
    mask[:, 16:40, 20:44] = 1
    mask[n_lab:] = 0  # as SemiSet hands unlabeled images
    return {"image": x, "mask": mask, "labeled": torch.arange(n) < n_lab, "id": [str(i) for i in range(n)]}


def _method(cfg: MeanTeacherConfig, teacher=None, student=None, total_steps=10):
    t = teacher or load_model("test_sam")
    student = student or load_model("test_unet_student", teacher=t)
    pg = PromptGenerator(2, 2) if cfg.skd else None
    return MeanTeacherMethod(parts=MeanTeacherParts(student, pg), teacher=t if cfg.skd else None, cfg=cfg,
                             total_steps=total_steps)


# ------------------------------------------------------------------ the EMA teacher
def test_ema_update_on_a_hand_made_case():
    student, ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        student.weight.fill_(1.0)
        ema.weight.fill_(-5.0)
    assert ema_update(ema, student, decay=0.75, step=0) == 0.0  # warm-up: alpha = 1 - 1/1 = 0
    assert ema.weight.item() == 1.0  # the teacher is the student after the first step
    with torch.no_grad():
        student.weight.fill_(3.0)
    assert ema_update(ema, student, decay=0.75, step=1) == 0.5  # 1 - 1/2
    assert ema.weight.item() == 2.0  # 0.5 * 1 + 0.5 * 3
    with torch.no_grad():
        student.weight.fill_(6.0)
    assert ema_update(ema, student, decay=0.75, step=1000) == 0.75  # capped at the decay
    assert ema.weight.item() == 3.0  # 0.75 * 2 + 0.25 * 6
    assert student.weight.item() == 6.0  # the student is untouched


def test_after_step_moves_the_teacher_and_the_teacher_never_trains():
    m = _method(MeanTeacherConfig(ema_decay=0.5))
    assert all(not p.requires_grad for p in m.ema.parameters())
    assert {id(p) for p in m.parameters()}.isdisjoint({id(p) for p in m.ema.parameters()})
    before = [p.clone() for p in m.ema.parameters()]
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    m.after_step()  # step 0: alpha 0, the teacher becomes the student
    assert int(m.parts.ema_updates) == 1
    assert all(torch.equal(pe, p) for pe, p in zip(m.ema.parameters(), m.student.parameters()))
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(2.0)
    m.after_step()  # step 1: alpha = min(1/2, 0.5)
    for pe, p, b in zip(m.ema.parameters(), m.student.parameters(), before):
        assert torch.allclose(pe, b + 2.0, atol=1e-6) and torch.allclose(p, b + 3.0, atol=1e-6)


# ------------------------------------------------------------------ consistency on unlabeled images only
def test_consistency_term_reads_only_unlabeled_images():
    p = torch.rand(4, 2, 8, 8).softmax(1)
    unl = torch.tensor([False, False, True, True])
    teacher_p = torch.rand(2, 2, 8, 8).softmax(1)
    ref = MeanTeacherMethod.consistency(p, teacher_p, unl)
    assert ref == pytest.approx(((p[2:] - teacher_p) ** 2).mean().item(), rel=1e-6)
    q = p.clone()
    q[0] = q[0].flip(0)  # a labeled image's prediction changes: the term does not
    assert MeanTeacherMethod.consistency(q, teacher_p, unl) == ref
    q[3] = q[3].flip(0)  # an unlabeled one's does
    assert MeanTeacherMethod.consistency(q, teacher_p, unl) != ref


def test_teacher_sees_only_the_noisy_unlabeled_images_in_a_step():
    cfg = MeanTeacherConfig(consistency=1.0, noise=0.1)
    m = _method(cfg)
    seen = []
    forward = m.ema.forward
    m.ema.forward = lambda x: seen.append(x.clone()) or forward(x)
    m.eval()  # BatchNorm on running statistics, no dropout: one image does not reach another's prediction

    def consistency(batch):
        torch.manual_seed(0)
        return m.step(batch)["consistency"].item()

    batch = _batch()
    ref = consistency(batch)
    assert seen[-1].shape[0] == 2  # the two unlabeled images, not the labeled ones
    torch.manual_seed(0)
    from samdistill.data.transforms import apply_flips, random_flips

    hf, vf = random_flips(4)
    diff = seen[-1] - apply_flips(batch["image"], hf, vf)[2:]
    assert 0 < diff.abs().max() <= 0.2 + 1e-6  # the teacher's input noise, clipped at 2 std
    changed = copy.deepcopy(batch)
    changed["image"][1] = 1 - changed["image"][1]  # a labeled image
    assert consistency(changed) == ref
    changed["image"][2] = 1 - changed["image"][2]  # an unlabeled image
    assert consistency(changed) != pytest.approx(ref, rel=1e-3)


# ------------------------------------------------------------------ SAM-induced KD as a plug-in
def test_skd_adds_exactly_the_kl_term_to_the_students_loss():
    t = load_model("test_sam")
    student = load_model("test_unet_student", teacher=t)
    with_skd = _method(MeanTeacherConfig(skd=True, skd_weight=0.7, consistency=1.0), teacher=t,
                       student=copy.deepcopy(student))
    without = _method(MeanTeacherConfig(skd=False, consistency=1.0), student=copy.deepcopy(student))
    assert without.teacher is None and without.parts.prompt_generator is None  # no SAM part at all
    batch = _batch()
    with torch.no_grad():
        batch["embedding"] = t.encode(batch["image"])

    def run(m, part=None):
        m.train()
        m.parts.step.zero_()
        for p in m.student.parameters():
            p.grad = None
        torch.manual_seed(0)
        out = m.step(batch)
        (out["loss"] if part is None else part(out)).backward()
        return out, [p.grad.clone() for p in m.student.parameters()]

    a, grad_a = run(with_skd)
    b, grad_b = run(without)
    assert "skd" not in b and "sam_sup" not in b
    assert a["skd"] > 0
    assert (a["loss"] - a["sam_sup"] - b["loss"]).item() == pytest.approx(0.7 * a["skd"].item(), rel=1e-5)
    assert a["sup"].item() == pytest.approx(b["sup"].item(), rel=1e-6)
    assert a["consistency"].item() == pytest.approx(b["consistency"].item(), rel=1e-6)
    # the student's gradient gains exactly the KL's (SAM's own CE + Dice reaches no student weight)
    _, grad_kl = run(with_skd, lambda out: 0.7 * out["skd"])
    assert all(torch.allclose(ga, gb + gk, atol=1e-6) for ga, gb, gk in zip(grad_a, grad_b, grad_kl))
    assert any(gk.abs().sum() > 0 for gk in grad_kl)
    # the KL is the shared softmax_kd at T against SAM's (learned-prompt) logits
    torch.manual_seed(0)
    with_skd.parts.step.zero_()
    s_ref = []
    fwd = with_skd.student.forward
    with_skd.student.forward = lambda x: s_ref.append(fwd(x)) or s_ref[-1]
    sam_ref = []
    sam_logits = with_skd.sam_logits
    with_skd.sam_logits = lambda *a, **k: sam_ref.append(sam_logits(*a, **k)) or sam_ref[-1]
    out = with_skd.step(batch)
    from samdistill.data.transforms import apply_flips, random_flips

    torch.manual_seed(0)
    hf, vf = random_flips(4)
    kl = softmax_kd(s_ref[0], apply_flips(sam_ref[0], hf, vf), 10.0)
    assert out["skd"].item() == pytest.approx(kl.item(), rel=1e-6)


# ------------------------------------------------------------------ the step budget
class _LRs:
    """Records the learning rate of every SGD step (the students' optimiser)."""

    def __init__(self, monkeypatch):
        self.lrs: list[float] = []
        step = torch.optim.SGD.step

        def recording(opt, *a, **k):
            self.lrs.append(opt.param_groups[0]["lr"])
            return step(opt, *a, **k)

        monkeypatch.setattr(torch.optim.SGD, "step", recording)


def _ramp_recorder(monkeypatch, module):
    progress: list[float] = []
    ramp = module.sigmoid_rampup
    monkeypatch.setattr(module, "sigmoid_rampup", lambda p, length=1.0: progress.append(p) or ramp(p, length))
    return progress


@pytest.mark.parametrize("method,module", [("meanteacher", mt), ("knowsam", knowsam_module)])
def test_max_steps_drives_the_run_the_lr_decay_and_the_rampup(tmp_path, monkeypatch, method, module):
    lrs = _LRs(monkeypatch)
    progress = _ramp_recorder(monkeypatch, module)
    out = tmp_path / method
    s = distill(_cfg(tmp_path, method, epochs=50, max_steps=7), out)  # epochs is overridden by the budget
    assert s["steps"] == 7 and len(lrs.lrs) == 7
    # linear decay over exactly 7 steps: step i runs at lr (1 - i / 7); the last at lr / 7
    assert lrs.lrs == pytest.approx([0.05 * (1 - i / 7) for i in range(7)], rel=1e-6)
    assert lrs.lrs[-1] == pytest.approx(0.05 / 7)
    assert max(progress) == pytest.approx(6 / 7)  # the ramp-ups span the budget, not the 50 epochs
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    assert [int(r.split(",")[cols.index("step")]) for r in rows] == [5, 7]  # 5 batches per epoch, the 2nd cut short
    assert "val_dice" in cols and rows[-1].split(",")[cols.index("val_dice")] != ""  # the last epoch validates
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 7


def test_max_steps_is_validated():
    with pytest.raises(UserError, match="meanteacher.max_steps"):
        load_config("meanteacher", ["meanteacher.max_steps=0"])
    with pytest.raises(UserError, match="knowsam.max_steps"):
        load_config("knowsam", ["knowsam.max_steps=-3"])
    assert load_config("knowsam").knowsam.max_steps is None and load_config("meanteacher").meanteacher.max_steps is None


# ------------------------------------------------------------------ end to end
def test_meanteacher_without_skd_builds_no_sam_part_and_learns(tmp_path):
    out = tmp_path / "mt"
    s = distill(_cfg(tmp_path, epochs=4, consistency=1.0, consistency_rampup=0.3), out)
    assert s["method"] == "meanteacher" and s["n_labeled"] == 4 and s["n_unlabeled"] == 10 and not s["skd"]
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    sup = [float(r.split(",")[cols.index("train_sup")]) for r in rows]
    assert sup[-1] < sup[0]  # a few steps lower the supervised loss
    assert "train_consistency" in cols and "val_dice_ema" in cols
    assert "train_skd" not in cols and "val_dice_sam" not in cols
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(k.startswith("ema.") for k in state) and any(k.startswith("student.") for k in state)
    assert not any(k.startswith(("prompt_generator.", "decoder_adapters.")) for k in state)
    assert int(state["ema_updates"]) == 20
    student = load_model(out / "student.pt")
    assert student.family == "test_unet_student" and student.kind == "promptfree"
    assert len(json.loads((out / "labeled.json").read_text())) == 4


def test_meanteacher_with_skd_learns_and_resumes_bit_identically(tmp_path):
    cfg = _cfg(tmp_path, run={"checkpoint_every": 3}, skd=True, epochs=4, consistency=1.0)
    out = tmp_path / "full"
    s = distill(cfg, out)
    assert s["skd"] and s["steps"] == 20
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    assert "train_skd" in cols and "train_sam_sup" in cols and "val_dice_sam" in cols
    sam_sup = [float(r.split(",")[cols.index("train_sam_sup")]) for r in rows]
    sup = [float(r.split(",")[cols.index("train_sup")]) for r in rows]
    assert sup[-1] < sup[0] and sam_sup[-1] < sam_sup[0]
    # stopped inside the second epoch (the last checkpoint is mid-epoch, at step 6), then resumed
    cut = distill(cfg, tmp_path / "cut", stop_after_steps=7)
    assert cut["interrupted"]
    mid = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert mid["step"] == 6 and mid["batch_in_epoch"] == 1
    distill(cfg, tmp_path / "cut", resume=True)
    a = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("ema.") for k in a) and any(k.startswith("prompt_generator.") for k in a)
    assert any(k.startswith("decoder_adapters.") for k in a)
    assert not all(torch.equal(a[k], a["ema." + k[len("student."):]]) for k in a if k.startswith("student."))


def test_meanteacher_student_must_be_prompt_free(tmp_path):
    with pytest.raises(UserError, match="prompt-free student .*not 'test_resnet18'"):
        distill(_cfg(tmp_path, student="test_resnet18"), tmp_path / "bad")


def test_unet_student_is_a_prompt_free_model_that_saves_predicts_and_exports(tmp_path):
    import numpy as np

    from samdistill.deploy.onnx import export_promptfree
    from samdistill.models.zoo import save_model

    s = load_model("test_unet_student", teacher=load_model("test_sam")).eval()
    assert s(torch.rand(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    pc = s.parameter_counts()
    assert pc["total"] == pc["unet"] == sum(p.numel() for p in s.parameters()) and pc["vnet"] == 0
    full = load_model("unet_student", teacher=load_model("litemedsam", pretrained=False))
    assert 1.7e6 < full.parameter_counts()["unet"] < 2.1e6  # KnowSAM's UNet, alone
    img = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    back = load_model(save_model(s, tmp_path / "s.pt"))
    assert back.family == "test_unet_student" and np.array_equal(back.predict(img), s.predict(img))
    assert s.predict(img).shape == (1, 50, 70)
    rep = export_promptfree(s, tmp_path / "onnx")
    assert rep["max_abs_diff"] < 1e-4
