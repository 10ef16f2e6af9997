"""A three-component Gaussian mixture in R^2 with unequal weights; h is the component.

p(h = k | x) is given by the responsibilities, so the exact encoder is enumeration.
"""

import pyro
import pyro.distributions as dist
import torch

WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
SCALE_TRILS = torch.tensor(
    [
        [[0.8, 0.0], [0.3, 0.5]],
        [[0.5, 0.0], [-0.2, 0.7]],
        [[0.6, 0.0], [0.0, 0.4]],
    ]
)


def model(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Categorical(WEIGHTS))
        pyro.sample("x", dist.MultivariateNormal(MEANS[h], scale_tril=SCALE_TRILS[h]))
