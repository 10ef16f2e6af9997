"""One latentae run per output folder: a lock file that a second run is refused.

Two runs pointed at one folder would each write their checkpoint, plots and report over the
other's (every file is written atomically, so none is torn, but the folder ends up mixing
two runs). [`output_lock`][] holds ``FOLDER/.latentae.lock`` for the duration of a run.

How the lock is held. On POSIX the lock file is locked with ``fcntl.flock``: the kernel
releases that lock when its holder exits in any way, ``kill -9`` and crashes included, so a
lock whose holder died is never mistaken for a live one, even when its pid has been reused
by another process. The file also records the holder's pid, host and start time (JSON), for
the error message and for a person looking at the folder. Where ``flock`` is missing
(Windows) or refused (some network file systems), the file itself is the lock: it is made
with ``O_CREAT | O_EXCL``, and one whose pid is no longer alive on this host is taken over;
a lock from another host, or whose pid cannot be checked, is then left for a person to
delete.

A lock whose holder died is taken over silently (a crashed run must not block the next
one); the returned [`OutputLock`][] records the previous holder in ``replaced``, and so
does the new lock file. The lock is not reentrant: a process that asks again for a folder
it holds gets [`LockedError`][], since two writers in one process (threads, or nested
code) would mix the folder's files as surely as two processes.

This module needs only the standard library, so that it costs nothing to import.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "LockedError", "OutputLock", "output_lock"]

#: The lock file's name inside the output folder.
LOCK_NAME = ".latentae.lock"

# A holder writes its record right after taking the lock: a reader that finds the file empty
# waits this long for it before reporting an unknown holder.
_READ_WAIT_S = 0.5
# Without flock, an empty or unreadable lock file older than this is a holder that died
# between creating the file and writing it.
_EMPTY_STALE_S = 10.0

# Folders locked by this process (resolved paths): refused a second time.
_held: set[str] = set()
_held_guard = threading.Lock()


class LockedError(OSError):
    """Another latentae run (or this process, a second time) holds the output folder's lock.

    Attributes:
        folder: the output folder.
        holder: the holder's record (``pid``, ``host``, ``started``), ``{}`` when unknown.
    """

    def __init__(
        self, message: str, *, folder: Path | None = None, holder: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.folder, self.holder = folder, dict(holder or {})


@dataclass(frozen=True)
class OutputLock:
    """A held output-folder lock.

    Attributes:
        folder: the output folder.
        path: the lock file, ``folder / LOCK_NAME``.
        pid: this process's id.
        host: this host's name.
        started: when the lock was taken (ISO 8601, local time with its UTC offset).
        mechanism: ``"flock"`` (the kernel holds the lock) or ``"file"`` (the file is the
            lock, where flock is unavailable).
        replaced: the record of a previous holder that had died, taken over (its ``pid``
            is ``None`` when the record was unreadable); else ``None``.
    """

    folder: Path
    path: Path
    pid: int
    host: str
    started: str
    mechanism: str
    replaced: dict[str, Any] | None


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[OutputLock]:
    """Hold ``folder``'s lock while the block runs; the folder is created if needed.

    The lock file is removed on leaving the block, by an exception or ``KeyboardInterrupt``
    too; if the process dies instead, the next run takes the lock over.

    Args:
        folder: the output folder of a run.

    Yields:
        The [`OutputLock`][] held.

    Raises:
        LockedError: another live run holds the lock (its pid and start time are named), or
            this process already does.
        NotADirectoryError: ``folder`` is a file, or lies under one.
        OSError: the folder cannot be created or written (e.g. ``PermissionError``).

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp()) / "run"
        >>> with output_lock(folder) as lock:
        ...     json.loads(lock.path.read_text())["pid"] == os.getpid()
        True
        >>> lock.path.exists()
        False
    """
    folder = Path(folder)
    _prepare(folder)
    key = str(folder.resolve())
    with _held_guard:
        if key in _held:
            raise LockedError(
                f"this process (pid {os.getpid()}) already holds the lock on {str(folder)!r}: "
                "output_lock is not reentrant, since two writers in one process would mix "
                "the folder's files; write through the lock already held, or choose "
                "another --out",
                folder=folder,
                holder={"pid": os.getpid(), "host": socket.gethostname()},
            )
        _held.add(key)
    try:
        fd, lock = _acquire(folder)
    except BaseException:
        with _held_guard:
            _held.discard(key)
        raise
    try:
        yield lock
    finally:
        try:
            # A child forked inside the block must not remove its parent's lock.
            if os.getpid() == lock.pid:
                _release(fd, lock.path)
        finally:
            with _held_guard:
                _held.discard(key)


def _prepare(folder: Path) -> None:
    """Create ``folder``, or say in one line why it cannot be the output folder."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is a file, not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(
            f"cannot create the output folder {str(folder)!r} (a part of that path is a "
            "file); choose another --out"
        ) from None
    except OSError as e:
        raise type(e)(
            f"cannot create the output folder {str(folder)!r} ({e.strerror or e}); choose "
            "another --out"
        ) from None


