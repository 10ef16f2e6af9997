"""``latentae check``: the compatibility of a checkpointed DAE pair, from the command line."""

import json

import pytest
import torch

import latentae as lae
from latentae.checkpoint import load_pair
from latentae.cli import main
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"
MIXTURE = ROOT / "models" / "mixture.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Small settings: these tests check the plumbing and the agreement with the library.
SETTINGS = ("--num-pairs", "300", "--num-chains", "200", "--burn-in", "10")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def linear_checkpoint(tmp_path_factory):
    """An affine DAE pair (``--hidden ''``) trained briefly on PPCA, in float32 as the CLI
    trains it."""
    out = tmp_path_factory.mktemp("fit")
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        code = main(["fit", str(PPCA), "--out", str(out), "--steps", "200", "--hidden", "",
                     "--quiet"])  # fmt: skip
    finally:
        torch.set_default_dtype(dtype)
    assert code == 0
    return out / "checkpoint.pt"


def test_check_writes_the_report_and_the_figure(capsys, tmp_path, linear_checkpoint):
    out = tmp_path / "check"
    code, text, err = run(capsys, "check", PPCA, "--checkpoint", linear_checkpoint, "--out", out,
                          *SETTINGS)  # fmt: skip
    assert (code, err) == (0, "")
    report = json.loads((out / "check.json").read_text())
    assert report["checkpoint"] == {"path": str(linear_checkpoint), "step": 200}
    assert report["pair"]["encoder"]["name"] == "GaussianEncoder"
    assert report["pair"]["encoder"]["hidden"] == []
    compat = report["compatibility"]
    # An affine pair gets every diagnostic, the closed forms included.
    assert set(compat["results"]) == {"cross_ratio", "interaction", "gibbs", "gaussian"}
    assert compat["skipped"] == {}
    assert (out / "compatibility.png").read_bytes()[:8] == PNG_MAGIC
    assert report["files"] == [str(out / "compatibility.png"), str(out / "check.json")]
    assert "cross_ratio" in text and "gaussian    mismatch" in text


def test_check_agrees_with_the_library(capsys, tmp_path, linear_checkpoint):
    """The command's figures are those of lae.compat.check on the rebuilt pair, with the
    model's data and the same seed: nothing is lost or recomputed differently on the way."""
    code, _, _ = run(capsys, "check", PPCA, "--checkpoint", linear_checkpoint, "--out",
                     tmp_path, "--seed", "3", *SETTINGS)  # fmt: skip
    assert code == 0
    cli = json.loads((tmp_path / "check.json").read_text())["compatibility"]["results"]
    pair = load_pair(linear_checkpoint)
    assert next(pair.encoder.parameters()).dtype == torch.float32  # as it was trained
    x = lae.JointModel.from_file(PPCA).data(seed=3).to(torch.float32)
    report = lae.compat.check(pair.encoder, pair.decoder, x, corruption=pair.corruption,
                              num_pairs=300, num_points=256, num_chains=200, burn_in=10,
                              seed=3)  # fmt: skip
    for name, result in report.results.items():
        assert cli[name] == pytest.approx(result.to_dict(), rel=1e-6, abs=1e-12), name


def test_check_defaults_to_the_checkpoint_folder(capsys, tmp_path, linear_checkpoint):
    import shutil

    checkpoint = tmp_path / "checkpoint.pt"
    shutil.copy(linear_checkpoint, checkpoint)
    code, _, _ = run(capsys, "check", PPCA, "--checkpoint", checkpoint, "--quiet", *SETTINGS)
    assert code == 0
    assert (tmp_path / "check.json").exists() and (tmp_path / "compatibility.png").exists()


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda d, c: ["check", PPCA], "the following arguments are required: --checkpoint"),
        (lambda d, c: ["check", PPCA, "--checkpoint", d / "nope.pt"], "no checkpoint at"),
        (lambda d, c: ["check", MIXTURE, "--checkpoint", c], "takes rows of 5 features"),
        (lambda d, c: ["check", PPCA, "--checkpoint", c, "--num-pairs", "0"],
         "expected a positive integer"),
        (lambda d, c: ["check", PPCA, "--checkpoint", d / "bad.pt"], "truncated or corrupt"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, linear_checkpoint, make_args,
                                        expected):  # fmt: skip
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    code, out, err = run(capsys, *make_args(tmp_path, linear_checkpoint))
    assert code == 2 and out == ""
    assert err.startswith(("latentae: error: ", "latentae check: error: "))
    assert err.count("\n") == 1
    assert expected in err
