"""Every output writer leaves the previous file intact when a write fails part-way.

Each writer first writes version 1 of its file(s), then version 2 with the write made to
fail: its serializer writes half of the bytes and raises (a full disk, or Ctrl-C), or the
temporary file is complete and the final rename raises. Version 1 must then be on disk byte
for byte, with no temporary file left behind; finally version 2 is written without the
fault and must differ from version 1, so the comparison could have failed. Every writer
also flushes its data to the disk before the rename, so that a crash cannot leave the final
name on an empty file. The faults are injected by monkeypatching, which works as root too;
a file-size limit (RLIMIT_FSIZE) makes the kernel cut every writer's write short in a child
process, as a full disk does, for root too; an unwritable folder only stops a non-root
process, so that variant is skipped as root. The CLI turns an unusable --out, or a write
cut short, into one line on stderr and exit code 2. Run time: about 20 s on 2 idle cores.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from latentae._util import atomic_write, atomic_write_text
from latentae.arviz import from_draws, save_netcdf
from latentae.checkpoint import save_checkpoint
from latentae.cli import main
from latentae.plots import loss_curve, save_figure
from latentae.study import StudyResult

ROOT = Path(__file__).resolve().parents[1]
PPCA = str(ROOT / "models" / "ppca.py")
IS_ROOT = os.name == "posix" and os.geteuid() == 0
ROOT_REASON = "permissions do not stop root (the suite may run as root)"
needs_rlimit = pytest.mark.skipif(
    sys.platform != "linux", reason="file-size limits (RLIMIT_FSIZE, SIGXFSZ) as on Linux"
)


def _blob(k: int) -> bytes:
    return bytes([k]) * 100_000


def _study(k: int) -> StudyResult:
    cell = {"n": 10, "capacity": "full", "seed": 0, "cross_ratio": 0.1 * k, "gaussian_kl": k}
    return StudyResult([cell, {**cell, "n": 100, "cross_ratio": 0.01 * k}], {"version": k})


def _idata(k: int):
    return from_draws({"h": torch.full((2, 50, 3), float(k))}, row_dim=None)


@dataclass(frozen=True)
class Writer:
    """An output writer: ``write(folder, k)`` writes version k of ``files`` into folder."""

    name: str
    files: tuple[str, ...]
    write: Callable[[Path, int], object]
    # What to break so that the write fails part-way: a callable's owner and name.
    serializer: tuple[object, str]


WRITERS = [
    Writer("atomic_write", ("blob.bin",),
           lambda d, k: atomic_write(d / "blob.bin", lambda tmp: tmp.write_bytes(_blob(k))),
           (Path, "write_bytes")),
    Writer("atomic_write_text", ("note.txt",),
           lambda d, k: atomic_write_text(d / "note.txt", f"version {k}\n" * 1000),
           (Path, "write_text")),
    Writer("save_checkpoint", ("run.pt",),
           lambda d, k: save_checkpoint(d / "run.pt", {"step": k, "w": torch.full((10_000,), k)}),
           (torch, "save")),
    # The netCDF file is built in memory, then written as bytes.
    Writer("save_netcdf", ("posterior.nc",),
           lambda d, k: save_netcdf(_idata(k), d / "posterior.nc"),
           (Path, "write_bytes")),
    Writer("save_figure", ("loss.png",),
           lambda d, k: save_figure(loss_curve({"step": [1, 2, 3], "loss": [k, 2.0, 1.0]}),
                                    d / "loss.png"),
           (Figure, "savefig")),
    # study.json is written first: breaking its writer leaves both files as they were.
    Writer("StudyResult.save", ("study.json", "study.png"),
           lambda d, k: _study(k).save(d), (Path, "write_text")),
]  # fmt: skip


def _half_then_raise(owner: object, name: str, error: BaseException, scratch: Path):
    """A stand-in for ``owner.name`` that serializes as the real one does, writes the first
    half of the bytes to the file it was given, and raises ``error``."""
    real = getattr(owner, name)

    def first_half(data: bytes, target) -> None:
        if hasattr(target, "write"):  # an open file, as save_checkpoint passes to torch.save
            target.write(data[: len(data) // 2])
        else:
            with open(target, "wb") as f:
                f.write(data[: len(data) // 2])
        raise error

    if (owner, name) == (torch, "save"):
        return lambda obj, f, *a, **kw: first_half(_to_bytes(lambda b: real(obj, b, *a, **kw)), f)
    if (owner, name) == (Figure, "savefig"):
        return lambda self, fname, **kw: first_half(_to_bytes(lambda b: real(self, b, **kw)), fname)
    if (owner, name) == (Path, "write_text"):
        return lambda self, text, *a, **kw: first_half(text.encode(), self)
    if (owner, name) == (Path, "write_bytes"):
        return lambda self, data: first_half(data, self)
    raise AssertionError(f"no stand-in for {owner}.{name}")


def _to_bytes(write: Callable[[io.BytesIO], object]) -> bytes:
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return out


def _check_new_version_differs(writer: Writer, folder: Path, old: dict[str, bytes]) -> None:
    writer.write(folder, 2)
    new = _snapshot(folder)
    assert sorted(new) == sorted(writer.files)
    for name in writer.files:
        assert new[name] != old[name], f"versions 1 and 2 of {name} are the same bytes"


@pytest.mark.parametrize("writer", WRITERS, ids=[w.name for w in WRITERS])
@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device (injected)"), KeyboardInterrupt("injected")],
    ids=["disk-full", "ctrl-c"],
)
def test_a_write_failing_midway_keeps_the_old_file(writer, error, folder, tmp_path, monkeypatch):
    writer.write(folder, 1)
    old = _snapshot(folder)
    assert sorted(old) == sorted(writer.files)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    owner, name = writer.serializer
    monkeypatch.setattr(owner, name, _half_then_raise(owner, name, error, scratch))
    with pytest.raises(type(error), match="injected"):
        writer.write(folder, 2)
    assert _snapshot(folder) == old  # byte for byte, and no temporary file left
    monkeypatch.undo()
    _check_new_version_differs(writer, folder, old)


@pytest.mark.parametrize("writer", WRITERS, ids=[w.name for w in WRITERS])
def test_a_failed_rename_keeps_the_old_file(writer, folder, monkeypatch):
    writer.write(folder, 1)
    old = _snapshot(folder)
    renamed = []

    def fail(src, dst, **kwargs):
        # The temporary file is complete and sits beside its destination.
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent and src.stat().st_size > 0
        renamed.append(dst.name)
        raise OSError(errno.EIO, "Input/output error (injected)")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="injected"):
        writer.write(folder, 2)
    assert renamed == [writer.files[0]]
    assert _snapshot(folder) == old
    monkeypatch.undo()
    _check_new_version_differs(writer, folder, old)


@pytest.mark.parametrize("writer", WRITERS, ids=[w.name for w in WRITERS])
def test_the_data_reach_the_disk_before_the_rename(writer, folder, monkeypatch):
    """Without an fsync first, a crash just after the rename can leave the new name on an
    empty file (the data still in the page cache): neither version would survive."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    writer.write(folder, 1)
    renamed = [inode for event, inode in events if event == "replace"]
    assert len(renamed) == len(writer.files)
    for inode in renamed:
        assert events.index(("fsync", inode)) < events.index(("replace", inode))


