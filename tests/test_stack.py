"""Greedy layer-wise pretraining of a deep DAE (latentae.stack)."""

import numpy as np
import pytest
import torch
from pyro.distributions import Delta

from latentae.corruption import Masking
from latentae.stack import (
    StackedDecoder,
    StackedEncoder,
    StackResult,
    deep_autoencoder,
    pretrain_stack,
)

WIDTHS = (6, 4, 2)
D0 = 8


def pixels(n=256, seed=0):
    """Rows in (0, 1) on a 3-dimensional manifold of R^8, like grey pixels."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g)
    return torch.sigmoid(z @ torch.randn(3, D0, generator=g))


def stack(x, **kwargs):
    kwargs = {"steps_per_layer": 20, "finetune_steps": 0, "batch_size": 32, "lr": 1e-2,
              "progress": False, "seed": 0, **kwargs}  # fmt: skip
    return pretrain_stack(x, kwargs.pop("widths", WIDTHS), Masking(0.2), **kwargs)


def shapes(module):
    return [(name, tuple(v.shape)) for name, v in module.state_dict().items()]


def test_deep_pair_is_the_exact_composition_of_the_pretrained_layers():
    x = pixels()
    rng = torch.get_rng_state()
    result = stack(x, noise=0.05)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded: the caller's stream is untouched
    assert isinstance(result, StackResult)
    assert result.finetune is None
    assert len(result.layers) == 3 and result.steps == 60
    with torch.no_grad():
        h = x
        for layer in result.layers:
            h = layer.encoder.mean_map(h)
        assert torch.equal(result.encoder.mean_map(x), h)
        assert torch.equal(result.encoder(x).mean, h)
        x_hat = h
        for layer in reversed(result.layers):
            x_hat = layer.decoder.mean_map(x_hat)
        assert torch.equal(result.decoder.mean_map(h), x_hat)
        first = result.layers[0].decoder(h.new_zeros(1, WIDTHS[0]))
        assert torch.equal(result.decoder(h[:1]).stddev, first.stddev)


def test_shapes_and_units_of_the_deep_pair():
    x = pixels(64)
    result = stack(x, steps_per_layer=2)
    enc, dec = result.encoder, result.decoder
    assert (enc.widths, dec.widths) == ((D0, *WIDTHS), (*WIDTHS[::-1], D0))
    q = enc(x)
    assert isinstance(q, Delta) and not enc.has_log_prob
    assert (tuple(q.batch_shape), tuple(q.event_shape)) == ((64,), (2,))
    p = dec(q.sample())
    assert (tuple(p.batch_shape), tuple(p.event_shape)) == ((64,), (D0,))
    assert tuple(p.log_prob(x).shape) == (64,)
    # Sigmoid codes lie in (0, 1); an injected noise is a Normal of that scale.
    assert bool(((q.mean > 0) & (q.mean < 1)).all())
    noisy = stack(x, steps_per_layer=2, noise=0.3).encoder(x)
    assert noisy.has_rsample and torch.allclose(noisy.stddev, torch.full((64, 2), 0.3))
    # Deeper layers' decoders reconstruct a hidden representation through the activation.
    assert [layer.decoder.activate_output for layer in result.layers] == [False, True, True]


def test_each_layer_training_reduces_its_reconstruction_error():
    x = pixels(512)
    steps = 300
    result = stack(x, steps_per_layer=steps, validation=None)
    init_enc, init_dec = deep_autoencoder(D0, WIDTHS, seed=0)  # where every layer started
    n_layers = len(WIDTHS)
    h = x
    with torch.no_grad():
        for k, layer in enumerate(result.layers):
            loss = np.array(layer.history["loss"])
            assert len(loss) == steps
            assert loss[-30:].mean() < loss[:30].mean() - 1.0, (k, loss[:30].mean(), loss[-30:])
            start_enc = StackedEncoder((h.shape[1], WIDTHS[k]))
            start_enc.layers[0].load_state_dict(init_enc.layers[k].state_dict())
            start_dec = StackedDecoder((WIDTHS[k], h.shape[1]), activate_output=k > 0)
            start_dec.layers[0].load_state_dict(init_dec.layers[n_layers - 1 - k].state_dict())
            before = (start_dec.mean_map(start_enc.mean_map(h)) - h).pow(2).mean()
            after = (layer.decoder.mean_map(layer.encoder.mean_map(h)) - h).pow(2).mean()
            # The clean reconstruction error of layer k's input, vs. at initialization: at
            # least halved (seeds 0-2 give ratios 0.01-0.38 and DAE-loss drops of 5-11 nats).
            assert after < 0.5 * before, (k, float(before), float(after))
            h = layer.encoder.mean_map(h)


def test_finetuning_trains_the_deep_pair_and_leaves_the_layers_as_pretrained():
    x = pixels()
    result = stack(x, finetune_steps=25)
    assert result.finetune is not None and result.finetune.steps == 25
    assert result.steps == 3 * 20 + 25
    assert result.finetune.encoder is result.encoder
    assert len(result.finetune.validation["nll"]) > 0
    with torch.no_grad():
        h = x
        for layer in result.layers:
            h = layer.encoder.mean_map(h)
        assert not torch.allclose(result.encoder.mean_map(x), h)
    # 0 fine-tuning steps is explicit: no fine-tuning at all.
    assert stack(x, finetune_steps=0).finetune is None


def test_deep_autoencoder_is_the_pretrained_architecture():
    x = (pixels() > 0.5).to(torch.get_default_dtype())
    for output in ("gaussian", "bernoulli"):
        result = stack(x, output=output, steps_per_layer=2, activation="silu")
        enc, dec = deep_autoencoder(D0, WIDTHS, activation="silu", output=output, seed=1)
        assert shapes(enc) == shapes(result.encoder)
        assert shapes(dec) == shapes(result.decoder)
        assert type(dec(torch.zeros(1, 2)).base_dist) is type(
            result.decoder(torch.zeros(1, 2)).base_dist
        )
    assert "scale_raw" not in dict(shapes(dec))  # Bernoulli units have no scale
    # The same seed gives the same initialization, without moving the global stream.
    rng = torch.get_rng_state()
    again, _ = deep_autoencoder(D0, WIDTHS, activation="silu", output="bernoulli", seed=1)
    assert torch.equal(torch.get_rng_state(), rng)
    for a, b in zip(enc.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_validation_tensor_and_step_counts_per_layer():
    x = pixels()
    result = stack(x, steps_per_layer=(5, 6, 7), finetune_steps=3, validation=pixels(20, seed=1))
    assert [layer.steps for layer in result.layers] == [5, 6, 7]
    assert result.steps == 21
    assert all(layer.validation["nll"] for layer in result.layers)
    assert not stack(x, steps_per_layer=2, validation=None).layers[0].validation["nll"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": ()}, r"widths must be a sequence of at least 1 positive layer widths"),
        ({"widths": 4}, r"widths must be a sequence"),
        ({"widths": (4, 0)}, r"widths must contain positive integers, got \(4, 0\)"),
        ({"steps_per_layer": 0}, r"steps_per_layer must be a positive integer, got 0"),
        ({"steps_per_layer": (5, 5)}, r"2 entries but there are 3 layers"),
        ({"finetune_steps": -1}, r"finetune_steps must be a non-negative integer, got -1"),
        ({"finetune_steps": 1.5}, r"finetune_steps must be a non-negative integer"),
        ({"output": "poisson"}, r"output must be one of \('gaussian', 'bernoulli'\)"),
        ({"output": "bernoulli"}, r"output='bernoulli' needs binary data"),
        ({"activation": "swish"}, r"activation must be one of \['relu', 'sigmoid'"),
        ({"noise": -0.1}, r"noise must be a finite number >= 0"),
        ({"validation": torch.zeros(10, 5)}, r"validation rows have 5 features but the data "),
        ({"validation": 1.5}, r"validation must be a fraction in \[0, 1\)"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stack(pixels(64), **kwargs)


def test_bad_data_and_contexts_of_the_wrong_width_are_refused():
    with pytest.raises(ValueError, match=r"shape \(64,\); pass rows as examples"):
        stack(torch.rand(64))
    with pytest.raises(ValueError, match="data must be a tensor or numpy array"):
        stack([[0.0] * D0] * 64)
    with pytest.raises(TypeError, match=r"corruption must be a latentae\.corruption\.Corruption"):
        pretrain_stack(pixels(), (2,), "masking", steps_per_layer=1, finetune_steps=0)
    result = stack(pixels(64), steps_per_layer=1)
    with pytest.raises(ValueError, match=r"expects contexts with 8 features.*shape \(3, 5\)"):
        result.encoder(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="expects contexts with 2 features"):
        result.decoder(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="d0 must be a positive integer"):
        deep_autoencoder(0, (2,))
    with pytest.raises(ValueError, match="activate_output=True needs output='gaussian'"):
        StackedDecoder((2, 3), output="bernoulli", activate_output=True)
