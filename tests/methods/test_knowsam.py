"""KnowSAM with the tiny teacher on synthetic labeled + unlabeled data."""

import json
import math

import numpy as np
import pytest
import torch

from samdistill.cli import main
from samdistill.config import load_config
from samdistill.methods.knowsam import KnowSAMConfig
from samdistill.data.semi import SemiSet, TwoStreamBatchSampler, pick_labeled
from samdistill.data.transforms import apply_flips, confident_regions, paste, random_flips
from samdistill.distill import distill
from samdistill.errors import UserError
from samdistill.methods.knowsam import KnowSAMMethod, KnowSAMParts
from samdistill.models.adapters import add_adapters, add_decoder_adapters
from samdistill.models.prompt_generator import PromptGenerator
from samdistill.models.zoo import load_model

DATA = "synthetic:n=20,size=64,seed=2"


def _cfg(tmp_path, **knowsam):
    k = {"student": "test_knowsam_student", "labeled": 0.25, "epochs": 3, "batch_size": 4, "labeled_bs": 2,
         "mix_after": 0.3, "optim": {"name": "sgd", "lr": 0.05, "schedule": "linear", "warmup_steps": 0}}
    k.update(knowsam)
    return load_config("knowsam", {"teacher": "test_sam", "data": {"path": DATA}, "knowsam": k, "threads": 1,
                                   "cache": {"dir": str(tmp_path / "cache")}, "progress": False, "overlays": 1})


# ------------------------------------------------------------------ sampling and labels
def test_pick_labeled_fraction_count_and_errors():
    ids = [f"im{i:02d}" for i in range(40)]
    a = pick_labeled(ids, 0.1, seed=0)
    assert len(a) == 4 and a == pick_labeled(list(reversed(ids)), 0.1, seed=0)  # seeded, order-free
    assert a != pick_labeled(ids, 0.1, seed=1)
    assert len(pick_labeled(ids, 7)) == 7 and len(pick_labeled(ids, 1.0)) == 40
    with pytest.raises(UserError):
        pick_labeled(ids, 41)
    with pytest.raises(UserError):
        pick_labeled(ids, 2.5)


def test_two_stream_batches_are_half_labeled_and_cover_unlabeled_once():
    lab, unl = [0, 1, 2], list(range(3, 23))
    s = TwoStreamBatchSampler(lab, unl, batch_size=4, labeled_bs=2, generator=torch.Generator().manual_seed(0))
    batches = list(s)
    assert len(batches) == len(s) == 10
    assert all(len(b) == 4 and set(b[:2]) <= set(lab) and set(b[2:]) <= set(unl) for b in batches)
    assert sorted(i for b in batches for i in b[2:]) == unl  # every unlabeled image exactly once per epoch
    again = list(TwoStreamBatchSampler(lab, unl, 4, 2, generator=torch.Generator().manual_seed(0)))
    assert again == batches
    only_lab = list(TwoStreamBatchSampler(lab, [], 2, 1))
    assert sorted(i for b in only_lab for i in b) == lab


def test_semiset_hides_unlabeled_masks():
    base = [{"image": torch.ones(3, 4, 4), "mask": torch.ones(4, 4), "id": str(i)} for i in range(2)]
    s = SemiSet(base, [True, False])
    assert s[0]["labeled"] and s[0]["mask"].sum() == 16
    assert not s[1]["labeled"] and s[1]["mask"].sum() == 0
    assert s.labeled_indices == [0] and s.unlabeled_indices == [1]


# ------------------------------------------------------------------ augmentation and mixing
def test_flips_are_their_own_inverse_and_per_sample():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 5, 7)
    hf, vf = random_flips(6)
    y = apply_flips(x, hf, vf)
    assert torch.equal(apply_flips(y, hf, vf), x)
    for i in range(6):
        ref = x[i]
        ref = ref.flip(-1) if hf[i] else ref
        ref = ref.flip(-2) if vf[i] else ref
        assert torch.equal(y[i], ref)


def test_confident_regions_pick_lowest_uncertainty_cells():
    u = torch.ones(1, 8, 8)
    u[0, :4, :4] = 0.1  # top-left cell of a 2x2 grid is the most confident
    r = confident_regions(u, grid=2, top_k=1)
    assert r[0, :4, :4].all() and r[0].sum() == 16


def test_paste_keeps_labels_with_their_pixels():
    img_a, img_b = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    lab_a, lab_b = torch.zeros(1, 8, 8, dtype=torch.long), torch.ones(1, 8, 8, dtype=torch.long)
    region = torch.zeros(1, 8, 8)
    region[0, 2:5, 1:6] = 1
    img, lab = paste(img_a, lab_a, img_b, lab_b, region)
    assert torch.equal(img[:, 0].long(), lab)  # an image pixel from b carries b's label, and only there
    assert lab.sum() == 15


