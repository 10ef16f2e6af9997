"""``latentae score`` and ``latentae sample``, and their part in ``latentae run``."""

import json

import numpy as np
import pytest
import torch

import latentae as lae
import latentae.chains as chains_module
import latentae.stats as stats_module
from latentae.arviz import load_netcdf
from latentae.checkpoint import load_pair
from latentae.cli import main
from latentae.score import dae_score, model_score, score_error
from tests.conftest import ROOT

MIXTURE = ROOT / "models" / "mixture.py"
PPCA = ROOT / "models" / "ppca.py"
SPIRAL = ROOT / "models" / "spiral.py"
BINARY = ROOT / "models" / "binary.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Short training: these tests check the plumbing and the agreement with the library, not
# what a DAE learns (tests/test_score.py and tests/test_chains.py do that).
TRAIN = ("--steps", "300", "--hidden", "32", "--quiet")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def fitted(tmp_path_factory, model, *extra):
    out = tmp_path_factory.mktemp(model.stem)
    code = main(["fit", str(model), "--out", str(out), *TRAIN, *extra])
    assert code == 0
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def mixture_checkpoint(tmp_path_factory):
    return fitted(tmp_path_factory, MIXTURE, "--corruption", "gaussian:0.5")


def test_score_agrees_with_the_library_and_draws_the_field(capsys, tmp_path, mixture_checkpoint):
    code, out, err = run(capsys, "score", MIXTURE, "--checkpoint", mixture_checkpoint, "--out",
                         tmp_path, "--num-points", "300", "--seed", "2")  # fmt: skip
    assert (code, err) == (0, "")
    report = json.loads((tmp_path / "score.json").read_text())
    section = report["score"]
    assert section["sigma"] == 0.5 and section["points"] == 300
    # The same figures from the library on the same rows.
    pair = load_pair(mixture_checkpoint)
    jm = lae.JointModel.from_file(MIXTURE)
    rows = torch.tensor(section["per_point"]["rows"])
    x = jm.data(seed=2)[rows].to(next(pair.encoder.parameters()).dtype)
    estimate = dae_score(pair.encoder, pair.decoder, x, 0.5, seed=2)
    err_ = score_error(estimate, model_score(jm, x, 0.5))
    assert section["errors"]["relative_l2"] == pytest.approx(float(err_.relative), rel=1e-6)
    assert section["errors"]["median_cosine"] == pytest.approx(float(err_.median_cosine), rel=1e-6)
    assert (tmp_path / "vector_field.png").read_bytes()[:8] == PNG_MAGIC
    assert report["files"] == [str(tmp_path / "vector_field.png"), str(tmp_path / "score.json")]
    assert "median cosine" in out


def test_score_without_an_exact_reference_says_why(capsys, tmp_path_factory, tmp_path):
    checkpoint = fitted(tmp_path_factory, SPIRAL, "--corruption", "gaussian:0.1")
    code, _, _ = run(capsys, "score", SPIRAL, "--checkpoint", checkpoint, "--out", tmp_path,
                     "--num-points", "100")  # fmt: skip
    assert code == 0
    section = json.loads((tmp_path / "score.json").read_text())["score"]
    assert section["reference"] is None and "exact" in section["no_reference"]
    assert "errors" not in section
    assert (tmp_path / "vector_field.png").exists()  # the DAE's field alone


def test_score_trains_when_there_is_no_checkpoint(capsys, tmp_path):
    code, _, _ = run(capsys, "score", PPCA, "--out", tmp_path, *TRAIN, "--num-points", "50")
    assert code == 0
    report = json.loads((tmp_path / "score.json").read_text())
    assert report["dae"]["steps"] == 300 and report["score"]["errors"]["relative_l2"] > 0
    assert not (tmp_path / "vector_field.png").exists()  # 5-D data: no field to draw


