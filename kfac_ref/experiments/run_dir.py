"""The run directory (orchestration edge): which files hold a run, what its checkpoint holds and
how it is checked before a resume (settings, data fingerprint, shapes, finiteness), and reading a
finished run's log. :func:`kfac_ref.experiments.runner.run_experiment` writes it, one process at a
time (:class:`kfac_ref.experiments.run_lock.RunLock`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from ..backend import Backend, to_numpy
from ..errors import ConfigError, DataError, KFACError, ShapeError
from ..mlp import MLP
from ..rng import RunGenerator
from . import io
from .checkpoint import CHECKPOINT_NAME
from .run_config import MAY_CHANGE_ON_RESUME, RunConfig

#: Every file a run writes; a directory holding any of them holds a run.
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "result.json",
    CHECKPOINT_NAME,
)


@dataclass
class RunState:
    k: int
    weights: list[Any]
    average: list[Any]
    opt_state: Any
    elapsed: float
    records: list[dict[str, Any]]


def checkpoint_payload(
    cfg: RunConfig, opt: Any, st: RunState, gen: RunGenerator, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "rng": gen.state_dict(),  # a small JSON-ready dict: the device generator's key and counter
        "config": cfg.to_json(),
        "data": data,  # data_fingerprint: a resume onto other data is refused
        "k": st.k,
        "weights": [to_numpy(W) for W in st.weights],
        "average": [to_numpy(W) for W in st.average],
        "opt_state": opt.state_dict(st.opt_state),
        "elapsed": st.elapsed,
        "records": st.records,
    }


def _check_arrays(name: str, arrays: Any, shapes: Sequence[tuple[int, int]], where: Path) -> None:
    if not isinstance(arrays, list) or len(arrays) != len(shapes):
        raise DataError(f"checkpoint {where}: {name} should be {len(shapes)} matrices")
    for i, (W, shape) in enumerate(zip(arrays, shapes, strict=True), start=1):
        if not isinstance(W, numpy.ndarray) or W.shape != shape or W.dtype.kind != "f":
            got = (W.dtype, W.shape) if isinstance(W, numpy.ndarray) else type(W).__name__
            raise DataError(
                f"checkpoint {where}: {name}[{i}] is {got}; this network needs float {shape}"
            )
        if not numpy.isfinite(W).all():
            raise DataError(f"checkpoint {where}: {name}[{i}] holds NaN or infinite values")


def _saved_number(
    where: Path, what: str, value: Any, low: float, integer: bool = False, positive: bool = False
) -> None:
    """DataError naming the checkpoint unless ``value`` is a finite number ≥ ``low`` (> ``low``
    if ``positive``; an int if ``integer``): a checkpoint's scalars are checked when loaded."""
    kinds = int if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > low if positive else value >= low)):
        kind = "an integer" if integer else "a finite number"
        raise DataError(
            f"checkpoint {where}: {what} is {value!r}, not {kind} {'>' if positive else '≥'} "
            f"{low:g}"
        )


def _check_saved_state(d: Any, where: Path) -> None:
    """The saved optimizer state's scalars: k an integer ≥ 0; λ (§6.5) and γ (§6.6), where the
    optimizer has them, finite numbers > 0. Its arrays were checked finite when loaded."""
    if not isinstance(d, dict):
        raise DataError(f"checkpoint {where}: the optimizer state is not a mapping (damaged?)")
    _saved_number(where, "the optimizer state's iteration count", d.get("k"), 0, integer=True)
    for name, symbol in (("lam", "λ"), ("gamma", "γ")):
        if name in d:
            _saved_number(
                where, f"{symbol} ({name}) of the optimizer state", d[name], 0.0, positive=True
            )


def restore(
    payload: dict[str, Any], cfg: RunConfig, mlp: MLP, opt: Any, backend: Backend, where: Path
) -> RunState:
    """The state a checkpoint holds, after checking it fits ``cfg`` and ``mlp`` (the config
    first: a checkpoint of another run is named as such, not as damaged)."""
    missing = [
        k
        for k in ("config", "k", "weights", "average", "opt_state", "elapsed", "records")
        if k not in payload
    ]
    if missing:
        raise DataError(f"checkpoint {where} lacks {', '.join(missing)}")
    diff = RunConfig.from_json(payload["config"], f"checkpoint {where}").differences(cfg)
    if diff:
        raise ConfigError(
            f"cannot resume {where.parent}: this run differs from its checkpoint's settings in "
            f"{'; '.join(diff)}; "
            f"only {', '.join(MAY_CHANGE_ON_RESUME)} may change on --resume. Use the original "
            "options, "
            "or --overwrite to start afresh"
        )
    k, elapsed, records = payload["k"], payload["elapsed"], payload["records"]
    _saved_number(where, "the iteration count k", k, 0, integer=True)
    if not (
        isinstance(records, list)
        and len(records) == k
        and all(isinstance(r, dict) for r in records)
    ):
        raise DataError(f"checkpoint {where}: iteration count and log do not agree (damaged?)")
    _saved_number(where, "the elapsed time", elapsed, 0.0)
    _check_arrays("weights", payload["weights"], mlp.shapes, where)
    _check_arrays("average", payload["average"], mlp.shapes, where)
    _check_saved_state(payload["opt_state"], where)
    try:
        opt_state = opt.load_state_dict(payload["opt_state"])
    except (ConfigError, ShapeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            f"checkpoint {where}: the optimizer state does not fit this run: {exc}"
        ) from None
    if opt_state.k != k:
        raise DataError(
            f"checkpoint {where}: optimizer state at iteration {opt_state.k}, run at {k} (damaged?)"
        )
    return RunState(
        k=k,
        weights=[backend.asarray(W) for W in payload["weights"]],
        average=[backend.asarray(W) for W in payload["average"]],
        opt_state=opt_state,
        elapsed=float(elapsed),
        records=list(records),
    )


