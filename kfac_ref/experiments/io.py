"""Atomic file writing, JSON-lines logs and checkpoints (orchestration edge; no math).

Every file is written to a temporary name in the destination directory and moved into place
with :func:`os.replace`, so a crash never leaves a half-written log, figure or checkpoint.

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) are ``.npz`` archives (zip files
of ``.npy`` arrays). The payload is a tree of dicts and lists whose leaves are NumPy arrays of
numbers or JSON values (numbers, strings, booleans, None; NaN and ±inf allowed). Every array
becomes one member of the archive; the rest of the tree, with each array replaced by
``{"__array__": member}``, is the JSON text of the member ``__meta__`` (UTF-8 bytes as uint8),
beside the format name, its version and each member's dtype and shape. Any JSON-able value (a
generator's state as a dict of ints and lists, say) round-trips unchanged. The loader reads the
archive with :mod:`zipfile` and NumPy's ``.npy`` header parser, never ``pickle``: loading a
checkpoint never executes code, and every header is checked against the table and the archive
before any array's data is read, so a hostile file costs no more memory than its declared
arrays (:func:`load_checkpoint`). Files read from a run directory are read only if they are
regular files (:func:`open_regular`): a FIFO planted there is refused, not waited on.

One process writes a run directory at a time: :class:`RunLock` holds an advisory lock on its
``run.lock`` while the run lives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import socket
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

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
#: bounds checked before a checkpoint's data are read (:func:`load_checkpoint`)
META_MAX_BYTES = 2**30  # the JSON of __meta__ (a log of two million records fits)
META_MAX_DEPTH = 64  # its nesting (a run's payload is about 6 levels deep)
NPY_HEADER_MAX = 10_000  # bytes of an .npy header (NumPy's own default limit)
MAX_EXPANSION = 4  # without max_bytes: arrays may declare at most 4 × the file's size
READ_CHUNK = 2**20  # bytes (or entries) read or checked at a time


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
    if _json_depth(tree) > META_MAX_DEPTH - 1:
        raise TypeError(f"checkpoint payload: nested deeper than {META_MAX_DEPTH - 1} levels")
    raw = json.dumps(meta, allow_nan=True, separators=(",", ":")).encode("utf-8")
    if len(raw) > META_MAX_BYTES:
        raise DataError(
            f"cannot write {path}: its JSON part has {len(raw):,} bytes, over the "
            f"{META_MAX_BYTES:,} a checkpoint may hold"
        )
    members = {META_MEMBER: numpy.frombuffer(raw, dtype=numpy.uint8), **arrays}
    with atomic_path(path, suffix=".npz.tmp") as tmp, open(tmp, "wb") as f:
        numpy.savez(f, **members)
        f.flush()
        os.fsync(f.fileno())


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> _Member:
    """The ``.npy`` header of one member, read without its data, and checked: a supported
    version, a dtype of numbers (never objects: nothing is unpickled), and a declared data size
    equal to the size the archive records for the member."""
    name = info.filename[: -len(".npy")]
    with zf.open(info) as f:
        version = numpy.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = numpy.lib.format.read_array_header_1_0(f, NPY_HEADER_MAX)
        elif version == (2, 0):
            shape, fortran, dtype = numpy.lib.format.read_array_header_2_0(f, NPY_HEADER_MAX)
        else:
            raise DataError(f"checkpoint {path}: member {name} is .npy version {version}")
        offset = f.tell()
    if dtype.kind not in ARRAY_KINDS or dtype.hasobject or dtype.fields or dtype.subdtype:
        raise DataError(
            f"checkpoint {path}: member {name} has dtype {dtype.str!r}; a checkpoint holds only "
            "arrays of numbers (objects are never unpickled)"
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != info.file_size - offset:
        raise DataError(
            f"checkpoint {path}: member {name} declares {list(shape)} {dtype.str} "
            f"({nbytes:,} bytes) but holds {max(info.file_size - offset, 0):,} bytes (damaged?)"
        )
    return _Member(name, info, list(shape), bool(fortran), dtype, nbytes)


@dataclasses.dataclass
class _Member:
    name: str
    info: zipfile.ZipInfo
    shape: list[int]
    fortran: bool
    dtype: numpy.dtype
    nbytes: int


def _read_data(zf: zipfile.ZipFile, m: _Member) -> numpy.ndarray:
    """The array of member ``m``, read in chunks into one array of its declared size (never
    more memory than that: the read stops at the size the archive records)."""
    a = numpy.empty(m.nbytes // m.dtype.itemsize if m.dtype.itemsize else 0, dtype=m.dtype)
    view = memoryview(a.view(numpy.uint8).reshape(-1)) if m.nbytes else memoryview(b"")
    with zf.open(m.info) as f:
        f.seek(m.info.file_size - m.nbytes)  # past the header
        pos = 0
        while pos < m.nbytes:
            chunk = f.read(min(READ_CHUNK, m.nbytes - pos))
            if not chunk:
                raise EOFError(f"member {m.name} ends after {pos:,} of {m.nbytes:,} bytes")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        f.read(1)  # at the end: zipfile checks the member's CRC-32
    if m.fortran:
        return a.reshape(m.shape[::-1]).transpose()
    return a.reshape(m.shape)


def _json_depth(value: Any) -> int:
    """Nesting depth of a JSON value (lists and dicts), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            depth = max(depth, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return depth


def _read_meta(
    zf: zipfile.ZipFile, members: dict[str, _Member], path: Path, limit: int
) -> dict[str, Any]:
    """The ``__meta__`` member's JSON, bounded in size (:data:`META_MAX_BYTES` and ``limit``)
    and in depth before it is parsed or walked."""
    m = members.get(META_MEMBER)
    if m is None:
        raise DataError(f"checkpoint {path} has no {META_MEMBER} member: not a kfac_ref checkpoint")
    if m.dtype != numpy.uint8 or len(m.shape) != 1:
        raise DataError(f"checkpoint {path}: member {META_MEMBER} is not UTF-8 bytes")
    if m.nbytes > min(META_MAX_BYTES, limit):
        raise DataError(
            f"checkpoint {path}: member {META_MEMBER} has {m.nbytes:,} bytes, over the limit of "
            f"{min(META_MAX_BYTES, limit):,} (not a kfac_ref checkpoint?)"
        )
    try:
        meta = json.loads(_read_data(zf, m).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise DataError(
            f"checkpoint {path}: member {META_MEMBER} is not valid JSON ({why})"
        ) from None
    if _json_depth(meta) > META_MAX_DEPTH:
        raise DataError(
            f"checkpoint {path}: member {META_MEMBER} is nested deeper than {META_MAX_DEPTH} "
            "levels "
            "(not a kfac_ref checkpoint?)"
        )
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"checkpoint {path} is not a kfac_ref checkpoint (format {CHECKPOINT_FORMAT!r} "
            "expected)"
        )
    if meta.get("version") != CHECKPOINT_VERSION:
        raise DataError(
            f"checkpoint {path} has version {meta.get('version')!r}; this kfac_ref reads version "
            f"{CHECKPOINT_VERSION} only. Start the run again with --overwrite"
        )
    if not isinstance(meta.get("arrays"), dict) or "payload" not in meta:
        raise DataError(f"checkpoint {path}: {META_MEMBER} lacks its array table or payload")
    return meta


def _check_table(
    meta: dict[str, Any], members: dict[str, _Member], path: Path, max_bytes: int
) -> list[_Member]:
    """The array members, each header equal to its entry of the array table, their declared
    sizes within ``max_bytes`` in all: checked before any array's data is read."""
    table = meta["arrays"]
    arrays = [m for name, m in members.items() if name != META_MEMBER]
    if {m.name for m in arrays} != set(table):
        raise DataError(f"checkpoint {path}: its members do not match its array table (damaged?)")
    for m in arrays:
        spec = table[m.name]
        if (
            not isinstance(spec, dict)
            or m.dtype.str != spec.get("dtype")
            or m.shape != spec.get("shape")
        ):
            raise DataError(
                f"checkpoint {path}: member {m.name} is {m.dtype.str} {m.shape}, its table says "
                f"{spec!r} (damaged?)"
            )
    total = sum(m.nbytes for m in arrays)
    if total > max_bytes:
        raise DataError(
            f"checkpoint {path}: its arrays declare {total:,} bytes, over the {max_bytes:,} "
            "this run's state can need, or its file's size allows (damaged?)"
        )
    return arrays


def _check_finite(a: numpy.ndarray, name: str, path: Path) -> None:
    """DataError unless every entry of a float array is finite (checked in chunks)."""
    if a.dtype.kind != "f":
        return
    flat = a.reshape(-1, order="A")
    for start in range(0, flat.size, READ_CHUNK):
        if not numpy.isfinite(flat[start : start + READ_CHUNK]).all():
            raise DataError(f"checkpoint {path}: array {name} holds NaN or infinite values")


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


def _read_checkpoint(f: Any, path: Path, max_bytes: int | None, finite: bool) -> dict[str, Any]:
    size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as zf:
        members = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.is_dir():
                raise DataError(f"checkpoint {path}: member {info.filename!r} is not an array")
            m = _member_header(zf, info, path)
            members[m.name] = m
        limit = MAX_EXPANSION * size + 2**20  # what the file's size allows
        meta = _read_meta(zf, members, path, limit)
        limit -= members[META_MEMBER].nbytes
        if max_bytes is not None:
            limit = min(limit, max_bytes)
        arrays = {}
        for m in _check_table(meta, members, path, limit):
            arrays[m.name] = _read_data(zf, m)
            if finite:
                _check_finite(arrays[m.name], m.name, path)
    return _join_arrays(meta["payload"], arrays, path)


def load_checkpoint(
    path: str | os.PathLike, max_bytes: int | None = None, finite: bool = True
) -> dict[str, Any]:
    """The payload of a checkpoint written by :func:`save_checkpoint`, validated before use.

    Every check that can be made without the arrays' data is made before any of it is read:
    the file is a regular file and a zip archive; each member is an ``.npy`` array of numbers
    (no objects: nothing is unpickled, no code runs) whose header declares exactly the bytes
    the archive holds for it and agrees with the array table of ``__meta__``; ``__meta__`` is
    at most :data:`META_MAX_BYTES` and :data:`META_MAX_DEPTH` levels deep; all members declare
    at most :data:`MAX_EXPANSION` times the file's size plus 1 MiB (an archive written by
    :func:`save_checkpoint` is stored uncompressed: about 1 time), and the arrays at most
    ``max_bytes``. So no checkpoint costs more memory than its declared arrays, nor more than a
    few times its own size. With ``finite``, every float array must hold only finite values.
    Any failure is a one-line :class:`DataError` naming ``path``.
    """
    path = Path(path)
    f = open_regular(path, "checkpoint")
    try:
        with f:
            if f.read(4) != b"PK\x03\x04":
                raise DataError(
                    f"checkpoint {path} is corrupt or unreadable: not an .npz archive "
                    "(empty or damaged?)"
                )
            f.seek(0)
            payload = _read_checkpoint(f, path, max_bytes, finite)
    except DataError:
        raise
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        NotImplementedError,
        RuntimeError,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        raise DataError(
            f"checkpoint {path} is corrupt or unreadable: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, dict):
        raise DataError(f"checkpoint {path}: its payload is not a mapping")
    return payload


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
