"""Closed forms for Gaussians and linear-Gaussian pairs (the references the diagnostics and
tests compare against), and two-sample tests (unbiased MMD, energy distance, permutation
p-values) for comparing sampled laws, such as Gibbs-chain draws against held-out data."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from latentae._util import Seed, check_finite, check_positive_int, seeded

__all__ = [
    "LinearGaussian",
    "TwoSampleResult",
    "energy_distance",
    "expected_conditional_kl",
    "gaussian_kl",
    "median_heuristic",
    "mmd2",
    "reverse_conditional",
    "two_sample_test",
]


class LinearGaussian(NamedTuple):
    """A linear-Gaussian conditional y | z ~ N(weight z + bias, cov)."""

    weight: Tensor
    bias: Tensor
    cov: Tensor


def gaussian_kl(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    """KL(N(mean_p, cov_p) || N(mean_q, cov_q)) in nats (batched over leading dims).

    Examples:
        >>> float(gaussian_kl(torch.zeros(2), torch.eye(2), torch.ones(2), torch.eye(2)))
        1.0
    """
    d = mean_p.shape[-1]
    lq = torch.linalg.cholesky(cov_q)
    trace = torch.cholesky_solve(cov_p, lq).diagonal(dim1=-2, dim2=-1).sum(-1)
    diff = (mean_q - mean_p).unsqueeze(-1)
    maha = (diff * torch.cholesky_solve(diff, lq)).sum((-2, -1))
    logdet = torch.linalg.slogdet(cov_q)[1] - torch.linalg.slogdet(cov_p)[1]
    return 0.5 * (trace - d + maha + logdet)


def reverse_conditional(
    x_mean: Tensor, x_cov: Tensor, forward: LinearGaussian
) -> tuple[LinearGaussian, Tensor, Tensor]:
    """Reverse a linear-Gaussian pair: with x ~ N(x_mean, x_cov) and h | x ~ forward, return
    the conditional x | h and the marginal mean and covariance of h.

    Applied to p_data(x) (taken Gaussian) and a DAE's encoder p_enc(h | x), the reverse
    conditional is the optimal decoder q(x | h) of eq. 14.14 (Alain et al. 2015).

    Examples:
        >>> fwd = LinearGaussian(torch.eye(2), torch.zeros(2), torch.eye(2))
        >>> back, h_mean, h_cov = reverse_conditional(torch.zeros(2), torch.eye(2), fwd)
        >>> back.weight
        tensor([[0.5000, 0.0000],
                [0.0000, 0.5000]])
    """
    v, c, sigma = forward
    h_mean = v @ x_mean + c
    h_cov = v @ x_cov @ v.T + sigma
    gain = torch.linalg.solve(h_cov, v @ x_cov).T  # x_cov V^T h_cov^-1
    weight = gain
    bias = x_mean - gain @ h_mean
    cov = x_cov - gain @ v @ x_cov
    return LinearGaussian(weight, bias, 0.5 * (cov + cov.T)), h_mean, h_cov


def expected_conditional_kl(
    h_mean: Tensor, h_cov: Tensor, p: LinearGaussian, q: LinearGaussian
) -> Tensor:
    """E_{h ~ N(h_mean, h_cov)} KL(p(x | h) || q(x | h)) for two linear-Gaussian conditionals.

    The KL at h is that of two Gaussians whose means differ by (W_p - W_q) h + b_p - b_q; its
    expectation adds tr(Psi_q^-1 D h_cov D^T) to the KL at the mean of h.

    Examples:
        >>> p = LinearGaussian(torch.eye(2), torch.zeros(2), torch.eye(2))
        >>> float(expected_conditional_kl(torch.zeros(2), torch.eye(2), p, p))
        0.0
    """
    at_mean = gaussian_kl(p.weight @ h_mean + p.bias, p.cov, q.weight @ h_mean + q.bias, q.cov)
    diff = p.weight - q.weight
    spread = torch.linalg.solve(q.cov, diff @ h_cov @ diff.T).trace()
    return at_mean + 0.5 * spread


# --- Two-sample tests ----------------------------------------------------------------------------
#
# Both statistics are U-statistics over the pooled sample z = (x, y) of size N = m + n: with
# S_xx, S_yy the sums of a symmetric pair function f over ordered pairs i != j inside x (or y)
# and S_xy the sum over pairs across, MMD^2_u = S_xx/(m(m-1)) + S_yy/(n(n-1)) - 2 S_xy/(mn) with
# f the Gaussian kernel, and the energy distance is minus the same combination with f the
# Euclidean distance. A split of z into x and y is a 0/1 label vector l over z, and with K the
# pooled matrix of f (zero diagonal), S_xx = l'Kl, S_xx + S_xy = l'(K1) and
# S_xx + 2 S_xy + S_yy = 1'K1; so any number of splits (the observed one and the permutations)
# cost one pass over the tiles of K plus one matrix product per tile.

#: Default tile edge: a float64 tile of 4096 x 4096 holds 128 MiB.
DEFAULT_BLOCK_SIZE = 4096
#: The median heuristic looks at the pairwise distances of at most this many points.
MEDIAN_MAX_POINTS = 2000
# Label entries (permutations x pooled size) held at once; a larger number of permutations is
# processed in chunks, each chunk costing one more pass over the tiles.
_MAX_LABEL_ENTRIES = 2**24
# Two statistics closer than this, relative to the size of the terms they are the difference of,
# count as tied: splits that differ only by swapping equal points must tie (Phipson & Smyth
# count ties as >=), and their float64 sums differ by rounding only (~1e-13 relative).
_TIE_RTOL = 1e-10

Statistic = Literal["mmd", "energy"]
_STATISTICS = ("mmd", "energy")


class TwoSampleResult(NamedTuple):
    """A permutation two-sample test of "x and y are drawn from the same law".

    Attributes:
        statistic: the observed statistic, the unbiased MMD^2 (``"mmd"``) or the unbiased
            energy distance (``"energy"``); either has mean 0 when the laws are equal.
        pvalue: (1 + #{permuted statistic >= observed}) / (1 + num_permutations)
            (Phipson & Smyth 2010): never 0, and P(pvalue <= a) <= a under the null.
        num_permutations: random splits of the pooled sample the statistic was compared with.
        bandwidth: the Gaussian kernel's bandwidth for ``"mmd"`` (given, or the median
            heuristic on the pooled sample), ``None`` for ``"energy"``.
    """

    statistic: float
    pvalue: float
    num_permutations: int
    bandwidth: float | None


def _check_samples(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Validate two samples of shape (n, d) and bring them to one floating dtype (integers to
    the default dtype, half precision to float32)."""
    for name, s in (("x", x), ("y", y)):
        if not isinstance(s, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor of shape (n, d), not {type(s).__name__}"
            )
        if s.dim() != 2:
            hint = f"; for one feature use {name}.reshape(-1, 1)" if s.dim() == 1 else ""
            raise ValueError(
                f"{name} must be a 2-D tensor of shape (n, d), got shape {tuple(s.shape)}{hint}"
            )
        if s.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 rows (samples), got {s.shape[0]}")
        if s.shape[1] < 1:
            raise ValueError(
                f"{name} needs at least 1 column (feature), got shape {tuple(s.shape)}"
            )
        if s.is_complex():
            raise ValueError(f"{name} must be real, got dtype {s.dtype}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of columns, got {x.shape[1]} and {y.shape[1]}"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on one device, got {x.device} and {y.device}")
    dtype = torch.result_type(x, y)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    elif torch.finfo(dtype).bits < 32:
        dtype = torch.float32  # kernel values to 3 digits would swamp the statistic
    x, y = x.to(dtype), y.to(dtype)
    check_finite(x, "x")
    check_finite(y, "y")
    return x, y


def _check_bandwidth(bandwidth: float | Tensor) -> float:
    try:
        value = float(bandwidth)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"bandwidth must be a positive number or None, got {bandwidth!r}"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"bandwidth must be a positive finite number or None, got {value}")
    return value


