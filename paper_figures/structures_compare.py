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

import _output as output
import numpy as np

from kfac_ref.errors import ConfigError
from kfac_ref.experiments import checks
from kfac_ref.experiments import structures_compare as experiment
from kfac_ref.experiments.cli import ArgumentParser, HelpFormatter
from kfac_ref.experiments.exit_status import run_script
from kfac_ref.experiments.structures_compare import FIRST_BATCH, LAYERS
from kfac_ref.structures import STRUCTURES

STEM = "structures_compare"
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


def compare(args: Any) -> dict[str, Any]:
    """Every run, the median and range of the errors, and the cost per iteration of each
    structure (:func:`kfac_ref.experiments.structures_compare.compare`)."""
    return experiment.compare(
        args.cases, args.structures, args.seeds, args.lam0, args.iters, args.eval_every
    )


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
    return output.save_figure(fig, Path(args.out), STEM, args.dpi, args.formats)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output.use_agg()
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
    paths.append(output.save_json(out / f"{STEM}.json", json_obj))
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
