"""Checkpoints: saving a run's state and loading it back safely (orchestration edge; no math).

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
arrays (:func:`load_checkpoint`). The file is written atomically and read only if it is a
regular file (:mod:`~kfac_ref.experiments.io`). What a run's payload holds, and how it is
checked before a resume, is :mod:`~kfac_ref.experiments.run_dir`'s.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy

from ..errors import DataError
from .io import atomic_path, open_regular

CHECKPOINT_NAME = "checkpoint.npz"
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
