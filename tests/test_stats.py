"""Two-sample statistics and the permutation test: unbiasedness, blocked sums against the
direct n x n computation, calibration and power of the p-value, the median heuristic, input
validation and bounded memory."""

import itertools
import math
import statistics
import sys
from pathlib import Path

import pytest
import torch

from latentae import stats
from latentae.stats import energy_distance, median_heuristic, mmd2, two_sample_test

STATISTICS = ["mmd", "energy"]


def direct(x, y, statistic, bandwidth=None, v_statistic=False):
    """The statistic from the full n x n matrices, written out independently of the library:
    the U-statistic (within-sample means over i != j), or the V-statistic (i = j included)."""

    def pair(a, b):
        sq = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
        return torch.exp(-sq / (2 * bandwidth**2)) if statistic == "mmd" else sq.sqrt()

    def within_mean(k):
        n = k.shape[0]
        return k.mean() if v_statistic else (k.sum() - k.diagonal().sum()) / (n * (n - 1))

    within = within_mean(pair(x, x)) + within_mean(pair(y, y))
    across = 2 * pair(x, y).mean()
    return float(within - across if statistic == "mmd" else across - within)


def compute(x, y, statistic, **kwargs):
    fn = mmd2 if statistic == "mmd" else energy_distance
    return float(fn(x, y, **kwargs))


def mean_and_se(values):
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


# --- unbiasedness ---------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", STATISTICS)
def test_unbiased_under_the_null(statistic):
    # Two samples of one law: the U-statistic has mean exactly 0, also with the median
    # bandwidth (a symmetric function of the pooled sample, so each split is equally likely
    # given the pooled set, and the split-average of the statistic is 0). Over 1000
    # replications the mean is within 4 Monte Carlo standard errors of 0 (fails with
    # probability 6e-5 for a normal mean). The V-statistic (i = j terms kept) is biased by
    # about (1 - E k)(1/m + 1/n) for the MMD, (E|X-X'|)(1/m + 1/n) for the energy distance,
    # some 50 standard errors here: the test would catch a missing diagonal exclusion.
    g = torch.Generator().manual_seed(1)
    m, n, reps = 20, 30, 1000
    u_values, v_values = [], []
    for _ in range(reps):
        x, y = torch.randn(m, 2, generator=g), torch.randn(n, 2, generator=g)
        u_values.append(compute(x, y, statistic))
        bandwidth = median_heuristic(x, y) if statistic == "mmd" else None
        v_values.append(direct(x, y, statistic, bandwidth, v_statistic=True))
    mean, se = mean_and_se(u_values)
    assert abs(mean) < 4 * se, (mean, se)
    v_mean, v_se = mean_and_se(v_values)
    assert abs(v_mean) > 20 * v_se, (v_mean, v_se)


@pytest.mark.parametrize("statistic", STATISTICS)
def test_positive_for_different_laws(statistic):
    # A unit mean shift in 2-D at m = 20, n = 30: the replication means are about 0.2 (MMD^2,
    # median bandwidth) and 0.8 (energy), over 30 standard errors above 0 with this seed.
    g = torch.Generator().manual_seed(2)
    values = [
        compute(torch.randn(20, 2, generator=g), torch.randn(30, 2, generator=g) + 1, statistic)
        for _ in range(200)
    ]
    mean, se = mean_and_se(values)
    assert mean > 0.05
    assert mean > 20 * se, (mean, se)


# --- blocked sums equal the direct computation ----------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "block_size"),
    [(37, 53, 16), (50, 50, 7), (2, 3, 1), (130, 70, 64), (5, 200, 4096)],
)
@pytest.mark.parametrize("statistic", STATISTICS)
def test_blocked_equals_direct(statistic, m, n, block_size):
    g = torch.Generator().manual_seed(m * 1000 + n)
    x = torch.randn(m, 3, generator=g)
    y = 1.5 * torch.randn(n, 3, generator=g) + 0.3
    bandwidth = 1.3 if statistic == "mmd" else None
    kwargs = {"bandwidth": bandwidth} if statistic == "mmd" else {}
    expected = direct(x, y, statistic, bandwidth)
    assert compute(x, y, statistic, block_size=block_size, **kwargs) == pytest.approx(
        expected, abs=1e-10
    )
    result = two_sample_test(
        x, y, statistic, num_permutations=5, seed=0, block_size=block_size, **kwargs
    )
    assert result.statistic == pytest.approx(expected, abs=1e-10)


