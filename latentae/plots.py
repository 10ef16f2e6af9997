"""Matplotlib figures of training runs and of the fields a DAE learns.

Figures are built as `matplotlib.figure.Figure` objects, never through ``pyplot``: no
global figure state, no interactive backend, nothing to close, and safe in threads and
tests. [`save_figure`][] renders them with the Agg canvas.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure

from latentae._util import atomic_write

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.axes import Axes
    from torch import nn

    from latentae.joint import JointModel

__all__ = ["compatibility_figure", "loss_curve", "save_figure", "vector_field"]

# A history longer than this many steps gets a logarithmic step axis: a DAE's loss falls
# steeply in the first few hundred steps and then slowly, and a linear axis squeezes the
# first phase into a sliver at the left.
LOG_STEPS_FROM = 1000
# The moving average spans ~4% of the history (between 2 and 500 steps): wide enough to
# average out minibatch noise, narrow enough to follow the early fall.
_SMOOTH_FRACTION, _SMOOTH_MAX = 0.04, 500
# Near the start the moving average spans entries i ± i/10 (see moving_average).
_GROWTH = 0.1
_TRAIN_COLOR, _VALIDATION_COLOR = "C0", "C3"


def _series(values: Mapping[str, Sequence[float]], key: str, what: str) -> tuple[Any, Any]:
    """The (step, value) arrays of a history dict, checked to be non-empty and aligned."""
    if not isinstance(values, Mapping) or "step" not in values or key not in values:
        raise ValueError(
            f"{what} must be a mapping with 'step' and {key!r} lists, as in FitResult.{what}"
        )
    steps = np.asarray(values["step"], dtype=float)
    ys = np.asarray(values[key], dtype=float)
    if steps.ndim != 1 or steps.shape != ys.shape:
        raise ValueError(
            f"{what}['step'] and {what}[{key!r}] must be 1-D lists of equal length, got "
            f"shapes {steps.shape} and {ys.shape}"
        )
    return steps, ys


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centered moving average of ``values`` over up to ``window`` entries, same length.

    Near the start the window narrows to about a fifth of the entry's position (entry i
    averages entries i ± i/10), so a steep early fall is followed rather than flattened: on
    a logarithmic step axis the smoothing then looks about equally wide everywhere. At the
    end the window keeps its past side only, so the curve neither lags nor loses its end.

    Examples:
        >>> moving_average([float(i) for i in range(40)], 5)[[5, 20, 39]]
        array([ 5., 20., 38.])
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    v = np.asarray(values, dtype=float)
    if window == 1:
        return v.copy()
    n = len(v)
    idx = np.arange(n)
    half = np.minimum(window // 2, ((idx + 1) * _GROWTH).astype(int))
    lo = np.clip(idx - half, 0, n)
    hi = np.clip(idx + half + 1, 0, n)
    cumsum = np.concatenate([[0.0], np.cumsum(v)])
    return (cumsum[hi] - cumsum[lo]) / (hi - lo)


def loss_curve(
    history: Mapping[str, Sequence[float]],
    validation: Mapping[str, Sequence[float]] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Plot a DAE's training loss per step and its validation NLL on one pair of axes.

    The raw per-step loss is drawn in a light color under its moving average; validation
    scores are points joined by a line. Both are -log p_dec(x | h) per data row, so they
    share the y axis. Histories longer than `LOG_STEPS_FROM` steps get a logarithmic
    step axis.

    Args:
        history: ``{"step": [...], "loss": [...]}``, e.g. `FitResult.history`.
        validation: ``{"step": [...], "nll": [...]}``, e.g. `FitResult.validation`;
            ``None`` or empty lists draw no validation line.
        ax: axes to draw on; by default a new `Figure` is made.

    Returns:
        The figure that holds the axes.

    Raises:
        ValueError: ``history`` is empty or its lists are not aligned.

    Examples:
        >>> steps = list(range(1, 101))
        >>> history = {"step": steps, "loss": [1 + 1 / s for s in steps]}
        >>> fig = loss_curve(history, {"step": [50, 100], "nll": [1.1, 1.05]})
        >>> [line.get_label() for line in fig.axes[0].get_lines()]
        ['training loss (per step)', 'moving average (≤4 steps)', 'validation NLL']
    """
    steps, loss = _series(history, "loss", "history")
    if steps.size == 0:
        raise ValueError("history has no training steps to plot; train for at least one step")
    if ax is None:
        fig = Figure(figsize=(7.0, 4.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()

    window = int(min(_SMOOTH_MAX, max(1, round(_SMOOTH_FRACTION * steps.size))))
    if window > 1:
        ax.plot(steps, loss, color=_TRAIN_COLOR, alpha=0.25, lw=0.8,
                label="training loss (per step)")  # fmt: skip
        ax.plot(steps, moving_average(loss, window), color=_TRAIN_COLOR, lw=1.8,
                label=f"moving average (≤{window} steps)")  # fmt: skip
    else:
        ax.plot(steps, loss, color=_TRAIN_COLOR, lw=1.5, label="training loss (per step)")

    if validation is not None:
        v_steps, nll = _series(validation, "nll", "validation")
        if v_steps.size:
            ax.plot(v_steps, nll, color=_VALIDATION_COLOR, marker="o", ms=4, lw=1.2,
                    label="validation NLL")  # fmt: skip

    if steps[-1] >= LOG_STEPS_FROM and steps[0] > 0:
        ax.set_xscale("log")
    ax.set_xlabel("optimizer step" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("−log p_dec(x | h) per row (nats)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper right", frameon=False)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically: readers never see a partial file.

    Args:
        fig: the figure, e.g. from [`loss_curve`][].
        path: the PNG file to write; its folder is created if needed.
        dpi: resolution in dots per inch.

    Returns:
        ``path`` as a `Path`.

    Examples:
        >>> import tempfile, pathlib
        >>> fig = loss_curve({"step": [1, 2], "loss": [2.0, 1.0]})
        >>> path = save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "loss.png")
        >>> path.read_bytes()[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    # The temporary name ends in .tmp, so the format cannot be inferred from it.
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


# Points drawn in each scatter panel: enough to show the shape, few enough to stay legible.
_SCATTER_POINTS = 2000


def compatibility_figure(report: Any, *, title: str | None = None) -> Figure:
    """Draws behind a [`CompatibilityReport`][latentae.compat.CompatibilityReport], side by side.

    Left: the cross-differences Δd against Δe of the cross-ratio's pairs; a compatible pair
    puts every point on the diagonal. Right: the Gibbs chains' late draws over the held-out
    rows (the first two coordinates of x, or a histogram for scalar x); a compatible pair's
    chain keeps the data law. A panel whose diagnostic did not run says why.

    Args:
        report: the result of [`latentae.compat.check`][].
        title: the figure's title.

    Returns:
        A two-panel Figure.

    Examples:
        >>> import latentae as lae
        >>> jm = lae.JointModel.from_file("models/ppca.py")
        >>> _, x = jm.sample(200, seed=0)
        >>> report = lae.compat.check(jm.encoder("laplace"), jm.decoder(), x, num_pairs=50,
        ...                           num_points=10, num_chains=50, burn_in=2, seed=0)
        >>> len(compatibility_figure(report).axes)
        2
    """
    results, skipped = report.results, report.skipped
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    cr = results.get("cross_ratio")
    if cr is not None and cr.delta_e is not None:
        de = cr.delta_e.detach().double().cpu().numpy()[:_SCATTER_POINTS]
        dd = cr.delta_d.detach().double().cpu().numpy()[:_SCATTER_POINTS]
        left.scatter(de, dd, s=6, alpha=0.5, color="C0", linewidths=0)
        ends = np.nanpercentile(np.concatenate([de, dd]), [0.5, 99.5])
        left.plot(ends, ends, color="0.3", lw=1, label="compatible: Δd = Δe")
        left.set(xlabel="Δe (encoder cross-difference)", ylabel="Δd (decoder cross-difference)")
        left.set_title(f"cross-ratio {cr.statistic:.3g} ± {cr.stderr:.2g}", fontsize=10)
        left.legend(loc="upper left", fontsize=8)
    else:
        _note(left, "cross-ratio", skipped.get("cross_ratio", "not run"))
    gibbs = results.get("gibbs")
    if gibbs is not None and gibbs.draws is not None:
        draws = gibbs.draws.detach().double().cpu().reshape(len(gibbs.draws), -1).numpy()
        held = gibbs.heldout.detach().double().cpu().reshape(len(gibbs.heldout), -1).numpy()
        if draws.shape[1] >= 2:
            for points, label, color in ((held, "held-out data", "0.6"), (draws, "chains", "C3")):
                points = points[:_SCATTER_POINTS]
                right.scatter(points[:, 0], points[:, 1], s=6, alpha=0.5, color=color,
                              label=label, linewidths=0)  # fmt: skip
            right.set(xlabel="x[0]", ylabel="x[1]")
        else:
            bins = np.histogram_bin_edges(np.concatenate([held[:, 0], draws[:, 0]]), bins=40)
            right.hist(held[:, 0], bins=bins, density=True, color="0.6", label="held-out data")
            right.hist(draws[:, 0], bins=bins, density=True, histtype="step", color="C3",
                       lw=1.5, label="chains")  # fmt: skip
            right.set(xlabel="x", ylabel="density")
        right.set_title(
            f"Gibbs chains, {gibbs.burn_in} steps: MMD² p = {gibbs.mmd_pvalue:.2g}, "
            f"energy p = {gibbs.energy_pvalue:.2g}",
            fontsize=10,
        )
        right.legend(loc="upper left", fontsize=8)
    else:
        _note(right, "Gibbs test", skipped.get("gibbs", "not run"))
    if title:
        fig.suptitle(title)
    return fig


def _note(ax: Axes, what: str, why: str) -> None:
    """An empty panel that says why a diagnostic has no picture."""
    ax.set_axis_off()
    text = f"{what}: not applicable\n\n{why}"
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9,
            transform=ax.transAxes)  # fmt: skip


# The quantile of the arrow lengths drawn one grid cell long (see vector_field).
_ARROW_QUANTILE = 0.75


def _plane_points(data: Any) -> np.ndarray:
    """``data`` as a float array of shape (n, 2), checked."""
    if torch.is_tensor(data):
        data = data.detach().cpu().numpy()
    points = np.asarray(data, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(
            f"vector_field draws 2-D data: data must have shape (n, 2), got {points.shape}; "
            "project higher-dimensional data to two coordinates first"
        )
    if not np.isfinite(points).all():
        raise ValueError("data has non-finite values; remove those rows first")
    return points


def _grid_bounds(points: np.ndarray, bounds: Any) -> tuple[tuple[float, float], ...]:
    if bounds is None:
        # The data's range plus 10% on each side: the field is most telling just off the data.
        low, high = points.min(0), points.max(0)
        pad = 0.1 * np.maximum(high - low, 1e-6)
        return tuple((float(a), float(b)) for a, b in zip(low - pad, high + pad, strict=True))
    try:
        (x0, x1), (y0, y1) = bounds
        out = ((float(x0), float(x1)), (float(y0), float(y1)))
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be ((xmin, xmax), (ymin, ymax)), got {bounds!r}") from None
    if not all(np.isfinite(v).all() and v[0] < v[1] for v in map(np.asarray, out)):
        raise ValueError(f"bounds must be finite with min < max on each axis, got {bounds!r}")
    return out


def vector_field(
    encoder: nn.Module,
    decoder: nn.Module,
    data: Any,
    sigma: float | None = None,
    *,
    reference: JointModel | Callable[[torch.Tensor], torch.Tensor] | None = None,
    grid: int = 20,
    bounds: Any = None,
    num_samples: int = 64,
    seed: int | None = 0,
) -> Figure:
    """Draw a DAE's reconstruction field r(x) − x over a 2-D grid, with the data scattered.

    The arrows point from x to the reconstruction r(x) (*Deep Learning* fig. 14.4–14.5): for
    a DAE trained with Gaussian corruption σ they estimate σ²∇log p_σ(x), so they point
    towards the data and vanish on its modes and ridges. With ``reference`` a second panel
    draws the exact field σ²∇log p_σ(x) beside it, on the same grid and with the same arrow
    scale, so the two panels compare arrow for arrow. Arrows are drawn to scale, the one at
    the 75th percentile of all lengths one grid cell long.

    Args:
        encoder: the DAE's encoder q(h | x̃) (see [`latentae.score.reconstruction`][]).
        decoder: its decoder p_dec(x | h).
        data: points to scatter, shape ``(n, 2)`` (a tensor or an array).
        sigma: the training corruption's standard deviation; needed with ``reference``.
        reference: the exact score ∇log p_σ: a [`JointModel`][latentae.JointModel] with an exact
            encoder (scored by [`latentae.score.model_score`][] at ``sigma``), or a callable
            mapping points of shape ``(m, 2)`` to scores of that shape.
        grid: arrows per axis.
        bounds: ``((xmin, xmax), (ymin, ymax))``; by default the data's range plus 10%.
        num_samples: draws of h per point for a stochastic encoder.
        seed: seed of those draws.

    Returns:
        A figure with one panel, or two with ``reference``.

    Raises:
        ValueError: the data are not 2-D points, ``grid < 2``, ``bounds`` is malformed,
            ``reference`` is given without a positive ``sigma``, or the reference's points
            are not 2-D.
        TypeError: ``reference`` is neither a JointModel nor a callable.

    Examples:
        >>> from latentae.units import GaussianDecoder, GaussianEncoder
        >>> enc, dec = GaussianEncoder(2, 3, noise=0.0), GaussianDecoder(3, 2)
        >>> fig = vector_field(enc, dec, torch.randn(50, 2), grid=5)
        >>> [ax.get_title() for ax in fig.axes]
        ['DAE: r(x) − x']
    """
    from latentae.joint import JointModel
    from latentae.score import model_score, reconstruction

    points = _plane_points(data)
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2 (arrows per axis), got {grid!r}")
    if sigma is not None and (
        isinstance(sigma, bool) or not isinstance(sigma, int | float) or not 0 < sigma < np.inf
    ):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    if reference is not None:
        if sigma is None:
            raise ValueError(
                "a reference field needs sigma=..., the training corruption's standard "
                "deviation: the exact field drawn is sigma² ∇log p_sigma(x)"
            )
        if isinstance(reference, JointModel):
            if tuple(reference.observed_shape) != (2,):
                raise ValueError(
                    f"reference {reference!r} observes {tuple(reference.observed_shape)}-"
                    "shaped points, not 2-D ones; vector_field draws fields in the plane"
                )
        elif not callable(reference):
            raise TypeError(
                "reference must be a JointModel with an exact encoder or a callable "
                f"x -> score, not {type(reference).__name__}"
            )
    (x0, x1), (y0, y1) = _grid_bounds(points, bounds)
    gx, gy = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    param = next(iter(encoder.parameters()), None)
    dtype = param.dtype if param is not None else torch.get_default_dtype()
    device = param.device if param is not None else None
    x = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=dtype, device=device)

    with torch.no_grad():
        r = reconstruction(encoder, decoder, x, num_samples=num_samples, seed=seed)
        fields = [("DAE: r(x) − x", (r - x).cpu().numpy())]
    if reference is not None:
        if isinstance(reference, JointModel):
            # Model scripts hold their constants on the CPU.
            score = model_score(reference, x.cpu().to(reference.dtype), sigma)
        else:
            score = torch.as_tensor(reference(x))
        if tuple(score.shape) != tuple(x.shape):
            raise ValueError(
                f"the reference returned shape {tuple(score.shape)} for points of shape "
                f"{tuple(x.shape)}; it must return one 2-D score per point"
            )
        exact = sigma**2 * score.detach().to(torch.float64).cpu().numpy()
        fields.append((f"exact: σ²∇log p_σ(x), σ = {sigma:g}", exact))

    # One arrow scale for every panel. The field grows linearly away from the data, so
    # fitting the longest arrow into a cell would shrink those near the data to dots: the
    # arrow at the _ARROW_QUANTILE of all lengths spans a cell, and a few far ones run long.
    lengths = np.concatenate([np.hypot(f[:, 0], f[:, 1]) for _, f in fields])
    typical = float(np.quantile(lengths, _ARROW_QUANTILE))
    cell = min((x1 - x0) / (grid - 1), (y1 - y0) / (grid - 1))
    scale = typical / cell if typical > 0 else 1.0

    fig = Figure(figsize=(5.0 * len(fields), 4.6), layout="constrained")
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    for ax, (title, field) in zip(axes, fields, strict=True):
        ax.scatter(points[:, 0], points[:, 1], s=4, color="C1", alpha=0.35, lw=0, label="data")
        ax.quiver(gx.ravel(), gy.ravel(), field[:, 0], field[:, 1], color=_TRAIN_COLOR,
                  angles="xy", scale_units="xy", scale=scale, width=0.004)  # fmt: skip
        ax.set_title(title)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x₁")
        ax.set_ylabel("x₂")
    return fig