def array_digest(a: numpy.ndarray) -> str:
    """SHA-256 of a host array's dtype, shape and C-ordered bytes (a data set's fingerprint)."""
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(numpy.ascontiguousarray(a).reshape(-1).view(numpy.uint8))
    return h.hexdigest()


#: what of a run's data must not change on --resume (its label and origin may: files move)
FINGERPRINT_KEYS = ("n_train", "n_test", "train_sha256", "test_sha256")


def data_fingerprint(X_train: Any, X_test: Any, info: dict[str, Any]) -> dict[str, Any]:
    """What a run trains on, for its checkpoint: the data's label and origin, the numbers of
    training and test cases and a SHA-256 of each array (host copies, as loaded)."""
    test = to_numpy(X_test) if X_test is not None else numpy.zeros((0, 0))
    return {
        "data": info["data"],
        "data_origin": info["data_origin"],
        "n_train": int(X_train.shape[0]),
        "n_test": int(test.shape[0]),
        "train_sha256": array_digest(to_numpy(X_train)),
        "test_sha256": array_digest(test),
    }


def check_same_data(saved: Any, now: dict[str, Any], where: Path, allow_other: bool) -> bool:
    """True when ``now`` is the data the checkpoint ``where`` was trained on (``saved``).
    Otherwise a :class:`ConfigError` naming both, or, with ``allow_other``, False."""
    if (
        not isinstance(saved, dict)
        or not all(k in saved for k in FINGERPRINT_KEYS)
        or not all(type(saved[k]) is type(now[k]) for k in FINGERPRINT_KEYS)
    ):
        raise DataError(f"checkpoint {where} does not record its training data (damaged?)")
    if all(saved[k] == now[k] for k in FINGERPRINT_KEYS):
        return True
    if allow_other:
        return False

    def name(d: dict[str, Any]) -> str:
        return (
            f"{d.get('data')!r} ({d['n_train']:,} training / {d['n_test']:,} test cases, "
            f"SHA-256 {str(d['train_sha256'])[:12]}… / {str(d['test_sha256'])[:12]}…)"
        )

    raise ConfigError(
        f"cannot resume {where.parent}: it was trained on {name(saved)}, but the data now are "
        f"{name(now)}; point --data-dir at the original files, or pass --resume-other-data to "
        "continue on these data anyway"
    )


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse to write into a directory holding an earlier run unless told to: ``resume``
    needs its checkpoint, ``overwrite`` replaces it; the directory must take files. Returns the
    earlier run's files (to delete when overwriting)."""
    if resume and overwrite:
        raise ConfigError(
            "--resume continues a run and --overwrite replaces it; pass only one of them"
        )
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if resume and not (out / CHECKPOINT_NAME).is_file():
        held = f"it holds {', '.join(existing)} but" if existing else "it"
        raise ConfigError(
            f"cannot resume {out}: {held} has no {CHECKPOINT_NAME} (none written yet, or not a "
            "run "
            "directory); run without --resume to start the run"
        )
    if existing and not (resume or overwrite):
        raise ConfigError(
            f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    io.require_writable_dir(out, "run directory")
    return existing if overwrite else []


def finished_log(cfg: RunConfig, out_dir: str | Path) -> list[dict[str, Any]] | None:
    """The log of a finished run of ``cfg`` in ``out_dir``, or None (absent, unfinished, other
    config)."""
    out = Path(out_dir)
    try:
        result = json.loads(io.read_text(out / "result.json", "result file"))
        saved = RunConfig.from_json(result["config"], str(out / "result.json"))
        if not saved.same_run_as(cfg) or not cfg.is_done(result["iterations"], result["time"]):
            return None
        records = io.read_jsonl(out / "log.jsonl")
    except (OSError, ValueError, KeyError, TypeError, KFACError):
        return None
    if not records:
        return None
    if cfg.max_seconds is not None:
        over = [r["iteration"] for r in records if r["time"] >= cfg.max_seconds]
        last = min(over) if over else records[-1]["iteration"]
        return [r for r in records if r["iteration"] <= min(last, cfg.iters)]
    return [r for r in records if r["iteration"] <= cfg.iters]