def test_median_bandwidth_is_used_by_default():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 2, generator=g), torch.randn(60, 2, generator=g)
    bandwidth = median_heuristic(x, y)
    assert float(mmd2(x, y, block_size=9)) == pytest.approx(
        direct(x, y, "mmd", bandwidth), abs=1e-10
    )
    result = two_sample_test(x, y, num_permutations=10, seed=0)
    assert result.bandwidth == bandwidth
    assert two_sample_test(x, y, "energy", num_permutations=10, seed=0).bandwidth is None
    assert two_sample_test(x, y, bandwidth=0.5, num_permutations=10, seed=0).bandwidth == 0.5
    x32, y32 = x.float(), y.float()
    result32 = two_sample_test(x32, y32, num_permutations=10, seed=0)
    assert result32.bandwidth == median_heuristic(x32, y32)
    assert result32.statistic == pytest.approx(float(mmd2(x32, y32)), abs=1e-6)


def test_dtypes():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(30, 2, generator=g), torch.randn(40, 2, generator=g)
    for fn in (mmd2, energy_distance):
        value = fn(x.float(), y.float(), block_size=8)
        assert value.dtype == torch.float32 and value.shape == ()
        assert float(value) == pytest.approx(float(fn(x, y)), abs=1e-5)
    assert float(mmd2(x.long(), y.long(), bandwidth=1.0)) == pytest.approx(
        direct(x.long().double(), y.long().double(), "mmd", 1.0), abs=1e-10
    )
    # Half precision is computed in float32 (the inputs themselves carry ~1e-2).
    half = mmd2(x.bfloat16(), y.bfloat16(), bandwidth=1.0)
    assert half.dtype == torch.float32
    expected = direct(x.bfloat16().double(), y.bfloat16().double(), "mmd", 1.0)
    assert float(half) == pytest.approx(expected, abs=1e-5)


def test_duplicate_points_are_exactly_zero_apart():
    # Binary data far from the origin: most pairs coincide. |a|^2 + |b|^2 - 2ab alone would
    # leave equal points ~1e-8 apart after the square root (more with the offset of 100); the
    # library recomputes such pairs from differences, so the sum matches the direct one.
    g = torch.Generator().manual_seed(14)
    x = 100 + 3.7 * torch.randint(0, 2, (300, 5), generator=g)
    y = 100 + 3.7 * torch.randint(0, 2, (200, 5), generator=g)
    expected = direct(x.double(), y.double(), "energy")
    assert float(energy_distance(x, y, block_size=64)) == pytest.approx(expected, abs=1e-10)
    # float32 sums are accumulated in float64; the inputs and the products carry ~1e-7.
    value32 = float(energy_distance(x.float(), y.float(), block_size=64))
    assert value32 == pytest.approx(expected, abs=1e-4)


# --- the permutation test -------------------------------------------------------------------


@pytest.mark.parametrize("statistic", STATISTICS)
def test_permutation_test_is_calibrated(statistic):
    # 200 trials of two samples of one law. With 100 permutations the p-value takes the values
    # k/101, and P(p <= 0.05) = 5/101 = 0.0495 exactly under the null; the rejection rate is
    # binomial, and |rate - 0.05| <= 3 sqrt(0.05 * 0.95 / 200) = 0.046 fails with
    # probability ~1e-3 (at most 19 or at least 1 rejection of 200).
    g = torch.Generator().manual_seed(5)
    trials, level = 200, 0.05
    rejections = 0
    for trial in range(trials):
        x, y = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g)
        result = two_sample_test(x, y, statistic, num_permutations=100, seed=trial)
        assert result.num_permutations == 100
        rejections += result.pvalue <= level
    rate = rejections / trials
    assert abs(rate - level) <= 3 * math.sqrt(level * (1 - level) / trials), rejections


@pytest.mark.parametrize("statistic", STATISTICS)
@pytest.mark.parametrize("shift", ["mean", "scale"])
def test_permutation_test_has_power(statistic, shift):
    # A unit mean shift, or twice the scale, at n = 100 per side is detected far beyond the
    # smallest attainable p-value 1/201: no permuted statistic reaches the observed one.
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g)
    y = y + 1.0 if shift == "mean" else 2.0 * y
    result = two_sample_test(x, y, statistic, num_permutations=200, seed=0)
    assert result.pvalue < 0.01
    assert result.pvalue == 1 / 201


