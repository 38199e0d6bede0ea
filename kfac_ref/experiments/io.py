"""Atomic files and JSON (orchestration edge; no math).

Every file is written to a temporary name in the destination directory and moved into place
with :func:`os.replace`, so a crash never leaves a half-written log, figure or checkpoint
(:func:`atomic_path`); :func:`remove_stale_temporaries` clears what a killed writer left. Logs
are JSON lines (:func:`write_jsonl_atomic`, :func:`read_jsonl`). Files read from a run directory
are read only if they are regular files (:func:`open_regular`, :func:`read_text`): a FIFO planted
there is refused, not waited on. Checkpoints are :mod:`~kfac_ref.experiments.checkpoint`; the
run directory's lock is :mod:`~kfac_ref.experiments.run_lock`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ConfigError, DataError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else delete it."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent
        )
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise DataError(
                f"cannot write {path}: {exc.strerror or exc} (is the disk full or the directory "
                "read-only?)"
            ) from exc
        raise


def require_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` if needed and prove it takes a file (written and removed), so a
    read-only, uncreatable or full directory is a :class:`ConfigError` before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
        try:
            os.write(fd, b"kfac_ref")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise ConfigError(
            f"{what} {path} cannot be written: {exc.strerror or exc}; choose another one"
        ) from exc
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_safe(value: Any) -> Any:
    """Floats that JSON cannot hold (NaN, ±inf) become None; NumPy scalars become Python ones."""
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def jsonable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as it reads back from a JSON log: NaN/inf → None, NumPy scalars → Python."""
    return {k: _json_safe(v) for k, v in record.items()}


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically (NaN and ±inf are written as null)."""
    lines = [json.dumps(jsonable(r)) for r in records]
    write_text_atomic(path, "\n".join(lines) + ("\n" if lines else ""))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (None stands for NaN); only a regular file is read
    (:func:`read_text`)."""
    path = Path(path)
    out = []
    for n, line in enumerate(read_text(path, "log file").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"log file {path} line {n} is not valid JSON: {exc}") from exc
    return out


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file. A FIFO, device or
    directory is a :class:`DataError`, never waited on: it is opened without blocking and
    checked (``fstat``) before a byte is read. A missing or unreadable file is a DataError too."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(
                f"{what} {path} is not a regular file (a directory, FIFO or device?); not read"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> str:
    """The UTF-8 text of the regular file ``path`` (:func:`open_regular`); DataError if it is
    not one, cannot be read, is not UTF-8 or is longer than ``max_bytes``."""
    path = Path(path)
    with open_regular(path, what) as f:
        try:
            if max_bytes is not None and os.fstat(f.fileno()).st_size > max_bytes:
                raise DataError(f"{what} {path} is over {max_bytes:,} bytes")
            return f.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{what} {path} is not UTF-8 text ({exc})") from None
        except OSError as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def remove_stale_temporaries(directory: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves behind when a process is killed
    mid-write (``.<name>.<random>…tmp`` beside each of ``names``). Call only while holding the
    directory's :class:`~kfac_ref.experiments.run_lock.RunLock`, so no live writer's file is
    touched. Returns what was removed."""
    removed = []
    for name in names:
        for tmp in directory.glob(f".{name}.*tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed
