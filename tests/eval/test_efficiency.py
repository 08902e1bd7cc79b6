import torch
from torch import nn

from samdistill.eval.efficiency import count_macs, count_params, promptable_macs, time_ms


def test_macs_of_linear_and_conv_are_exact():
    assert count_macs(nn.Linear(10, 20, bias=False), torch.zeros(1, 10)) == 200
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_macs(conv, torch.zeros(1, 3, 16, 16)) == 3 * 8 * 9 * 16 * 16
    assert count_params(conv) == 3 * 8 * 9


def test_promptable_macs_split_encoder_decoder(tiny_model):
    m = promptable_macs(tiny_model)
    # TinyEncoder: conv3x3 3->32 at 32x32, conv3x3 32->32 at 16x16, conv1x1 32->256 at 16x16
    expected_enc = (3 * 32 * 9 * 32 * 32 + 32 * 32 * 9 * 16 * 16 + 32 * 256 * 16 * 16) / 1e9
    assert abs(m["encoder_gmacs"] - expected_enc) < 1e-9
    assert m["decoder_gmacs"] > 0


def test_time_ms():
    out = time_ms(lambda: sum(range(1000)), warmup=1, repeats=5)
    assert out["n"] == 5 and out["p10"] <= out["median"] <= out["p90"]