@pytest.mark.parametrize("statistic", STATISTICS)
@pytest.mark.parametrize(("m", "n"), [(3, 3), (2, 4)])
def test_pvalue_matches_exhaustive_enumeration(statistic, m, n):
    # With 6 points there are C(6, m) splits: the exact permutation p-value is the share of
    # splits whose statistic is >= the observed one (for m = n the observed split's mirror
    # image always ties). Random permutations estimate it with a binomial error; with 4000
    # permutations the estimate is within 4 standard errors (fails with probability 6e-5).
    g = torch.Generator().manual_seed(7)
    z = torch.randn(m + n, 2, generator=g)
    bandwidth = 0.8 if statistic == "mmd" else None
    values = []
    for split in itertools.combinations(range(m + n), m):
        rest = [i for i in range(m + n) if i not in split]
        values.append(direct(z[list(split)], z[rest], statistic, bandwidth))
    observed = values[0]
    exact = sum(v >= observed - 1e-12 for v in values) / len(values)
    kwargs = {"bandwidth": bandwidth} if statistic == "mmd" else {}
    permutations = 4000
    result = two_sample_test(
        z[:m], z[m:], statistic, num_permutations=permutations, seed=0, **kwargs
    )
    expected = (1 + permutations * exact) / (1 + permutations)
    se = math.sqrt(exact * (1 - exact) / permutations)
    assert abs(result.pvalue - expected) <= 4 * se, (result.pvalue, exact)


@pytest.mark.parametrize("statistic", STATISTICS)
def test_ties_count_as_reaching_the_observed_value(statistic):
    # x = (a, b), y = (b, a): the four splits with one a and one b in x tie with the observed
    # one, the two others are larger, so p = 1 exactly. The tied sums run in different orders
    # and can differ in the last bits (for the energy distance with one of these 20 seeds,
    # without the tie tolerance p would be 0.76).
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(2, 1, 3, generator=g)
        result = two_sample_test(
            torch.cat([a, b]), torch.cat([b, a]), statistic, num_permutations=50, seed=0
        )
        assert result.pvalue == 1.0, seed


def test_seeded_and_independent_of_blocks_and_chunks(monkeypatch):
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(60, 2, generator=g), torch.randn(45, 2, generator=g) + 0.3
    state = torch.get_rng_state()
    for statistic in STATISTICS:
        reference = two_sample_test(x, y, statistic, num_permutations=150, seed=11)
        assert reference == two_sample_test(x, y, statistic, num_permutations=150, seed=11)
        gen = torch.Generator().manual_seed(11)
        assert two_sample_test(x, y, statistic, num_permutations=150, seed=gen).pvalue > 0
        blocked = two_sample_test(x, y, statistic, num_permutations=150, seed=11, block_size=8)
        # 105 labels per chunk of 10 splits: 16 passes over the tiles.
        monkeypatch.setattr(stats, "_MAX_LABEL_ENTRIES", 1050)
        chunked = two_sample_test(x, y, statistic, num_permutations=150, seed=11, block_size=8)
        monkeypatch.undo()
        for other in (blocked, chunked):
            assert other.pvalue == reference.pvalue
            assert other.statistic == pytest.approx(reference.statistic, abs=1e-12)
    # Seeded calls and the median heuristic leave torch's global stream untouched.
    assert torch.equal(torch.get_rng_state(), state)


# --- the median heuristic -------------------------------------------------------------------


def test_median_heuristic_matches_direct_median():
    g = torch.Generator().manual_seed(10)
    for m, n in [(2, 2), (7, 4), (30, 31)]:
        x, y = torch.randn(m, 3, generator=g), torch.randn(n, 3, generator=g) + 2
        points = torch.cat([x, y]).tolist()
        expected = statistics.median(math.dist(p, q) for p, q in itertools.combinations(points, 2))
        assert median_heuristic(x, y) == pytest.approx(expected, rel=1e-12)
    assert median_heuristic(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [4.0]])) == 2.5


def test_median_heuristic_subsamples_large_samples():
    # 3000 points: the median is taken on a fixed-seed subset of 2000. Its relative deviation
    # from the full median had standard deviation 0.6% over 50 subsets; 3% is 5 of them.
    g = torch.Generator().manual_seed(12)
    x, y = torch.randn(1500, 2, generator=g), torch.randn(1500, 2, generator=g)
    full = float(torch.quantile(torch.pdist(torch.cat([x, y])), 0.5))
    sub = median_heuristic(x, y)
    assert sub == median_heuristic(x, y)
    assert sub != median_heuristic(x, y, seed=1)
    assert abs(sub - full) / full < 0.03
    assert median_heuristic(x, y, max_points=3000) == pytest.approx(full, rel=1e-12)


