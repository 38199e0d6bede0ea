"""The run directory's lock: one process writes a run directory at a time (orchestration edge;
no math).

:class:`RunLock` holds an exclusive advisory lock on the directory's ``run.lock`` while the run
lives; the operating system frees it when the holder's process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from ..errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (RunLock.unsupported)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = "run.lock"


class RunLock:
    """One writer per run directory: an exclusive advisory lock (``fcntl.flock``) on
    ``<dir>/run.lock``, which names its holder (PID and host).

    The operating system releases the lock when its process ends, however it ends, so a lock
    file left by a killed process is free and is taken over (:attr:`took_over` names the dead
    holder). A second process asking for a held lock gets a :class:`ConfigError` naming the
    holder. The file is removed on :meth:`release`. Where ``fcntl`` is missing (Windows), no
    lock is taken and :attr:`unsupported` is True.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None
        self.took_over: str | None = None
        self.unsupported = fcntl is None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd) or "holder unknown"
                os.close(fd)
                raise ConfigError(
                    f"run directory {self.path.parent} is in use by another process ({holder}); "
                    "wait for it to finish, or choose another --out"
                ) from None
            # the file may have been removed (and re-created) by its holder's release meanwhile
            if _same_file(fd, self.path):
                break
            os.close(fd)
        self.took_over = _read_holder(fd) or None  # written by a holder that never released
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"run directory {self.path.parent} cannot be locked: {exc.strerror or exc}"
            ) from exc

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)  # closing releases the lock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
