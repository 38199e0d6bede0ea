"""Checks of what a user passes in (paths, data directories, counts, seeds, memory), made
before any work starts (orchestration edge; no math).

The command line (:mod:`~kfac_ref.experiments.cli`), :func:`~kfac_ref.experiments.run_experiment`
(and so the notebooks that call it) and the figure scripts (``paper_figures/``) all check here,
first, so that a mistake costs one line and exit status 2, not a traceback after seconds of
work. Each check raises :class:`~kfac_ref.errors.ConfigError` (memory:
:class:`~kfac_ref.errors.TooLargeError`) naming the option and the value; the ``*_arg``
functions are the same checks as ``argparse`` types.

What a data directory holds (damaged files, a directory that cannot cache what was generated)
is for the data loaders to judge; here only what can be judged without them: the path expands
(``~user`` exists), its names fit the file system, it is not a file, it could be created.
"""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy

from ..errors import ConfigError, TooLargeError

#: longest file name (one path component, in bytes) where the file system does not say
NAME_MAX = 255
#: longest path (bytes) where the system does not say
PATH_MAX = 4096
#: seeds are integers in [0, MAX_SEED] (they fit an int64 and JSON)
MAX_SEED = 2**63 - 1
#: default memory limit of one dense computation (:func:`memory`), as kfac_ref.dense's
DEFAULT_MAX_BYTES = 2 * 1024**3
DATA_DIR_ENV_VAR = "KFAC_REF_DATA_DIR"


