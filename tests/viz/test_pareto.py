"""bench's pareto.png: plain-number log ticks, numbered markers whose labels do not overlap, titles."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from samdistill.viz.pareto import pareto_figure, pareto_plot  # noqa: E402

# the three rows of benchmarks/results/bench_kvasir_seg.json (teacher, student, its ONNX export)
ROWS = [
    {"model": "litemedsam", "backend": "torch", "dice": 0.93814, "encoder_gmacs": 37.474,
     "latency_ms": {"end_to_end": 1070.98}},
    {"model": "/w/benchmarks/results/runs/kdsam_kvasir_seg/student.pt", "backend": "torch", "dice": 0.9237729,
     "encoder_gmacs": 3.1698, "latency_ms": {"end_to_end": 93.76}},
    {"model": "/w/benchmarks/results/runs/kdsam_kvasir_seg/onnx", "backend": "onnx", "dice": 0.9237727,
     "encoder_gmacs": None, "latency_ms": {"end_to_end": 101.18}},
]


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_pareto_ticks_labels_and_titles(tmp_path):
    fig = pareto_figure(ROWS, "kvasir_seg/test", threads=2)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lat, macs = fig.axes
    assert "ms" in lat.get_xlabel() and "GMACs" in macs.get_xlabel() and "Dice" in lat.get_ylabel()
    assert "kvasir_seg/test" in fig.get_suptitle() and "2 threads" in fig.get_suptitle()
    for ax in (lat, macs):
        ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(ticks) >= 3 and all(float(t) > 0 for t in ticks), ticks  # "100", not "$10^{2}$"
        assert not [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
    assert [t.get_text() for t in lat.get_xticklabels() if t.get_text()] == ["100", "200", "500", "1000"]
    # the student and its ONNX export sit on top of each other: one label "2, 3", not two colliding names
    assert sorted(t.get_text() for t in lat.texts) == ["1", "2, 3"]
    assert sorted(t.get_text() for t in macs.texts) == ["1", "2"]  # ONNX rows have no MAC count
    for ax in (lat, macs):
        boxes = [t.get_window_extent(r) for t in ax.texts]
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("1  litemedsam (torch): Dice 0.9381")
    assert legend[1].startswith("2  kdsam_kvasir_seg/student.pt (torch)")
    assert legend[2].startswith("3  kdsam_kvasir_seg/onnx (onnx)") and "MACs not counted" in legend[2]
    plt.close(fig)
    pareto_plot(ROWS, tmp_path / "p.png", "kvasir_seg/test", threads=2)
    assert (tmp_path / "p.png").stat().st_size > 10000
