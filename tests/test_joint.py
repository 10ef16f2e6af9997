"""Loading and validating model scripts, and the JointModel API."""

import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch

import latentae as lae

HEADER = "import pyro, pyro.distributions as dist, torch\n"


def script(tmp_path, body, name="broken.py"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def load_error(tmp_path, body):
    path = script(tmp_path, body)
    with pytest.raises(lae.ModelError) as info:
        lae.JointModel.from_file(path)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    return message


def test_missing_file(tmp_path):
    with pytest.raises(lae.ModelError, match="does not exist"):
        lae.JointModel.from_file(tmp_path / "nope.py")


def test_not_a_python_file(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("")
    with pytest.raises(lae.ModelError, match=r"not a \.py file"):
        lae.JointModel.from_file(path)


def test_script_that_fails_to_execute(tmp_path):
    message = load_error(tmp_path, "raise RuntimeError('boom')\n")
    assert "failed to execute" in message and "boom" in message


def test_missing_model_function(tmp_path):
    message = load_error(tmp_path, "def modle(n):\n    pass\n")
    assert "defines no function `model`" in message


def test_misnamed_latent_site(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", n):
                z = pyro.sample("z", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(z, 1.).to_event(1))
        """,
    )
    assert "no sample site named 'h'" in message
    assert "['x', 'z']" in message and "LATENT" in message


def test_renamed_sites_load(tmp_path):
    path = script(
        tmp_path,
        """
        LATENT, OBSERVED = "z", "y"
        def model(n):
            with pyro.plate("data", n):
                z = pyro.sample("z", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("y", dist.Normal(z, 1.).to_event(1))
        """,
    )
    jm = lae.JointModel.from_file(path)
    assert (jm.latent, jm.observed) == ("z", "y")
    assert jm.latent_shape == (2,) and jm.observed_shape == (2,)


def test_misnamed_observed_site(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("obs", dist.Normal(h, 1.).to_event(1))
        """,
    )
    assert "no sample site named 'x' for the observed variable" in message and "OBSERVED" in message


def test_extra_latent_site(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            s = pyro.sample("s", dist.LogNormal(0., 1.))
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h, s).to_event(1))
        """,
    )
    assert "sample site 's'" in message and "exactly one" in message


def test_site_observed_in_script(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h, 1.).to_event(1), obs=torch.zeros(n, 2))
        """,
    )
    assert "site 'x' is observed inside the script" in message and "conditioning" in message


def test_site_outside_the_data_plate(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(2))
            with pyro.plate("data", n):
                pyro.sample("x", dist.Normal(h, 1.).to_event(1))
        """,
    )
    assert "site 'h' is outside pyro.plate('data', n)" in message


def test_plate_of_the_wrong_size(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", 10):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([10, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h, 1.).to_event(1))
        """,
    )
    assert "has size 10 but model(3) was called" in message


def test_event_dimension_left_in_the_batch(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h.sum(-1, keepdim=True).expand(n, 4), 1.))
        """,
    )
    assert "Shape mismatch inside plate('data') at site x" in message
    assert "declare per-example dimensions as event dimensions with .to_event" in message


def test_nested_plate_gives_a_wrong_batch_shape(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", n, dim=-2):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 1]))
                with pyro.plate("pixels", 4, dim=-1):
                    pyro.sample("x", dist.Normal(h, 1.))
        """,
    )
    assert "batch shape (3, 1)" in message and "expected (3,)" in message
    assert ".to_event" in message


