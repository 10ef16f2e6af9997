"""``--config FILE``: settings from TOML or JSON, checked like flags; the command line wins."""

import json

import pytest

from latentae.cli import build_parser, main
from latentae.cli._config import expand_config
from tests.conftest import ROOT

PPCA = ROOT / "models" / "ppca.py"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_toml_settings_reach_the_command_and_flags_win(capsys, tmp_path):
    config = tmp_path / "fit.toml"
    config.write_text('steps = 20\nhidden = [8, 4]\nbatch_size = 32\ncorruption = "gaussian:0.2"\n')
    code, _, err = run(capsys, "fit", PPCA, "--config", config, "--out", tmp_path / "a", "--quiet")
    assert (code, err) == (0, "")
    report = json.loads((tmp_path / "a" / "training.json").read_text())
    assert report["steps"] == 20 and report["config"]["batch_size"] == 32
    assert report["config"]["encoder"]["hidden"] == [8, 4]
    assert report["config"]["corruption"]["sigma"] == 0.2
    code, _, _ = run(capsys, "fit", PPCA, "--config", config, "--steps", "30", "--out",
                     tmp_path / "b", "--quiet")  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "b" / "training.json").read_text())["steps"] == 30


def test_json_config_and_every_kind_of_setting(tmp_path):
    config = tmp_path / "study.json"
    config.write_text(json.dumps({"sizes": [40, 80], "--seeds": [1], "quiet": True,
                                  "debug": False, "corruption-sigma": 0.3}))  # fmt: skip
    argv = expand_config(build_parser(), ["study", "compatibility", str(PPCA), "--config",
                                          str(config)])  # fmt: skip
    assert argv == ["study", "--sizes", "40", "80", "--seeds", "1", "--quiet",
                    "--corruption-sigma", "0.3", "compatibility", str(PPCA)]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert (args.sizes, args.seeds, args.quiet, args.corruption_sigma) == ([40, 80], [1], True,
                                                                           0.3)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.toml", "stepz = 3", "unknown setting 'stepz' for 'latentae fit'; its settings are"),
        ("b.toml", 'steps = "many"', "argument --steps: expected a positive integer"),
        ("c.toml", "steps = ", "is not valid TOML"),
        ("d.json", "[1, 2]", "must hold one table of settings, got a list"),
        ("e.json", '{"quiet": "yes"}', "--quiet is a switch; give true or false"),
        ("f.json", '{"steps": {"a": 1}}', "--steps takes a value"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(capsys, tmp_path, name, text, expected):
    config = tmp_path / name
    config.write_text(text)
    code, out, err = run(capsys, "fit", PPCA, "--config", config, "--out", tmp_path / "o")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert expected in err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_missing_config_file(capsys, tmp_path):
    code, _, err = run(capsys, "info", PPCA, "--config", tmp_path / "none.toml")
    assert code == 2 and "no such file" in err
