"""Random argument vectors for the ``latentae`` parser: a random subcommand, random flags of
the real set (read from the parser itself) with random valid and invalid values, flags of
other subcommands, unknown flags, missing values.

Property: parsing succeeds, or ``main`` returns 2 with exactly one line on stderr that starts
with "latentae" and says "error:", nothing on stdout and no traceback; it never returns 1 (an
internal error). Commands are not run, except ``info`` on the real model scripts (fast), so
the file stays fast; parse-only vectors are checked for the types of what they parsed.
"""

import argparse
import contextlib
import io
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentae.cli import build_parser, main
from tests.conftest import MODELS

PROPERTY = settings(max_examples=200, deadline=None)

PARSER = build_parser()
SUBPARSERS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
COMMANDS = sorted(SUBPARSERS.choices)

# Options that print and exit 0 (help, version), which a vector must not hit by accident:
# argparse also accepts any unambiguous prefix of a long option.
_EXITING = ("--help", "--version")

# A path that does not exist anywhere: --config must never read a real file, or it could
# supply a missing flag and main would run a command.
MISSING_CONFIG = "no-such-folder-latentae/settings.toml"


def _options(command):
    parser = SUBPARSERS.choices[command]
    return {
        option: action
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


def _positionals(command):
    parser = SUBPARSERS.choices[command]
    return [a for a in parser._actions if not a.option_strings]


ALL_OPTIONS = sorted({o for c in COMMANDS for o in _options(c)})

numbers = st.one_of(
    st.integers(-3, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "1", "-1", "1e-3", "nan", "inf", "-0", "1_000", "0x10", " 7 ", ""]),
)
# Any text a shell can pass, newlines and control characters included: usage errors echo
# arguments, and their message must still be one line.
words = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
    max_size=12,
)
corruptions = st.builds(
    "{}:{}".format,
    st.sampled_from(["gaussian", "masking", "salt_and_pepper", "bit_flip", "Bit-Flip", "blur"]),
    numbers,
)
hidden = st.one_of(
    st.lists(st.integers(-2, 300), max_size=4).map(lambda w: ",".join(map(str, w))),
    st.sampled_from(["", " ", "64,,64", "a,b", "diag", "full"]),
)


def values(action):
    """Strings for ``action``'s value: mostly of the right kind, valid or not, sometimes junk."""
    if action.dest == "config":
        return st.just(MISSING_CONFIG)
    kinds = [numbers, words]
    if action.choices:
        kinds.append(st.sampled_from(sorted(action.choices)))
    if action.dest == "corruption":
        kinds.append(corruptions)
    if action.dest in ("hidden", "capacities"):
        kinds.append(hidden)
    if action.dest in ("out", "data", "checkpoint", "device"):
        kinds.append(st.sampled_from(["runs/x", "cpu", "cuda:7", "meta", "."]))
    return st.one_of(kinds)


def _safe_flag(text):
    return not (text == "-h" or any(e.startswith(text) and len(text) > 2 for e in _EXITING))


unknown_flags = st.one_of(
    st.sampled_from(["--foo", "--steps=", "--num", "--no", "-x", "--", "-", "---steps"]),
    words.map(lambda w: "--" + w),
).filter(_safe_flag)


# Values that some flag accepts; a clean vector draws each flag's value among those its type
# accepts, so that valid vectors (and info runs that succeed) are common, not a fluke.
CANDIDATES = ["1", "3", "250", "0.1", "gaussian:0.1", "masking:0.25", "bit_flip:0.05", "64,64",
              "", "diag", "full", "runs/x", "cpu"]  # fmt: skip


