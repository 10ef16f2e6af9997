"""The ``latentae`` command, run in-process through ``main`` (and once as a real process)."""

import json
import math
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import latentae as lae
from latentae.arviz import load_netcdf
from latentae.checkpoint import load_checkpoint
from latentae.cli import main
from tests.closed_forms import ppca_posterior
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"
MIXTURE = ROOT / "models" / "mixture.py"
BINARY = ROOT / "models" / "binary.py"
SPIRAL = ROOT / "models" / "spiral.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# DAE runs in these tests are short: they check the plumbing, not what a DAE learns.
STEPS = 50
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
    """``latentae run`` on a model; without DAE flags in ``extra`` the DAE is skipped."""
    if not any(str(a).startswith("--steps") for a in extra):
        extra = ("--no-dae", *extra)
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
    out_dir, report, out = run_model(capsys, tmp_path, PPCA, "--steps", STEPS)
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
    names = ["posterior.nc", "checkpoint.pt", "loss.png", "compatibility.png", "report.json"]
    files = [str(out_dir / name) for name in names]
    assert report["files"] == files
    lines = out.rstrip("\n").splitlines()
    assert lines[-6] == "wrote"
    assert [line.strip() for line in lines[-5:]] == files
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(names)
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
    args = ["run", PPCA, "--num-samples", NUM_SAMPLES, "--seed", 7, "--quiet", "--steps", 30]
    assert run(capsys, *args, "--out", tmp_path / "a") == (0, "", "")
    assert run(capsys, *args, "--out", tmp_path / "b") == (0, "", "")
    a = json.loads((tmp_path / "a" / "report.json").read_text())
    b = json.loads((tmp_path / "b" / "report.json").read_text())
    assert a["posterior"] == b["posterior"]
    assert a["heldout_loglik"] == b["heldout_loglik"]
    for key in ("final_train_loss", "final_train_loss_mean", "validation_nll", "config"):
        assert a["dae"][key] == b["dae"][key], key
    ha = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["history"]
    hb = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["history"]
    assert ha == hb


def test_run_defaults_to_runs_model_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["run", PPCA, "--num-samples", NUM_SAMPLES, "--quiet", "--steps", 20]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    for name in ("report.json", "posterior.nc", "checkpoint.pt", "loss.png"):
        assert (tmp_path / "runs" / "ppca" / name).is_file(), name
    report = json.loads((tmp_path / "runs" / "ppca" / "report.json").read_text())
    assert report["dae"]["checkpoint"] == str(Path("runs") / "ppca" / "checkpoint.pt")


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
        (lambda tmp: ["fit", tmp / "missing.py"], ["missing.py", "does not exist"]),
        (
            lambda tmp: ["fit", PPCA, "--corruption", "gaussian"],
            ["--corruption", "'gaussian' needs a number", "gaussian:SIGMA"],
        ),
        (
            lambda tmp: ["fit", PPCA, "--corruption", "gaussian:big"],
            ["--corruption", "'gaussian:big' needs a number", "gaussian:SIGMA"],
        ),
        (
            lambda tmp: ["run", PPCA, "--corruption", "blur:0.1"],
            ["--corruption", "unknown corruption 'blur'", "masking:P", "bit_flip:P"],
        ),
        (
            lambda tmp: ["fit", PPCA, "--corruption", "masking:1.5"],
            ["--corruption", "'masking:1.5'", "in [0, 1)", "1.5"],
        ),
        (
            lambda tmp: ["fit", PPCA, "--corruption", "gaussian:-0.1"],
            ["--corruption", "sigma", ">= 0", "-0.1"],
        ),
        (
            lambda tmp: ["fit", PPCA, "--corruption", "bit_flip:0.1"],
            ["bit_flip", "BitFlip needs binary x", "row 0"],
        ),
        (
            lambda tmp: ["fit", PPCA, "--hidden", "64,x"],
            ["--hidden", "comma-separated positive layer widths", "'64,x'"],
        ),
        (lambda tmp: ["run", PPCA, "--hidden", "0"], ["--hidden", "positive", "'0'"]),
        (lambda tmp: ["fit", PPCA, "--hidden", "64,,64"], ["--hidden", "'64,,64'"]),
        (lambda tmp: ["fit", PPCA, "--steps", "0"], ["--steps", "positive integer"]),
        (lambda tmp: ["fit", PPCA, "--lr", "-1"], ["--lr", "positive"]),
        (lambda tmp: ["fit", PPCA, "--walkback", "-1"], ["--walkback", "non-negative"]),
        (
            lambda tmp: ["fit", PPCA, "--batch-size", "5000"],
            ["batch_size 5000", "1800 training rows"],
        ),
        (lambda tmp: ["run", PPCA, "--no-dae", "--resume"], ["--resume", "--no-dae"]),
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
        "fit-missing",
        "corruption-no-value",
        "corruption-not-a-number",
        "corruption-unknown",
        "corruption-out-of-range",
        "corruption-negative-sigma",
        "corruption-bit-flip-on-real-data",
        "hidden-not-a-number",
        "hidden-zero",
        "hidden-empty-width",
        "zero-steps",
        "negative-lr",
        "negative-walkback",
        "batch-larger-than-data",
        "resume-without-dae",
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, make_args, expected):
    args = make_args(tmp_path)
    if args[0] in ("run", "fit"):
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
    for command in ("run", "fit", "check", "info"):
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