def test_score_needs_gaussian_corruption(capsys, tmp_path_factory, tmp_path):
    checkpoint = fitted(tmp_path_factory, BINARY)  # bit flips, the default for binary x
    code, out, err = run(capsys, "score", BINARY, "--checkpoint", checkpoint, "--out", tmp_path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "needs a DAE trained with Gaussian corruption" in err


def test_sample_writes_chains_plots_and_diagnostics(capsys, tmp_path, mixture_checkpoint):
    code, out, err = run(capsys, "sample", MIXTURE, "--checkpoint", mixture_checkpoint, "--out",
                         tmp_path, "--num-chains", "30", "--num-steps", "40", "--thin",
                         "2")  # fmt: skip
    assert (code, err) == (0, "")
    idata = load_netcdf(tmp_path / "gsn.nc")
    # burn-in 20 of 40 steps, every 2nd state kept: draws 22, 24, ..., 40.
    assert dict(idata.posterior.sizes) == {"chain": 30, "draw": 10, "x_dim": 2}
    report = json.loads((tmp_path / "sample.json").read_text())["sample"]
    assert report["burn_in"] == 20 and report["draws_per_chain"] == 10
    assert report["convergence"]["entries"] == 2
    assert 0 < report["two_sample"]["pvalue"] <= 1
    for name in ("trace.png", "pair.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    assert "gsn       30 chains x 40 steps" in out


def test_sample_is_seeded(capsys, tmp_path, mixture_checkpoint):
    draws, reports = [], []
    for sub in ("a", "b"):
        code, _, err = run(capsys, "sample", MIXTURE, "--checkpoint", mixture_checkpoint, "--out",
                           tmp_path / sub, "--num-chains", "5", "--num-steps", "6",
                         "--quiet")  # fmt: skip
        assert code == 0, err
        draws.append(load_netcdf(tmp_path / sub / "gsn.nc").posterior["x"].values)
        reports.append(json.loads((tmp_path / sub / "sample.json").read_text())["sample"])
    assert (draws[0] == draws[1]).all()
    assert reports[0]["two_sample"] == reports[1]["two_sample"]  # the permutations too


def test_sample_tests_draws_only_against_rows_no_chain_started_from(
    capsys, tmp_path, mixture_checkpoint, monkeypatch
):
    rows = lae.JointModel.from_file(MIXTURE).sample(12, seed=0)[1].numpy()
    data = tmp_path / "rows.npy"
    np.save(data, rows)
    # The command imports both functions when it runs: record what they are given.
    seen = []
    original_chain, original_test = chains_module.gsn_chain, stats_module.two_sample_test

    def chain(encoder, decoder, corruption, starts, *args, **kwargs):
        seen.append(("starts", starts.detach().cpu().double()))
        return original_chain(encoder, decoder, corruption, starts, *args, **kwargs)

    def test(x, y, *args, **kwargs):
        seen.append(("held", y.detach().cpu().double()))
        return original_test(x, y, *args, **kwargs)

    monkeypatch.setattr(chains_module, "gsn_chain", chain)
    monkeypatch.setattr(stats_module, "two_sample_test", test)
    common = ("sample", MIXTURE, "--checkpoint", mixture_checkpoint, "--data", data,
              "--num-steps", "4")  # fmt: skip
    code, _, err = run(capsys, *common, "--num-chains", "8", "--out", tmp_path / "a", "--quiet")
    assert code == 0, err
    (_, starts), (_, held) = seen
    assert len(starts) == 8 and len(held) == 4  # the 12 - 8 rows left over
    assert not (torch.cdist(starts, held) == 0).any()
    assert torch.cat([starts, held]).unique(dim=0).shape[0] == 12
    report = json.loads((tmp_path / "a" / "sample.json").read_text())["sample"]["two_sample"]
    assert report["against"] == "4 data rows no chain started from"

    # Eleven chains leave one row: too few to test against, and the report says so.
    seen.clear()
    code, out, err = run(capsys, *common, "--num-chains", "11", "--out", tmp_path / "b")
    assert code == 0, err
    assert [kind for kind, _ in seen] == ["starts"]
    report = json.loads((tmp_path / "b" / "sample.json").read_text())["sample"]["two_sample"]
    assert report["pvalue"] is None and report["value"] is None
    assert "leaves 1 to test their draws against" in report["note"]
    assert "pass --num-chains between 2 and 10" in report["note"]
    assert f"last draws vs data: not tested ({report['note']})" in out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--num-steps", "10", "--burn-in", "10"), "--burn-in 10 must be smaller than"),
        (("--num-chains", "0"), "expected a positive integer"),
    ],
)
def test_sample_errors_are_one_line(capsys, tmp_path, mixture_checkpoint, extra, expected):
    code, out, err = run(capsys, "sample", MIXTURE, "--checkpoint", mixture_checkpoint, "--out",
                         tmp_path, *extra)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err


def test_run_on_a_2d_model_adds_score_and_samples(capsys, tmp_path):
    code, out, _ = run(capsys, "run", MIXTURE, "--out", tmp_path, "--steps", "200", "--hidden",
                       "16", "--num-samples", "50")  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["score"]["errors"]["median_cosine"] <= 1
    assert report["sample"]["num_chains"] == 100
    for name in ("vector_field.png", "gsn.nc", "trace.png", "pair.png"):
        assert str(tmp_path / name) in report["files"] and (tmp_path / name).exists()
    assert "score     (r(x) - x)" in out and "gsn       100 chains" in out