def test_median_heuristic_refuses_a_zero_median():
    x = torch.zeros(5, 2)
    y = torch.cat([torch.zeros(3, 2), torch.ones(1, 2)])
    with pytest.raises(ValueError, match=r"median pairwise distance .* is 0.*pass an explicit"):
        mmd2(x, y)
    assert float(mmd2(x, y, bandwidth=1.0)) > 0


# --- input validation -----------------------------------------------------------------------


GOOD = torch.zeros(4, 2)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (GOOD.numpy(), GOOD, {}, TypeError, r"x must be a torch.Tensor of shape \(n, d\)"),
        (torch.zeros(4), GOOD, {}, ValueError, r"x must be a 2-D .* shape \(4,\).*reshape"),
        (GOOD, torch.zeros(2, 2, 2), {}, ValueError, r"y must be a 2-D tensor"),
        (torch.zeros(1, 2), GOOD, {}, ValueError, "x needs at least 2 rows .* got 1"),
        (GOOD, torch.zeros(4, 0), {}, ValueError, "y needs at least 1 column"),
        (GOOD, torch.zeros(4, 3), {}, ValueError, "same number of columns, got 2 and 3"),
        (GOOD, torch.zeros(4, 2, dtype=torch.complex64), {}, ValueError, "y must be real"),
        (GOOD, GOOD, {"bandwidth": 0.0}, ValueError, "bandwidth must be a positive finite"),
        (GOOD, GOOD, {"bandwidth": math.inf}, ValueError, "bandwidth must be a positive"),
        (GOOD, GOOD, {"bandwidth": "wide"}, ValueError, "bandwidth must be a positive number"),
        (GOOD, GOOD, {"block_size": 0}, ValueError, "block_size must be a positive integer"),
        (GOOD, GOOD, {"block_size": 2.0}, ValueError, "block_size must be a positive integer"),
    ],
)
def test_invalid_inputs(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd2(x, y, **kwargs)
    with pytest.raises(error, match=match):
        two_sample_test(x, y, num_permutations=3, **kwargs)


@pytest.mark.parametrize("fn", [mmd2, energy_distance, median_heuristic, two_sample_test])
def test_non_finite_values_are_located(fn):
    x = torch.zeros(5, 3)
    x[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"x has a non-finite value \(nan\) at row 3, column 1"):
        fn(x, torch.ones(4, 3))
    y = torch.ones(4, 3)
    y[2, 0] = -math.inf
    with pytest.raises(ValueError, match=r"y has a non-finite value \(-inf\) at row 2, column 0"):
        fn(torch.zeros(5, 3), y)


def test_invalid_test_arguments():
    with pytest.raises(ValueError, match=r"statistic must be one of \('mmd', 'energy'\)"):
        two_sample_test(GOOD, GOOD, "ks")
    with pytest.raises(ValueError, match="num_permutations must be a positive integer, got 0"):
        two_sample_test(GOOD, GOOD, num_permutations=0)
    with pytest.raises(ValueError, match="bandwidth applies to statistic='mmd' only"):
        two_sample_test(GOOD, GOOD, "energy", bandwidth=1.0)
    with pytest.raises(TypeError, match="seed must be an int"):
        two_sample_test(GOOD, GOOD + 1, seed="zero")
    with pytest.raises(ValueError, match="max_points must be at least 2"):
        median_heuristic(GOOD, GOOD, max_points=1)


# --- bounded memory ---------------------------------------------------------------------------


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        return False
    return True


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@pytest.mark.slow
def test_memory_is_bounded_for_large_samples():
    # 3 x 10^4 points per side (10^5 takes minutes on 2 CPUs): the pooled 6 x 10^4 square
    # matrix would need 29 GB in float64; the float32 tiles of 4096^2 need 64 MiB each. The
    # estimate's sd under the null is ~ sqrt(2) sd(k) / n, a few times 10^-5 here.
    g = torch.Generator().manual_seed(13)
    n = 30_000
    x = torch.randn(n, 2, generator=g, dtype=torch.float32)
    y = torch.randn(n, 2, generator=g, dtype=torch.float32)
    tracked = sys.platform == "linux" and _peak_rss_reset()
    before = _rss_kib("VmRSS") if tracked else 0
    value = mmd2(x, y, block_size=4096)
    assert value.dtype == torch.float32
    assert abs(float(value)) < 1e-3
    if tracked:
        growth_mib = (_rss_kib("VmHWM") - before) / 1024
        assert growth_mib < 1024, f"peak memory grew by {growth_mib:.0f} MiB"
