"""The deep-autoencoder figure of the paper (arXiv §13, Figs. 10–11; spec §10, §12).

Training error (squared reconstruction error per case, minimum of the averaged and raw
iterates) against iterations and against seconds, log scale, for K-FAC block-diagonal, K-FAC
block-tridiagonal (both with momentum, §7) and SGD with Nesterov momentum (the Sutskever et al.
2013 schedule, learning rate picked from a small grid), one pair of panels per data set.

Each run is done by :func:`kfac_ref.experiments.run_experiment` in ``--runs DIR/<data>/<method>``;
a finished run with the same settings is reused, an unfinished one is resumed. The figure is
drawn only from the runs' logs.

    python paper_figures/autoencoders.py --quick                 # CURVES, minutes on a laptop CPU
    python paper_figures/autoencoders.py --datasets curves mnist faces --backend cupy   # full (GPU)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import save_figure  # noqa: E402

from kfac_ref import io  # noqa: E402
from kfac_ref.experiments import METHODS, RunConfig, finished_log, run_experiment  # noqa: E402

LABELS = {
    "kfac-blockdiag": "K-FAC (block-diagonal)",
    "kfac-tridiag": "K-FAC (block-tridiagonal)",
    "sgd-momentum": "SGD + Nesterov momentum",
}
STYLES = {"kfac-blockdiag": "C0-", "kfac-tridiag": "C3-", "sgd-momentum": "C2--"}

#: --quick: a subset of the training set and a schedule that reaches it sooner; same code.
QUICK = {"n_train": 2000, "n_test": 1000, "m1": 250, "k_full": 100, "iters": 500, "eval_every": 10}
#: SGD learning-rate grid per data set (the paper tuned it; spec §12).
SGD_LR_GRID = {"curves": [0.02, 0.05, 0.1], "mnist": [0.01, 0.02, 0.05], "faces": [0.001, 0.002, 0.005]}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["curves"], choices=["curves", "mnist", "faces"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--quick", action="store_true", help=f"small settings for a CPU: {QUICK}")
    p.add_argument("--iters", type=int, default=None, help="iterations per run (default 1000; quick 500)")
    p.add_argument("--n-train", type=int, default=None, help="first N training cases only")
    p.add_argument("--sgd-lr", type=float, nargs="+", default=None, help="SGD learning-rate grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--runs", default="runs", help="directory of the training runs (reused when finished)")
    p.add_argument("--out", default="figures_out", help="directory for the figure files")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run_configs(args: argparse.Namespace, dataset: str, method: str) -> list[RunConfig]:
    """The runs behind one curve: one config, or one per SGD learning rate of the grid."""
    base: dict[str, Any] = {"iters": 1000, "eval_every": 25}
    if args.quick:
        base.update(QUICK)
    if args.iters is not None:
        base["iters"] = args.iters
    if args.n_train is not None:
        base["n_train"] = args.n_train
    common = dict(dataset=dataset, method=method, seed=args.seed, backend=args.backend,
                  dtype=args.dtype, data_dir=args.data_dir, **base)
    if method != "sgd-momentum":
        return [RunConfig(**common)]
    grid = args.sgd_lr or SGD_LR_GRID[dataset]
    return [RunConfig(sgd_lr=lr, **common) for lr in grid]


def run_dir(args: argparse.Namespace, cfg: RunConfig) -> Path:
    tag = "quick" if args.quick else "full"
    name = cfg.method if cfg.method != "sgd-momentum" else f"{cfg.method}-lr{cfg.sgd_lr:g}"
    return Path(args.runs) / f"{cfg.dataset}-{tag}-n{cfg.n_train or 'all'}-s{cfg.seed}" / name


def get_log(args: argparse.Namespace, cfg: RunConfig) -> list[dict[str, Any]]:
    """A finished run's log, running (or resuming) it first if needed."""
    out = run_dir(args, cfg)
    records = finished_log(cfg, out)
    if records is None:
        resume = (out / "checkpoint.pkl").exists()
        run_experiment(cfg, out, resume=resume, overwrite=not resume, progress=not args.no_progress)
        records = finished_log(cfg, out)
    return records


def curve(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """(iteration, seconds, training error) at the evaluated iterations of a log."""
    pts = [r for r in records if r.get("train_error") is not None]
    return {
        "iteration": [r["iteration"] for r in pts],
        "time": [r["time"] for r in pts],
        "train_error": [r["train_error"] for r in pts],
    }


def collect(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """For each data set and method the plotted curve (best SGD learning rate by final error)."""
    data: dict[str, dict[str, Any]] = {}
    for dataset in args.datasets:
        data[dataset] = {}
        for method in args.methods:
            best = None
            for cfg in run_configs(args, dataset, method):
                c = curve(get_log(args, cfg))
                c["sgd_lr"] = cfg.sgd_lr if method == "sgd-momentum" else None
                if best is None or c["train_error"][-1] < best["train_error"][-1]:
                    best = c
            data[dataset][method] = best
    return data


def draw(data: dict[str, dict[str, Any]], out_dir: Path, stem: str) -> list[Path]:
    """Two panels per data set (error vs iterations, vs seconds); PNG + PDF, written atomically."""
    n = len(data)
    fig, axes = plt.subplots(n, 2, figsize=(10, 3.6 * n), squeeze=False)
    for row, (dataset, curves) in enumerate(data.items()):
        for col, xkey in enumerate(("iteration", "time")):
            ax = axes[row, col]
            for method, c in curves.items():
                label = LABELS[method] + (f" (lr {c['sgd_lr']:g})" if c.get("sgd_lr") else "")
                ax.plot(c[xkey], c["train_error"], STYLES[method], label=label, lw=1.5)
            ax.set_yscale("log")
            ax.set_xlabel("iterations" if xkey == "iteration" else "seconds")
            ax.set_ylabel("training error")
            ax.set_title(f"{dataset.upper()}: error vs {'iterations' if xkey == 'iteration' else 'time'}")
            ax.grid(True, which="both", alpha=0.3)
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = collect(args)
    out_dir = Path(args.out)
    stem = "autoencoders_" + "_".join(args.datasets) + ("_quick" if args.quick else "")
    paths = draw(data, out_dir, stem)
    io.write_text_atomic(out_dir / f"{stem}.json", json.dumps(data, indent=1))
    for dataset, curves in data.items():
        for method, c in curves.items():
            print(f"{dataset:7s} {method:15s} final training error {c['train_error'][-1]:.4f} "
                  f"after {c['iteration'][-1]} iterations, {c['time'][-1]:.1f} s")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