# ---------------------------------------------------------------------------- DAE training


def fit_model(capsys, out_dir, model, *extra, steps=STEPS):
    code, out, err = run(capsys, "fit", model, "--out", out_dir, "--steps", steps, *extra)
    assert code == 0, err
    assert err == ""
    return json.loads((out_dir / "training.json").read_text()), out


def _finite(value):
    return isinstance(value, float) and math.isfinite(value)


def test_fit_ppca_writes_checkpoint_plot_and_training_json(capsys, tmp_path):
    out_dir = tmp_path / "fit"
    training, out = fit_model(capsys, out_dir, PPCA, "--seed", 3)

    state = load_checkpoint(out_dir / "checkpoint.pt")
    assert state["step"] == STEPS
    assert state["config"]["steps"] == STEPS
    assert len(state["history"]["loss"]) == STEPS
    assert (out_dir / "loss.png").read_bytes()[:8] == PNG_MAGIC

    assert training["command"] == "fit"
    assert training["model"] == {"name": "ppca", "path": str(PPCA)}
    assert training["data"] == {"rows": 2000, "source": "simulated", "real": False}
    assert training["steps"] == training["steps_this_run"] == STEPS
    assert training["resumed_from_step"] is None
    for key in ("final_train_loss", "final_train_loss_mean", "validation_nll", "wall_time_s"):
        assert _finite(training[key]), key
    assert training["final_train_loss"] == pytest.approx(state["history"]["loss"][-1])
    assert training["final_train_loss_mean"] == pytest.approx(
        np.mean(state["history"]["loss"][-100:])
    )
    assert training["validation_nll"] == pytest.approx(state["validation"]["nll"][-1])
    assert training["validation_step"] == STEPS
    assert training["steps_per_s"] == pytest.approx(STEPS / training["wall_time_s"], rel=0.01)
    assert training["rows"] == {"train": 1800, "validation": 200, "features": 5}

    config = training["config"]
    assert {k: config[k] for k in ("steps", "batch_size", "lr", "walkback", "seed")} == {
        "steps": STEPS,
        "batch_size": 128,
        "lr": 1e-3,
        "walkback": 0,
        "seed": 3,
    }
    # The default corruption for real-valued x: Gaussian noise at a tenth of the data's
    # mean per-feature standard deviation.
    x = lae.JointModel.from_file(PPCA).data(seed=3)
    corruption = config["corruption"]
    assert corruption["name"] == "gaussian"
    assert corruption["sigma"] == pytest.approx(0.1 * float(x.std(0).mean()), rel=1e-9)
    assert corruption["source"].startswith("default: 0.1 x the mean per-feature sd")
    assert config["encoder"] == {
        "class": "GaussianEncoder",
        "x_dim": 5,
        "h_dim": 2,
        "hidden": [64, 64],
        "noise": 0.1,
        "parameters": 5 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2,
    }
    assert config["decoder"]["class"] == "GaussianDecoder"
    assert config["decoder"]["cov"] == "diag"
    assert (config["decoder"]["h_dim"], config["decoder"]["x_dim"]) == (2, 5)
    assert config["device"] == "cpu"

    files = [str(out_dir / n) for n in ("checkpoint.pt", "loss.png", "training.json")]
    assert training["files"] == files
    assert training["checkpoint"] == files[0]
    assert training["loss_plot"] == files[1]
    lines = out.rstrip("\n").splitlines()
    assert lines[0] == f"model     ppca ({PPCA})"
    assert lines[-4] == "wrote"
    assert [line.strip() for line in lines[-3:]] == files
    assert "gaussian sigma" in out
    assert f"{STEPS} steps on 1800 rows" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "checkpoint.pt",
        "loss.png",
        "training.json",
    ]


