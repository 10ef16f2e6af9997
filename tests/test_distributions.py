"""The helper distributions."""

import pytest
import torch
from torch.distributions import Independent, Normal

from latentae.distributions import BatchReshape, Enumerated, WeightedSamples, reshape_batch


def test_enumerated_matches_frequencies_within_binomial_error():
    values = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    probs = torch.tensor([0.2, 0.5, 0.3])
    d = Enumerated(values, probs.log().expand(1, 3))
    draws = d.sample((20000,))[:, 0]  # (N, 2)
    freq = torch.stack([(draws == v).all(-1).double().mean() for v in values])
    se = (probs * (1 - probs) / 20000).sqrt()
    assert ((freq - probs).abs() < 4 * se).all()
    assert torch.allclose(d.log_prob(values[:, None]).squeeze(-1).exp(), probs)
    assert d.log_prob(torch.tensor([[5.0, 5.0]])).item() == float("-inf")
    assert torch.allclose(d.mean, (probs[:, None] * values).sum(0, keepdim=True))


def test_enumerated_checks_sizes():
    with pytest.raises(ValueError, match="logits have 2 entries but there are 3 values"):
        Enumerated(torch.zeros(3, 1), torch.zeros(2))


def test_batch_reshape_round_trip():
    base = Independent(Normal(torch.randn(6, 2), torch.rand(6, 2) + 0.5), 1)
    d = reshape_batch(base, torch.Size([2, 3]))
    assert isinstance(d, BatchReshape) and d.batch_shape == (2, 3)
    x = torch.randn(4, 2, 3, 2)
    assert torch.allclose(d.log_prob(x), base.log_prob(x.reshape(4, 6, 2)).reshape(4, 2, 3))
    assert torch.allclose(d.mean, base.mean.reshape(2, 3, 2))
    assert d.sample((5,)).shape == (5, 2, 3, 2)
    assert reshape_batch(base, torch.Size([6])) is base
    with pytest.raises(ValueError, match="cannot reshape batch"):
        BatchReshape(base, torch.Size([4]))


def test_weighted_samples_ess_and_moments():
    samples = torch.tensor([[[0.0], [1.0], [2.0], [3.0]]])
    log_w = torch.tensor([[0.0, 0.0, 0.0, -1e9]])
    d = WeightedSamples(samples, log_w, method="importance")
    assert torch.allclose(d.ess, torch.tensor([3.0]))
    assert torch.allclose(d.mean, torch.tensor([[1.0]]))
    with pytest.raises(NotImplementedError, match="'importance' encoder gives weighted samples"):
        d.log_prob(torch.zeros(1, 1))
