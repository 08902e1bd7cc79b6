"""Each loss on hand-computed cases."""

import math

import pytest
import torch

from samdistill.errors import CheckpointError
from samdistill.losses import LOSSES
from samdistill.losses.embedding import embedding_mse
from samdistill.losses.kd import logit_kd
from samdistill.losses.perceptual import DecoderPerceptual, VGGPerceptual
from samdistill.losses.segmentation import bce_loss, dice_loss, iou_head_mse


def test_registry_holds_every_loss():
    assert set(LOSSES.names()) >= {"embedding_mse", "dice", "bce", "logit_kd", "iou_head_mse", "perceptual_decoder",
                                   "perceptual_vgg16"}


def test_embedding_mse():
    a = torch.zeros(1, 2, 2, 2)
    b = torch.ones(1, 2, 2, 2) * 2
    assert embedding_mse(a, b).item() == pytest.approx(4.0)


def test_dice_loss_hand_computed():
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0] = 1  # 2 of 4 pixels
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    # inter = 1, sum p = 2, sum t = 2, eps = 1 -> 1 - (2 + 1) / (4 + 1) = 0.4
    assert dice_loss(logits, target).item() == pytest.approx(0.4)
    perfect = (target * 2 - 1) * 50
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(torch.full((1, 1, 2, 2), -50.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_bce_hand_computed():
    assert bce_loss(torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3)).item() == pytest.approx(math.log(2))


def test_logit_kd_is_zero_on_match_and_positive_otherwise():
    t = torch.randn(2, 1, 4, 4)
    assert logit_kd(t.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
    assert logit_kd(torch.zeros_like(t), t, temperature=2.0).item() > 0
    # one pixel, teacher p = sigmoid(2) , student p = 0.5, T = 1: KL(Bern(p) || Bern(0.5))
    p = torch.sigmoid(torch.tensor(2.0))
    kl = p * torch.log(p / 0.5) + (1 - p) * torch.log((1 - p) / 0.5)
    got = logit_kd(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 2.0))
    assert got.item() == pytest.approx(kl.item(), rel=1e-5)


def test_iou_head_mse_targets_the_true_iou():
    target = torch.zeros(1, 1, 2, 2)
    target[0, 0, 0, :] = 1
    logits = torch.full((1, 1, 2, 2), -5.0)
    logits[0, 0, 0, 0] = 5.0  # predicted 1 pixel, true IoU = 1/2
    assert iou_head_mse(torch.tensor([[0.5]]), logits, target).item() == pytest.approx(0.0)
    assert iou_head_mse(torch.tensor([[1.0]]), logits, target).item() == pytest.approx(0.25)


def test_decoder_perceptual_zero_for_identical_and_gradient_reaches_student(tiny_model):
    p = DecoderPerceptual(tiny_model)
    e = torch.randn(2, 256, 16, 16, requires_grad=True)
    boxes = torch.tensor([[4.0, 4.0, 40.0, 40.0], [0.0, 0.0, 63.0, 63.0]])
    assert p(e.detach(), e.detach(), boxes).item() == pytest.approx(0.0, abs=1e-7)
    loss = p(e, e.detach() + 0.5, boxes)
    loss.backward()
    assert loss.item() > 0 and e.grad.abs().sum() > 0
    assert all(not q.requires_grad for q in p.parameters())


def test_vgg_perceptual_needs_a_local_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        VGGPerceptual(str(tmp_path / "vgg16.pth"))