@pytest.mark.parametrize(
    ("model", "decoder", "corruption", "h_dim"),
    [
        (BINARY, "BernoulliDecoder", {"name": "bit_flip", "p": 0.1}, 2),
        (MIXTURE, "GaussianDecoder", {"name": "gaussian"}, 2),  # a discrete latent: 2-d code
        (SPIRAL, "GaussianDecoder", {"name": "gaussian"}, 1),
    ],
    ids=["binary", "mixture", "spiral"],
)
def test_fit_chooses_the_dae_from_the_model(capsys, tmp_path, model, decoder, corruption, h_dim):
    training, _ = fit_model(capsys, tmp_path / "fit", model, "--quiet", steps=20)
    config = training["config"]
    assert config["decoder"]["class"] == decoder
    assert config["encoder"]["class"] == "GaussianEncoder"
    assert config["encoder"]["h_dim"] == config["decoder"]["h_dim"] == h_dim
    assert config["corruption"].items() >= corruption.items()
    assert _finite(training["final_train_loss"])
    assert _finite(training["validation_nll"])


def test_fit_flags_set_the_corruption_and_the_networks(capsys, tmp_path):
    args = ["--corruption", "masking:0.25", "--hidden", "", "--batch-size", 64, "--lr", 0.01]
    training, out = fit_model(capsys, tmp_path / "fit", PPCA, *args, "--walkback", 1)
    config = training["config"]
    assert config["corruption"] == {"name": "masking", "p": 0.25, "source": "--corruption"}
    assert config["encoder"]["hidden"] == config["decoder"]["hidden"] == []
    assert (config["batch_size"], config["lr"], config["walkback"]) == (64, 0.01, 1)
    assert "hidden none (affine)" in out
    assert "walkback 1" in out


def test_fit_quiet_prints_nothing(capsys, tmp_path):
    code, out, err = run(capsys, "fit", BINARY, "--out", tmp_path, "--steps", 10, "--quiet")
    assert (code, out, err) == (0, "", "")
    assert (tmp_path / "training.json").is_file()


def test_run_adds_a_dae_section_and_keeps_the_report(capsys, tmp_path):
    out_dir, report, out = run_model(capsys, tmp_path, PPCA, "--steps", STEPS)
    assert set(report) >= REPORT_KEYS | {"dae"}
    assert report["data"]["heldout_rows"] == [1995, 1996, 1997, 1998, 1999]
    dae = report["dae"]
    # The DAE trains on the rows that were not held out: 1995, 10% of them for validation.
    assert dae["rows"] == {"train": 1795, "validation": 200, "features": 5}
    assert dae["steps"] == dae["steps_this_run"] == STEPS
    for key in ("final_train_loss", "final_train_loss_mean", "validation_nll", "wall_time_s"):
        assert _finite(dae[key]), key
    assert dae["config"]["decoder"]["class"] == "GaussianDecoder"
    assert dae["checkpoint"] == str(out_dir / "checkpoint.pt")
    assert load_checkpoint(out_dir / "checkpoint.pt")["step"] == STEPS
    assert (out_dir / "loss.png").read_bytes()[:8] == PNG_MAGIC
    assert report["timings_s"]["dae"] > 0
    assert "dae       encoder GaussianEncoder 5 -> 2" in out
    # ... and the trained pair's compatibility, with its figure.
    compat = report["compatibility"]
    assert set(compat["results"]) == {"cross_ratio", "interaction", "gibbs"}
    assert "affine encoder" in compat["skipped"]["gaussian"]
    assert compat["rows"] == 1995 and report["timings_s"]["compatibility"] > 0
    assert (out_dir / "compatibility.png").read_bytes()[:8] == PNG_MAGIC
    assert str(out_dir / "compatibility.png") in report["files"]
    assert "compat    cross_ratio" in out


def test_run_no_dae_writes_no_checkpoint(capsys, tmp_path):
    out_dir, report, _ = run_model(capsys, tmp_path, PPCA)
    assert "dae" not in report
    assert sorted(p.name for p in out_dir.iterdir()) == ["posterior.nc", "report.json"]


