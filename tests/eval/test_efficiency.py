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


class _Timed:
    """A promptable stand-in whose encoder and decoder take known times; records what it was called with."""

    def __init__(self, input_size: int, encode_s: float, decode_s: float):
        self.input_size, self.encode_s, self.decode_s = input_size, encode_s, decode_s
        self.images, self.boxes, self.threads = [], [], []

    def encode(self, x):
        import time

        time.sleep(self.encode_s)
        self.images.append(tuple(x.shape))
        self.threads.append(torch.get_num_threads())
        return torch.zeros(1, 256, 4, 4)

    def decode(self, emb, boxes=None):
        import time

        time.sleep(self.decode_s)
        self.boxes.append(boxes)
        return torch.zeros(1, 1, 8, 8), torch.zeros(1, 1)


def test_latency_pair_times_both_back_to_back_with_the_same_threads_and_gives_ratios():
    from samdistill.eval.efficiency import latency_pair

    teacher, student = _Timed(64, 0.03, 0.004), _Timed(32, 0.003, 0.004)
    before = torch.get_num_threads()
    r = latency_pair(teacher, student, threads=1, warmup=1, repeats=5)
    assert torch.get_num_threads() == before
    for m in (teacher, student):
        assert len(m.images) == 1 + 1 + 5 and len(m.boxes) == 1 + 5  # untimed embedding, warm-up, timed calls
        assert set(m.threads) == {1} and m.images[0] == (1, 3, m.input_size, m.input_size)
        x0, y0, x1, y1 = m.boxes[0][0].tolist()
        assert 0 < x0 < x1 < m.input_size and 0 < y0 < y1 < m.input_size
    t, s = r["teacher"], r["student"]
    assert t["encoder_ms"] >= 30 and 3 <= s["encoder_ms"] < 30
    assert t["encoder_plus_decoder_ms"] == t["encoder_ms"] + t["decoder_ms"]
    assert r["ratio"]["encoder_ms"] == t["encoder_ms"] / s["encoder_ms"] > 2
    assert r["ratio"]["encoder_plus_decoder_ms"] == t["encoder_plus_decoder_ms"] / s["encoder_plus_decoder_ms"]
