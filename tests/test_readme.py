"""The README's commands and code do what it says."""

import re
import stat

import latentae as lae
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
INSTALL_AND_RUN = "pip install torch==2.13.0 && pip install -e . && latentae run models/ppca.py"
INSTALL_AND_TEST = 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest'


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_quick_start_is_exactly_two_one_line_commands():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", quick_start, re.S)
    assert [c.strip() for c in commands] == [INSTALL_AND_RUN, INSTALL_AND_TEST]
    assert all(c.count("\n") == 1 for c in commands)


def test_ci_runs_the_readme_test_command():
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & stat.S_IXUSR
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert INSTALL_AND_TEST in text
    assert "ruff check ." in text
    assert "ruff format --check ." in text


def test_python_example_runs(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    example = blocks("python")[0]
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "torch.Size([1000])" in out
    assert "r_hat" in out
    assert dict(namespace["idata"].posterior.sizes) == {
        "chain": 4,
        "draw": 500,
        "obs": 3,
        "h_dim": 2,
    }


def test_training_example_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(compile(blocks("python")[1], "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.steps == 500 and len(result.validation["nll"]) == 20
    assert result.validation["nll"][-1] < result.validation["nll"][0]
    assert namespace["p_enc"](namespace["x"][:3]).sample().shape == (3, 2)


def test_model_script_example_meets_the_contract(tmp_path):
    script = tmp_path / "mine.py"
    (model_script,) = [b for b in blocks("python") if "def model(n)" in b]
    script.write_text(model_script)
    jm = lae.JointModel.from_file(script)
    assert (tuple(jm.latent_shape), tuple(jm.observed_shape)) == ((2,), (3,))
    assert jm.exact_methods() == ["laplace"]
