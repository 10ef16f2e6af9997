"""Figures: what loss_curve and vector_field draw, and save_figure's PNG files."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver

import latentae as lae
from latentae.plots import LOG_STEPS_FROM, loss_curve, moving_average, save_figure, vector_field
from latentae.score import model_score, reconstruction
from latentae.units import GaussianDecoder, GaussianEncoder
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


# ---------------------------------------------------------------------------- vector_field


def _dae_2d():
    return GaussianEncoder(2, 3, hidden=(8,), noise=0.0), GaussianDecoder(3, 2, hidden=(8,))


def _quiver(ax):
    (quiver,) = [c for c in ax.collections if isinstance(c, Quiver)]
    return quiver


def _arrows(quiver):
    return np.column_stack([quiver.U, quiver.V]), np.column_stack([quiver.X, quiver.Y])


def test_vector_field_draws_r_minus_x_on_a_grid_over_the_data():
    enc, dec = _dae_2d()
    data = torch.randn(100, 2)
    fig = vector_field(enc, dec, data, grid=6)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_title() == "DAE: r(x) − x"
    arrows, points = _arrows(_quiver(ax))
    assert points.shape == (36, 2)
    # The grid spans the data's range plus 10% on each side.
    low, high = data.min(0).values.numpy(), data.max(0).values.numpy()
    np.testing.assert_allclose(points.min(0), low - 0.1 * (high - low))
    np.testing.assert_allclose(points.max(0), high + 0.1 * (high - low))
    grid = torch.as_tensor(points)
    with torch.no_grad():
        expected = (reconstruction(enc, dec, grid) - grid).numpy()
    np.testing.assert_allclose(arrows, expected, rtol=1e-12, atol=1e-12)
    scatters = [c for c in ax.collections if c is not _quiver(ax)]
    np.testing.assert_array_equal(scatters[0].get_offsets(), data.numpy())


def test_vector_field_puts_the_exact_field_beside_on_one_scale():
    jm = lae.JointModel.from_file(ROOT / "models" / "mixture.py")
    enc, dec = _dae_2d()
    data = jm.sample(200, seed=0)[1]
    fig = vector_field(enc, dec, data, 0.5, reference=jm, grid=5, bounds=((-4, 4), (-4, 3)))
    left, right = fig.axes
    assert right.get_title() == "exact: σ²∇log p_σ(x), σ = 0.5"
    arrows, points = _arrows(_quiver(right))
    assert (points.min(0) == [-4, -4]).all() and (points.max(0) == [4, 3]).all()
    expected = 0.25 * model_score(jm, torch.as_tensor(points), 0.5).numpy()
    np.testing.assert_allclose(arrows, expected, rtol=1e-12, atol=1e-12)
    assert _quiver(left).scale == _quiver(right).scale

    # A callable reference gives the score itself.
    fig = vector_field(enc, dec, data, 0.5, reference=lambda x: -x, grid=4)
    arrows, points = _arrows(_quiver(fig.axes[1]))
    np.testing.assert_allclose(arrows, -0.25 * points)


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"data": np.zeros((10, 3))}, ValueError, r"shape \(n, 2\)"),
        ({"grid": 1}, ValueError, "grid must be an integer >= 2"),
        ({"reference": lambda x: -x}, ValueError, "needs sigma"),
        ({"reference": 42, "sigma": 0.5}, TypeError, "JointModel.*or a callable"),
        ({"reference": lambda x: x[:, :1], "sigma": 0.5}, ValueError, "returned shape"),
        ({"bounds": ((1, 0), (0, 1))}, ValueError, "min < max"),
        ({"bounds": (0, 1)}, ValueError, r"\(\(xmin, xmax\), \(ymin, ymax\)\)"),
        ({"sigma": -1.0}, ValueError, "sigma must be a positive number"),
    ],
)
def test_vector_field_rejects_bad_input(kwargs, error, expected):
    enc, dec = _dae_2d()
    args = {"data": np.random.default_rng(0).standard_normal((10, 2)), **kwargs}
    with pytest.raises(error, match=expected):
        vector_field(enc, dec, **args)


def test_vector_field_refuses_a_model_not_in_the_plane():
    jm = lae.JointModel.from_file(ROOT / "models" / "ppca.py")
    enc, dec = _dae_2d()
    with pytest.raises(ValueError, match=r"\(5,\)-shaped points, not 2-D"):
        vector_field(enc, dec, np.zeros((4, 2)), 0.5, reference=jm)
