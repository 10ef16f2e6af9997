"""``latentae study compatibility``: the sweep from the command line, saved after every cell
and resumable."""

import json

import pytest

from latentae.cli import main
from latentae.study import StudyResult
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A tiny sweep: these tests check the plumbing; tests/test_study.py checks what it measures.
TINY = ("--sizes", "40", "80", "--capacities", "full", "--seeds", "0", "--steps", "20",
        "--num-pairs", "50", "--num-chains", "40", "--burn-in", "3")  # fmt: skip


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_study_writes_json_and_png_and_prints_the_slopes(capsys, tmp_path):
    code, out, err = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *TINY)
    assert (code, err) == (0, "")
    data = json.loads((tmp_path / "study.json").read_text())
    assert [(c["n"], c["capacity"], c["seed"]) for c in data["cells"]] == [
        (40, "full", 0),
        (80, "full", 0),
    ]
    assert data["config"]["steps"] == 20 and data["config"]["num_chains"] == 40
    assert (tmp_path / "study.png").read_bytes()[:8] == PNG_MAGIC
    assert out.count("cell      n ") == 2  # one line per cell, as it is saved
    assert "slope     capacity full" in out and "gaussian_kl" in out


def test_resume_keeps_the_cells_already_done(capsys, tmp_path):
    only_40 = ("--sizes", "40", *TINY[3:])
    code, _, _ = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *only_40, "--quiet")
    assert code == 0
    first = StudyResult.load(tmp_path / "study.json").cells
    assert [c["n"] for c in first] == [40]
    code, out, _ = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *TINY,
                       "--resume")  # fmt: skip
    assert code == 0
    cells = StudyResult.load(tmp_path / "study.json").cells
    assert [c["n"] for c in cells] == [40, 80]
    assert cells[0] == pytest.approx(first[0])  # reused, not recomputed
    assert out.count("cell      n ") == 1  # only the missing cell ran


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--sizes", "2"), "expected a training-set size >= 4, got 2"),
        (("--capacities", "wide"), "expected a covariance type (diag, full) or hidden widths"),
        (("--capacities", "32"), "decoder covariance types"),
        (("--resume",), "--resume: no study at"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys, tmp_path, extra, expected):
    code, out, err = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path / "s",
                         *TINY, *extra)  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1
    assert expected in err


def test_existing_study_is_not_overwritten(capsys, tmp_path):
    (tmp_path / "study.json").write_text("{}")
    code, _, err = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *TINY)
    assert code == 2 and "pass --resume" in err
    assert (tmp_path / "study.json").read_text() == "{}"


def test_resume_with_other_settings_is_refused(capsys, tmp_path):
    run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *TINY, "--quiet")
    code, _, err = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *TINY,
                       "--steps", "30", "--resume")  # fmt: skip
    assert code == 2 and "run with steps=20, this one has steps=30" in err


def test_corrupt_study_json_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "study.json").write_text('{"cells": [')
    code, _, err = run(capsys, "study", "compatibility", PPCA, "--out", tmp_path, *TINY,
                       "--resume")  # fmt: skip
    assert code == 2 and "is not readable JSON" in err


def test_help_has_an_example(capsys):
    code, out, _ = run(capsys, "study", "--help")
    assert code == 0 and "example:\n  latentae study compatibility models/ppca.py" in out
