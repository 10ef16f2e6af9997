"""Closed forms for Gaussians and linear-Gaussian pairs (the references the diagnostics and
tests compare against)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LinearGaussian", "expected_conditional_kl", "gaussian_kl", "reverse_conditional"]


class LinearGaussian(NamedTuple):
    """A linear-Gaussian conditional y | z ~ N(weight z + bias, cov)."""

    weight: Tensor
    bias: Tensor
    cov: Tensor


def gaussian_kl(mean_p: Tensor, cov_p: Tensor, mean_q: Tensor, cov_q: Tensor) -> Tensor:
    """KL(N(mean_p, cov_p) || N(mean_q, cov_q)) in nats (batched over leading dims).

    Example:
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

    Example:
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

    Example:
        >>> p = LinearGaussian(torch.eye(2), torch.zeros(2), torch.eye(2))
        >>> float(expected_conditional_kl(torch.zeros(2), torch.eye(2), p, p))
        0.0
    """
    at_mean = gaussian_kl(p.weight @ h_mean + p.bias, p.cov, q.weight @ h_mean + q.bias, q.cov)
    diff = p.weight - q.weight
    spread = torch.linalg.solve(q.cov, diff @ h_cov @ diff.T).trace()
    return at_mean + 0.5 * spread
