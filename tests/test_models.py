"""One contract, checked on every model script in models/."""

import pytest
import torch

import latentae as lae
from tests.conftest import MODELS


@pytest.fixture(params=MODELS, ids=[p.stem for p in MODELS])
def joint(request):
    return lae.JointModel.from_file(request.param)


def test_samples_have_the_declared_shapes(joint):
    h, x = joint.sample(7, seed=0)
    assert h.shape == (7, *joint.latent_shape)
    assert x.shape == (7, *joint.observed_shape)
    assert x.dtype == torch.float64  # module constants follow the default dtype at load


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(joint):
    state = torch.get_rng_state()
    a = joint.sample(5, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = joint.sample(5, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_log_joint_is_prior_plus_likelihood(joint):
    h, x = joint.sample(50, seed=1)
    lj = joint.log_joint(h, x)
    assert lj.shape == (50,)
    assert torch.allclose(lj, joint.log_prior(h) + joint.log_likelihood(x, h), rtol=0, atol=1e-10)


def test_decoder_density_is_the_likelihood(joint):
    h, x = joint.sample(50, seed=2)
    d = joint.decoder()(h)
    assert d.batch_shape == (50,)
    assert torch.allclose(d.log_prob(x), joint.log_likelihood(x, h), rtol=0, atol=1e-10)


def test_encoder_samples_have_the_latent_shape(joint):
    h, x = joint.sample(20, seed=3)
    q = joint.encoder()(x)
    assert q.batch_shape == (20,)
    assert q.sample().shape == h.shape
    assert q.sample((4,)).shape == (4, *h.shape)
    assert torch.isfinite(q.log_prob(h)).all()


def test_data_has_the_observed_shape(joint):
    x = joint.data()
    assert x.shape[1:] == joint.observed_shape
    assert x.shape[0] > 0 and torch.isfinite(x).all()
