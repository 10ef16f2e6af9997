"""An amortized encoder: a neural q(h | x) trained on simulations of a joint model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, TransformedDistribution, constraints
from tqdm.auto import tqdm

from latentae._util import Seed, seeded
from latentae.conditionals import (
    CategoricalConditional,
    Conditional,
    FlowConditional,
    GaussianConditional,
)
from latentae.distributions import reshape_batch
from latentae.joint import JointModel, ModelError
from latentae.posterior import ModelEncoder, latent_transform

__all__ = ["AmortizedEncoder"]


class AmortizedEncoder(ModelEncoder):
    """A neural q(h | x) trained on draws of the joint, maximizing E log q(h | x).

    The expected log-likelihood under p_model(h, x) is the negative expected
    KL(p(h|x) || q(h|x)) up to a constant, so with fresh simulations at every step it fits the
    posterior (simulation-based amortized inference). Continuous latents use a
    full-covariance Gaussian (``family="gaussian"``) or a conditional spline flow
    (``family="flow"``) in the latent's unconstrained space; a ``{0..K-1}`` latent uses softmax
    units. Build it with [`fit`][] (or ``jm.encoder("amortized", ...)``).

    Examples:
        >>> jm = JointModel.from_file("models/ppca.py")
        >>> enc = jm.encoder("amortized", steps=20, progress=False, seed=0)
        >>> len(enc.history), tuple(enc(jm.sample(3, seed=1)[1]).sample().shape)
        (20, (3, 2))
    """

    method = "amortized"

    def __init__(self, joint: JointModel, net: Conditional) -> None:
        super().__init__(joint)
        self.net = net
        self.history: list[dict[str, float]] = []
        self.transform = None if joint.latent_is_discrete else latent_transform(joint)

    @classmethod
    def fit(
        cls,
        joint: JointModel,
        *,
        family: str = "gaussian",
        hidden: Sequence[int] = (64, 64),
        steps: int = 3000,
        batch_size: int = 512,
        lr: float = 3e-3,
        seed: Seed = 0,
        progress: bool = True,
        device: str | torch.device | None = None,
        **family_options: Any,
    ) -> AmortizedEncoder:
        """Train an amortized encoder for ``joint`` and return it with its ``history``.

        Args:
            joint: the model.
            family: ``"gaussian"`` (full covariance) or ``"flow"``; ignored for a discrete
                latent.
            hidden: hidden widths of the network.
            steps: optimizer steps, each on ``batch_size`` fresh draws of the joint.
            lr: Adam's initial learning rate, annealed to zero on a cosine schedule.
            seed: seed for the initialization and the simulations.
            progress: show a progress bar (tqdm; hidden when not on a terminal).
            device: where to train; the model simulates on the CPU.
            **family_options: passed to the network's class.
        """
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if family not in ("gaussian", "flow"):
            raise ValueError(f"family must be 'gaussian' or 'flow', got {family!r}")
        dx = joint.observed_dim
        with seeded(seed):
            if joint.latent_is_discrete:
                support = joint.latent_support
                if (
                    not isinstance(support, constraints.integer_interval)
                    or support.lower_bound != 0
                ):
                    raise ModelError(
                        f"{joint._where}: an amortized encoder for a discrete latent needs the "
                        "support {0, ..., K-1} of a Categorical; use encoder('enumerate')"
                    )
                net = CategoricalConditional(dx, int(support.upper_bound) + 1, hidden)
            else:
                if len(joint.latent_shape) != 1:
                    raise ModelError(
                        f"{joint._where}: an amortized encoder needs a latent of shape (n, k); "
                        f"{joint.latent!r} has event shape {tuple(joint.latent_shape)}"
                    )
                k = joint.latent_dim
                if family == "gaussian":
                    net = GaussianConditional(dx, k, hidden, cov="full", **family_options)
                else:
                    net = FlowConditional(dx, k, hidden, **family_options)
            self = cls(joint, net.to(dtype=joint.dtype))
            h, x = joint.sample(10_000)
            self.net.standardize(x.reshape(len(x), -1), self._target(h))
            self.net.to(device)
            self._train(steps, batch_size, lr, progress, device)
        self.net.eval()
        return self

    def _target(self, h: Tensor) -> Tensor:
        if self.joint.latent_is_discrete:
            return h
        if self.transform is not None:
            h = self.transform.inv(h)
        return h.reshape(len(h), -1)

    def _train(self, steps: int, batch_size: int, lr: float, progress: bool, device) -> None:
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        bar = tqdm(range(steps), desc="amortized encoder", disable=None if progress else True)
        for step in bar:
            h, x = self.joint.sample(batch_size)
            x, target = x.reshape(batch_size, -1).to(device), self._target(h).to(device)
            loss = -self.net(x).log_prob(target).mean()
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(
                    f"amortized encoder training diverged at step {step} (loss {loss.item()}); "
                    "lower lr or use family='gaussian'"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            self.history.append({"step": step, "loss": loss.item()})
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")

    def forward(self, x: Tensor) -> Distribution:
        x, batch = self._flat_observed(x)
        param = next(self.net.parameters())
        d = self.net(x.reshape(len(x), -1).to(param.device, param.dtype))
        if self.transform is not None:
            d = TransformedDistribution(d, [self.transform])
        return reshape_batch(d, batch)
