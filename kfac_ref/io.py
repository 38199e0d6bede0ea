"""Atomic file writing, JSON-lines logs and checkpoints (orchestration edge; no math).

Every file is written to a temporary name in the destination directory and moved into place
with :func:`os.replace`, so a crash never leaves a half-written log, figure or checkpoint.
Checkpoints are Python pickles of host (NumPy) data: load only checkpoints you wrote yourself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import DataError

CHECKPOINT_FORMAT = 1


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Pickle ``payload`` (host data only) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump({"format": CHECKPOINT_FORMAT, **payload}, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; :class:`DataError` if unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise DataError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"checkpoint {path} is not a kfac_ref checkpoint of format {CHECKPOINT_FORMAT}")
    return payload
