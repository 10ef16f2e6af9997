"""Binary observations x in {0, 1}^16 from a Gaussian h in R^2 through sigmoid units.

h ~ N(0, I_2), x_j | h ~ Bernoulli(sigmoid(W_j h + b_j)) independently (§14.4 output units).
"""

import pyro
import pyro.distributions as dist
import torch

_g = torch.Generator().manual_seed(2)
W = 2.0 * torch.randn(16, 2, generator=_g, dtype=torch.float64).to(torch.get_default_dtype())
B = 0.5 * torch.randn(16, generator=_g, dtype=torch.float64).to(torch.get_default_dtype())


def model(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Normal(torch.zeros(2), 1.0).expand([n, 2]).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=h @ W.T + B).to_event(1))