# ------------------------------------------------------------------ models
def test_student_shapes_and_fusion_starts_as_average():
    t = load_model("test_sam")
    s = load_model("test_knowsam_student", teacher=t)
    x = torch.randn(2, 3, 64, 64)
    u, v, f = s.forward_all(x)
    assert u.shape == v.shape == f.shape == (2, 2, 64, 64)
    assert torch.allclose(f, 0.5 * (u + v), atol=1e-6)  # HAM's last conv starts at zero
    full = load_model("knowsam_student", teacher=load_model("litemedsam", pretrained=False))
    pc = full.parameter_counts()
    assert 1.7e6 < pc["unet"] < 2.1e6 and 3.0e6 < pc["vnet"] < 3.6e6 and 0.02e6 < pc["fusion"] < 0.06e6


def test_adapters_start_as_identity_and_only_they_and_prompts_get_gradients():
    t = load_model("test_sam")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = t.encode(x)
    pg = PromptGenerator(2, 2)
    with torch.no_grad():
        tokens = pg(before)[:, 1]
        decoded = t.decode_tokens(before, tokens)
    adapters = add_adapters(t.image_encoder)
    dec_adapters = add_decoder_adapters(t.mask_decoder)
    with torch.no_grad():
        assert torch.equal(t.encode(x), before)
        assert torch.allclose(t.decode_tokens(before, tokens), decoded, atol=1e-6)
    # two blocks' worth of adapters would mean the depth-1 transformer was adapted twice
    assert len(dec_adapters) == 2 * len(t.mask_decoder.transformer.layers) + 1
    s = load_model("test_knowsam_student", teacher=t)
    parts = KnowSAMParts(s, pg, adapters, dec_adapters)
    m = KnowSAMMethod(parts=parts, teacher=t, cfg=KnowSAMConfig(adapters="encoder", mix_after=0.0), total_steps=10)
    batch = {"image": x, "mask": (torch.rand(2, 64, 64) > 0.5).float(), "labeled": torch.tensor([True, False])}
    m.train()
    m.step(batch)["loss"].backward()
    sam_named = dict(t.named_parameters())
    trainable = {n for n, p in sam_named.items() if p.grad is not None}
    assert trainable and all(".adapter." in n for n in trainable)
    assert all(p.grad is not None for p in pg.parameters())
    assert all(p.grad is not None for p in dec_adapters.parameters())  # the decoder adapters learn too
    assert any(p.grad.abs().sum() > 0 for p in dec_adapters.parameters())
    assert {id(p) for p in m.sam_parameters()} >= {id(p) for p in dec_adapters.parameters()}
    assert all(p.grad is None for n, p in sam_named.items() if ".adapter." not in n)
    assert not any(p.requires_grad for n, p in sam_named.items() if ".adapter." not in n)


def test_kd_rampup_scales_kd_and_entropy_only():
    t = load_model("test_sam")
    parts = KnowSAMParts(load_model("test_knowsam_student", teacher=t), PromptGenerator(2, 2), None)
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": (torch.rand(2, 64, 64) > 0.5).float(),
             "labeled": torch.tensor([True, False])}
    rest = {}
    for rampup in (0.0, 0.5):
        cfg = KnowSAMConfig(kd_rampup=rampup, consistency=0.0, mix=0.0)
        m = KnowSAMMethod(parts=parts, teacher=t, cfg=cfg, total_steps=10)
        parts.step.zero_()
        torch.manual_seed(0)
        out = m.step(batch)
        sup = out["sup"] + out["sup_fusion"] + out["sam_sup"]
        rest[rampup] = (out["loss"] - sup).item(), (out["kd"] + 0.9 * out["entropy"]).item()
    assert rest[0.0][0] == pytest.approx(rest[0.0][1], rel=1e-5)  # constant, as published
    assert rest[0.5][0] == pytest.approx(math.exp(-5) * rest[0.5][1], rel=1e-4)  # step 0 of the ramp
    assert rest[0.5][1] == pytest.approx(rest[0.0][1], rel=1e-5)


def test_decoder_adapters_need_a_two_way_transformer():
    with pytest.raises(ValueError, match="two-way transformer"):
        add_decoder_adapters(torch.nn.Linear(4, 4))


