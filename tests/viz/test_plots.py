"""curves.png: phases labelled, stage 1 shown by what it trains (embedding MSE), plain log ticks."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from samdistill.viz.plots import curves_figure, encoder_only, plain_log_ticks, plot_curves  # noqa: E402


def _kdsam_history():
    s1 = [{"phase": "stage1", "epoch": e, "train_seconds": 1.0, "train_mse": 1.0 / e, "train_perceptual": 0.3,
           "train_loss": 1.1 / e, "val_dice": 0.0, "val_mse": 1.05 / e} for e in (1, 2, 3)]
    s2 = [{"phase": "stage2", "epoch": e, "train_seconds": 1.0, "train_mse": 0.3, "train_dice": 0.5, "train_bce": 0.4,
           "train_loss": 1.5 - 0.1 * e, "val_dice": 0.6 + 0.1 * e, "val_mse": 0.31} for e in (1, 2)]
    return s1 + s2


def test_encoder_only_phase_is_recognised_from_its_loss_terms():
    h = _kdsam_history()
    assert encoder_only(h[:3]) and not encoder_only(h[3:])
    assert not encoder_only([{"phase": "knowsam", "train_sup": 0.4, "train_loss": 0.4, "train_seconds": 1}])


def test_curves_label_phases_and_show_stage1_mse_not_a_bare_zero_dice():
    fig = curves_figure(_kdsam_history())
    fig.canvas.draw()
    loss_ax, mse_ax, dice_ax = fig.axes
    assert "MSE" in mse_ax.get_title() and "Dice" in dice_ax.get_title()
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    # the embedding MSE is plotted through both phases (stage 1 validation: epochs 1-3)
    mse_lines = {ln.get_label(): list(ln.get_xdata()) for ln in mse_ax.get_lines() if ln.get_label().endswith("validation")}
    assert mse_lines == {"stage1 validation": [1, 2, 3], "stage2 validation": [4, 5]}
    # stage 1's Dice is drawn apart and labelled as the untrained decoder's; stage 2's is the real curve
    dice_lines = {ln.get_label(): list(ln.get_xdata()) for ln in dice_ax.get_lines() if not ln.get_label().startswith("_")}
    assert dice_lines == {"stage1 (decoder not trained yet)": [1, 2, 3], "stage2": [4, 5]}
    assert "encoder only" in " ".join(t.get_text() for t in fig.texts)
    # each axis names its phases and draws the divider between them at 3.5
    for ax in fig.axes:
        names = {t.get_text() for t in ax.texts}
        assert names == {"stage1 (encoder)", "stage2"}
        assert any(list(ln.get_xdata()) == [3.5, 3.5] for ln in ax.get_lines())
        assert ax.get_legend() is not None
    # log axes read as plain numbers, not mantissa x 10^k
    for ax in (loss_ax, mse_ax):
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) >= 2 and all(float(s) > 0 for s in labels), labels
        assert not [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
    plt.close(fig)


def test_single_phase_without_mse_gets_two_panels_and_plain_dice(tmp_path):
    h = [{"phase": "knowsam", "epoch": e, "train_seconds": 1.0, "train_sup": 0.5, "train_loss": 0.5 / e,
          "val_dice": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    fig = curves_figure(h)
    assert len(fig.axes) == 2 and not fig.texts
    assert [ln.get_label() for ln in fig.axes[1].get_lines() if not ln.get_label().startswith("_")] == ["knowsam"]
    plt.close(fig)
    plot_curves(h, tmp_path / "plots" / "curves.png")
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 5000


@pytest.mark.parametrize("lim,expected", [((80, 1500), ["100", "200", "500", "1000"]),
                                          ((2, 60), ["2", "5", "10", "20", "50"]),
                                          ((0.88, 1.03), ["0.9", "0.95", "1"])])
def test_plain_log_ticks(lim, expected):
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(*lim)
    plain_log_ticks(ax.xaxis)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()] == expected
    plt.close(fig)
