"""``--data PATH``: the rows a command works on, from a file, checked against the model."""

import json

import numpy as np
import pytest

import latentae as lae
from latentae.cli import main
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"


def test_fit_trains_on_the_given_table(capsys, tmp_path):
    x = lae.JointModel.from_file(PPCA).sample(300, seed=5)[1].numpy()
    np.save(tmp_path / "x.npy", x)
    code = main(["fit", str(PPCA), "--data", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "o"), "--steps", "5", "--batch-size", "16", "--quiet"])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "o" / "training.json").read_text())
    assert report["data"] == {"rows": 300, "source": str(tmp_path / "x.npy"), "real": True}
    # 10% of the given rows are held out for validation: the rest are what it trained on.
    assert report["rows"]["train"] + report["rows"]["validation"] == 300


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (np.zeros((10, 4)), "shape"),
        (np.array([[0.0, 1, 2, 3, np.nan]] * 3), "row 0"),
    ],
    ids=["wrong-width", "nan"],
)
def test_bad_table_is_one_line_and_exit_2(capsys, tmp_path, content, expected):
    np.save(tmp_path / "x.npy", content)
    code = main(["fit", str(PPCA), "--data", str(tmp_path / "x.npy"), "--out",
                 str(tmp_path / "o")])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "o").exists()