# ------------------------------------------------------------------ end to end
def test_knowsam_run_learns_saves_resumes_and_evaluates(tmp_path):
    out = tmp_path / "run"
    s = distill(_cfg(tmp_path, epochs=4), out)
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    cols = header.split(",")
    sup = [float(r.split(",")[cols.index("train_sup")]) for r in rows]
    assert sup[-1] < sup[0]
    assert "train_kd" in cols and "train_mix" in cols and "val_dice_sam" in cols
    assert s["n_labeled"] == 4 and s["n_unlabeled"] == 10
    assert len(json.loads((out / "labeled.json").read_text())) == 4
    student = load_model(out / "student.pt")
    assert student.kind == "promptfree" and student.family == "test_knowsam_student"
    assert main(["eval", "--model", str(out / "student.pt"), "--data", DATA, "--out", str(out / "ev"),
                 "--no-progress"]) == 0
    ev = json.loads((out / "ev" / "summary.json").read_text())
    assert ev["prompt"]["kind"] == "none" and ev["n"] == 4 and ev["excluded_empty_gt"]["count"] == 0
    # kill mid-run, resume: same final weights (students, prompt generator, step counter)
    cut = distill(_cfg(tmp_path, epochs=4), tmp_path / "cut", stop_after_steps=7)
    assert cut["interrupted"]
    resumed = distill(_cfg(tmp_path, epochs=4), tmp_path / "cut", resume=True)
    header, *rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()
    col = header.split(",").index("train_seconds")
    assert len(rows) == 4 and resumed["epoch_seconds"] == pytest.approx(sum(float(r.split(",")[col]) for r in rows))
    a = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("prompt_generator.") for k in a) and any(k.startswith("decoder_adapters.") for k in a)


def test_supervised_baseline_uses_only_labeled_images(tmp_path):
    s = distill(_cfg(tmp_path, unlabeled=False, sam=False, kd=0.0, consistency=0.0, entropy=0.0, mix=0.0, epochs=1),
                tmp_path / "sup")
    assert s["n_unlabeled"] == 0 and s["steps"] == math.ceil(4 / 4)
    cols = (tmp_path / "sup" / "metrics.csv").read_text().splitlines()[0]
    assert "train_kd" not in cols and "val_dice_sam" not in cols


def test_cli_knowsam_labeled_count_and_bad_value(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["distill", "--method", "knowsam", "--teacher", "test_sam", "--student", "test_knowsam_student",
               "--data", DATA, "--out", str(out), "--labeled", "3", f"cache.dir={tmp_path / 'cache'}",
               "knowsam.epochs=1", "knowsam.batch_size=4", "knowsam.labeled_bs=2", "progress=false"])
    assert rc == 0
    assert "3 images labeled" in capsys.readouterr().out
    assert main(["distill", "--method", "knowsam", "--data", DATA, "--out", str(tmp_path / "y"),
                 "knowsam.labelled=0.2"]) == 2
    assert "did you mean 'knowsam.labeled'" in capsys.readouterr().err


def test_prompt_free_export_and_predictor(tmp_path):
    from samdistill.deploy.onnx import export_promptfree
    from samdistill.deploy.predictor import Predictor

    s = load_model("test_knowsam_student", teacher=load_model("test_sam")).eval()
    rep = export_promptfree(s, tmp_path / "onnx")
    assert rep["max_abs_diff"] < 1e-4 and rep["min_dice_agreement"] == 1.0
    assert [c["shape"] for c in rep["checks"]] == [[1, 3, 64, 64], [2, 3, 32, 64]]
    img = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    masks = []
    for p in (Predictor.from_torch(s, "s"), Predictor.load(tmp_path / "onnx")):
        p.set_image(img)
        m, iou = p.predict()
        assert m.shape == (1, 50, 70) and np.isnan(iou).all()
        masks.append(m)
        with pytest.raises(UserError, match="prompt-free"):
            p.predict(boxes=[[1, 1, 10, 10]])
    assert (masks[0] == masks[1]).mean() > 0.99


def test_smaller_student_frame_trains_and_predicts_at_its_own_size(tmp_path):
    out = tmp_path / "small"
    s = distill(_cfg(tmp_path, input_size=32, epochs=2), out)
    assert s["steps"] > 0
    cols = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_dice_sam" in cols and "train_kd" in cols
    student = load_model(out / "student.pt")
    assert student.input_size == 32
    assert student.preprocess.normalize == load_model("test_sam").preprocess.normalize
    img = (np.random.default_rng(1).random((40, 60, 3)) * 255).astype(np.uint8)
    assert student.predict(img).shape == (1, 40, 60)
    from samdistill.deploy.onnx import export_promptfree

    rep = export_promptfree(student.eval(), tmp_path / "onnx")
    assert rep["checks"][0]["shape"] == [1, 3, 32, 32] and rep["max_abs_diff"] < 1e-4
    # the teacher frame shrunk to the student's: images antialiased, masks stay binary and aligned
    parts = KnowSAMParts(student, None, None)
    m = KnowSAMMethod(parts=parts, teacher=None, cfg=KnowSAMConfig(sam=False), total_steps=1)
    x = torch.rand(2, 3, 64, 64)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 8:40, 16:48] = 1
    xs, ys = m.to_student_frame(x, y)
    assert xs.shape == (2, 3, 32, 32) and ys.shape == (2, 32, 32) and ys.dtype == torch.long
    assert ys.sum().item() == 2 * 16 * 16 and ys[:, 4:20, 8:24].all()


