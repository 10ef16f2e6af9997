"""Langevin samplers: unadjusted Langevin on a Gaussian (closed-form discretization bias) and
annealed Langevin on Song & Ermon's two-mode mixture with the exact score (the learned score:
test_noise_conditional.py)."""

import math

import pytest
import torch

from latentae.langevin import annealed_langevin, geometric_sigmas, langevin

# Song & Ermon (2019), section 3.2.2 and their toy experiment: p = 0.8 N((5,5), I) +
# 0.2 N((-5,-5), I); 1280 chains from uniform starts on [-8, 8]^2; sigma geometric from 20 to
# 1 in L = 10 levels, eps = 0.1 (so alpha_i = 0.1 sigma_i^2), T = 100 steps per level.
WEIGHTS = torch.tensor([0.8, 0.2])
MEANS = torch.tensor([[5.0, 5.0], [-5.0, -5.0]])
NUM_CHAINS, SIGMA_MAX, SIGMA_MIN, LEVELS, EPS, STEPS = 1280, 20.0, 1.0, 10, 0.1, 100
BINOMIAL_SE = math.sqrt(0.8 * 0.2 / NUM_CHAINS)  # 0.0112


def mixture_score(x, sigma):
    """Exact score of p_sigma = p * N(0, sigma^2 I): each component becomes
    N(mu_k, (1 + sigma^2) I) and the score is the responsibility-weighted component score."""
    var = 1.0 + sigma**2
    diff = x[:, None, :] - MEANS.to(x)
    logits = WEIGHTS.to(x).log() - 0.5 * (diff**2).sum(-1) / var
    resp = torch.softmax(logits, dim=-1)
    return -(resp[..., None] * diff).sum(1) / var


def mixture_sample(n, generator):
    k = (torch.rand(n, generator=generator) < WEIGHTS[1]).long()
    return MEANS[k] + torch.randn(n, 2, generator=generator)


def uniform_starts(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(NUM_CHAINS, 2, generator=g) * 16 - 8


def major_weight(x):
    """Fraction of chains on the (5, 5) side of the mixture's symmetry line x1 + x2 = 0."""
    return float((x.sum(-1) > 0).double().mean())


def annealed_weight(score, seed):
    sigmas = geometric_sigmas(SIGMA_MAX, SIGMA_MIN, LEVELS)
    result = annealed_langevin(score, uniform_starts(seed), sigmas, EPS, STEPS, seed=seed)
    return major_weight(result.x), result


# ---------------------------------------------------------------------------------- ULA


def test_ula_on_a_standard_gaussian_has_the_closed_form_bias():
    # ULA on N(0, 1) with step eps is the AR(1) chain x' = (1 - eps/2) x + sqrt(eps) z, whose
    # stationary law is N(0, 1 / (1 - eps/4)): 8/7 for eps = 0.5. From x0 = 3 the variance's
    # transient decays as (1 - eps/2)^(2k) = 0.5625^k, below 1e-20 after 100 steps.
    eps, n = 0.5, 20_000
    result = langevin(lambda x: -x, torch.full((n,), 3.0), eps, 100, seed=0)
    x = result.x
    var = 1 / (1 - eps / 4)
    # Independent chains: the final states are iid N(0, var). The sample mean has s.e.
    # sqrt(var / n), the sample variance sqrt(2 / (n - 1)) var; 4 s.e. bound each.
    assert abs(float(x.mean())) < 4 * math.sqrt(var / n)
    se_var = math.sqrt(2 / (n - 1)) * var
    assert abs(float(x.var()) - var) < 4 * se_var
    # The bias itself is resolved (1/7 = 12 s.e.), so the test tells ULA from exact sampling.
    assert float(x.var()) - 1 > 4 * se_var


def test_kept_draws_and_vector_states():
    x0 = torch.zeros(50, 3)
    result = langevin(lambda x: -x, x0, 0.1, 20, burn_in=5, thin=4, seed=1)
    # steps 9, 13, 17 and the last one, 20
    assert tuple(result.draws.shape) == (4, 50, 3)
    assert torch.equal(result.draws[-1], result.x)
    again = langevin(lambda x: -x, x0, 0.1, 20, seed=1)
    assert torch.equal(again.x, result.x)  # keeping draws does not change the chain
    other = langevin(lambda x: -x, x0, 0.1, 20, seed=2)
    assert not torch.equal(other.x, result.x)
    assert result.x.dtype == x0.dtype


def test_langevin_bad_arguments():
    score = lambda x: -x  # noqa: E731
    x0 = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="step_size must be a positive finite number"):
        langevin(score, x0, 0.0, 10)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        langevin(score, x0, 0.1, 0)
    with pytest.raises(ValueError, match=r"burn_in \(10\) must be smaller than num_steps"):
        langevin(score, x0, 0.1, 10, burn_in=10, thin=1)
    with pytest.raises(TypeError, match="x0 must be a floating-point tensor"):
        langevin(score, torch.zeros(10, 2, dtype=torch.long), 0.1, 10)
    with pytest.raises(TypeError, match=r"x0 must be a torch\.Tensor"):
        langevin(score, [[0.0, 0.0]], 0.1, 10)
    with pytest.raises(ValueError, match="x0 has non-finite values"):
        langevin(score, torch.full((3, 2), math.nan), 0.1, 10)
    with pytest.raises(ValueError, match=r"score_fn returned \(10,\) for states of shape"):
        langevin(lambda x: x.sum(-1), x0, 0.1, 10)
    with pytest.raises(TypeError, match="score_fn must be callable"):
        langevin(None, x0, 0.1, 10)
    # eps = 5 on N(0, 1): x' = -1.5 x + ..., which overflows within a few thousand steps
    with pytest.raises(FloatingPointError, match=r"non-finite by step 3000.*smaller step size"):
        langevin(score, x0, 5.0, 3000, seed=0)


