"""Greedy layer-wise pretraining of a deep denoising autoencoder (*Deep Learning* §14.3;
Vincent et al. 2010, "Stacked denoising autoencoders").

A deep encoder x → h1 → ... → hL and its mirror-image decoder are first trained one layer at
a time: layer k is a shallow DAE whose input is the clean representation h_{k-1} of the data
through the already-trained layers 1..k-1, corrupted by the same corruption as the data.
The pretrained layers are then composed into the deep encoder and decoder and fine-tuned
end to end on the DAE criterion -log p_dec(x | h), h ~ q(h | x̃).

[`deep_autoencoder`][] builds the deep pair from a random initialization (the baseline that
pretraining is compared with); [`pretrain_stack`][] starts from that same initialization.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pyro.distributions import Delta
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from latentae._util import Seed, seeded
from latentae.conditionals import _MIN_SCALE, _SOFTPLUS_ONE, Conditional
from latentae.corruption import Corruption
from latentae.dae import FitResult, fit

__all__ = [
    "StackResult",
    "StackedDecoder",
    "StackedEncoder",
    "deep_autoencoder",
    "pretrain_stack",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
}
OUTPUTS = ("gaussian", "bernoulli")
# Rows per chunk when computing a layer's representation of the whole data set.
_CHUNK = 4096

Activation = str | Callable[[], nn.Module]


def _activation_factory(activation: Activation) -> Callable[[], nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or a callable returning an "
                f"nn.Module (e.g. nn.GELU), got {activation!r}"
            )
        return ACTIVATIONS[activation]
    if not callable(activation):
        raise ValueError(f"activation must be a name or a callable, got {activation!r}")
    return activation


def _check_widths(widths: Sequence[int], name: str = "widths", least: int = 1) -> tuple[int, ...]:
    if isinstance(widths, int) or not isinstance(widths, Sequence) or len(widths) < least:
        raise ValueError(
            f"{name} must be a sequence of at least {least} positive layer widths such as "
            f"(128, 64, 32), got {widths!r}"
        )
    for width in widths:
        if not isinstance(width, int | np.integer) or isinstance(width, bool) or width < 1:
            raise ValueError(f"{name} must contain positive integers, got {tuple(widths)!r}")
    return tuple(int(w) for w in widths)


def _check_steps(name: str, value: object, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        what = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {what} integer, got {value!r}")
    return int(value)


def _check_noise(noise: object) -> float:
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    return float(noise)


class StackedEncoder(Conditional):
    """A deep DAE encoder q(h | x̃): h = a(W_L ... a(W_1 x̃ + b_1) ... + b_L) plus injected
    Gaussian noise of a fixed scale (fig. 14.2), ``Independent(Normal(h, noise), 1)``.

    Every affine map is followed by the activation a, so layer k of a stack is one
    ``nn.Linear`` and one activation. ``noise=0`` is deterministic: a
    ``pyro.distributions.Delta`` at h, which samples (``rsample`` too) but has no density.
    Inputs are not standardized: give data of order one (e.g. pixels in [0, 1]).

    Args:
        widths: ``(d0, d1, ..., dL)``: the input width, then the width of every layer.
        activation: ``"sigmoid"``, ``"tanh"``, ``"silu"``, ``"relu"``, ``"softplus"`` or a
            callable returning an ``nn.Module``.
        noise: standard deviation of the noise injected into the code, ``>= 0``.

    Examples:
        >>> enc = StackedEncoder((6, 4, 2), noise=0.1)
        >>> tuple(enc.mean_map(torch.rand(5, 6)).shape), enc(torch.rand(5, 6)).stddev[0]
        ((5, 2), tensor([0.1000, 0.1000]))
    """

    def __init__(
        self, widths: Sequence[int], activation: Activation = "sigmoid", noise: float = 0.0
    ) -> None:
        super().__init__()
        self.widths = _check_widths(widths, least=2)
        make = _activation_factory(activation)
        self.activation = activation
        self.context_dim, self.event_dim = self.widths[0], self.widths[-1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(self.widths))
        self.activations = nn.ModuleList(make() for _ in self.layers)
        self.noise = noise

    @property
    def noise(self) -> float:
        """Standard deviation of the injected noise (validated when set)."""
        return self._noise

    @noise.setter
    def noise(self, value: float) -> None:
        self._noise = _check_noise(value)

    @property
    def has_log_prob(self) -> bool:  # type: ignore[override]
        """``False`` for ``noise=0``, whose point mass has no density."""
        return self._noise > 0

    def mean_map(self, context: Tensor) -> Tensor:
        """The deterministic code h(x̃), of shape ``(*batch, dL)``."""
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"{type(self).__name__} expects contexts with {self.context_dim} features in "
                f"the last dimension, got shape {tuple(context.shape)}"
            )
        h = context
        for linear, act in zip(self.layers, self.activations, strict=True):
            h = act(linear(h))
        return h

    def forward(self, context: Tensor) -> Distribution:
        loc = self.mean_map(context)
        if self._noise == 0:
            return Delta(loc, event_dim=1)
        return Independent(Normal(loc, self._noise), 1)

    def extra_repr(self) -> str:
        return f"widths={self.widths}, noise={self._noise}"


class StackedDecoder(Conditional):
    """A deep DAE decoder p_dec(x | h): an MLP ``widths[0] → ... → widths[-1]`` with the
    activation between affine maps, and output units (§14.4):

    - ``"gaussian"``: ``Independent(Normal(mean, scale), 1)``, linear units with a free,
      context-independent diagonal scale;
    - ``"bernoulli"``: ``Independent(Bernoulli(logits), 1)``, sigmoid units for binary x.

    With ``activate_output=True`` the activation is also applied to the Gaussian mean: the
    decoder of a stacked layer k > 1 reconstructs a hidden representation, which lies in the
    activation's range.

    Args:
        widths: ``(dL, ..., d0)``: the code width, then the width of every layer down to x.
        activation: as for [`StackedEncoder`][].
        output: ``"gaussian"`` or ``"bernoulli"``.
        activate_output: apply the activation to the Gaussian mean.

    Examples:
        >>> dec = StackedDecoder((2, 4, 6), output="bernoulli")
        >>> d = dec(torch.rand(5, 2))
        >>> tuple(d.log_prob(torch.ones(5, 6)).shape), tuple(dec.mean_map(torch.rand(5, 2)).shape)
        ((5,), (5, 6))
    """

    def __init__(
        self,
        widths: Sequence[int],
        activation: Activation = "sigmoid",
        output: str = "gaussian",
        activate_output: bool = False,
    ) -> None:
        super().__init__()
        self.widths = _check_widths(widths, least=2)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if activate_output and output != "gaussian":
            raise ValueError("activate_output=True needs output='gaussian'")
        make = _activation_factory(activation)
        self.activation, self.output, self.activate_output = activation, output, activate_output
        self.context_dim, self.event_dim = self.widths[0], self.widths[-1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(self.widths))
        self.activations = nn.ModuleList(
            make() for _ in range(len(self.layers) - 1 + activate_output)
        )
        if output == "gaussian":
            # Zero, so the scale starts at one (softplus(_SOFTPLUS_ONE) == 1).
            self.scale_raw = nn.Parameter(torch.zeros(self.event_dim))

    def _last(self, context: Tensor) -> Tensor:
        """The Gaussian mean or the Bernoulli logits."""
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"{type(self).__name__} expects contexts with {self.context_dim} features in "
                f"the last dimension, got shape {tuple(context.shape)}"
            )
        x = context
        for i, linear in enumerate(self.layers):
            x = linear(x)
            if i < len(self.activations):
                x = self.activations[i](x)
        return x

    def mean_map(self, context: Tensor) -> Tensor:
        """E[x | h], of shape ``(*batch, d0)``: the mean, or the probabilities of ones."""
        out = self._last(context)
        return out if self.output == "gaussian" else torch.sigmoid(out)

    def forward(self, context: Tensor) -> Distribution:
        out = self._last(context)
        if self.output == "bernoulli":
            return Independent(Bernoulli(logits=out), 1)
        scale = F.softplus(self.scale_raw + _SOFTPLUS_ONE) + _MIN_SCALE
        return Independent(Normal(out, scale.expand_as(out)), 1)

    def extra_repr(self) -> str:
        return f"widths={self.widths}, output={self.output!r}"


def deep_autoencoder(
    d0: int,
    widths: Sequence[int],
    *,
    activation: Activation = "sigmoid",
    output: str = "gaussian",
    noise: float = 0.0,
    seed: Seed = None,
) -> tuple[StackedEncoder, StackedDecoder]:
    """A deep encoder ``d0 → d1 → ... → dL`` and its mirror-image decoder, randomly
    initialized (PyTorch's default ``nn.Linear`` initialization): the architecture that
    [`pretrain_stack`][] pretrains, for training end to end from scratch.

    Args:
        d0: the data width.
        widths: ``(d1, ..., dL)``, the hidden widths; the code has width dL.
        activation: as for [`StackedEncoder`][].
        output: the decoder's output units, ``"gaussian"`` or ``"bernoulli"``.
        noise: the encoder's injected noise.
        seed: seed of the initialization; ``None`` uses torch's global RNG.

    Returns:
        ``(encoder, decoder)``: a [`StackedEncoder`][] and a [`StackedDecoder`][].

    Examples:
        >>> enc, dec = deep_autoencoder(6, (4, 2), seed=0)
        >>> enc.widths, dec.widths
        ((6, 4, 2), (2, 4, 6))
    """
    _check_steps("d0", d0)
    hidden = _check_widths(widths)
    with seeded(seed):
        encoder = StackedEncoder((d0, *hidden), activation, noise)
        decoder = StackedDecoder((*hidden[::-1], d0), activation, output)
    return encoder, decoder


@dataclass
class StackResult:
    """What [`pretrain_stack`][] returns.

    Attributes:
        encoder: the deep [`StackedEncoder`][] (pretrained, then fine-tuned).
        decoder: the deep [`StackedDecoder`][].
        layers: one [`FitResult`][latentae.FitResult] per layer, holding that layer's shallow
            encoder and decoder as pretrained (separate modules, untouched by fine-tuning).
        finetune: the fine-tuning [`FitResult`][latentae.FitResult], or ``None`` with
            ``finetune_steps=0``.
        steps: optimizer steps in all, over the layers and the fine-tuning.
        seconds: wall time of the whole call.
    """

    encoder: StackedEncoder
    decoder: StackedDecoder
    layers: list[FitResult] = field(default_factory=list)
    finetune: FitResult | None = None
    steps: int = 0
    seconds: float = 0.0


def _rows(data: Tensor | np.ndarray, what: str) -> Tensor:
    x = torch.as_tensor(data) if isinstance(data, Tensor | np.ndarray) else None
    if x is None:
        raise ValueError(f"{what} must be a tensor or numpy array, got {type(data).__name__}")
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(
            f"{what} has shape {tuple(x.shape)}; pass rows as examples, shape (n, d) with d >= 1"
        )
    return x


@torch.no_grad()
def _encode(encoder: StackedEncoder, x: Tensor) -> Tensor:
    """The clean (uncorrupted, noise-free) code of every row, in chunks, on the encoder's
    device."""
    p = next(encoder.parameters())
    chunks = [encoder.mean_map(c.to(p.device, p.dtype)) for c in x.split(_CHUNK)]
    return torch.cat(chunks)


def pretrain_stack(
    data: Tensor | np.ndarray,
    widths: Sequence[int],
    corruption: Corruption,
    *,
    steps_per_layer: int | Sequence[int],
    finetune_steps: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    activation: Activation = "sigmoid",
    output: str = "gaussian",
    noise: float = 0.0,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    validation: float | Tensor | None = 0.1,
) -> StackResult:
    """Pretrain a deep DAE greedily, one layer at a time, then fine-tune it end to end.

    Layer k is a shallow DAE trained with [`latentae.fit`][]: its encoder maps the clean
    representation h_{k-1} of the training rows (h_0 = x; computed once, without gradients,
    through the already-trained layers) to width d_k by one affine map and the activation;
    its decoder maps back, with the chosen ``output`` units for k = 1 and a Gaussian whose
    mean passes through the activation for k > 1. Each layer sees its input corrupted by
    ``corruption``. The layers are then composed into the deep encoder and decoder of
    [`deep_autoencoder`][] (from whose initialization, with the same ``seed``, the layers
    start), which are fine-tuned on -log p_dec(x | h), h ~ q(h | x̃), x̃ ~ C(x̃ | x).

    Every [`fit`][latentae.fit] call uses Adam with learning rate ``lr``, ``batch_size``, a
    fresh optimizer state, and seed ``seed + k`` (k = 0, 1, ...). The same validation rows are
    held out of every layer and of the fine-tuning (through the lower layers for k > 1).

    Args:
        data: rows as examples, shape ``(n, d0)``: a tensor or numpy array (read into
            memory). Not standardized: give data of order one. For ``output="bernoulli"`` the
            entries must be 0 or 1.
        widths: ``(d1, ..., dL)``, the hidden widths; the code has width dL.
        corruption: C(x̃ | x), applied to the input of every layer and of the deep DAE.
        steps_per_layer: optimizer steps for each layer, or a sequence of L step counts.
        finetune_steps: optimizer steps of the end-to-end fine-tuning; ``0`` skips it, and
            the deep pair is the exact composition of the pretrained layers.
        batch_size: rows per optimizer step.
        lr: Adam's learning rate.
        activation: ``"sigmoid"`` (default: Vincent et al.'s units; a bounded code keeps a
            fixed injected noise meaningful), ``"tanh"``, ``"silu"``, ``"relu"``,
            ``"softplus"`` or a callable returning an ``nn.Module``.
        output: the output units of x: ``"gaussian"`` (free diagonal scale) or
            ``"bernoulli"``.
        noise: standard deviation of the Gaussian noise injected into each layer's code while
            it is pretrained, and into the deep encoder's code h; 0 is deterministic.
        device: where to train; the representations of the data are kept there.
        seed: seed of the initialization, the validation split and the training randomness.
        progress: show a progress bar per [`fit`][latentae.fit] call.
        validation: fraction of rows held out, a tensor of held-out rows, or ``None``.

    Returns:
        A [`StackResult`][].

    Raises:
        ValueError: empty or non-positive widths, non-positive step counts, data that are not
            a 2-D table, validation rows of another width, non-binary data with
            ``output="bernoulli"``, or any error of [`latentae.fit`][].
        TypeError: ``corruption`` is not a [`Corruption`][latentae.corruption.Corruption].

    Examples:
        >>> from latentae.corruption import Masking
        >>> x = torch.rand(64, 6)
        >>> r = pretrain_stack(x, (4, 2), Masking(0.25), steps_per_layer=5, finetune_steps=5,
        ...                    batch_size=16, seed=0, progress=False)
        >>> len(r.layers), r.steps, tuple(r.encoder.mean_map(x).shape)
        (2, 15, (64, 2))
    """
    start_time = time.perf_counter()
    hidden = _check_widths(widths)
    n_layers = len(hidden)
    if isinstance(steps_per_layer, Sequence):
        if len(steps_per_layer) != n_layers:
            raise ValueError(
                f"steps_per_layer has {len(steps_per_layer)} entries but there are "
                f"{n_layers} layers (widths={hidden}); give one count per layer or one int"
            )
        layer_steps = [_check_steps("steps_per_layer", s) for s in steps_per_layer]
    else:
        layer_steps = [_check_steps("steps_per_layer", steps_per_layer)] * n_layers
    finetune_steps = _check_steps("finetune_steps", finetune_steps, allow_zero=True)
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    _check_noise(noise)
    _activation_factory(activation)
    if not isinstance(corruption, Corruption):
        raise TypeError(
            f"corruption must be a latentae.corruption.Corruption, got {type(corruption).__name__}"
        )
    x = _rows(data, "data")
    d0 = x.shape[1]
    if isinstance(validation, Tensor | np.ndarray):
        train, val = x, _rows(validation, "the validation rows")
        if val.shape[1] != d0:
            raise ValueError(
                f"the validation rows have {val.shape[1]} features but the data rows have {d0}"
            )
    elif validation is None or validation == 0:
        train, val = x, None
    elif isinstance(validation, float) and 0 < validation < 1:
        n_val = max(1, round(validation * len(x)))
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        train, val = x[perm[n_val:].sort().values], x[perm[:n_val]]
    else:
        raise ValueError(
            f"validation must be a fraction in [0, 1), a tensor of rows or None, got {validation!r}"
        )
    if output == "bernoulli":
        for what, rows in (("data", x), ("validation rows", val)):
            if rows is not None and not bool(((rows == 0) | (rows == 1)).all()):
                raise ValueError(
                    f"output='bernoulli' needs binary {what} (entries 0 or 1); binarize them "
                    "or use output='gaussian'"
                )

    encoder, decoder = deep_autoencoder(
        d0, hidden, activation=activation, output=output, noise=noise, seed=seed
    )
    if device is not None:
        encoder.to(device)
        decoder.to(device)
    dims = (d0, *hidden)
    inputs, val_inputs = train, val
    layers: list[FitResult] = []
    for k in range(1, n_layers + 1):
        # Layer k starts from the deep pair's initialization of its maps (the seed only
        # keeps the caller's RNG stream untouched: these weights are overwritten).
        with seeded(seed):
            layer_enc = StackedEncoder(dims[k - 1 : k + 1], activation, noise)
            layer_dec = StackedDecoder(
                (dims[k], dims[k - 1]),
                activation,
                output if k == 1 else "gaussian",
                activate_output=k > 1,
            )
        layer_enc.to(next(encoder.parameters()).device)
        layer_dec.to(next(decoder.parameters()).device)
        j = n_layers - k  # the deep decoder's index of layer k's map
        pairs = [
            (layer_enc.layers[0], encoder.layers[k - 1]),
            (layer_enc.activations[0], encoder.activations[k - 1]),
            (layer_dec.layers[0], decoder.layers[j]),
        ]
        if k > 1:
            pairs.append((layer_dec.activations[0], decoder.activations[j]))
        for shallow, deep in pairs:
            shallow.load_state_dict(copy.deepcopy(deep.state_dict()))
        result = fit(
            layer_enc,
            layer_dec,
            inputs,
            corruption,
            steps=layer_steps[k - 1],
            batch_size=batch_size,
            lr=lr,
            validation=val_inputs,
            device=device,
            seed=seed + k - 1,
            progress=progress,
        )
        layers.append(result)
        with torch.no_grad():
            for shallow, deep in pairs:
                deep.load_state_dict(shallow.state_dict())
            if k == 1 and output == "gaussian":
                decoder.scale_raw.copy_(layer_dec.scale_raw)
        if k < n_layers:
            inputs = _encode(layer_enc, inputs)
            val_inputs = _encode(layer_enc, val_inputs) if val_inputs is not None else None

    finetune = None
    if finetune_steps:
        finetune = fit(
            encoder,
            decoder,
            train,
            corruption,
            steps=finetune_steps,
            batch_size=batch_size,
            lr=lr,
            validation=val,
            device=device,
            seed=seed + n_layers,
            progress=progress,
        )
    steps = sum(r.steps for r in layers) + (finetune.steps if finetune else 0)
    encoder.eval()
    decoder.eval()
    return StackResult(encoder, decoder, layers, finetune, steps, time.perf_counter() - start_time)