# ------------------------------------------------------------------ speed-ups that must not change the method
@pytest.mark.parametrize("teacher", ["test_sam", "litemedsam"])  # one decoder call per image / batched decoder
def test_classes_in_one_decoder_call_equal_one_call_per_class(teacher):
    from samdistill.models.prompt_generator import learned_prompt_logits

    torch.manual_seed(0)
    t = load_model(teacher, pretrained=False) if teacher == "litemedsam" else load_model(teacher)
    g = t.embedding_grid
    emb, mask_logits = torch.randn(3, 256, g, g), torch.randn(3, 2, 32, 32)
    pg = PromptGenerator(2, 2)
    with torch.no_grad():
        got = learned_prompt_logits(t, pg, emb, mask_logits)
        tokens, m = pg(emb), t.mask_prompt_size  # reference: the former loop, one decode per class
        prompt = torch.nn.functional.interpolate(mask_logits, size=(m, m), mode="bilinear", align_corners=False)
        ref = torch.cat([t.decode_tokens(emb, tokens[:, c], prompt[:, c:c + 1]) for c in range(2)], dim=1)
        ref = torch.nn.functional.interpolate(ref, size=(32, 32), mode="bilinear", align_corners=False)
    assert got.shape == (3, 2, 32, 32)
    assert not torch.allclose(got[:, 0], got[:, 1])  # the classes are not one decode repeated
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sam_decode", ["per_class", "foreground"])
def test_sam_unlabeled_rows_without_graph_give_the_same_loss_and_gradients(monkeypatch, sam_decode):
    """SAM's unlabeled rows decoded under no_grad: the loss and every parameter's gradient are those of
    the full graph (reference: the same step with every row kept in the graph)."""
    import samdistill.methods.knowsam as knowsam
    from samdistill.models.prompt_generator import learned_prompt_logits

    t = load_model("test_sam")
    torch.manual_seed(0)
    parts = KnowSAMParts(load_model("test_knowsam_student", teacher=t), PromptGenerator(2, 2), None,
                         add_decoder_adapters(t.mask_decoder))
    cfg = KnowSAMConfig(sam_decode=sam_decode, mix_after=0.0)  # every term on, mixing too
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(4, 3, 64, 64, generator=g), "mask": (torch.rand(4, 64, 64, generator=g) > 0.5).float(),
             "labeled": torch.tensor([True, False, True, False])}
    batch["embedding"] = t.encode(batch["image"]).detach()
    seen = []

    def full_graph(*a, grad_rows=None, **kw):
        seen.append(grad_rows)
        return learned_prompt_logits(*a, **kw)  # every row with its graph: the path before the speed-up

    results = []
    for patch in (False, True):
        if patch:
            monkeypatch.setattr(knowsam, "learned_prompt_logits", full_graph)
        m = KnowSAMMethod(parts=parts, teacher=t, cfg=cfg, total_steps=10)
        m.train()
        parts.zero_grad(set_to_none=True)
        parts.step.fill_(5)
        torch.manual_seed(2)
        out = m.step(batch)
        out["loss"].backward()
        results.append((out, {n: p.grad.clone() for n, p in parts.named_parameters() if p.grad is not None}))
    assert seen and torch.equal(seen[0], batch["labeled"])  # the method asks for the labeled rows only
    (fast, g_fast), (full, g_full) = results
    assert "mix" in fast and fast["sam_sup"] > 0
    for k in full:
        torch.testing.assert_close(fast[k], full[k], atol=1e-6, rtol=1e-5)
    sam_names = {n for n in g_full if n.startswith(("prompt_generator.", "decoder_adapters."))}
    assert sam_names and set(g_fast) == set(g_full)
    assert any(g_full[n].abs().sum() > 0 for n in sam_names)  # SAM's parts do learn in this step
    for n in g_full:
        torch.testing.assert_close(g_fast[n], g_full[n], atol=1e-6, rtol=1e-5, msg=n)