# ----------------------------------------------------------------------- annealed Langevin


def test_annealed_langevin_recovers_the_mode_weights_with_the_exact_score():
    # Annealing through large sigma lets the chains find each mode in proportion to its
    # mass. Finite annealing leaves a small bias: over 20 seeds the weight averaged 0.784
    # (seed-to-seed s.d. 0.012), i.e. -1.4 binomial s.e., so this 3 s.e. band holds on about
    # 95% of seeds (19/20 measured), not 99.7%.
    weight, result = annealed_weight(mixture_score, seed=0)
    assert abs(weight - 0.8) < 3 * BINOMIAL_SE
    assert tuple(result.levels.shape) == (LEVELS, NUM_CHAINS, 2)
    assert torch.allclose(result.step_sizes[-1], torch.tensor(EPS, dtype=torch.float64))
    assert torch.allclose(result.step_sizes[0], torch.tensor(EPS * 400, dtype=torch.float64))
    # Each mode's chains sit at its mean: the last level samples p_1, whose components are
    # N(mu_k, 2 I) (ULA widens them by 1 / (1 - alpha / 8) = 1.013); 5 s.e. of a mean.
    major = result.x[result.x.sum(-1) > 0]
    assert ((major.mean(0) - MEANS[0]).abs() < 5 * math.sqrt(2.03 / len(major))).all()
    # Plain Langevin at sigma = 0 keeps each start in its basin: the basins split the box
    # about evenly (their boundary is 0.1 off the diagonal), far from 0.8 (0.6 is 6 s.e. up).
    plain = langevin(lambda x: mixture_score(x, 0.0), uniform_starts(0), 0.1, 1000, seed=0)
    assert major_weight(plain.x) < 0.6


def test_one_score_per_level_equals_a_noise_conditional_score():
    sigmas = geometric_sigmas(10.0, 0.5, 4)
    per_level = {s: (lambda x, s=s: mixture_score(x, s)) for s in sigmas.tolist()}
    x0 = uniform_starts(1)[:200]
    a = annealed_langevin(mixture_score, x0, sigmas, 0.05, 10, seed=3)
    b = annealed_langevin(per_level, x0, sigmas, 0.05, 10, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.levels, b.levels)
    # the Tweedie step moves the last states to the posterior mean E[x | x_tilde]
    c = annealed_langevin(mixture_score, x0, sigmas, 0.05, 10, seed=3, denoise=True)
    assert torch.allclose(c.x, a.x + 0.25 * mixture_score(a.x, 0.5))


def test_annealed_langevin_bad_arguments():
    x0 = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="sigmas must decrease strictly"):
        annealed_langevin(mixture_score, x0, [1.0, 2.0], 0.1, 5)
    with pytest.raises(ValueError, match="sigmas must be positive and finite"):
        annealed_langevin(mixture_score, x0, [1.0, 0.0], 0.1, 5)
    with pytest.raises(ValueError, match="sigmas must hold at least one noise level"):
        annealed_langevin(mixture_score, x0, [], 0.1, 5)
    with pytest.raises(ValueError, match="steps_per_level must be an integer >= 1"):
        annealed_langevin(mixture_score, x0, [1.0], 0.1, 0)
    with pytest.raises(ValueError, match=r"no score for sigma=0\.5"):
        annealed_langevin({1.0: lambda x: -x}, x0, [1.0, 0.5], 0.1, 5)
    with pytest.raises(TypeError, match="callable as score_fn"):
        annealed_langevin(3.0, x0, [1.0], 0.1, 5)
    with pytest.raises(ValueError, match=r"sigma_max .* must be larger than sigma_min"):
        geometric_sigmas(0.1, 1.0, 5)


if __name__ == "__main__":
    # The figures quoted above: mode weights over seeds (float64, as the tests run).
    torch.set_default_dtype(torch.float64)
    for seed in range(20):
        print("exact", seed, annealed_weight(mixture_score, seed)[0])