def _open(path: Path, flags: int) -> int:
    """``os.open`` of the lock file, with an error that names the folder."""
    try:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
    except FileExistsError:
        raise
    except OSError as e:
        raise type(e)(
            f"cannot write to the output folder {str(path.parent)!r} ({e.strerror or e}); "
            "choose another --out"
        ) from None


def _lock(folder: Path, path: Path, mechanism: str, replaced: dict | None) -> OutputLock:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return OutputLock(folder, path, os.getpid(), socket.gethostname(), started, mechanism, replaced)


def _record(lock: OutputLock) -> dict[str, Any]:
    """What the lock file holds: who holds the lock, since when, and whom it replaced."""
    record: dict[str, Any] = {"pid": lock.pid, "host": lock.host, "started": lock.started}
    if lock.replaced:
        record["replaced"] = lock.replaced
    return record


def _read(path: Path, wait: float = _READ_WAIT_S) -> dict[str, Any] | None:
    """The holder's record in ``path``, waiting ``wait`` seconds for a holder that has just
    created the file to write it; ``None`` if the file is gone, empty or not a record."""
    deadline = time.monotonic() + wait
    while True:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            record = None
        if isinstance(record, dict) and isinstance(record.get("pid"), int):
            return record
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def _locked(folder: Path, holder: dict[str, Any] | None, hint: str = "") -> LockedError:
    holder = holder or {}
    pid = holder.get("pid", "unknown")
    where = ""
    if holder.get("host") not in (None, socket.gethostname()):
        where = f" on host {holder['host']}"
    started = holder.get("started", "at an unknown time")
    return LockedError(
        f"another latentae run (pid {pid}{where}, started {started}) is writing to "
        f"{str(folder)!r}; wait for it to finish or choose another --out{hint}",
        folder=folder,
        holder=holder,
    )


def _write(fd: int, record: dict[str, Any]) -> None:
    data = (json.dumps(record) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    while data:
        data = data[os.write(fd, data) :]


def _acquire(folder: Path) -> tuple[int, OutputLock]:
    path = folder / LOCK_NAME
    if fcntl is not None:
        taken = _acquire_flock(folder, path)
        if taken is not None:
            return taken
    return _acquire_file(folder, path)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _acquire_flock(folder: Path, path: Path) -> tuple[int, OutputLock] | None:
    """Take the lock with flock; ``None`` when this file system refuses flock."""
    while True:
        created = True
        try:
            fd = _open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            created = False
            try:
                fd = _open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # released meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked(folder, _read(path)) from None
        except BaseException as e:
            os.close(fd)
            if created:
                path.unlink(missing_ok=True)
            if isinstance(e, OSError):  # ENOLCK, EOPNOTSUPP: the file itself is the lock
                return None
            raise
        # The previous holder may have removed the file between our open and our flock, and
        # a third run made a new one: a lock on the removed file locks nothing.
        if _same_file(fd, path):
            break
        os.close(fd)
    try:
        # A record in a file that we did not create is a holder that died without removing it.
        replaced = None if created else _read(path, wait=0)
        lock = _lock(folder, path, "flock", replaced)
        _write(fd, _record(lock))
    except BaseException:
        os.close(fd)
        raise
    return fd, lock


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: only a pid on this host can be checked."""
    if holder.get("host") != socket.gethostname() or os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _acquire_file(folder: Path, path: Path) -> tuple[int, OutputLock]:
    """Take the lock by creating the file exclusively (no flock on this system)."""
    hint = f" (if no run is active there, delete {str(path)!r})"
    replaced = None
    for _ in range(10):
        try:
            fd = _open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                try:
                    age = time.time() - path.stat().st_mtime
                except FileNotFoundError:
                    continue  # released meanwhile
                if age < _EMPTY_STALE_S:
                    raise _locked(folder, None, hint) from None
            elif _alive(holder):
                raise _locked(folder, holder, hint) from None
            # The holder died: remove its file and create ours. Two runs that find the
            # same stale file in the same instant may both get here; flock has no such race.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            replaced = holder or {"pid": None}
            continue
        try:
            lock = _lock(folder, path, "file", replaced)
            _write(fd, _record(lock))
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return fd, lock
    raise _locked(folder, _read(path), hint)


def _release(fd: int, path: Path) -> None:
    try:
        # Remove the file while still holding it, so that no other run ever sees our record
        # without our lock; a file that is no longer ours is left alone.
        if _same_file(fd, path):
            path.unlink()
    finally:
        os.close(fd)
