"""EfficientMedSAM on a tiny supernet and synthetic data."""

import json

import numpy as np
import pytest
import torch

from samdistill.cli import main
from samdistill.methods.nas import NASTrainConfig
from samdistill.errors import UserError
from samdistill.eval.coco_map import CocoMaskAP
from samdistill.eval.efficiency import count_macs
from samdistill.losses.saliency import activation_saliency, input_gradient_saliency, saliency_loss
from samdistill.methods.nas import NASDistillStage, SearchStep
from samdistill.models.nas.genotype import GenotypeEncoder, read_genotype, write_genotype
from samdistill.models.nas.ops import OPS, op_macs
from samdistill.models.nas.supernet import SearchSpace, SuperNet
from samdistill.models.zoo import load_model, save_model

TINY = SearchSpace(input_size=64, stem_width=8, widths=[[8, 16], [16, 24]], layers=[1, 2], neck_width=16)


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_keeps_shape_and_its_macs_match_the_flop_counter(name):
    op = OPS[name](16).eval()
    x = torch.randn(1, 16, 12, 10)
    with torch.no_grad():
        assert op(x).shape == x.shape
        assert count_macs(op, x) == op_macs(name, 16, 12, 10)


def _batch(n=4, s=64):
    torch.manual_seed(0)
    mask = torch.zeros(n, s, s)
    mask[:, 20:40, 16:44] = 1
    return {"image": torch.randn(n, 3, s, s), "embedding": torch.randn(n, 256, s // 4, s // 4), "mask": mask}


def test_architecture_weights_get_gradients_only_in_the_architecture_step():
    t = load_model("test_sam")
    net = SuperNet(TINY)
    step = SearchStep(net, t, beta=0.1, budget_macs=1e6)
    step.weight_step(_batch())["loss"].backward()
    assert all(p.grad is None for p in net.arch_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.weight_parameters())
    net.zero_grad(set_to_none=True)
    step.arch_step(_batch())["loss"].backward()
    assert all(p.grad is None for p in net.weight_parameters())
    assert net.alpha.grad is not None and net.alpha.grad.abs().sum() > 0 and net.beta[0].grad is not None


def test_expected_macs_match_the_derived_network_when_the_choice_is_sharp():
    net = SuperNet(TINY)
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, TINY.ops.index("mbconv_k3_e3")] = 50.0
        for b in net.beta:
            b.zero_()
            b[-1] = 50.0
        net.gamma.zero_()
        net.gamma[:, 0] = 50.0
    g = net.derive()
    enc = GenotypeEncoder(g).eval()
    with torch.no_grad():
        measured = count_macs(enc, torch.zeros(1, 3, 64, 64))
    assert abs(float(net.expected_macs().detach()) - measured) / measured < 1e-3


def test_a_large_macs_weight_pulls_the_search_to_cheap_ops():
    torch.manual_seed(0)
    t = load_model("test_sam")
    net = SuperNet(TINY)
    start = float(net.expected_macs().detach())
    step = SearchStep(net, t, beta=1000.0, budget_macs=start, resource="linear")
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        step.arch_step(_batch(2))["loss"].backward()
        opt.step()
    cheapest = SuperNet(TINY)
    with torch.no_grad():
        cheapest.alpha.zero_()
        cheapest.alpha[:, TINY.ops.index("skip")] = 50.0
        for b in cheapest.beta:
            b.zero_()
            b[0] = 50.0
        cheapest.gamma.zero_()
        cheapest.gamma[:, 1] = 50.0
        floor, end = float(cheapest.expected_macs()), float(net.expected_macs())
    assert end - floor < 0.2 * (start - floor)  # most of the avoidable cost is gone
    g = net.derive(max_skip=3)
    assert all(op == "skip" for st in g["stages"] for op in st["ops"])  # the cheapest op everywhere
    assert [st["width"] for st in g["stages"]] == [8, 16]  # and the narrowest widths
    assert g["stages"][1]["lateral"] is False  # and drops the optional neck input


def test_hinge_resource_is_free_below_the_budget_and_derive_limits_skips():
    t = load_model("test_sam")
    net = SuperNet(TINY)
    e = float(net.expected_macs().detach())
    below = SearchStep(net, t, beta=5.0, budget_macs=2 * e).arch_step(_batch())
    above = SearchStep(net, t, beta=5.0, budget_macs=0.5 * e).arch_step(_batch())
    assert float(below["resource"].detach()) == 0.0 and float(above["resource"].detach()) == pytest.approx(1.0, rel=1e-5)
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, TINY.ops.index("skip")] = 5.0
        net.alpha[:, TINY.ops.index("dwsep_k3")] = 4.0
    g = net.derive()  # default: every stage keeps at least one real operation
    assert [st["ops"] for st in g["stages"]] == [["dwsep_k3"], ["skip", "dwsep_k3"]]


def test_genotype_round_trips_into_a_registered_student(tmp_path):
    t = load_model("test_sam")
    g = SuperNet(TINY).derive()
    p = write_genotype(g, tmp_path / "g.json")
    assert read_genotype(p) == json.loads(p.read_text())
    s = load_model("nas", teacher=t, genotype=p)
    x = torch.randn(2, 3, 64, 64)
    assert s.encode(x).shape == (2, 256, 16, 16)
    save_model(s, tmp_path / "s.pt")
    back = load_model(tmp_path / "s.pt")
    assert back.family == "nas" and back.config["genotype"] == g
    with torch.no_grad():
        assert torch.allclose(back.encode(x), s.eval().encode(x), atol=1e-6)
    bad = dict(g, stages=[dict(g["stages"][0], ops=["conv9x9"])])
    with pytest.raises(UserError, match="unknown operation"):
        read_genotype(bad)