def test_a_half_written_study_figure_keeps_the_old_figure(folder, tmp_path, monkeypatch):
    """StudyResult.save writes study.json, then study.png: a failure on the figure keeps
    its previous version (each file is atomic; the pair is not)."""
    _study(1).save(folder)
    old = _snapshot(folder)
    error = OSError(errno.ENOSPC, "No space left on device (injected)")
    monkeypatch.setattr(Figure, "savefig", _half_then_raise(Figure, "savefig", error, tmp_path))
    with pytest.raises(OSError, match="injected"):
        _study(2).save(folder)
    new = _snapshot(folder)
    assert sorted(new) == ["study.json", "study.png"]
    assert new["study.png"] == old["study.png"] and new["study.json"] != old["study.json"]


# A file-size limit (RLIMIT_FSIZE, which binds root too) makes the kernel itself cut a write
# short, as a full disk would: write() fails with EFBIG once the file reaches the limit. The
# limit is far below every writer's file, so each fails part-way.
FILE_SIZE_LIMIT = 128  # bytes
_CUT_SHORT = """
import json, sys
from pathlib import Path
from tests.test_atomic_writes import WRITERS
out = {}
for writer in WRITERS:
    try:
        writer.write(Path(sys.argv[1]) / writer.name, 2)
    except Exception as e:
        out[writer.name] = [type(e).__name__, e.errno if isinstance(e, OSError) else None, str(e)]
print(json.dumps(out))
"""


