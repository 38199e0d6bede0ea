"""The deep-autoencoder experiments of §13 (orchestration edge: data, loop, logs, checkpoints).

One run = one data set × one method. The loop draws mini-batches, calls the optimizer's pure
``step``, keeps the iterate average, evaluates the training-set reconstruction error at a fixed
interval and writes a JSON-lines log and a checkpoint atomically, so a run can stop at any point
and ``resume`` to the same numbers an uninterrupted run gives (on NumPy every random draw of
iteration k comes from a generator seeded by (seed, k); on CuPy from the run's one Philox
generator, whose state the checkpoint keeps: :mod:`kfac_ref.rng`).

Errors plotted in the paper: squared reconstruction error per case (summed over pixels,
averaged over cases) of the training set; reported as the minimum of the averaged and the raw
iterate's error, as the authors' released code reports it ([code] KFAC3.m).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..backend import Backend, get_backend, to_numpy
from ..diagnostics import check_diagnose_size, diagnose_kfac
from ..errors import ConfigError, DataError, Interrupted, KFACError
from ..mlp import MLP
from ..optimizer import KFAC
from ..rng import RunGenerator
from ..state import state_shapes
from . import checks, io
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .run_config import RunConfig, autoencoder, batch_size, make_optimizer
from .run_dir import (
    RUN_FILES,
    RunState,
    check_run_dir,
    check_same_data,
    checkpoint_payload,
    data_fingerprint,
    restore,
)
from .run_lock import RunLock
from .schedules import draw_minibatch, iterate_average

log = logging.getLogger(__name__)


def reconstruction_error(mlp: MLP, weights: Sequence[Any], X: Any, chunk: int = 5000) -> float:
    """Mean over cases of the squared error ‖x − x̂‖² summed over pixels (the paper's plots)."""
    total = 0.0
    for start in range(0, X.shape[0], chunk):
        Xc = X[start : start + chunk]
        pred = mlp.output.predict(mlp.network_output(weights, Xc))
        total += float(((pred - Xc) ** 2).sum())
    return total / X.shape[0]


def _checkpoint_budget(mlp: MLP, opt: Any) -> int:
    """Bytes a checkpoint of this run's network may declare for its arrays: twice what the
    weights, their average and the optimizer state hold in float64, plus 1 MiB."""
    shapes = [*mlp.shapes, *mlp.shapes]  # θ and its average
    if isinstance(opt, KFAC):
        shapes += [sh for v in state_shapes(mlp, opt.config.structure).values() for sh in v]
    else:
        shapes += mlp.shapes  # SGD's velocity
    return 2 * 8 * sum(math.prod(sh) for sh in shapes) + 2**20


def _iteration_seed(seed: int, k: int) -> int:
    return (seed * 1_000_003 + k) % (2**63)


def _evaluate(
    cfg: RunConfig, mlp: MLP, st: RunState, X_train: Any, X_test: Any
) -> dict[str, float]:
    raw = reconstruction_error(mlp, st.weights, X_train)
    avg = reconstruction_error(mlp, st.average, X_train)
    use_avg = avg <= raw
    best = st.average if use_avg else st.weights
    out = {"train_error": min(raw, avg), "train_error_raw": raw, "train_error_avg": avg}
    if X_test is not None and X_test.shape[0]:
        out["test_error"] = reconstruction_error(mlp, best, X_test)
    return out


def describe_data(label: str, origin: str, n_train: int, n_total: int) -> dict[str, Any]:
    """What a run trained on, for its log and figure: the data set's label and origin, and the
    number of training cases used (with "first N of M" when it is a subset of the set)."""
    used = (
        f"{label}; first {n_train:,} of {n_total:,} training cases" if n_train < n_total else label
    )
    return {"data": used, "data_origin": origin, "n_train_used": n_train}


def _first_rows(X: Any, n: int | None, option: str, what: str, label: str) -> Any:
    """The first ``n`` rows of X (all when None); ConfigError when X has fewer."""
    if n is None:
        return X
    if n > X.shape[0]:
        raise ConfigError(
            f"{option} {n} asks for more than the {X.shape[0]:,} {what} of {label}; use at most "
            f"{X.shape[0]}"
        )
    return X[:n]


def _subsets(cfg: RunConfig) -> tuple[Any, Any, dict[str, Any]]:
    from .data import load_dataset

    checks.data_dir(cfg.data_dir)  # a file, an unknown ~user, …: one line before any work
    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    label = ds.label or ds.name.upper()
    name = f"{ds.name.upper()} ({ds.origin})"
    X_train = _first_rows(ds.X_train, cfg.n_train, "--n-train", "training cases", name)
    X_test = _first_rows(ds.X_test, cfg.n_test, "--n-test", "test cases", name)
    return X_train, X_test, describe_data(label, ds.origin, X_train.shape[0], ds.X_train.shape[0])


def run_data_info(cfg: RunConfig) -> dict[str, Any]:
    """:func:`describe_data` of what ``cfg`` would train on (loads the data set, no training)."""
    return _subsets(cfg)[2]


def load_run_data(cfg: RunConfig, backend: Backend) -> tuple[Any, Any, dict[str, Any]]:
    """Training and test inputs of ``cfg.dataset`` on the backend (first n_train / n_test rows),
    and :func:`describe_data` of them. Asking for more rows than the set has is a ConfigError."""
    X_train, X_test, info = _subsets(cfg)
    return backend.asarray(X_train), backend.asarray(X_test), info


def run_experiment(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: tuple[Any, Any] | None = None,
    init_weights: Sequence[Any] | None = None,
    data_label: str = "data passed by the caller",
    allow_other_data: bool = False,
) -> list[dict[str, Any]]:
    """Train ``cfg.method`` on ``cfg.dataset``; write ``config.json``, ``log.jsonl``,
    ``checkpoint.npz`` and, when finished, ``result.json`` under ``out_dir``. Returns the log.

    A directory holding any of :data:`RUN_FILES` is never written into unless ``resume`` or
    ``overwrite`` says so; the directory must take files before anything is loaded or trained.
    One process at a time writes a run directory (:class:`RunLock`, held until this returns
    or raises); temporary files of a killed earlier writer are removed once the lock is held.
    Everything that can fail (settings, data, initial weights, the configuration's JSON) is
    checked before an earlier run's files are deleted.

    Args:
        resume: continue from ``out_dir/checkpoint.npz``, which must exist, with the same
            configuration but for :data:`MAY_CHANGE_ON_RESUME` (differences are named), on the
            same data (:func:`data_fingerprint`; differences are named).
        overwrite: start afresh even if ``out_dir`` holds a run (its files are deleted once the
            new run has its data and initial weights).
        data: (X_train, X_test) host or backend arrays, instead of loading ``cfg.dataset``.
        init_weights: θ₀ (e.g. a fixture's), instead of the sparse initialization from the seed.
        data_label: how the log names ``data`` when it is given.
        allow_other_data: let ``resume`` continue on data other than the checkpoint's (the
            log's next record says so).
    """
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ConfigError(f"the run directory must be a non-empty path, got {out_dir!r}")
    out = checks.run_dir(out_dir)
    if resume and overwrite:
        check_run_dir(out, resume, overwrite)  # the usage error, before anything is created
    io.require_writable_dir(out, "run directory")
    lock = RunLock(out).acquire()
    try:
        if lock.took_over:
            log.warning(
                "%s: taking over the lock left by %s (no longer running)", out, lock.took_over
            )
        io.remove_stale_temporaries(out, (*RUN_FILES, "config.json"))
        return _run_locked(
            cfg, out, resume, overwrite, progress, data, init_weights, data_label, allow_other_data
        )
    except KeyboardInterrupt as exc:  # Ctrl-C before the loop: the directory is as it was
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(str(out), None, None) from None
    finally:
        lock.release()


def _run_locked(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    overwrite: bool,
    progress: bool,
    data: tuple[Any, Any] | None,
    init_weights: Sequence[Any] | None,
    data_label: str,
    allow_other_data: bool,
) -> list[dict[str, Any]]:
    """:func:`run_experiment` once its directory's lock is held."""
    from tqdm.auto import tqdm

    ckpt_path, log_path = out / CHECKPOINT_NAME, out / "log.jsonl"
    earlier = check_run_dir(out, resume, overwrite)
    config_text = json.dumps(cfg.to_json(), indent=2)  # fails now, not after a deletion
    backend = get_backend(cfg.backend, cfg.dtype)
    mlp = autoencoder(cfg.dataset, cfg.layers)
    if data is None:
        X_train, X_test, data_info = _subsets(cfg)
    else:
        X_train, X_test = data
        data_info = describe_data(data_label, "given", X_train.shape[0], X_train.shape[0])
    fingerprint = data_fingerprint(X_train, X_test, data_info)
    X_train, X_test = (backend.asarray(d) if d is not None else None for d in (X_train, X_test))
    # The data are checked once here (finite, and valid targets: the autoencoder reconstructs
    # its input), so the loop's steps skip the per-batch checks (no GPU synchronization).
    mlp.check_inputs(X_train, X_train)
    if X_test is not None and X_test.shape[0]:
        mlp.check_inputs(X_test, X_test)
    opt = make_optimizer(cfg, mlp, backend)
    if cfg.diagnose_every is not None:  # refused now, not after hours of training
        check_diagnose_size(mlp, max(batch_size(cfg, cfg.iters, X_train.shape[0]), 1))
    gen = RunGenerator(backend.xp, cfg.seed, _iteration_seed)

    same_data = True
    if resume:
        payload = load_checkpoint(ckpt_path, max_bytes=_checkpoint_budget(mlp, opt))
        st = restore(payload, cfg, mlp, opt, backend, ckpt_path)
        same_data = check_same_data(payload.get("data"), fingerprint, ckpt_path, allow_other_data)
        try:
            gen.load_state_dict(payload.get("rng"))
        except ConfigError:  # a NumPy run's checkpoint on CuPy: said as such
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"checkpoint {ckpt_path}: its generator state is damaged ({exc})"
            ) from None
        log.info("resuming %s at iteration %d", out, st.k)
        if not same_data:
            log.warning("%s: resuming on other data than the checkpoint's, as asked", out)
    else:
        if init_weights is None:
            weights = mlp.init_sparse(cfg.seed, backend, replace=cfg.sparse_init_replace)
        else:
            mlp.check_weights([backend.asarray(W) for W in init_weights])
            weights = [backend.asarray(W) for W in init_weights]
        st = RunState(0, weights, [W.copy() for W in weights], opt.init_state(weights), 0.0, [])
        for name in earlier:  # --overwrite: the earlier run goes only once this one can start
            (out / name).unlink()
    io.write_text_atomic(out / "config.json", config_text)

    n = X_train.shape[0]
    saved = st.k if resume else None  # iteration of the last checkpoint on disk
    # A run with a time budget (the figures' SGD runs) counts optimizer seconds, not iterations.
    by_time = cfg.max_seconds is not None
    desc = f"{cfg.dataset}/{cfg.method}"
    if by_time:
        bar = tqdm(
            total=round(cfg.max_seconds, 1),
            initial=round(min(st.elapsed, cfg.max_seconds), 1),
            unit="s",
            disable=not progress,
            desc=desc,
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s{postfix}",
        )
    else:
        bar = tqdm(total=cfg.iters, initial=st.k, disable=not progress, desc=desc)
    try:
        while not cfg.is_done(st.k, st.elapsed):
            k = st.k + 1
            m = batch_size(cfg, k, n)
            idx = draw_minibatch(n, m, cfg.seed, k)
            Xb = X_train[backend.xp.asarray(idx)]
            rng = gen.for_iteration(k)
            t0 = time.perf_counter()
            weights, opt_state, info = opt.step(
                st.weights, st.opt_state, Xb, Xb, rng, validate=False
            )
            average = iterate_average(st.average, weights, k, cfg.average_start, cfg.average_decay)
            backend.synchronize()
            elapsed = st.elapsed + time.perf_counter() - t0
            st = RunState(k, weights, average, opt_state, elapsed, st.records)
            record = {
                "iteration": k,
                "time": elapsed,
                **{key: _scalar(v) for key, v in info.items()},
            }
            record["iteration"], record["batch_size"] = k, m
            if k == 1 or not same_data:
                record.update(data_info)
                if not same_data:
                    record["resumed_on_other_data"] = fingerprint
                    same_data = True
            done = cfg.is_done(k, elapsed)
            if k % cfg.eval_every == 0 or done or k == 1:
                record.update(_evaluate(cfg, mlp, st, X_train, X_test))
            if cfg.diagnose_every is not None and k % cfg.diagnose_every == 0:
                diag = diagnose_kfac(opt, st.weights, st.opt_state, Xb, Xb)  # not timed
                record.update({f"diag_{key}": value for key, value in diag.items()})
                bar.set_postfix(k=k, train_error=f"{record['train_error']:.4g}")
            st.records.append(record)
            if by_time:
                bar.update(round(min(elapsed, cfg.max_seconds) - bar.n, 3))
            else:
                bar.update(1)
            if k % cfg.checkpoint_every == 0 or done:
                save_checkpoint(ckpt_path, checkpoint_payload(cfg, opt, st, gen, fingerprint))
                io.write_jsonl_atomic(log_path, st.records)
                saved = k
        bar.close()
        io.write_jsonl_atomic(log_path, st.records)
        _write_result(out, cfg, st, data_info)
    except KFACError:
        io.write_jsonl_atomic(log_path, st.records)
        raise
    except KeyboardInterrupt:  # checkpoint and log stay the consistent pair of iteration `saved`
        under_way = st.k if cfg.is_done(st.k, st.elapsed) else st.k + 1
        raise Interrupted(str(out), under_way, saved) from None
    finally:
        bar.close()
    return st.records


def _write_result(out: Path, cfg: RunConfig, st: RunState, data_info: dict[str, Any]) -> None:
    """``result.json``: the configuration, the iterations, the time and the final errors."""
    final = next(r for r in reversed(st.records) if "train_error" in r)
    io.write_text_atomic(
        out / "result.json",
        json.dumps(
            {
                "config": cfg.to_json(),
                "iterations": st.k,
                "time": st.elapsed,
                **data_info,
                **{
                    k: final[k]
                    for k in ("train_error", "train_error_raw", "train_error_avg", "test_error")
                    if k in final
                },
            },
            indent=2,
        ),
    )


def _scalar(v: Any) -> Any:
    if isinstance(v, (int, str)) or v is None:
        return v
    f = float(to_numpy(v))
    return f if math.isfinite(f) else float("nan")
