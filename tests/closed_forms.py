"""Closed forms that the tests compare against, written out independently of the library."""

import torch


def gaussian_posterior(prior_mean, prior_cov, weight, bias, noise_cov, x):
    """p(h | x) for h ~ N(m0, P0^-1), x | h ~ N(W h + b, Psi): N(m, S) with
    S = (P0 + W^T Psi^-1 W)^-1 and m = S (P0 m0 + W^T Psi^-1 (x - b))."""
    p0 = torch.linalg.inv(prior_cov)
    psi_inv = torch.linalg.inv(noise_cov)
    cov = torch.linalg.inv(p0 + weight.T @ psi_inv @ weight)
    mean = (cov @ (p0 @ prior_mean[:, None] + weight.T @ psi_inv @ (x - bias).T)).T
    return mean, cov


def ppca_posterior(weight, mu, noise_sd, x):
    """PPCA: p(h|x) = N(M^-1 W^T (x - mu), s^2 M^-1) with M = W^T W + s^2 I."""
    k = weight.shape[1]
    m = weight.T @ weight + noise_sd**2 * torch.eye(k)
    m_inv = torch.linalg.inv(m)
    return (x - mu) @ (m_inv @ weight.T).T, noise_sd**2 * m_inv
