"""The output-folder lock: a second run is refused, a dead run's lock is taken over, the lock
file goes away however the block ends. The processes that hold or contend for the lock are
real ones (Python started afresh, loading latentae/locking.py alone, so each starts in well
under a second). Run time: about 3 s.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from latentae import locking
from latentae.locking import LOCK_NAME, LockedError, output_lock

LOCKING = Path(locking.__file__)
# Loads latentae/locking.py without the package (whose import takes seconds), then holds
# the lock on argv[1] until the parent closes this process's stdin, or (argv[2] == "try")
# tries to take it and prints what happened.
SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("locking", {path!r})
locking = importlib.util.module_from_spec(spec)
sys.modules["locking"] = locking
spec.loader.exec_module(locking)
try:
    with locking.output_lock(sys.argv[1]):
        print("locked", flush=True)
        if sys.argv[2] == "hold":
            sys.stdin.read()
except locking.LockedError as e:
    print(f"{{type(e).__name__}}: {{e}}", flush=True)
    sys.exit(3)
"""
TIMEOUT_S = 30  # for a child that should answer in well under a second
# How the lock file records its start time: ISO 8601, seconds, with the UTC offset.
STARTED = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def _command(folder: Path, mode: str) -> list[str]:
    return [sys.executable, "-c", SCRIPT.format(path=str(LOCKING)), str(folder), mode]


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock on ``tmp_path / "out"``; yield it and the folder."""
    folder = tmp_path / "out"
    proc = subprocess.Popen(_command(folder, "hold"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line == "locked\n", f"the holder did not take the lock: {proc.stderr.read()}"
        yield proc, folder
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT_S)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()


def _take(folder: Path) -> None:
    with output_lock(folder):
        pass


def _refusal(pid: int, folder: Path, hint: str = "") -> str:
    return (
        rf"another latentae run \(pid {pid}, started {STARTED}\) is writing to "
        rf"{re.escape(repr(str(folder)))}; wait for it to finish or choose another --out"
        + re.escape(hint)
        + "$"
    )


def test_a_second_process_is_refused_while_the_first_holds_the_lock(holder):
    proc, folder = holder
    record = json.loads((folder / LOCK_NAME).read_text())
    assert record["pid"] == proc.pid and record["host"] == socket.gethostname()
    assert re.fullmatch(STARTED, record["started"])
    # Another process, started afresh, is refused with the holder's pid and start time.
    other = subprocess.run(_command(folder, "try"), capture_output=True, text=True,
                           timeout=TIMEOUT_S)  # fmt: skip
    assert other.returncode == 3, other.stderr
    assert re.fullmatch("LockedError: " + _refusal(proc.pid, folder), other.stdout.strip())
    # So is this one; the error is an OSError, so the CLI makes it one line and exit code 2.
    with pytest.raises(LockedError, match=_refusal(proc.pid, folder)) as info:
        _take(folder)
    assert isinstance(info.value, OSError)
    assert info.value.holder["pid"] == proc.pid and info.value.folder == folder
    # The refused attempts left the holder's lock as it was.
    assert json.loads((folder / LOCK_NAME).read_text()) == record
    # Once the holder finishes, its lock file is gone and the folder is free.
    proc.stdin.close()
    assert proc.wait(TIMEOUT_S) == 0
    assert not (folder / LOCK_NAME).exists()
    with output_lock(folder) as lock:
        assert lock.replaced is None and lock.mechanism == "flock"


# Adds 1 to the number in argv[2], argv[3] times, each time under the lock on argv[1] (a
# refused attempt is retried): without mutual exclusion, two processes would read the same
# number and an increment would be lost.
COUNTER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("locking", {path!r})
locking = importlib.util.module_from_spec(spec)
sys.modules["locking"] = locking
spec.loader.exec_module(locking)
folder, counter, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
done = refused = 0
while done < times:
    try:
        with locking.output_lock(folder):
            n = int(open(counter).read())
            time.sleep(0.001)  # widen the window in which a second writer would interfere
            open(counter, "w").write(str(n + 1))
        done += 1
    except locking.LockedError:
        refused += 1
        time.sleep(0.0005)
print(refused)
"""


