"""The ``latentae`` command, run in-process through ``main`` (and once as a real process)."""

import json
import math
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

import latentae as lae
from latentae.arviz import load_netcdf
from latentae.cli import main
from tests.closed_forms import ppca_posterior
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"
MIXTURE = ROOT / "models" / "mixture.py"
NUM_SAMPLES, NUM_CHAINS, NUM_HELDOUT = 200, 4, 5
DRAWS = NUM_SAMPLES * NUM_CHAINS
# The run's draws are iid, so a posterior mean estimated from them has standard error
# sd / sqrt(DRAWS) and an sd has relative standard error ~ 1 / sqrt(2 DRAWS). A z-score
# beyond 4 has probability 6e-5: with the ~20 comparisons per test, a correct run fails
# with probability about 1e-3 (and never, for the fixed seeds used here).
Z = 4.0

REPORT_KEYS = {
    "command",
    "model",
    "data",
    "encoder",
    "sampling",
    "posterior",
    "convergence",
    "sample_stats",
    "warnings",
    "heldout_loglik",
    "timings_s",
    "versions",
    "files",
}


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_model(capsys, tmp_path, model, *extra):
    out_dir = tmp_path / model.stem
    code, out, err = run(
        capsys,
        "run",
        model,
        "--out",
        out_dir,
        "--num-samples",
        NUM_SAMPLES,
        "--num-chains",
        NUM_CHAINS,
        "--seed",
        1,
        *extra,
    )
    assert code == 0, err
    assert err == ""
    report = json.loads((out_dir / "report.json").read_text())
    return out_dir, report, out


def test_run_ppca_report_matches_the_closed_form_posterior(capsys, tmp_path):
    out_dir, report, _ = run_model(capsys, tmp_path, PPCA)
    assert set(report) >= REPORT_KEYS
    model = report["model"]
    assert model["name"] == "ppca"
    assert model["latent"] == {"name": "h", "shape": [2], "support": "real", "discrete": False}
    assert model["observed"]["shape"] == [5]
    assert model["exact_methods"] == ["laplace"]
    assert report["data"] == {
        "rows": 2000,
        "source": "simulated",
        "real": False,
        "heldout_rows": [1995, 1996, 1997, 1998, 1999],
    }
    assert report["encoder"] == {"method": "laplace", "requested": "auto", "exact": True}
    assert set(report["versions"]) >= {"latentae", "torch", "pyro", "arviz"}
    assert report["timings_s"]["total"] > 0

    # The held-out rows are the last rows of the data the run simulated with its seed.
    jm = lae.JointModel.from_file(PPCA)
    x = jm.data(seed=1)[-NUM_HELDOUT:]
    c = runpy.run_path(str(PPCA))
    mean, cov = ppca_posterior(c["W"], c["MU"], c["NOISE"], x)
    sd = cov.diagonal().sqrt()
    assert len(report["posterior"]) == NUM_HELDOUT
    for i, row in enumerate(report["posterior"]):
        m, s = torch.tensor(row["mean"]), torch.tensor(row["sd"])
        assert torch.isfinite(m).all()
        assert ((m - mean[i]).abs() < Z * sd / math.sqrt(DRAWS)).all(), (m, mean[i])
        assert ((s / sd - 1).abs() < Z / math.sqrt(2 * DRAWS)).all(), (s, sd)

    # iid draws in 8 split chains of 100: R-hat^2 ~ 1 + (F - 1) / 100 with F ~ F(7, 792), so
    # R-hat > 1.03 needs F > 7, a chi-square(7) beyond 49: probability 2e-8 per entry.
    conv = report["convergence"]["h"]
    assert conv["entries"] == NUM_HELDOUT * 2
    assert conv["r_hat_undefined"] == 0
    assert 0.97 < conv["r_hat_max"] < 1.03
    assert 0 < conv["ess_bulk_min"] <= 2 * DRAWS
    # The command warns exactly when R-hat passes the conventional 1.01.
    assert bool(report["warnings"]) == (conv["r_hat_max"] > 1.01)

    # The held-out log-likelihood is E_{h ~ p(h|x)} log N(x; W h + mu, s^2 I) over the saved
    # draws, which in closed form is log N(x; W m + mu, s^2 I) - tr(W^T W S) / (2 s^2).
    idata = load_netcdf(out_dir / "posterior.nc")
    h = torch.as_tensor(idata.posterior["h"].values).reshape(DRAWS, NUM_HELDOUT, 2)
    per_draw = torch.distributions.Normal(h @ c["W"].T + c["MU"], c["NOISE"]).log_prob(x).sum(-1)
    reported = torch.tensor(report["heldout_loglik"]["per_row"])
    assert torch.allclose(reported, per_draw.mean(0), atol=1e-6)
    assert report["heldout_loglik"]["mean"] == pytest.approx(float(reported.mean()), abs=1e-9)
    normal = torch.distributions.Normal(mean @ c["W"].T + c["MU"], c["NOISE"])
    exact = normal.log_prob(x).sum(-1) - torch.trace(c["W"].T @ c["W"] @ cov) / (
        2 * c["NOISE"] ** 2
    )
    se = per_draw.std(0) / math.sqrt(DRAWS)
    assert ((reported - exact).abs() < Z * se).all(), (reported, exact, se)


