"""Figures: what loss_curve draws, and save_figure's PNG files."""

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from latentae.plots import LOG_STEPS_FROM, loss_curve, moving_average, save_figure
from tests.conftest import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(n, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    loss = 1 + 5 / np.sqrt(steps) + 0.2 * rng.standard_normal(n)
    return {"step": steps.tolist(), "loss": loss.tolist()}


def _validation(n, every):
    steps = list(range(every, n + 1, every))
    return {"step": steps, "nll": [1 + 5 / np.sqrt(s) for s in steps]}


def test_loss_curve_draws_raw_smoothed_and_validation_lines():
    history, validation = _history(3000), _validation(3000, 150)
    fig = loss_curve(history, validation)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    raw, smooth, val = ax.get_lines()
    assert raw.get_label() == "training loss (per step)"
    assert smooth.get_label() == "moving average (≤120 steps)"
    assert val.get_label() == "validation NLL"
    np.testing.assert_array_equal(raw.get_xdata(), history["step"])
    np.testing.assert_array_equal(raw.get_ydata(), history["loss"])
    np.testing.assert_array_equal(val.get_xdata(), validation["step"])
    np.testing.assert_array_equal(val.get_ydata(), validation["nll"])
    assert len(smooth.get_ydata()) == 3000
    # The raw loss is light, under a solid moving average; validation scores are marked.
    assert raw.get_alpha() < 0.5
    assert smooth.get_alpha() is None
    assert val.get_marker() == "o"
    # The moving average of noisy values is smoother than they are.
    assert np.diff(smooth.get_ydata()).std() < np.diff(raw.get_ydata()).std() / 5
    # A long run gets a logarithmic step axis, and it says so.
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "optimizer step (log scale)"
    assert "log p_dec(x | h)" in ax.get_ylabel()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [raw.get_label(), smooth.get_label(), val.get_label()]


def test_short_history_is_linear_and_unsmoothed():
    fig = loss_curve({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5]})
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == ["training loss (per step)"]
    assert ax.get_xscale() == "linear"
    assert ax.get_xlabel() == "optimizer step"
    assert ax.get_legend() is not None


@pytest.mark.parametrize(("n", "scale"), [(LOG_STEPS_FROM - 1, "linear"), (LOG_STEPS_FROM, "log")])
def test_log_axis_starts_at_the_threshold(n, scale):
    assert loss_curve(_history(n)).axes[0].get_xscale() == scale


def test_loss_curve_draws_on_given_axes():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert loss_curve(_history(100), _validation(100, 10), ax=right) is fig
    assert not left.get_lines()
    assert len(right.get_lines()) == 3


def test_empty_validation_draws_no_validation_line():
    fig = loss_curve(_history(100), {"step": [], "nll": []})
    assert "validation NLL" not in [line.get_label() for line in fig.axes[0].get_lines()]


@pytest.mark.parametrize(
    ("history", "validation", "expected"),
    [
        ({"step": [], "loss": []}, None, "no training steps"),
        ({"step": [1, 2], "loss": [1.0]}, None, "equal length"),
        ({"loss": [1.0]}, None, "'step'"),
        ({"step": [1], "loss": [1.0]}, {"step": [1], "loss": [1.0]}, "'nll'"),
    ],
)
def test_loss_curve_rejects_malformed_histories(history, validation, expected):
    with pytest.raises(ValueError, match=expected):
        loss_curve(history, validation)


def test_moving_average_is_a_centered_mean_that_narrows_at_the_start():
    values = np.random.default_rng(1).standard_normal(500)
    smooth = moving_average(values, 21)
    assert smooth.shape == values.shape
    # Past entry 100 the window is the full 21 entries, centered.
    for i in (100, 250, 489):
        assert smooth[i] == pytest.approx(values[i - 10 : i + 11].mean())
    # Near the start it spans i +- (i + 1) // 10 entries; at the end only the past side.
    assert smooth[0] == values[0]
    assert smooth[30] == pytest.approx(values[27:34].mean())
    assert smooth[-1] == pytest.approx(values[-11:].mean())
    np.testing.assert_array_equal(moving_average(values, 1), values)
    with pytest.raises(ValueError, match="window"):
        moving_average(values, 0)


def test_save_figure_writes_a_png_atomically(tmp_path):
    fig = loss_curve(_history(200), _validation(200, 20))
    path = tmp_path / "sub" / "loss.png"
    assert save_figure(fig, path) == path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # a rendered plot, not an empty canvas
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]


def test_save_figure_keeps_the_old_file_when_rendering_fails(tmp_path, monkeypatch):
    path = tmp_path / "loss.png"
    save_figure(loss_curve(_history(50)), path)
    before = path.read_bytes()
    fig = loss_curve(_history(60))

    def broken(fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]


def test_plots_never_import_pyplot(tmp_path):
    code = (
        "import sys; from latentae.plots import loss_curve, save_figure; "
        "save_figure(loss_curve({'step': [1, 2], 'loss': [2.0, 1.0]}), sys.argv[1]); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "loss.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