def test_contending_processes_take_the_lock_one_at_a_time(tmp_path):
    folder, counter = tmp_path / "out", tmp_path / "counter"
    counter.write_text("0")
    processes, times = 4, 25
    command = [sys.executable, "-c", COUNTER.format(path=str(LOCKING)), str(folder),
               str(counter), str(times)]  # fmt: skip
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    refused = [int(proc.communicate(timeout=4 * TIMEOUT_S)[0]) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * processes
    assert int(counter.read_text()) == processes * times  # no increment was lost
    assert sum(refused) > 0  # they did contend
    assert not (folder / LOCK_NAME).exists()


def test_the_lock_of_a_killed_run_is_taken_over(holder):
    proc, folder = holder
    os.kill(proc.pid, signal.SIGKILL)  # kill -9: no cleanup runs
    proc.wait(TIMEOUT_S)
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == proc.pid  # left behind
    with output_lock(folder) as lock:
        assert lock.pid == os.getpid() and lock.replaced["pid"] == proc.pid
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid() and record["replaced"]["pid"] == proc.pid
    assert not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_the_lock_file_goes_away_when_the_block_raises(tmp_path, error):
    folder = tmp_path / "a" / "b"  # created, parents too
    held = []

    def fail() -> None:
        with output_lock(folder) as lock:
            held.append(lock.path.exists())
            raise error("boom")

    with pytest.raises(error, match="boom"):
        fail()
    assert held == [True]
    assert folder.is_dir() and not (folder / LOCK_NAME).exists()
    _take(folder)  # and the folder is free again


def test_a_process_cannot_take_its_own_lock_twice(tmp_path):
    folder = tmp_path / "out"
    message = (
        rf"this process \(pid {os.getpid()}\) already holds the lock on .*: output_lock is "
        "not reentrant"
    )
    with output_lock(folder) as outer:
        for spelling in (folder, folder / "." / "", tmp_path / "x" / ".." / "out"):
            with pytest.raises(LockedError, match=message):
                _take(spelling)
        # Another thread of this process is a second writer too.
        errors = []

        def contend() -> None:
            try:
                _take(folder)
            except LockedError as e:
                errors.append(e)

        thread = threading.Thread(target=contend)
        thread.start()
        thread.join()
        assert len(errors) == 1 and "not reentrant" in str(errors[0])
        _take(tmp_path / "other")  # other folders are independent
        # The refused attempts did not disturb the lock that is held.
        assert json.loads(outer.path.read_text())["pid"] == os.getpid()
    assert not outer.path.exists()
    _take(folder)


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "file"
    file.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"'.*file' is a file, not a folder; choose"):
        _take(file)
    with pytest.raises(NotADirectoryError, match=r"cannot create the output folder .* \(a part "
                       r"of that path is a file\); choose another --out"):  # fmt: skip
        _take(file / "sub")
    assert file.read_text() == "not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permissions do not stop root (the suite may run as root)")  # fmt: skip
def test_an_unwritable_output_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"cannot write to the output folder .*ro'"):
            _take(folder)
        with pytest.raises(PermissionError, match=r"cannot create the output folder .*sub'"):
            _take(folder / "sub")
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------- without flock: the file is the lock


@pytest.fixture
def no_flock(monkeypatch):
    monkeypatch.setattr(locking, "fcntl", None)


def _write_record(folder: Path, **record) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    path.write_text(json.dumps(record))
    return path


def test_without_flock_a_live_holder_refuses(tmp_path, no_flock):
    folder = tmp_path / "out"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _write_record(folder, pid=live.pid, host=socket.gethostname(),
                             started="2026-01-01T00:00:00+00:00")  # fmt: skip
        hint = f" (if no run is active there, delete {str(path)!r})"
        with pytest.raises(LockedError, match=_refusal(live.pid, folder, hint)):
            _take(folder)
    finally:
        live.kill()
        live.wait(TIMEOUT_S)
    # A pid on another host cannot be checked: the lock stands, and the host is named.
    _write_record(folder, pid=live.pid, host="elsewhere", started="2026-01-01T00:00:00+00:00")
    with pytest.raises(LockedError, match=rf"\(pid {live.pid} on host elsewhere, started"):
        _take(folder)


def test_without_flock_a_dead_holder_is_taken_over(tmp_path, no_flock):
    folder = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(TIMEOUT_S)  # reaped: its pid names no process now
    _write_record(folder, pid=dead.pid, host=socket.gethostname(), started="then")
    with output_lock(folder) as lock:
        assert lock.mechanism == "file" and lock.replaced["pid"] == dead.pid
        record = json.loads(lock.path.read_text())
        assert record["pid"] == os.getpid() and record["replaced"]["pid"] == dead.pid
        with pytest.raises(LockedError, match="not reentrant"):  # as with flock
            _take(folder)
    assert not (folder / LOCK_NAME).exists()


def test_without_flock_an_empty_lock_file_is_stale_only_when_old(tmp_path, no_flock):
    folder = tmp_path / "out"
    path = _write_record(folder)
    path.write_text("")  # a holder that has created the file and is about to write it
    with pytest.raises(LockedError, match=r"\(pid unknown, started at an unknown time\)"):
        _take(folder)
    old = time.time() - 2 * locking._EMPTY_STALE_S  # ... or one that died doing so
    os.utime(path, (old, old))
    with output_lock(folder) as lock:
        assert lock.replaced == {"pid": None}


def test_a_file_system_without_flock_falls_back_to_the_file(tmp_path, monkeypatch):
    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking.fcntl, "flock", refuse)
    with output_lock(tmp_path / "out") as lock:
        assert lock.mechanism == "file" and lock.path.exists()
    assert not lock.path.exists()