class _Pairs(NamedTuple):
    """Tiles of the pair function on a centred pooled sample.

    A tile of squared distances is one matrix product, ``left[i] @ right[j]`` =
    |z_i|^2 + |z_j|^2 - 2 z_i.z_j (times -1/(2 bandwidth^2) for the kernel, whose exp then
    needs nothing else). Its rounding error is up to ~``tol``, so two equal points come out
    ~1e-8 (float64) or ~1e-4 (float32) apart after the square root: for the distances, the
    entries below ``tol`` are recomputed from coordinate differences, which makes equal points
    exactly 0 apart (discrete data; ties between permutations).
    """

    z: Tensor
    left: Tensor
    right: Tensor
    kernel: bool
    tol: float

    @classmethod
    def build(cls, z: Tensor, bandwidth: float | None) -> _Pairs:
        # Centring changes no statistic and keeps |z|^2 + |z'|^2 - 2 z.z' from cancelling.
        z = z - z.mean(0)
        sq = (z * z).sum(1, keepdim=True)
        ones = torch.ones_like(sq)
        left = torch.cat([z, sq, ones], 1)
        right = torch.cat([-2.0 * z, ones, sq], 1)
        if bandwidth is not None:
            right.mul_(-0.5 / bandwidth**2)
        # A bound on the rounding of a (d + 2)-term product of entries up to max |z|^2.
        tol = 16 * (z.shape[1] + 2) * torch.finfo(z.dtype).eps * float(sq.max())
        return cls(z, left, right, bandwidth is not None, tol)

    def tile(self, rows: slice, cols: slice, buffer: Tensor | None = None) -> Tensor:
        """The pair function on ``z[rows]`` x ``z[cols]``, written into ``buffer`` if given
        (reusing one buffer spares the page faults of a fresh large allocation per tile)."""
        left, right = self.left[rows], self.right[cols]
        if buffer is None:
            tile = left @ right.T
        else:
            size = left.shape[0] * right.shape[0]
            tile = torch.mm(left, right.T, out=buffer[:size].view(left.shape[0], -1))
        if self.kernel:
            return tile.clamp_(max=0.0).exp_()
        near = (tile <= self.tol).nonzero()
        if len(near):
            a, b = self.z[rows], self.z[cols]
            for part in near.split(max(1, 2**22 // a.shape[1])):
                i, j = part.unbind(1)
                tile[i, j] = (a[i] - b[j]).pow(2).sum(1)
        return tile.sqrt_()


def _split_sums(pairs: _Pairs, weights: Tensor, block_size: int) -> Tensor:
    """(S_xx, S_xy, S_yy) in float64, shape (P, 3), for each split of the pooled sample.

    ``weights`` (P + 1, N): P rows of 0/1 labels (1 for the first sample), then a row of ones.
    Only tiles on and above the diagonal are computed, and each is read by one matrix product
    (the labels, and the ones for the column sums) and, off the diagonal, one row sum.
    """
    size = pairs.z.shape[0]
    f64 = torch.float64
    labels = weights[:-1]
    quad = torch.zeros(labels.shape[0], dtype=f64, device=labels.device)
    rowsum = torch.zeros(size, dtype=f64, device=labels.device)
    buffer = pairs.z.new_empty(min(block_size, size) ** 2)
    for i0 in range(0, size, block_size):
        rows = slice(i0, min(i0 + block_size, size))
        for j0 in range(i0, size, block_size):
            cols = slice(j0, min(j0 + block_size, size))
            tile = pairs.tile(rows, cols, buffer)
            if i0 == j0:
                tile.fill_diagonal_(0.0)
            weighted = weights[:, rows] @ tile
            part = (weighted[:-1] * labels[:, cols]).sum(1, dtype=f64)
            rowsum[cols] += weighted[-1]  # column sums: the rows of the transposed tile
            if i0 == j0:
                quad += part
            else:  # the tile stands for itself and its transpose
                quad += 2.0 * part
                rowsum[rows] += tile.sum(1, dtype=f64)
    s_xx = quad
    s_xy = labels.to(f64) @ rowsum - s_xx
    s_yy = rowsum.sum() - s_xx - 2.0 * s_xy
    return torch.stack([s_xx, s_xy, s_yy], 1)


def _combine(sums: Tensor, m: int, n: int, kernel: bool) -> tuple[Tensor, Tensor]:
    """The statistic of each row of ``sums`` and the size of the terms it is a difference of."""
    s_xx, s_xy, s_yy = sums.unbind(1)
    within = s_xx / (m * (m - 1)) + s_yy / (n * (n - 1))
    across = 2.0 * s_xy / (m * n)
    value = within - across if kernel else across - within
    return value, within.abs() + across.abs()


def _observed(x: Tensor, y: Tensor, bandwidth: float | None, block_size: int) -> Tensor:
    m, n = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    with torch.no_grad():
        pairs = _Pairs.build(z, bandwidth)
        weights = torch.ones(2, m + n, dtype=z.dtype, device=z.device)
        weights[0, m:] = 0.0
        sums = _split_sums(pairs, weights, block_size)
        value, _ = _combine(sums, m, n, pairs.kernel)
    return value[0].to(z.dtype)


def _median_distance(z: Tensor, max_points: int, seed: int) -> float:
    if z.shape[0] > max_points:
        generator = torch.Generator().manual_seed(seed)
        z = z[torch.randperm(z.shape[0], generator=generator)[:max_points].to(z.device)]
    size = z.shape[0]
    with torch.no_grad():
        dist = _Pairs.build(z, None).tile(slice(None), slice(None))
        i, j = torch.triu_indices(size, size, 1, device=z.device)
        dist = dist[i, j].sort().values
    half = len(dist) // 2
    median = float(dist[half] if len(dist) % 2 else (dist[half - 1] + dist[half]) / 2)
    if not median > 0:
        raise ValueError(
            "the median pairwise distance of the pooled sample is 0 (more than half of the "
            "pairs coincide); pass an explicit bandwidth"
        )
    return median


def median_heuristic(
    x: Tensor, y: Tensor, max_points: int = MEDIAN_MAX_POINTS, seed: int = 0
) -> float:
    """The median heuristic bandwidth: the median Euclidean distance between distinct points
    (pairs i < j) of the pooled sample ``(x, y)``.

    A pooled sample larger than ``max_points`` is subsampled without replacement to
    ``max_points`` points, drawn with a private generator seeded by ``seed`` (so the result
    is deterministic and the caller's random stream is untouched): the subset's median is
    within about 1% of the full one (one relative standard deviation, for a Gaussian sample)
    while the distance matrix stays at 2000 x 2000.
    Between two middle values the median is their mean.

    Raises:
        ValueError: for invalid samples, or if the median distance is 0 (more than half of
            the pairs coincide, as in discrete data): pass a bandwidth explicitly then.

    Examples:
        >>> median_heuristic(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [4.0]]))
        2.5
    """
    x, y = _check_samples(x, y)
    max_points = check_positive_int("max_points", max_points)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    return _median_distance(torch.cat([x, y]), max_points, seed)


def mmd2(
    x: Tensor,
    y: Tensor,
    bandwidth: float | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> Tensor:
    """The unbiased estimate of the squared maximum mean discrepancy between the laws of ``x``
    and ``y`` (Gretton et al. 2012, eq. 3), with the Gaussian kernel
    k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2)).

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m(m-1)) + sum_{i != j} k(y_i, y_j) / (n(n-1))
    - 2 sum_{i, j} k(x_i, y_j) / (mn): its mean is MMD^2, so it is 0 on average (and
    often negative) when the laws are equal.

    The kernel sums are accumulated in float64 over ``block_size`` x ``block_size`` tiles of
    the pooled sample, so memory is O(block_size^2) whatever the sample sizes; the work is
    (m + n)^2 / 2 kernel evaluations. Computed on the inputs' device, without autograd.

    Args:
        x: a sample of shape (m, d), m >= 2.
        y: a sample of shape (n, d), n >= 2.
        bandwidth: the kernel bandwidth; ``None`` uses [`median_heuristic`][] on the
            pooled sample (on a fixed-seed subset of 2000 points when larger).
        block_size: the tile edge.

    Returns:
        A 0-d tensor on the inputs' device, of their dtype (float32 for half precision).

    Examples:
        >>> x, y = torch.zeros(3, 1), torch.ones(3, 1)
        >>> round(float(mmd2(x, y, bandwidth=1.0)), 4)  # 2 - 2 exp(-1/2)
        0.7869
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(2, 500, 2, generator=g)  # one law
        >>> abs(float(mmd2(x, y))) < 0.01
        True
    """
    x, y = _check_samples(x, y)
    block_size = check_positive_int("block_size", block_size)
    if bandwidth is None:
        bandwidth = _median_distance(torch.cat([x, y]), MEDIAN_MAX_POINTS, 0)
    return _observed(x, y, _check_bandwidth(bandwidth), block_size)


def energy_distance(x: Tensor, y: Tensor, block_size: int = DEFAULT_BLOCK_SIZE) -> Tensor:
    """The unbiased estimate of the energy distance 2E|X - Y| - E|X - X'| - E|Y - Y'|
    between the laws of ``x`` and ``y`` (Székely & Rizzo 2004, 2013), |.| the Euclidean norm.

    The within-sample means are U-statistics over pairs i != j (divided by m(m-1) and
    n(n-1)), so the estimate is 0 on average (and often negative) when the laws are equal.
    Memory and work as in [`mmd2`][]: float64 sums over ``block_size`` tiles.

    Args:
        x: a sample of shape (m, d), m >= 2.
        y: a sample of shape (n, d), n >= 2.
        block_size: the tile edge.

    Returns:
        A 0-d tensor on the inputs' device, of their dtype (float32 for half precision).

    Examples:
        >>> float(energy_distance(torch.zeros(3, 1), torch.ones(3, 1)))
        2.0
    """
    x, y = _check_samples(x, y)
    block_size = check_positive_int("block_size", block_size)
    return _observed(x, y, None, block_size)


def two_sample_test(
    x: Tensor,
    y: Tensor,
    statistic: Statistic = "mmd",
    num_permutations: int = 200,
    seed: Seed = None,
    bandwidth: float | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> TwoSampleResult:
    """A permutation test of "``x`` and ``y`` are samples of one law" with the unbiased MMD^2
    ([`mmd2`][]) or the energy distance ([`energy_distance`][]); large values reject.

    Each permutation splits the pooled sample at random into parts of the sizes of ``x`` and
    ``y``; p = (1 + #{permuted >= observed}) / (1 + num_permutations) (Phipson & Smyth 2010),
    with statistics within 1e-10 of the observed one (relative to the terms they are a
    difference of) counted as ties, so that swapping equal points is a tie. The MMD's
    bandwidth is fixed before permuting (given, or the median heuristic on the pooled sample).
    The arithmetic is float64 whatever the inputs' dtype, on their device.

    Cost: the pooled sample of size N = m + n is processed in ``block_size`` tiles of its
    kernel (or distance) matrix, and every split is applied to each tile by one matrix
    product: N^2 / 2 kernel evaluations plus ~N^2 multiply-adds per permutation, instead of
    N^2 / 2 kernel evaluations per permutation for recomputing the statistic. With
    N <= ``block_size`` the pooled matrix is one tile, computed once. The 0/1 labels of the
    splits are held about 2^24 / N at a time (for N = 2 x 10^5, 83 of them), and each further
    batch of splits recomputes the tiles: with the default 200 permutations, once for
    N <= 83,000, ceil(201 / (2^24 // N)) times beyond. Memory: a block_size^2 tile plus
    2^24 float64 labels (128 MiB), whatever N.

    Args:
        x: a sample of shape (m, d), m >= 2.
        y: a sample of shape (n, d), n >= 2.
        statistic: ``"mmd"`` or ``"energy"``.
        num_permutations: random splits to compare with; the smallest possible p-value is
            1 / (1 + num_permutations).
        seed: seeds the permutations (an int, a ``torch.Generator``, or ``None`` for torch's
            global stream); drawn on the CPU, so a seed gives the same splits on any device.
        bandwidth: the MMD kernel's bandwidth; ``None`` for the median heuristic. Must be
            ``None`` for ``"energy"``.
        block_size: the tile edge.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(50, 2, generator=g)
        >>> y = torch.randn(50, 2, generator=g) + 1.0  # shifted
        >>> two_sample_test(x, y, num_permutations=99, seed=0).pvalue
        0.01
        >>> two_sample_test(x, y, "energy", num_permutations=99, seed=0).pvalue
        0.01
    """
    if statistic not in _STATISTICS:
        raise ValueError(f"statistic must be one of {_STATISTICS}, got {statistic!r}")
    num_permutations = check_positive_int("num_permutations", num_permutations)
    block_size = check_positive_int("block_size", block_size)
    x, y = _check_samples(x, y)
    kernel = statistic == "mmd"
    if not kernel and bandwidth is not None:
        raise ValueError("bandwidth applies to statistic='mmd' only; leave it None for 'energy'")
    z = torch.cat([x, y])
    m, size = x.shape[0], z.shape[0]
    if kernel:
        # In the inputs' dtype, as in mmd2, so that both use the same bandwidth.
        bandwidth = (
            _median_distance(z, MEDIAN_MAX_POINTS, 0)
            if bandwidth is None
            else _check_bandwidth(bandwidth)
        )
    z = z.to(torch.float64)
    splits = num_permutations + 1  # row 0 is the observed split
    chunk = max(1, _MAX_LABEL_ENTRIES // size)
    values, scales = [], []
    with seeded(seed), torch.no_grad():
        pairs = _Pairs.build(z, bandwidth if kernel else None)
        for start in range(0, splits, chunk):
            rows = range(start, min(start + chunk, splits))
            weights = torch.zeros(len(rows) + 1, size, dtype=torch.float64)
            weights[-1] = 1.0
            for r, split in enumerate(rows):
                weights[r, torch.randperm(size)[:m] if split else slice(0, m)] = 1.0
            sums = _split_sums(pairs, weights.to(z.device), block_size)
            value, scale = _combine(sums, m, size - m, kernel)
            values.append(value)
            scales.append(scale)
    values, observed_scale = torch.cat(values), torch.cat(scales)[0]
    observed = values[0]
    ties = _TIE_RTOL * observed_scale
    count = int((values[1:] >= observed - ties).sum())
    return TwoSampleResult(
        statistic=float(observed),
        pvalue=(1 + count) / (1 + num_permutations),
        num_permutations=num_permutations,
        bandwidth=bandwidth if kernel else None,
    )
