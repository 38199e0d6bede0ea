"""Progress and cost per iteration of every curvature structure on a small deep autoencoder:
K-FAC's F̆⁻¹ (§4.2) and F̂⁻¹ (§4.3) against the dense F̃⁻¹ (§3) and exact natural gradient
(F + D_γ)⁻¹, all inside the same optimizer (§5 statistics, §6 damping, §7 α and μ).

The figure is the one of ``notebooks_src/06_exact_natural_gradient.py``, drawn to files: one
panel of training error against iteration for each ``--lam0`` (median over ``--seeds``, the
range shaded), and one bar panel of milliseconds per iteration. The problem: ``--cases``
synthetic CURVES images (``make_curves``, generator v1) pooled 28×28 → 4×4, and a 16-8-3-8-16
autoencoder (logistic hidden units, linear code, Bernoulli outputs; P = 339), the paper's
constants but λ0; mini-batches growing from 100 cases to all of them by half the run (§13).
Every run of a seed uses the same initialization, batches and random numbers; only the
structure differs. The error is the squared reconstruction error per case on all cases.

Cost per iteration: iteration k does the same work in every run of a structure (batch size,
inverse refresh, γ search), so for each k the fastest of that structure's runs is kept and the
mean over k is reported, which discards time a shared machine spent elsewhere.

Writes to ``--out`` (default ``figures_out/``) ``structures_compare.png``, ``.pdf`` and
``.json`` (every plotted number, the per-step times and the settings); files of an earlier run
there are not replaced without ``--overwrite``.

    python paper_figures/structures_compare.py   # 80 iterations, 4 structures, 2 λ0, 3 seeds: ~20 s
    python paper_figures/structures_compare.py --quick    # 30 iterations, one seed, a few seconds
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as common
import numpy as np

from kfac_ref.backend import get_backend
from kfac_ref.config import KFACConfig
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import autoencoder, checks, reconstruction_error
from kfac_ref.experiments.cli import ArgumentParser, HelpFormatter, run_script
from kfac_ref.experiments.data import downscale_images, make_curves
from kfac_ref.experiments.schedules import draw_minibatch, minibatch_size
from kfac_ref.optimizer import KFAC
from kfac_ref.structures import STRUCTURES

STEM = "structures_compare"
LAYERS = (16, 8, 3, 8, 16)
FIRST_BATCH = 100
CASE_BYTES = 8 * 3 * 28 * 28  # a case's 28×28 CURVES image and the pooling's work arrays
COLORS = {
    "full": "tab:green",
    "block_diagonal": "tab:blue",
    "block_tridiagonal": "tab:orange",
    "exact": "k",
}


def parse_args(argv: Sequence[str] | None) -> Any:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default="figures_out", help="directory for the PNG, PDF and JSON")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run in --out"
    )
    p.add_argument(
        "--quick", action="store_true", help="30 iterations, 500 cases, seed 0 only (a few seconds)"
    )
    p.add_argument(
        "--iters", type=int, default=None, help="iterations per run (default 80; quick 30)"
    )
    p.add_argument(
        "--cases", type=int, default=None, help="training cases (default 1000; quick 500)"
    )
    p.add_argument(
        "--seeds",
        type=checks.seed_arg,
        nargs="+",
        default=None,
        help="seeds, one run per structure each (default 0 1 2; quick 0)",
    )
    p.add_argument(
        "--lam0",
        type=float,
        nargs="+",
        default=[150.0, 0.01],
        help="initial λ of each damping regime (150 is the paper's; one error panel each)",
    )
    p.add_argument(
        "--structures",
        nargs="+",
        choices=list(STRUCTURES),
        default=list(STRUCTURES),
        help="curvature structures to compare",
    )
    p.add_argument(
        "--eval-every", type=int, default=5, help="evaluate the training error every N iterations"
    )
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    p.add_argument(
        "--formats",
        nargs="+",
        choices=["png", "pdf"],
        default=["png", "pdf"],
        help="figure file formats",
    )
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = p.parse_args(argv)
    args.iters = args.iters if args.iters is not None else (30 if args.quick else 80)
    args.cases = args.cases if args.cases is not None else (500 if args.quick else 1000)
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    for name in ("iters", "cases", "eval_every"):
        if getattr(args, name) < 1:
            raise ConfigError(
                f"--{name.replace('_', '-')} must be an integer ≥ 1, got {getattr(args, name)}"
            )
    if args.cases < FIRST_BATCH:
        raise ConfigError(
            f"--cases must be ≥ {FIRST_BATCH} (the first mini-batch), got {args.cases}"
        )
    if not all(np.isfinite(lam) and lam > 0 for lam in args.lam0):
        raise ConfigError(f"every --lam0 must be a number > 0, got {' '.join(map(str, args.lam0))}")
    if not 10 <= args.dpi <= 1200:
        raise ConfigError(f"--dpi must be in [10, 1200], got {args.dpi}")
    args.out = checks.expand_path(args.out, "--out")
    checks.memory(
        CASE_BYTES * args.cases,
        f"--cases {args.cases:,}",
        "use fewer --cases",
        checks.physical_memory(),
    )
    return args


def train(
    mlp: Any, X: np.ndarray, structure: str, lam0: float, seed: int, iters: int, eval_every: int
) -> dict[str, Any]:
    """One run: the training error at 0, eval_every, …, the wall time of each step, the last γ and
    λ."""
    backend = get_backend("numpy", "float64")
    n = X.shape[0]
    opt = KFAC(mlp, KFACConfig(structure=structure, lam0=lam0), backend)
    W = mlp.init_sparse(seed=seed, backend=backend)
    state, errors, seconds = opt.init_state(W), [reconstruction_error(mlp, W, X)], []
    for k in range(1, iters + 1):
        size = minibatch_size(k, FIRST_BATCH, n, k_full=max(1, iters // 2))
        idx = draw_minibatch(n, size, seed, 0, k)
        t0 = time.perf_counter()
        W, state, info = opt.step(W, state, X[idx], X[idx], np.random.default_rng([seed, 1, k]))
        seconds.append(time.perf_counter() - t0)
        if k % eval_every == 0 or k == iters:
            errors.append(reconstruction_error(mlp, W, X))
    return {"errors": errors, "step_seconds": seconds, "gamma": info["gamma"], "lam": info["lam"]}


def evaluated_iterations(iters: int, eval_every: int) -> list[int]:
    its = [0, *range(eval_every, iters + 1, eval_every)]
    return its if its[-1] == iters else [*its, iters]


def compare(args: Any) -> dict[str, Any]:
    """Every run, the median and range of the errors, and the cost per iteration of each
    structure."""
    X = downscale_images(make_curves(args.cases, np.random.default_rng(0), version=1), 28, 4)
    mlp = autoencoder("curves", list(LAYERS))
    runs = {
        lam0: {
            s: {n: train(mlp, X, n, lam0, s, args.iters, args.eval_every) for n in args.structures}
            for s in args.seeds
        }
        for lam0 in args.lam0
    }
    cost = {
        n: float(
            np.min(
                [runs[lam0][s][n]["step_seconds"] for lam0 in args.lam0 for s in args.seeds], axis=0
            ).mean()
        )
        for n in args.structures
    }
    curves = {}
    for lam0 in args.lam0:
        curves[lam0] = {}
        for n in args.structures:
            E = np.array([runs[lam0][s][n]["errors"] for s in args.seeds])
            curves[lam0][n] = {
                "median": np.median(E, axis=0),
                "min": E.min(axis=0),
                "max": E.max(axis=0),
            }
    return {
        "iterations": evaluated_iterations(args.iters, args.eval_every),
        "runs": runs,
        "curves": curves,
        "seconds_per_iteration": cost,
        "n_params": mlp.n_params,
        "layers": list(LAYERS),
        "data": f"{args.cases} CURVES images (make_curves v1, seed 0), 28×28 pooled to 4×4",
    }


def draw(args: Any, result: dict[str, Any]) -> list[Path]:
    import matplotlib.pyplot as plt

    its, cost = result["iterations"], result["seconds_per_iteration"]
    label = {n: f"{STRUCTURES[n].symbol} ({n})" for n in args.structures}
    fig, axes = plt.subplots(
        1, len(args.lam0) + 1, figsize=(4.4 * (len(args.lam0) + 1), 3.5), layout="constrained"
    )
    for ax, lam0 in zip(axes[:-1], args.lam0, strict=True):
        for n in args.structures:
            c = result["curves"][lam0][n]
            ax.semilogy(its, c["median"], color=COLORS[n], label=label[n])
            ax.fill_between(its, c["min"], c["max"], color=COLORS[n], alpha=0.15, lw=0)
        ax.set_title(f"λ0 = {lam0:g}: training error", fontsize=9)
        ax.set_xlabel("iteration")
    axes[0].set_ylabel(
        f"squared error per case (median, range of {len(args.seeds)} seed(s))", fontsize=8
    )
    axes[0].legend(fontsize=7)
    axes[-1].bar(
        [f"{STRUCTURES[n].symbol}\n{n}" for n in args.structures],
        [1e3 * cost[n] for n in args.structures],
        color=[COLORS[n] for n in args.structures],
    )
    axes[-1].tick_params(axis="x", labelsize=7)
    axes[-1].set_title("milliseconds per iteration", fontsize=9)
    fig.supxlabel(
        f"{'-'.join(map(str, LAYERS))} autoencoder (P = {result['n_params']}), {result['data']}; "
        f"seeds {' '.join(map(str, args.seeds))}; float64, NumPy",
        fontsize=8,
    )
    return common.save_figure(fig, Path(args.out), STEM, args.dpi, args.formats)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_agg()
    out = Path(args.out)
    names = [f"{STEM}.{ext}" for ext in (*args.formats, "json")]
    if not args.overwrite and (existing := [n for n in names if (out / n).exists()]):
        raise ConfigError(
            f"{out} already holds {', '.join(existing)} from an earlier run; pass --overwrite "
            "to replace them or choose another --out"
        )
    checks.output_dir(out, "--out")
    t0 = time.perf_counter()
    result = compare(args)
    paths = draw(args, result)
    settings = {
        k: getattr(args, k) for k in ("iters", "cases", "seeds", "lam0", "structures", "eval_every")
    }
    json_obj = {
        **result,
        "settings": settings,
        "seconds": time.perf_counter() - t0,
        "runs": {
            str(lam0): {str(s): r for s, r in by_seed.items()}
            for lam0, by_seed in result["runs"].items()
        },
        "curves": {str(lam0): c for lam0, c in result["curves"].items()},
    }
    paths.append(common.save_json(out / f"{STEM}.json", json_obj))
    for lam0 in args.lam0:
        for n in args.structures:
            print(
                f"λ0 = {lam0:<6g} {STRUCTURES[n].symbol} {n:18s} final error (median) "
                f"{result['curves'][lam0][n]['median'][-1]:.4f}"
            )
    for n in args.structures:
        print(
            f"{STRUCTURES[n].symbol} {n:18s} {1e3 * result['seconds_per_iteration'][n]:.2f} ms per "
            "iteration"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