def test_saliency_maps_are_normalised_and_loss_zero_for_identical_maps():
    f = torch.randn(3, 8, 10, 12)
    s = activation_saliency(f)
    assert s.shape == (3, 10, 12) and torch.allclose(s.flatten(1).norm(dim=1), torch.ones(3))
    assert float(saliency_loss(s, s)) == 0.0
    assert float(saliency_loss(s, activation_saliency(torch.randn(3, 8, 10, 12)))) > 0
    assert float(saliency_loss(activation_saliency(2 * f), s)) < 1e-10  # scale-free
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    g = input_gradient_saliency((x ** 2).sum((1, 2, 3)), x)
    assert torch.allclose(g.flatten(1).norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("kind", ["activation", "input_gradient"])
def test_distill_stage_losses_reach_the_student(kind):
    t = load_model("test_sam")
    s = load_model("nas", teacher=t, genotype=SuperNet(TINY).derive())
    m = NASDistillStage(stage=2, student=s, teacher=t, cfg=NASTrainConfig(saliency_kind=kind))
    params = m.parameters()
    out = m.step(_batch())
    assert {"dice", "bce", "kd", "mse"} <= set(out) and ("sal_decoder" in out if kind == "activation" else "sal_input" in out)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.image_encoder.parameters())
    assert all(p.grad is None for p in t.parameters())
    assert len(params) == sum(1 for _ in s.parameters())


def test_coco_mask_ap_on_known_overlaps():
    ap = CocoMaskAP()
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    ap.add(gt, gt.copy(), 0.9)
    assert ap.compute()["map"] == pytest.approx(1.0)
    ap2 = CocoMaskAP()
    pred = np.zeros_like(gt)
    pred[5:15, 5:11] = True  # IoU 0.6: counts at thresholds 0.50, 0.55 and 0.60 only
    ap2.add(gt, pred, 0.9)
    r = ap2.compute()
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(0.0) and r["map"] == pytest.approx(0.3)


def test_cli_search_then_train_then_eval_with_map(tmp_path, capsys):
    common = ["--data", "synthetic:n=20,size=64,seed=3", "--teacher", "test_sam", f"cache.dir={tmp_path / 'c'}",
              "progress=false"]
    assert main(["nas", "search", "--out", str(tmp_path / "s"), *common, "nas.search.epochs=2",
                 "nas.search.batch_size=2", "nas.search.widths=[[8,16],[16,24]]", "nas.search.layers=[1,1]",
                 "nas.search.neck_width=16"]) == 0
    assert "found encoder" in capsys.readouterr().out
    for f in ("genotype.json", "search.csv", "plots/arch_weights.png", "summary.json"):
        assert (tmp_path / "s" / f).exists(), f
    rows = (tmp_path / "s" / "search.csv").read_text().splitlines()
    assert len(rows) > 2 and "alpha0_skip" in rows[0] and "expected_gmacs" in rows[0]
    assert main(["nas", "train", "--genotype", str(tmp_path / "s" / "genotype.json"), "--out", str(tmp_path / "t"),
                 *common, "nas.train.stage1_epochs=1", "nas.train.stage2_epochs=1", "nas.train.batch_size=4"]) == 0
    assert main(["eval", "--model", str(tmp_path / "t" / "student.pt"), "--data", "synthetic:n=20,size=64,seed=3",
                 "--out", str(tmp_path / "e"), "--map", "--no-progress"]) == 0
    assert "coco_mask_ap" in json.loads((tmp_path / "e" / "summary.json").read_text())
    assert main(["nas", "train", "--genotype", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x"), *common]) == 2


def test_search_optimisers_are_recipe_keys_whose_defaults_are_the_former_fixed_settings():
    from samdistill.config import load_config
    from samdistill.train.trainer import make_optimizer, schedule

    s = load_config("nas").nas.search
    net = SuperNet(TINY)
    w = make_optimizer(list(net.weight_parameters()), s.w_optim)
    a = make_optimizer(list(net.arch_parameters()), s.a_optim)
    assert type(w) is torch.optim.AdamW and w.defaults["lr"] == 1e-3 and w.defaults["weight_decay"] == 1e-4
    assert type(a) is torch.optim.Adam and a.defaults["lr"] == 1e-2 and a.defaults["weight_decay"] == 1e-3
    assert tuple(a.defaults["betas"]) == (0.5, 0.999) and tuple(w.defaults["betas"]) == (0.9, 0.999)
    assert all(schedule(100, o)(k) == 1.0 for o in (s.w_optim, s.a_optim) for k in (0, 50, 99))  # constant lr
    assert (s.w_optim.clip_grad, s.a_optim.clip_grad) == (5.0, None)
    step = SearchStep(net, load_model("test_sam"), beta=0.1, budget_macs=1e6, w_optim=s.w_optim, a_optim=s.a_optim)
    assert [name for name, _, _ in step.param_groups()] == ["weights", "arch"]
    assert load_config("nas", ["nas.search.a_optim.lr=0.05"]).nas.search.a_optim.lr == 0.05
