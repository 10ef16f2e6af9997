"""The few distributions that torch and Pyro lack: a finite set of arbitrary values, weighted
samples that refuse to pretend to have a density, and a batch reshape."""

from __future__ import annotations

import math

import pyro.distributions as pdist
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, constraints

__all__ = ["BatchReshape", "Enumerated", "WeightedSamples", "reshape_batch"]


class Enumerated(Distribution):
    """A distribution on a finite set of values (rows of ``values``) with given log weights.

    Used for exact posteriors over latents whose support is not ``{0, ..., K-1}``, e.g. the
    product support of several binary units.

    Args:
        values: the support, shape ``(K, *event_shape)``.
        logits: unnormalized log probabilities, shape ``(*batch_shape, K)``.

    Examples:
        >>> d = Enumerated(torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0]]))
        >>> d.log_prob(torch.tensor([[1.0, 1.0]])).exp()
        tensor([0.5000])
    """

    arg_constraints: dict = {}  # noqa: RUF012  (torch's own annotation)

    def __init__(self, values: Tensor, logits: Tensor) -> None:
        if logits.shape[-1] != values.shape[0]:
            raise ValueError(
                f"logits have {logits.shape[-1]} entries but there are {values.shape[0]} values"
            )
        self.values = values
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        super().__init__(logits.shape[:-1], values.shape[1:], validate_args=False)

    @property
    def probs(self) -> Tensor:
        return self.logits.exp()

    @property
    def support(self):
        return (
            constraints.real
            if self.values.is_floating_point()
            else constraints.integer_interval(int(self.values.min()), int(self.values.max()))
        )

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        index = Categorical(logits=self.logits).sample(sample_shape)
        return self.values[index]

    def log_prob(self, value: Tensor) -> Tensor:
        event = len(self.event_shape)
        value = value.unsqueeze(value.dim() - event)
        match = value == self.values
        if event:
            match = match.flatten(-event).all(-1)
        return self.logits.masked_fill(~match, -math.inf).logsumexp(-1)

    def _moment(self, power: int) -> Tensor:
        v = self.values.to(self.logits.dtype).flatten(1) ** power
        return (self.probs @ v).reshape(self.batch_shape + self.event_shape)

    @property
    def mean(self) -> Tensor:
        return self._moment(1)

    @property
    def variance(self) -> Tensor:
        return self._moment(2) - self.mean**2

    def entropy(self) -> Tensor:
        return -(self.probs * self.logits).sum(-1)


class WeightedSamples(pdist.Empirical):
    """Weighted draws of each row's posterior, from a sampler without a density.

    Sampling resamples the draws by weight; `mean` and `variance` are weighted
    moments; [`ess`][] is Kish's effective sample size of the weights. `log_prob`
    raises, because weighted samples define no density.

    Args:
        samples: shape ``(*batch_shape, num_samples, *event_shape)``.
        log_weights: shape ``(*batch_shape, num_samples)`` (zeros for equal weights).
        method: the sampler's name, for messages.
    """

    def __init__(self, samples: Tensor, log_weights: Tensor, method: str = "") -> None:
        self.method = method
        dtype = samples.dtype if samples.is_floating_point() else torch.get_default_dtype()
        super().__init__(samples, log_weights.to(dtype))

    @property
    def ess(self) -> Tensor:
        """Kish's effective sample size per row: (sum w)^2 / sum w^2."""
        lw = self._log_weights
        return (2 * lw.logsumexp(-1) - (2 * lw).logsumexp(-1)).exp()

    def log_prob(self, value: Tensor) -> Tensor:
        name = f"the {self.method!r} encoder" if self.method else "this encoder"
        raise NotImplementedError(
            f"{name} gives weighted samples only and has no exact log density; use "
            "encoder('laplace'), encoder('enumerate') or encoder('amortized') where a density "
            "is needed"
        )


class BatchReshape(Distribution):
    """View a distribution with batch shape ``(N,)`` as one with batch shape ``batch_shape``.

    Model-derived conditionals evaluate the Pyro model once on all rows flattened into the
    data plate; this restores the caller's leading shape.
    """

    arg_constraints: dict = {}  # noqa: RUF012

    def __init__(self, base: Distribution, batch_shape: torch.Size) -> None:
        if math.prod(base.batch_shape) != math.prod(batch_shape):
            raise ValueError(
                f"cannot reshape batch {tuple(base.batch_shape)} to {tuple(batch_shape)}"
            )
        self.base = base
        self.has_rsample = base.has_rsample
        super().__init__(torch.Size(batch_shape), base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def _out(self, t: Tensor, prefix: torch.Size, event: torch.Size) -> Tensor:
        return t.reshape(*prefix, *self.batch_shape, *event)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self._out(self.base.sample(sample_shape), torch.Size(sample_shape), self.event_shape)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        return self._out(
            self.base.rsample(sample_shape), torch.Size(sample_shape), self.event_shape
        )

    def log_prob(self, value: Tensor) -> Tensor:
        event = self.event_shape
        shape = torch.broadcast_shapes(value.shape, self.batch_shape + event)
        prefix = shape[: len(shape) - len(self.batch_shape) - len(event)]
        value = value.expand(shape).reshape(*prefix, -1, *event)
        return self._out(self.base.log_prob(value), prefix, torch.Size())

    def _stat(self, name: str) -> Tensor:
        t = getattr(self.base, name)
        extra = t.shape[len(self.base.batch_shape) :]
        return t.reshape(*self.batch_shape, *extra)

    @property
    def mean(self) -> Tensor:
        return self._stat("mean")

    @property
    def variance(self) -> Tensor:
        return self._stat("variance")

    @property
    def covariance_matrix(self) -> Tensor:
        return self._stat("covariance_matrix")

    @property
    def probs(self) -> Tensor:
        return self._stat("probs")

    def entropy(self) -> Tensor:
        return self.base.entropy().reshape(self.batch_shape)


def reshape_batch(d: Distribution, batch_shape: torch.Size) -> Distribution:
    """``d`` itself if its batch shape is already ``batch_shape``, else a [`BatchReshape`][]."""
    if tuple(d.batch_shape) == tuple(batch_shape):
        return d
    return BatchReshape(d, batch_shape)