def test_run_ppca_writes_posterior_netcdf(capsys, tmp_path):
    out_dir, report, out = run_model(capsys, tmp_path, PPCA)
    idata = load_netcdf(out_dir / "posterior.nc")
    assert dict(idata.posterior.sizes) == {
        "chain": NUM_CHAINS,
        "draw": NUM_SAMPLES,
        "obs": NUM_HELDOUT,
        "h_dim": 2,
    }
    assert dict(idata.observed_data.sizes) == {"obs": NUM_HELDOUT, "x_dim": 5}
    draws = idata.posterior["h"].values.reshape(DRAWS, NUM_HELDOUT, 2)
    np.testing.assert_allclose(
        draws.mean(0), [row["mean"] for row in report["posterior"]], rtol=1e-6, atol=1e-9
    )
    # The summary ends with every file written.
    files = [str(out_dir / "posterior.nc"), str(out_dir / "report.json")]
    assert report["files"] == files
    lines = out.rstrip("\n").splitlines()
    assert lines[-3] == "wrote"
    assert [line.strip() for line in lines[-2:]] == files
    assert not list(out_dir.glob("*.tmp")), "atomic writes left a temporary file behind"


def test_run_mixture_matches_the_responsibilities(capsys, tmp_path):
    out_dir, report, _ = run_model(capsys, tmp_path, MIXTURE)
    assert report["model"]["latent_is_discrete"] is True
    assert report["model"]["latent"]["support"] == "integers 0..2"
    assert report["encoder"]["method"] == "enumerate"
    idata = load_netcdf(out_dir / "posterior.nc")
    assert dict(idata.posterior.sizes) == {
        "chain": NUM_CHAINS,
        "draw": NUM_SAMPLES,
        "obs": NUM_HELDOUT,
    }
    draws = idata.posterior["h"].values.reshape(DRAWS, NUM_HELDOUT)

    jm = lae.JointModel.from_file(MIXTURE)
    x = jm.data(seed=1)[-NUM_HELDOUT:]
    probs = jm.encoder("enumerate")(x).probs
    for i, row in enumerate(report["posterior"]):
        assert row["mean"] == pytest.approx(draws[:, i].mean())
        assert row["sd"] == pytest.approx(draws[:, i].std(ddof=1), abs=1e-12)
        assert row["mode_frequency"] == pytest.approx((draws[:, i] == row["mode"]).mean())
        # Each label's count is Binomial(DRAWS, p(h = k | x)): an exact test at level 1e-4
        # over the 15 counts fails a correct run with probability below 2e-3.
        for k in range(3):
            count = int((draws[:, i] == k).sum())
            p = float(probs[i, k])
            if p < 1e-12:
                assert count == 0
            else:
                assert stats.binomtest(count, DRAWS, p).pvalue > 1e-4, (i, k, count, p)

    # R-hat is undefined exactly for the rows whose draws are all one label.
    conv = report["convergence"]["h"]
    constant = int((draws == draws[:1]).all(0).sum())
    assert conv["r_hat_undefined"] == constant
    assert (conv["r_hat_max"] is None) == (constant == NUM_HELDOUT)
    if conv["r_hat_max"] is not None:
        assert math.isfinite(conv["r_hat_max"])


