"""Real data: the 8x8 digits that scikit-learn ships, scaled to [0, 1], with a PPCA model.

The parameters are the closed-form maximum-likelihood estimates of Tipping & Bishop (1999)
on those data: mu is the sample mean, s^2 the mean of the discarded eigenvalues of the sample
covariance, and W = U_k (L_k - s^2 I)^(1/2) from its top k eigenpairs.
Needs scikit-learn (`pip install scikit-learn`).
"""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from sklearn.datasets import load_digits

LATENT_DIM = 10


def _pixels():
    return load_digits().data / 16.0


def _ppca_mle(x, k):
    mu = x.mean(0)
    cov = np.cov(x, rowvar=False, bias=True)
    eigval, eigvec = np.linalg.eigh(cov)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    noise_var = eigval[k:].mean()
    w = eigvec[:, :k] * np.sqrt(eigval[:k] - noise_var)
    return mu, w, noise_var


_MU, _W, _NOISE_VAR = _ppca_mle(_pixels(), LATENT_DIM)
MU = torch.as_tensor(_MU, dtype=torch.get_default_dtype())
W = torch.as_tensor(_W.copy(), dtype=torch.get_default_dtype())
NOISE = float(np.sqrt(_NOISE_VAR))


def data():
    return torch.as_tensor(_pixels(), dtype=torch.get_default_dtype())


def model(n):
    with pyro.plate("data", n):
        h = pyro.sample(
            "h", dist.Normal(torch.zeros(LATENT_DIM), 1.0).expand([n, LATENT_DIM]).to_event(1)
        )
        pyro.sample("x", dist.Normal(h @ W.T + MU, NOISE).to_event(1))