# ------------------------------------------------------------------------------------ paths
def expand_path(value: Any, option: str) -> Path:
    """``value`` as a path with ``~`` / ``~user`` expanded. ConfigError for an empty value, a
    NUL character, an unknown user or home, or a name or path too long for the file system."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{option} must be a non-empty path, got {value!r}")
    if "\0" in value:
        raise ConfigError(f"{option} {value!r} contains a NUL character")
    if value.startswith("~"):
        expanded = os.path.expanduser(value)
        if expanded.startswith("~"):  # expanduser leaves what it cannot expand as it was
            user = value[1:].split("/", 1)[0].split(os.sep, 1)[0]
            who = f"there is no user {user!r}" if user else "no home directory is known"
            raise ConfigError(f"{option} {value}: cannot expand ~{user} ({who})")
        value = expanded
    path = Path(value)
    limit = _name_max(path)
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise ConfigError(
                f"{option} {_short(path)}: the name {_short(part, 24)} has {size} bytes; this file "
                f"system allows at most {limit}"
            )
    size = len(os.fsencode(str(path)))
    if size > PATH_MAX:
        raise ConfigError(f"{option} {_short(path)} is {size} bytes long; at most {PATH_MAX}")
    return path


def _short(text: Any, keep: int = 200) -> str:
    text = str(text)
    return text if len(text) <= keep + 3 else f"{text[: keep // 2]}…{text[-keep // 2 :]}"


def _name_max(path: Path) -> int:
    """NAME_MAX of the file system holding the nearest existing directory above ``path``."""
    try:
        return os.pathconf(nearest_existing(path), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def nearest_existing(path: Path) -> Path:
    """``path`` itself or the nearest of its parents that exists (``.`` at worst)."""
    p = path.absolute()
    while True:
        try:
            os.lstat(p)
            return p
        except OSError:
            if p.parent == p:
                return Path(".")
            p = p.parent


def _not_a_directory(path: Path, option: str, verb: str) -> None:
    """ConfigError when ``path`` is an existing non-directory or lies under one."""
    p = nearest_existing(path)
    if p.is_dir():
        return
    if p == path.absolute():
        raise ConfigError(f"{option} {_short(path)} is a file, not a directory")
    raise ConfigError(f"{option} {_short(path)} cannot be {verb}: {_short(p)} is a file")


def output_dir(value: Any, option: str = "--out") -> Path:
    """A directory to write into: checked (:func:`expand_path`; not a file, not under one),
    created if needed and proved to take a file, so a read-only or full one is refused before
    any work (:func:`kfac_ref.experiments.io.require_writable_dir`)."""
    from .io import require_writable_dir

    path = expand_path(value, option)
    _not_a_directory(path, option, "created")
    return require_writable_dir(path, option)


def run_dir(value: Any) -> Path:
    """A run directory (:func:`kfac_ref.experiments.run_experiment`'s ``out_dir``), expanded
    and checked like :func:`output_dir`, not yet created."""
    path = expand_path(value, "the run directory")
    _not_a_directory(path, "the run directory", "created")
    return path


def data_dir(value: Any = None, option: str = "--data-dir") -> Path:
    """The data directory ``value`` (None: ``$KFAC_REF_DATA_DIR``, else the cache directory of
    :func:`kfac_ref.experiments.data.default_data_dir`), expanded and checked: not a file, not
    under a file. It need not exist (the loaders create it to cache what they build)."""
    if value is None and os.environ.get(DATA_DIR_ENV_VAR):
        value, option = os.environ[DATA_DIR_ENV_VAR], f"${DATA_DIR_ENV_VAR}"
    if value is None:
        from .data import default_data_dir

        try:
            path = expand_path(default_data_dir(), "the default data directory")
        except RuntimeError as exc:  # Path.home() without $HOME or a password entry
            raise ConfigError(
                f"no data directory: {exc}; pass {option} or set ${DATA_DIR_ENV_VAR}"
            ) from None
        option = "the default data directory"
    else:
        path = expand_path(value, option)
    _not_a_directory(path, option, "created")
    return path


def input_file(value: Any, option: str) -> Path:
    """A file to read: it exists and is a regular file (not a directory, FIFO or device)."""
    path = expand_path(value, option)
    try:
        if path.is_file():
            return path
        exists = path.exists()
    except OSError as exc:
        raise ConfigError(f"{option} {_short(path)}: {exc.strerror or exc}") from None
    what = "is not a regular file" if exists else "file not found"
    raise ConfigError(f"{option} {_short(path)}: {what}")


# ---------------------------------------------------------------------- numbers and seeds
def _as_int(value: Any) -> Any:
    return int(value) if isinstance(value, numpy.integer) else value


def integer(value: Any, option: str, low: int = 1, high: int | None = None, why: str = "") -> int:
    """``value`` if it is an integer in [low, high]; else ConfigError (``why`` explains high)."""
    value = _as_int(value)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and (high is None or value <= high):
        return value
    raise ConfigError(f"{option} must be an integer {_bounds(low, high)}{why}, got {value!r}")


def _bounds(low: int, high: int | None) -> str:
    return f"≥ {low}" if high is None else f"in [{low}, {high}]"


def seed(value: Any, option: str = "--seed") -> int:
    """A seed: an integer in [0, :data:`MAX_SEED`]."""
    return integer(value, option, 0, MAX_SEED)


def memory(need: int, what: str, hint: str, limit: int | None = None) -> None:
    """:class:`TooLargeError` when ``what`` needs more than ``limit`` bytes (default 2 GiB, the
    dense computations' limit), before anything is allocated."""
    limit = DEFAULT_MAX_BYTES if limit is None else limit
    if need > limit:
        raise TooLargeError(
            f"{what} needs about {need / 2**20:,.0f} MiB, over the limit of "
            f"{limit / 2**20:,.0f} MiB; {hint}"
        )


def physical_memory() -> int:
    """Bytes of memory of this machine (:data:`DEFAULT_MAX_BYTES` where the system does not
    say): the limit of work that could not fit whatever else ran."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MAX_BYTES


# ---------------------------------------------------------------------- as argparse types
def int_arg(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An ``argparse`` type: an integer in [low, high] (argparse names the option)."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"expected an integer {_bounds(low, high)}, got {value}"
            )
        return value

    return integer


def seed_arg(text: str) -> int:
    """An ``argparse`` type: a seed (:func:`seed`)."""
    return int_arg(0, MAX_SEED)(text)


def is_environment_error(exc: BaseException) -> bool:
    """True for an :class:`OSError` the machine caused, not the code: the file system (no such
    file, no permission, read-only, full, name too long, I/O error), not a broken pipe or a
    programming error that happens to be an OSError."""
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EIO",
        "ENOSPC",
        "EDQUOT",
        "EROFS",
        "EACCES",
        "EPERM",
        "ENOENT",
        "ENOTDIR",
        "EISDIR",
        "EEXIST",
        "ENAMETOOLONG",
        "ELOOP",
        "EMFILE",
        "ENFILE",
        "ESTALE",
        "ENXIO",
        "ENODEV",
        "ETXTBSY",
        "EFBIG",
    )
    if hasattr(errno, name)
)