def test_run_is_reproducible_and_quiet(capsys, tmp_path):
    args = ["run", PPCA, "--num-samples", NUM_SAMPLES, "--seed", 7, "--quiet"]
    assert run(capsys, *args, "--out", tmp_path / "a") == (0, "", "")
    assert run(capsys, *args, "--out", tmp_path / "b") == (0, "", "")
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a["posterior"] == b["posterior"]
    assert a["heldout_loglik"] == b["heldout_loglik"]


def test_run_defaults_to_runs_model_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "run", PPCA, "--num-samples", NUM_SAMPLES, "--quiet")
    assert code == 0, err
    assert (tmp_path / "runs" / "ppca" / "report.json").is_file()
    assert (tmp_path / "runs" / "ppca" / "posterior.nc").is_file()


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


MISNAMED = """
import pyro
import pyro.distributions as dist
import torch


def model(n):
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1))
"""


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda tmp: ["run", tmp / "missing.py"], ["missing.py", "does not exist"]),
        (
            lambda tmp: ["run", _write(tmp, "nomodel.py", "W = 1.0\n")],
            ["nomodel.py", "no function `model`"],
        ),
        (
            lambda tmp: ["run", _write(tmp, "misnamed.py", MISNAMED)],
            ["misnamed.py", "no sample site named 'h'", "'z'", "LATENT"],
        ),
        (
            lambda tmp: ["run", PPCA, "--method", "bogus"],
            ["--method", "invalid choice: 'bogus'", "laplace"],
        ),
        (
            lambda tmp: ["run", PPCA, "--num-heldout", "-3"],
            ["--num-heldout", "positive integer", "-3"],
        ),
        (
            lambda tmp: ["run", PPCA, "--num-heldout", "2001"],
            ["--num-heldout 2001", "2000 data rows"],
        ),
        (
            lambda tmp: ["run", PPCA, "--method", "enumerate"],
            ["enumerate", "finite support", "'h'"],
        ),
        (lambda tmp: ["info", tmp / "missing.py"], ["missing.py", "does not exist"]),
        (lambda tmp: ["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ],
    ids=[
        "missing",
        "no-model",
        "misnamed",
        "bad-method",
        "negative-heldout",
        "too-many-heldout",
        "wrong-method",
        "info-missing",
        "bad-command",
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, make_args, expected):
    args = make_args(tmp_path)
    if args[0] == "run":
        args += ["--out", tmp_path / "out"]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("latentae")
    assert "error: " in lines[0]
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0]
    assert not (tmp_path / "out").exists(), "a failed run must not write results"


def test_debug_adds_the_traceback(capsys, tmp_path):
    script = _write(tmp_path, "misnamed.py", MISNAMED)
    code, _, err = run(capsys, "run", script, "--debug")
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert "ModelError" in err
    assert err.rstrip("\n").splitlines()[-1].startswith("latentae: error: ")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (PPCA, ["'h': shape (2,), support real, continuous", "'x': shape (5,)", "laplace"]),
        (MIXTURE, ["'h': shape (), support integers 0..2, discrete", "'x'", "enumerate"]),
    ],
)
def test_info_prints_the_sites(capsys, model, expected):
    code, out, err = run(capsys, "info", model)
    assert (code, err) == (0, "")
    assert out.startswith(f"model     {model.stem} ")
    for text in expected:
        assert text in out
    assert "simulate" in out  # neither script defines data()


def test_help_and_version(capsys):
    for command in ("run", "info"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0
        assert f"usage: latentae {command}" in out
        assert f"example:\n  latentae {command} models/" in out
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, f"latentae {lae.__version__}\n")


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("latentae.cli", ["info", "models/ppca.py"], "'h': shape (2,)"),
        ("latentae", ["info", "models/mixture.py"], "'h': shape ()"),
    ],
)
def test_console_entry_points(module, args, expected):
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("model     ")
    assert expected in result.stdout