def _limit_file_size() -> None:  # runs in the child between fork and exec
    import resource  # POSIX only

    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    # Past the limit the kernel sends SIGXFSZ, which kills by default; ignored, the write
    # fails with EFBIG instead, as it does on a full disk with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _child_env() -> dict[str, str]:
    # The child must not write bytecode caches under the limit, and finds tests.* from ROOT.
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def cut_short(tmp_path_factory):
    """Version 1 of every writer's files, then version 2 written by one child process under
    the file-size limit: the folders and what the child caught, by writer."""
    base = tmp_path_factory.mktemp("file-size-limit")
    before = {}
    for writer in WRITERS:
        (base / writer.name).mkdir()
        writer.write(base / writer.name, 1)
        before[writer.name] = _snapshot(base / writer.name)
    done = subprocess.run(
        [sys.executable, "-c", _CUT_SHORT, str(base)],
        preexec_fn=_limit_file_size,
        env=_child_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return base, before, json.loads(done.stdout)


@needs_rlimit
@pytest.mark.parametrize("writer", WRITERS, ids=[w.name for w in WRITERS])
def test_a_write_cut_short_by_the_kernel_keeps_the_old_file(writer, cut_short):
    base, before, caught = cut_short
    folder = base / writer.name
    kind, code, message = caught[writer.name]
    first = writer.files[0]
    assert (kind, code) == ("OSError", errno.EFBIG), caught[writer.name]
    # The OS's words, naming the file that was not replaced (not the temporary one).
    assert message == (
        f"[Errno {errno.EFBIG}] could not write {folder / first}: {os.strerror(errno.EFBIG)}; "
        f"the previous {first}, if any, is unchanged"
    )
    old = before[writer.name]
    assert _snapshot(folder) == old  # version 1 byte for byte, no temporary file left behind
    _check_new_version_differs(writer, folder, old)


@needs_rlimit
def test_the_cli_reports_a_write_cut_short_in_one_line_and_keeps_its_files(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "latentae", "fit", PPCA, "--steps", "5", "--out", str(out)]
    first = subprocess.run([*command, "--seed", "0", "--quiet"], capture_output=True, text=True,
                           env=_child_env(), timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr
    old = _snapshot(out)
    assert {"checkpoint.pt", "training.json", "loss.png"} <= set(old)
    second = subprocess.run([*command, "--seed", "1"], capture_output=True, text=True,
                            env=_child_env(), preexec_fn=_limit_file_size, timeout=300)  # fmt: skip
    assert second.returncode == 2
    assert second.stderr == (
        f"latentae: error: [Errno {errno.EFBIG}] could not write {out / 'checkpoint.pt'}: "
        f"{os.strerror(errno.EFBIG)}; the previous checkpoint.pt, if any, is unchanged\n"
    )
    assert _snapshot(out) == old  # every file of the first run, byte for byte


@pytest.mark.skipif(IS_ROOT, reason=ROOT_REASON)
@pytest.mark.parametrize("writer", WRITERS, ids=[w.name for w in WRITERS])
def test_an_unwritable_folder_keeps_the_old_file(writer, folder):
    writer.write(folder, 1)
    old = _snapshot(folder)
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            writer.write(folder, 2)
        assert _snapshot(folder) == old
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------- the CLI

COMMANDS = {
    "run": ["run", PPCA, "--steps", "1", "--num-samples", "10"],
    "fit": ["fit", PPCA, "--steps", "1"],
    "check": ["check", PPCA, "--checkpoint", "CHECKPOINT"],
    "score": ["score", PPCA, "--steps", "1"],
    "sample": ["sample", PPCA, "--steps", "1"],
    "study": ["study", "compatibility", PPCA, "--steps", "1", "--sizes", "50", "--seeds", "0"],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    assert main(["fit", PPCA, "--steps", "1", "--out", str(out), "--quiet"]) == 0
    return out / "checkpoint.pt"


def _one_line_error(capsys, mentions: str) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("latentae: error: ") and mentions in captured.err
    return captured.err


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_out_that_is_or_lies_under_a_file_exits_2(command, where, tmp_path, capsys, request):
    args = list(COMMANDS[command])
    if command == "check":
        args[args.index("CHECKPOINT")] = str(request.getfixturevalue("checkpoint"))
    capsys.readouterr()
    file = tmp_path / "results"
    file.write_text("not a folder")
    out = file if where == "is-a-file" else file / "sub"
    assert main([*args, "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert file.read_text() == "not a folder"


@pytest.mark.skipif(IS_ROOT, reason=ROOT_REASON)
def test_a_read_only_out_exits_2(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["fit", PPCA, "--steps", "1", "--out", str(out), "--quiet"]) == 2
        _one_line_error(capsys, str(out))
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)
        shutil.rmtree(out)
