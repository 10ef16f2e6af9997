"""Probabilistic PCA: h ~ N(0, I_2), x | h ~ N(W h + mu, s^2 I_5).

The linear-Gaussian model of Tipping & Bishop (1999), with closed forms for everything:
p(x) = N(mu, W W^T + s^2 I) and p(h | x) = N(M^-1 W^T (x - mu), s^2 M^-1), M = W^T W + s^2 I.
"""

import pyro
import pyro.distributions as dist
import torch

W = torch.tensor(
    [
        [1.0, 0.5],
        [0.8, -0.6],
        [-0.4, 1.2],
        [0.3, 0.9],
        [1.1, -0.2],
    ]
)
MU = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0])
NOISE = 0.5  # the observation noise's standard deviation s


def model(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Normal(torch.zeros(2), 1.0).expand([n, 2]).to_event(1))
        pyro.sample("x", dist.Normal(h @ W.T + MU, NOISE).to_event(1))