def test_learnable_parameter_is_refused(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            w = pyro.param("w", torch.ones(2))
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h * w, 1.).to_event(1))
        """,
    )
    assert "'w' is a pyro.param" in message and "module constants" in message


def test_integer_observations_are_refused(tmp_path):
    message = load_error(
        tmp_path,
        """
        def model(n):
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Categorical(logits=torch.stack([h[:, 0], -h[:, 0]], -1)))
        """,
    )
    assert "integer values" in message


def test_same_name_for_both_sites(tmp_path):
    message = load_error(
        tmp_path,
        """
        LATENT = OBSERVED = "x"
        def model(n):
            with pyro.plate("data", n):
                pyro.sample("x", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
        """,
    )
    assert "both named 'x'" in message


def test_data_with_the_wrong_shape(tmp_path):
    path = script(
        tmp_path,
        """
        def data():
            return torch.zeros(10, 3)
        def model(n):
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h, 1.).to_event(1))
        """,
    )
    jm = lae.JointModel.from_file(path)
    with pytest.raises(
        lae.ModelError, match=r"data\(\) returned shape \(10, 3\), expected \(rows, 2\)"
    ):
        jm.data()


def test_data_with_nan_names_row_and_column(tmp_path):
    path = script(
        tmp_path,
        """
        def data():
            x = torch.zeros(10, 2)
            x[7, 1] = float("nan")
            return x
        def model(n):
            with pyro.plate("data", n):
                h = pyro.sample("h", dist.Normal(0., 1.).expand([n, 2]).to_event(1))
                pyro.sample("x", dist.Normal(h, 1.).to_event(1))
        """,
    )
    with pytest.raises(lae.ModelError, match="row 7, column 1"):
        lae.JointModel.from_file(path).data()


def gaussian_model(n):
    with pyro.plate("data", n):
        h = pyro.sample("h", dist.Normal(0.0, 1.0).expand([n, 2]).to_event(1))
        pyro.sample("x", dist.Normal(h @ torch.ones(2, 3), 0.5).to_event(1))


def test_function_models_name_the_function_and_keyword():
    with pytest.raises(lae.ModelError, match=r"model 'gaussian_model'.*pass latent=\.\.\."):
        lae.JointModel(gaussian_model, latent="z")


def test_wrong_shapes_are_refused_with_the_expected_shape():
    jm = lae.JointModel(gaussian_model)
    h, x = jm.sample(4, seed=0)
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\).*shape \(n, 3\)"):
        jm.log_joint(h, x[:, :2])
    with pytest.raises(ValueError, match=r"h has shape \(4, 3\).*shape \(n, 2\)"):
        jm.log_prior(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="do not broadcast"):
        jm.log_joint(h, x[:3])


def test_log_densities_broadcast_over_leading_dimensions():
    jm = lae.JointModel(gaussian_model)
    h, x = jm.sample(4, seed=0)
    hs = torch.stack([h, h + 1])  # (2, 4, 2)
    lj = jm.log_joint(hs, x)
    assert lj.shape == (2, 4)
    assert torch.allclose(lj[1], jm.log_joint(h + 1, x))


def test_decoder_keeps_the_context_batch_shape():
    jm = lae.JointModel(gaussian_model)
    h = torch.randn(2, 3, 2)
    d = jm.decoder()(h)
    assert d.batch_shape == (2, 3) and d.event_shape == (3,)
    x = d.sample()
    assert x.shape == (2, 3, 3)
    assert torch.allclose(d.log_prob(x), jm.log_likelihood(x, h))
    assert torch.allclose(d.mean, h @ torch.ones(2, 3))


def test_decoder_is_differentiable_in_h():
    jm = lae.JointModel(gaussian_model)
    h = torch.randn(5, 2, requires_grad=True)
    x = torch.randn(5, 3)
    (g,) = torch.autograd.grad(jm.decoder()(h).log_prob(x).sum(), h)
    # d/dh log N(x; h A, 0.25 I) = (x - h A) A^T / 0.25 with A the 2x3 ones matrix
    a = torch.ones(2, 3)
    assert torch.allclose(g, (x - h.detach() @ a) @ a.T / 0.25)


def test_unknown_encoder_method():
    jm = lae.JointModel(gaussian_model)
    with pytest.raises(ValueError, match=r"unknown encoder method 'exact'.*enumerate, laplace"):
        jm.encoder("exact")


def test_enumerate_needs_a_finite_latent():
    with pytest.raises(lae.ModelError, match="finite support"):
        lae.JointModel(gaussian_model).encoder("enumerate")


def test_seed_must_be_an_int_or_generator():
    with pytest.raises(TypeError, match="seed must be"):
        lae.JointModel(gaussian_model).sample(3, seed=1.5)


def test_generator_seeds_reproducibly():
    jm = lae.JointModel(gaussian_model)
    a = jm.sample(3, seed=torch.Generator().manual_seed(5))
    b = jm.sample(3, seed=torch.Generator().manual_seed(5))
    assert torch.equal(a[1], b[1])


def test_exact_methods():
    assert lae.JointModel(gaussian_model).exact_methods() == ["laplace"]
