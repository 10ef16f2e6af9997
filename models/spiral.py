"""A one-dimensional manifold in R^2 (fig. 14.5): h is the position along a spiral arm,
x is that point of the spiral plus small isotropic noise.

h ~ Uniform(0, 1); the angle is theta = 1 + (4 pi - 1) h and the point is
r(theta) (cos theta, sin theta) with r = 0.2 theta, so neighbouring turns lie 0.4 pi apart,
far more than the noise.
"""

import math

import pyro
import pyro.distributions as dist
import torch

THETA_MIN, THETA_MAX = 1.0, 4 * math.pi
RADIUS_PER_RADIAN = 0.2
NOISE = 0.05


def spiral(h):
    """The arm's point at position h in [0, 1] (shape (..., 1) -> (..., 2))."""
    theta = THETA_MIN + (THETA_MAX - THETA_MIN) * h[..., 0]
    r = RADIUS_PER_RADIAN * theta
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)


def model(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Uniform(0.0, 1.0).expand([n, 1]).to_event(1))
        pyro.sample("x", dist.Normal(spiral(h), NOISE).to_event(1))
