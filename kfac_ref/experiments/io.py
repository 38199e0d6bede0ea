"""Atomic file writing, JSON-lines logs and checkpoints (orchestration edge; no math).

Every file is written to a temporary name in the destination directory and moved into place
with :func:`os.replace`, so a crash never leaves a half-written log, figure or checkpoint.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are ``.npz`` archives read with
``numpy.load(..., allow_pickle=False)``: loading one never executes code. The payload is a tree
of dicts and lists whose leaves are NumPy arrays or JSON values (numbers, strings, booleans,
None; NaN and ±inf allowed). Every array becomes one member of the archive; the rest of the tree,
with each array replaced by ``{"__array__": member}``, is the JSON text of the member
``__meta__`` (UTF-8 bytes as uint8), beside the format name, its version and each member's dtype
and shape, which are checked before anything is returned. Any JSON-able value (a generator's
state as a dict of ints and lists, say) round-trips unchanged. A file that is not such an archive
(a pickle, say) is refused before anything in it is parsed.

One process writes a run directory at a time: :class:`RunLock` holds an advisory lock on its
``run.lock`` while the run lives.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy

from ..errors import ConfigError, DataError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (RunLock.unsupported)
    fcntl = None  # type: ignore[assignment]

CHECKPOINT_NAME = "checkpoint.npz"
LOCK_NAME = "run.lock"
CHECKPOINT_FORMAT = "kfac_ref.checkpoint"
CHECKPOINT_VERSION = 3
META_MEMBER = "__meta__"
ARRAY_KEY = "__array__"
ARRAY_KINDS = "biuf"  # bool, signed and unsigned integers, floats: never objects


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
                f"cannot write {path}: {exc.strerror or exc} (is the disk full or the directory read-only?)"
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
    """The records of a JSON-lines file (None stands for NaN)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"log file {path} does not exist")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"log file {path} line {n} is not valid JSON: {exc}") from exc
    return out


def _split_arrays(value: Any, arrays: dict[str, numpy.ndarray], where: str) -> Any:
    """``value`` with each array moved into ``arrays`` and replaced by ``{"__array__": name}``."""
    if isinstance(value, numpy.ndarray):
        if value.dtype.kind not in ARRAY_KINDS:
            raise TypeError(
                f"checkpoint payload {where}: arrays of dtype {value.dtype} cannot be saved"
            )
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {ARRAY_KEY: name}
    if isinstance(value, dict):
        if ARRAY_KEY in value or not all(isinstance(k, str) for k in value):
            raise TypeError(
                f"checkpoint payload {where}: dict keys must be strings other than {ARRAY_KEY!r}"
            )
        return {k: _split_arrays(v, arrays, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_arrays(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, numpy.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"checkpoint payload {where}: a {type(value).__name__} is neither an array nor JSON"
    )


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (host arrays and JSON values, see the module docstring) to the ``.npz``
    ``path`` atomically: temporary file, flushed to disk, then :func:`os.replace`."""
    arrays: dict[str, numpy.ndarray] = {}
    tree = _split_arrays(payload, arrays, "payload")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arrays": {
            name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()
        },
        "payload": tree,
    }
    text = json.dumps(meta, allow_nan=True, separators=(",", ":"))
    members = {META_MEMBER: numpy.frombuffer(text.encode("utf-8"), dtype=numpy.uint8), **arrays}
    with atomic_path(path, suffix=".npz.tmp") as tmp, open(tmp, "wb") as f:
        numpy.savez(f, **members)
        f.flush()
        os.fsync(f.fileno())


def _read_meta(z: Any, path: Path) -> dict[str, Any]:
    if META_MEMBER not in z.files:
        raise DataError(f"checkpoint {path} has no {META_MEMBER} member: not a kfac_ref checkpoint")
    raw = z[META_MEMBER]
    if raw.dtype != numpy.uint8 or raw.ndim != 1:
        raise DataError(f"checkpoint {path}: member {META_MEMBER} is not UTF-8 bytes")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"checkpoint {path}: member {META_MEMBER} is not valid JSON ({exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"checkpoint {path} is not a kfac_ref checkpoint (format {CHECKPOINT_FORMAT!r} expected)"
        )
    if meta.get("version") != CHECKPOINT_VERSION:
        raise DataError(
            f"checkpoint {path} has version {meta.get('version')!r}; this kfac_ref reads version "
            f"{CHECKPOINT_VERSION} only. Start the run again with --overwrite"
        )
    if not isinstance(meta.get("arrays"), dict) or "payload" not in meta:
        raise DataError(f"checkpoint {path}: {META_MEMBER} lacks its array table or payload")
    return meta


def _read_arrays(z: Any, meta: dict[str, Any], path: Path) -> dict[str, numpy.ndarray]:
    """Every array member, checked against the dtype and shape the metadata records."""
    table = meta["arrays"]
    members = set(z.files) - {META_MEMBER}
    if members != set(table):
        raise DataError(f"checkpoint {path}: its members do not match its array table (damaged?)")
    arrays = {}
    for name, spec in table.items():
        a = z[name]
        if (
            a.dtype.kind not in ARRAY_KINDS
            or not isinstance(spec, dict)
            or a.dtype.str != spec.get("dtype")
            or list(a.shape) != spec.get("shape")
        ):
            raise DataError(
                f"checkpoint {path}: member {name} is {a.dtype.str} {list(a.shape)}, its table says "
                f"{spec!r} (damaged?)"
            )
        arrays[name] = a
    return arrays


def _join_arrays(value: Any, arrays: dict[str, numpy.ndarray], path: Path) -> Any:
    """Inverse of :func:`_split_arrays`."""
    if isinstance(value, dict):
        if set(value) == {ARRAY_KEY}:
            name = value[ARRAY_KEY]
            if not isinstance(name, str) or name not in arrays:
                raise DataError(f"checkpoint {path}: reference to a missing array {name!r}")
            return arrays[name]
        return {k: _join_arrays(v, arrays, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays, path) for v in value]
    return value


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The payload of a checkpoint written by :func:`save_checkpoint`, validated (format,
    version, every member's dtype and shape); :class:`DataError` if missing, damaged, of another
    format, or not an ``.npz`` archive at all (a pickle, say: refused unparsed). Never executes
    code: ``allow_pickle=False``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"checkpoint {path} cannot be read: {exc.strerror or exc}") from exc
    if head != b"PK\x03\x04":
        raise DataError(
            f"checkpoint {path} is corrupt or unreadable: not an .npz archive (empty or damaged?)"
        )
    try:
        with numpy.load(path, allow_pickle=False) as z:
            meta = _read_meta(z, path)
            arrays = _read_arrays(z, meta, path)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(
            f"checkpoint {path} is corrupt or unreadable: {type(exc).__name__}: {exc}"
        ) from exc
    payload = _join_arrays(meta["payload"], arrays, path)
    if not isinstance(payload, dict):
        raise DataError(f"checkpoint {path}: its payload is not a mapping")
    return payload


def array_digest(a: numpy.ndarray) -> str:
    """SHA-256 of a host array's dtype, shape and C-ordered bytes (a data set's fingerprint)."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(numpy.ascontiguousarray(a).reshape(-1).view(numpy.uint8))
    return h.hexdigest()


def remove_stale_temporaries(directory: Path, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves behind when a process is killed
    mid-write (``.<name>.<random>…tmp`` beside each of ``names``). Call only while holding the
    directory's :class:`RunLock`, so no live writer's file is touched. Returns what was removed."""
    removed = []
    for name in names:
        for tmp in directory.glob(f".{name}.*tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


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