def _accepts(action, text):
    if action.choices is not None:
        return text in action.choices
    try:
        (action.type or str)(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return True


def clean_values(action):
    return st.sampled_from(
        sorted(action.choices) if action.choices else [c for c in CANDIDATES if _accepts(action, c)]
    )


@st.composite
def argvs(draw):
    """An argument vector: a clean one (real subcommand, positionals and flags of that
    subcommand with accepted values), one with any kind of damage, or an info run."""
    mode = draw(st.sampled_from(["clean", "damaged", "damaged", "info"]))
    if mode == "info":  # info runs: about half of them fail on the model path or --config
        model = draw(st.sampled_from([*map(str, MODELS), "missing.py", "."]) | words)
        flags = draw(st.lists(st.sampled_from(["--quiet", "--debug", "--config"]), max_size=3))
        flags = [f"--config={MISSING_CONFIG}" if f == "--config" else f for f in flags]
        return ["info", model, *flags]
    clean = mode == "clean"
    if clean or draw(st.integers(0, 9)):
        command = draw(st.sampled_from(COMMANDS))
    else:
        command = draw(st.sampled_from(["bogus", "", "INFO", "--quiet"]) | words)
    argv = [command] if command else []
    options = _options(command) if command in COMMANDS else {}
    if clean:
        options = {o: a for o, a in options.items() if a.dest != "config"}
    positionals, pieces = [], []
    for action in _positionals(command) if command in COMMANDS else []:
        if clean:
            good = [*map(str, MODELS)] if action.dest == "model" else sorted(action.choices or [])
            positionals.append(draw(st.sampled_from(good)))
        elif draw(st.integers(0, 9)) == 0:
            continue  # a missing positional
        elif action.dest == "model":
            pieces.append([draw(st.sampled_from([*map(str, MODELS), "missing.py"]) | words)])
        elif action.choices:
            pieces.append([draw(st.sampled_from(sorted(action.choices)) | words)])
        else:
            pieces.append([draw(words)])
    for _ in range(draw(st.integers(0, 5))):
        source = draw(st.integers(0, 9))
        if (clean or source < 7) and options:
            flag = draw(st.sampled_from(sorted(options)))
        elif clean:
            continue
        elif source < 9:
            flag = draw(st.sampled_from(ALL_OPTIONS))
        else:
            flag = draw(unknown_flags)
        action = options.get(flag) or _options_anywhere(flag)
        if action is None or action.nargs == 0:
            pieces.append([flag])
            continue
        count = draw(st.integers(1 if clean else 0, 3)) if action.nargs in ("+", "*") else 1
        given = [draw(clean_values(action) if clean else values(action)) for _ in range(count)]
        if not clean and draw(st.integers(0, 19)) == 0:
            given = []  # a missing value
        if count == 1 and given and draw(st.booleans()):
            pieces.append([f"{flag}={given[0]}"])
        else:
            pieces.append([flag, *given])
    # positionals keep their order; the other pieces come in any order around them
    order = draw(st.permutations(range(len(pieces))))
    argv += positionals
    for i in order:
        argv += pieces[i]
    return argv


def _options_anywhere(flag):
    for command in COMMANDS:
        if flag in _options(command):
            return _options(command)[flag]
    return None


def _run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _parse(argv):
    """Parse with a fresh parser: the namespace, or the SystemExit code and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return build_parser().parse_args(argv), None, ""
        except SystemExit as e:
            assert out.getvalue() == "", out.getvalue()
            return None, e.code, err.getvalue()


def _assert_one_error_line(code, out, err, argv, debug=False):
    assert code == 2, (code, argv, err)
    assert out == "", (argv, out)
    lines = err.strip("\n").split("\n")
    if debug and lines[0] == "Traceback (most recent call last):":
        err, lines = lines[-1], lines[-1:]  # --debug adds the traceback before the error line
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith("latentae"), (argv, err)
    assert "error:" in lines[0], (argv, err)
    assert "Traceback" not in err, (argv, err)


def _check_parsed(args, argv):
    """A parsed vector names a command, and its values passed their checks: choices are
    among the choices, numbers (but the seed) are finite and non-negative."""
    assert args.command in COMMANDS
    assert callable(args.func)
    for action in SUBPARSERS.choices[args.command]._actions:
        value = getattr(args, action.dest, None)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if action.choices is not None and item is not None:
                assert item in action.choices, (action.dest, item, argv)
            number = isinstance(item, int | float) and not isinstance(item, bool)
            if number and action.dest != "seed":
                assert math.isfinite(item) and item >= 0, (action.dest, item, argv)


def test_random_argument_vectors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a vector names (runs/x, .) can touch the repository
    outcomes = set()

    @PROPERTY
    @given(argv=argvs())
    def check(argv):
        args, code, err = _parse(argv)
        if args is None:
            assert code == 2, (argv, code, err)
            _assert_one_error_line(*_run_main(argv), argv)
            outcomes.add("usage error")
            return
        _check_parsed(args, argv)
        if args.command != "info":
            outcomes.add("parsed")
            return
        code, out, err = _run_main(argv)
        assert code != 1, (argv, err)
        if code == 2:
            _assert_one_error_line(code, out, err, argv, debug=args.debug)
            outcomes.add("info error")
        else:
            assert code == 0, (argv, code, err)
            assert err == ""
            assert (out == "") == args.quiet, (argv, out)
            outcomes.add("info ok")

    check()
    # The generator reaches each kind of outcome: info runs are a quarter of the vectors and
    # fail in about half of them, so 200 examples miss an outcome with probability < 1e-11.
    assert outcomes == {"usage error", "parsed", "info error", "info ok"}, outcomes


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["info"],
        ["info", str(MODELS[0]), "--steps", "5"],
        ["run", str(MODELS[0]), "--steps", "0"],
        ["run", str(MODELS[0]), "--lr", "nan"],
        ["run", str(MODELS[0]), "--corruption", "blur:0.1"],
        ["run", str(MODELS[0]), "--corruption", "masking:2"],
        ["run", str(MODELS[0]), "--hidden", "64,,64"],
        ["run", str(MODELS[0]), "--method", "exact"],
        ["run", str(MODELS[0]), "--seed"],
        ["check", str(MODELS[0])],
        ["study", "bogus", str(MODELS[0])],
        ["study", "compatibility", str(MODELS[0]), "--capacities", "0"],
        ["fit", str(MODELS[0]), "--config", MISSING_CONFIG],
        ["fit", str(MODELS[0]), "--config"],
        ["info", "missing.py"],
    ],
)
def test_known_usage_errors(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_one_error_line(*_run_main(argv), argv)


@pytest.mark.parametrize("model", MODELS, ids=lambda p: Path(p).stem)
def test_info_on_every_model(model):
    code, out, err = _run_main(["info", str(model), "--debug"])
    assert (code, err) == (0, "")
    assert out.startswith(f"model     {Path(model).stem} (")


DATA_COMMANDS = [c for c in COMMANDS if "--data" in _options(c)]


@pytest.mark.parametrize("command", DATA_COMMANDS)
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rows.csv", b"1,2,3,4,5\n6,7,x,9,10\n", "not a number, 'x', at line 2, column 2"),
        ("rows.npy", b"\x93NUMPY garbage", "could not be read as a .npy array"),
        ("rows.txt", b"1,2,3,4,5\n", "has extension '.txt'"),
    ],
)
def test_data_flag_reports_a_bad_table(command, name, content, message, tmp_path, monkeypatch):
    """``--data`` reads the table before any work: a bad one is one line and exit code 2."""
    import latentae

    def ignored(*args, **kwargs):
        raise AssertionError("--data was ignored: the command asked the script for its data")

    monkeypatch.setattr(latentae.JointModel, "data", ignored)
    (tmp_path / name).write_bytes(content)
    argv = [command, str(MODELS[0].parent / "ppca.py"), "--data", str(tmp_path / name)]
    argv += ["--out", str(tmp_path / "out")]
    if "--checkpoint" in _options(command):
        argv += ["--checkpoint", str(tmp_path / "checkpoint.pt")]
    code, out, err = _run_main(argv)
    _assert_one_error_line(code, out, err, argv)
    assert message in err and name in err, err
