"""The data directory and the file formats every loader shares: MATLAB ``.mat`` variables and
atomically written ``.npz`` caches (§13; edge code, no math)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from ...errors import DataError

DATA_DIR_ENV_VAR = "KFAC_REF_DATA_DIR"


def default_data_dir() -> Path:
    """The cache directory (§13): ``$KFAC_REF_DATA_DIR``, ``$XDG_CACHE_HOME/kfac_ref`` or
    ``~/.cache/kfac_ref``, in that order. Not created here."""
    explicit = os.environ.get(DATA_DIR_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "kfac_ref"
    return Path.home() / ".cache" / "kfac_ref"


def _resolve_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` if given, else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _loadmat(path: Path) -> dict[str, Any]:
    """``scipy.io.loadmat`` with every failure reported as a :class:`DataError` naming the file."""
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported ({exc}); "
            "re-save it with `save -v7`."
        ) from exc
    except (
        Exception
    ) as exc:  # scipy's parser on arbitrary bytes: IndexError, KeyError, zlib.error, …
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc}).") from exc


def _mat_variable(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    """The variable ``key`` of a loaded .mat file, or a :class:`DataError` listing what is there."""
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: variable {key!r} not found; the file holds {found}.")
    return np.asarray(mat[key])


def _as_float_rows(A: np.ndarray, d: int, path: Path, key: str) -> np.ndarray:
    """``A`` as a float64 ``(n, d)`` array (cases in rows), or a :class:`DataError`."""
    if A.ndim != 2 or A.shape[1] != d:
        raise DataError(f"{path}: variable {key!r} has shape {A.shape}; expected (n, {d}).")
    return np.ascontiguousarray(A, dtype=np.float64)


def _save_npz_atomic(path: Path, *, compressed: bool = True, **arrays: np.ndarray) -> None:
    """Write a ``.npz`` (compressed unless ``compressed=False``) to a temporary file in the same
    directory, then ``os.replace`` it onto ``path`` (readers never see a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritable_reason(directory: Path) -> str | None:
    """Why nothing may be written into ``directory``, or ``None``: it has no write permission
    bits (honoured even for root, who could write anyway), or ``os.access`` refuses. A
    directory that does not exist yet is not refused here (writing creates it)."""
    try:
        mode = directory.stat().st_mode
    except FileNotFoundError:
        return None
    if not mode & 0o222:
        return "the directory is read-only"
    if not os.access(directory, os.W_OK):
        return "no permission to write there"
    return None
