"""Command line: ``python -m kfac_ref`` (or ``kfac-ref``). Orchestration only.

Subcommands:
  train    train a §13 autoencoder with K-FAC (block-diagonal / block-tridiagonal) or SGD
  compare  print the errors of F̃, F̆, F̂ (and inverses) vs the exact F for a small random net
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from .errors import KFACError


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .experiments import AUTOENCODERS, METHODS

    p = sub.add_parser("train", help="train a deep autoencoder of §13")
    p.add_argument("--dataset", choices=sorted(AUTOENCODERS), default="curves")
    p.add_argument("--method", choices=METHODS, default="kfac-tridiag")
    p.add_argument("--iters", type=int, default=1000, help="number of iterations (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                   help="array backend (default: $KFAC_REF_BACKEND or numpy)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--eval-every", type=int, default=25, help="evaluate the training error every N iterations")
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="custom widths d_0 … d_ℓ (default: the paper's architecture for --dataset)")
    p.add_argument("--n-train", type=int, default=None, help="use only the first N training cases")
    p.add_argument("--n-test", type=int, default=None, help="use only the first N test cases")
    p.add_argument("--m1", type=int, default=1000, help="K-FAC's first mini-batch size (default 1000)")
    p.add_argument("--k-full", type=int, default=500, help="iteration at which the batch is the whole set")
    p.add_argument("--sgd-lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument("--sgd-batch", type=int, default=None, help="SGD mini-batch (default 250 CURVES, 500 others)")
    p.add_argument("--constants", choices=["code", "paper"], default="code",
                   help="where the paper's text and the authors' released code differ (τ2), whose "
                        "values to use: 'code' (τ2 = 1, as the published curves) or 'paper' (τ2 = 1/4)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop once the optimizer time reaches this many seconds (default: no limit)")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--data-dir", default=None, help="data directory (default $KFAC_REF_DATA_DIR or the cache)")
    p.add_argument("--kfac", action="append", default=[], metavar="NAME=VALUE",
                   help="override a KFACConfig field, e.g. --kfac lam0=100 --kfac T3=10 (repeatable)")
    p.add_argument("--out", required=True, help="run directory (config.json, log.jsonl, checkpoint.pkl)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_overrides(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--kfac expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _run_train(args: argparse.Namespace) -> int:
    from .experiments import RunConfig, run_experiment

    cfg = RunConfig(
        dataset=args.dataset, method=args.method, iters=args.iters, seed=args.seed,
        backend=args.backend, dtype=args.dtype, eval_every=args.eval_every,
        layers=args.layers, n_train=args.n_train, n_test=args.n_test, m1=args.m1, k_full=args.k_full,
        sgd_lr=args.sgd_lr, sgd_batch=args.sgd_batch, checkpoint_every=args.checkpoint_every,
        data_dir=args.data_dir, kfac=_parse_overrides(args.kfac), constants=args.constants,
        max_seconds=args.max_seconds,
    )
    records = run_experiment(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                             progress=not args.no_progress)
    final = next(r for r in reversed(records) if "train_error" in r)
    print(f"{cfg.dataset} {cfg.method}: iteration {final['iteration']}, "
          f"training error {final['train_error']:.4f}, {records[-1]['time']:.1f} s")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="errors of F̃, F̆, F̂ vs the exact Fisher on a small random net")
    p.add_argument("--layers", type=int, nargs="+", default=[8, 6, 6, 6, 4])
    p.add_argument("--activation", default="tanh")
    p.add_argument("--output", default="softmax", choices=["bernoulli", "gaussian", "softmax"])
    p.add_argument("--cases", type=int, default=200)
    p.add_argument("--gamma", type=float, default=1e-3, help="factored Tikhonov damping γ (§6.3)")
    p.add_argument("--seed", type=int, default=0)


def _run_compare(args: argparse.Namespace) -> int:
    import numpy

    from .compare import compare_fisher
    from .mlp import MLP

    mlp = MLP(args.layers, args.activation, args.output)
    weights = mlp.init_gaussian(args.seed)
    X = numpy.random.default_rng(args.seed).standard_normal((args.cases, args.layers[0]))
    result = compare_fisher(mlp, weights, X, gamma=args.gamma)
    print(f"{mlp}, {args.cases} cases, γ = {args.gamma}")
    print(result.table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kfac-ref", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_compare(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return {"train": _run_train, "compare": _run_compare}[args.command](args)
    except KFACError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
