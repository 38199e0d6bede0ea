"""Wall time for K-FAC (block-tridiagonal) and SGD-momentum to reach a training error.

Trains each method on a §13 autoencoder with :func:`kfac_ref.experiments.run_experiment` and
reports, from the run's log, the optimizer time (evaluation excluded) and the iteration at which
the training error (the paper's: squared error per case, minimum of averaged and raw iterates)
first reaches ``--target``. Runs stop early once the target is reached.

    # the GPU target: < 60 s
    python benchmarks/time_to_error.py --dataset mnist --target 1.0 --backend cupy
    python benchmarks/time_to_error.py --dataset curves --target 0.1 --backend cupy
    # CPU-sized
    python benchmarks/time_to_error.py --dataset curves --target 1.0 \\
        --n-train 2000 --m1 250 --k-full 100
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kfac_ref.backend import KNOWN_BACKENDS
from kfac_ref.experiments import RunConfig, io, run_experiment


def first_crossing(records: Sequence[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluated record whose training error is ≤ target (None if never)."""
    for r in records:
        err = r.get("train_error")
        if err is not None and err <= target:
            return r
    return None


def time_to_target(cfg: RunConfig, target: float, out: Path) -> dict[str, Any]:
    """Run ``cfg`` until its training error reaches ``target`` or ``cfg.iters`` is done."""
    records = _run_until(cfg, out, target)
    hit = first_crossing(records, target)
    final = next(r for r in reversed(records) if "train_error" in r)
    return {
        "method": cfg.method,
        "reached": hit is not None,
        "iteration": hit["iteration"] if hit else None,
        "seconds": hit["time"] if hit else None,
        "final_iteration": final["iteration"],
        "final_train_error": final["train_error"],
        "final_seconds": final["time"],
    }


def _run_until(cfg: RunConfig, out: Path, target: float) -> list[dict[str, Any]]:
    """Train in chunks of ``eval_every`` iterations (resuming), stopping once target is reached."""
    k = 0
    records: list[dict[str, Any]] = []
    while k < cfg.iters:
        k = min(k + cfg.eval_every, cfg.iters)
        chunk = RunConfig(**{**cfg.to_json(), "iters": k})
        records = run_experiment(
            chunk, out, resume=k > cfg.eval_every, overwrite=k <= cfg.eval_every, progress=False
        )
        if first_crossing(records, target) is not None:
            break
    return records


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=["curves", "mnist", "faces"], default="mnist")
    p.add_argument("--target", type=float, default=1.0, help="training error to reach")
    p.add_argument("--methods", nargs="+", default=["kfac-tridiag", "sgd-momentum"])
    p.add_argument("--max-iters", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--m1", type=int, default=1000)
    p.add_argument("--k-full", type=int, default=500)
    p.add_argument("--sgd-lr", type=float, default=0.02)
    p.add_argument("--backend", choices=KNOWN_BACKENDS, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="save the table as JSON")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            cfg = RunConfig(
                dataset=args.dataset,
                method=method,
                iters=args.max_iters,
                seed=args.seed,
                backend=args.backend,
                dtype="float32",
                eval_every=args.eval_every,
                n_train=args.n_train,
                n_test=0,
                m1=args.m1,
                k_full=args.k_full,
                sgd_lr=args.sgd_lr,
                checkpoint_every=args.eval_every,
                data_dir=args.data_dir,
            )
            rows.append(time_to_target(cfg, args.target, Path(tmp) / method))
    print(
        f"{args.dataset}, target training error {args.target}, backend {args.backend or 'default'}"
    )
    print(f"{'method':15s} {'reached':>8s} {'iteration':>10s} {'seconds':>9s} {'final error':>12s}")
    for r in rows:
        it = r["iteration"] if r["reached"] else "-"
        sec = f"{r['seconds']:.1f}" if r["reached"] else "-"
        print(
            f"{r['method']:15s} {str(r['reached']):>8s} {it!s:>10s} {sec:>9s} "
            f"{r['final_train_error']:>12.4f}"
        )
    if args.json:
        io.write_text_atomic(args.json, json.dumps({"args": vars(args), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