def test_resume_of_a_finished_checkpoint_just_reloads_it(capsys, tmp_path):
    out_dir = tmp_path / "fit"
    first, _ = fit_model(capsys, out_dir, PPCA, steps=30)
    state = load_checkpoint(out_dir / "checkpoint.pt")
    again, out = fit_model(capsys, out_dir, PPCA, "--resume", steps=30)
    assert "checkpoint already at step 30 of 30: nothing left to train" in out
    assert again["steps"] == 30
    assert again["steps_this_run"] == 0
    assert again["resumed_from_step"] == 30
    assert again["steps_per_s"] is None
    for key in ("final_train_loss", "final_train_loss_mean", "validation_nll", "config"):
        assert again[key] == first[key], key
    reloaded = load_checkpoint(out_dir / "checkpoint.pt")
    assert reloaded["history"] == state["history"]
    for name, value in state["encoder"].items():
        assert torch.equal(reloaded["encoder"][name], value), name


def test_resume_with_other_settings_is_refused(capsys, tmp_path):
    out_dir = tmp_path / "fit"
    fit_model(capsys, out_dir, PPCA, "--quiet", steps=30)
    code, out, err = run(capsys, "fit", PPCA, "--out", out_dir, "--steps", 60, "--resume")
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("latentae: error: checkpoint ")
    assert "steps=30 but this run has steps=60" in line


def test_resume_with_other_networks_is_refused(capsys, tmp_path):
    out_dir = tmp_path / "fit"
    fit_model(capsys, out_dir, PPCA, "--quiet", steps=30)
    code, out, err = run(capsys, "fit", PPCA, "--out", out_dir, "--steps", 30, "--resume",
                         "--hidden", "32")  # fmt: skip
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("latentae: error: the encoder in checkpoint ")
    assert "has other shapes than this run's GaussianEncoder with --hidden 32" in line
    assert "drop --resume to start afresh" in line


def test_ctrl_c_writes_a_checkpoint_and_resume_finishes_the_run(capsys, tmp_path, monkeypatch):
    # The uninterrupted run, for comparison.
    fit_model(capsys, tmp_path / "full", PPCA, "--quiet", steps=60)
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")

    # Ctrl-C during step 20: the trainer finishes that step, writes the checkpoint and stops.
    forward = lae.DAELoss.forward
    calls = []

    def interrupted_forward(self, x):
        calls.append(1)
        if len(calls) == 20:
            signal.raise_signal(signal.SIGINT)
        return forward(self, x)

    out_dir = tmp_path / "part"
    with monkeypatch.context() as m:
        m.setattr(lae.DAELoss, "forward", interrupted_forward)
        code, out, err = run(capsys, "fit", PPCA, "--out", out_dir, "--steps", 60)
    assert (code, out) == (130, "")
    checkpoint = out_dir / "checkpoint.pt"
    assert err == (
        f"latentae: training interrupted at step 20; checkpoint written to "
        f"{str(checkpoint)!r}; rerun the same command with --resume to continue\n"
    )
    assert load_checkpoint(checkpoint)["step"] == 20
    assert not (out_dir / "training.json").exists()

    training, out = fit_model(capsys, out_dir, PPCA, "--resume", steps=60)
    assert (training["resumed_from_step"], training["steps_this_run"]) == (20, 40)
    assert "60 steps (resumed at step 20)" in out
    # On the CPU a resumed run is the uninterrupted one, bit for bit.
    resumed = load_checkpoint(checkpoint)
    assert resumed["history"] == full["history"]
    assert resumed["validation"] == full["validation"]
    for name, value in full["decoder"].items():
        assert torch.equal(resumed["decoder"][name], value), name


def test_corrupt_checkpoint_with_resume_is_one_line_and_exit_2(capsys, tmp_path):
    out_dir = tmp_path / "fit"
    out_dir.mkdir()
    (out_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip file")
    code, out, err = run(capsys, "fit", PPCA, "--out", out_dir, "--steps", 10, "--resume")
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("latentae: error: checkpoint ")
    assert "checkpoint.pt' is truncated or corrupt" in line
    assert "delete it to start afresh" in line
    assert sorted(p.name for p in out_dir.iterdir()) == ["checkpoint.pt"]


def test_diverged_training_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch):
    forward = lae.DAELoss.forward

    # A non-finite loss value whose gradient is still finite, so the parameters stay finite
    # and the trainer's own check of the loss is what stops the run.
    def diverging_forward(self, x):
        loss = forward(self, x)
        return loss + (float("nan") - loss.detach())

    monkeypatch.setattr(lae.DAELoss, "forward", diverging_forward)
    code, out, err = run(capsys, "fit", PPCA, "--out", tmp_path, "--steps", 10)
    assert (code, out) == (2, "")
    (line,) = err.splitlines()
    assert line.startswith("latentae: error: FloatingPointError: the DAE loss became non-finite")
    assert "lower the learning rate" in line
