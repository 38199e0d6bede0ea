"""Progress per iteration and cost per iteration of every curvature structure on a small
autoencoder: F̆⁻¹ and F̂⁻¹ (§4) against F̃⁻¹ (§3, ``"full"``) and exact natural gradient
(``"exact"``), all with the same damping and §6–§7 machinery.

The problem is small enough for dense P×P matrices: the CURVES fixture's 2000 training images
(``tests/data/fidelity_curves2000``) average-pooled 7×7 to 4×4 = 16 pixels, and a
16-8-3-8-16 autoencoder (logistic hidden units, linear code, Bernoulli outputs; P = 339).
Each method is trained by :func:`kfac_ref.experiments.run_experiment` with the same seed and
the released code's constants (τ2 = 1), mini-batches growing from 250 to all 2000 cases by
iteration 50, λ0 = ``--lam0``. Printed: the training error (squared error per case) at a few
iterations and the optimizer's seconds per iteration.

The network is the one of :mod:`kfac_ref.experiments.structures_compare` (drawn by
``paper_figures/structures_compare.py``, discussed in notebook 06); this script runs it through
the training command's loop (:func:`~kfac_ref.experiments.run_experiment`) on real CURVES
images, so it also times what ``python -m kfac_ref train`` adds around each step.

    python benchmarks/structures_compare.py            # 100 iterations, about a minute on one core
    python benchmarks/structures_compare.py --iters 30 --out compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from kfac_ref.experiments import RunConfig, run_experiment
from kfac_ref.experiments import structures_compare as experiment
from kfac_ref.structures import STRUCTURES

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "fidelity_curves2000" / "data.npz"
LAYERS = list(experiment.LAYERS)


def pooled_curves() -> numpy.ndarray:
    """The fixture's training images, 28×28 → 4×4 by 7×7 means (values stay in [0, 1])."""
    X = numpy.load(FIXTURE)["X_train"].astype(numpy.float64)
    return X.reshape(-1, 4, 7, 4, 7).mean(axis=(2, 4)).reshape(-1, 16)


def compare(
    iters: int, seed: int = 0, dtype: str = "float64", lam0: float = 150.0
) -> list[dict[str, Any]]:
    """One row per structure: the training error at each evaluation and seconds per iteration."""
    X = pooled_curves()
    rows = []
    for cls in STRUCTURES.values():
        cfg = RunConfig(
            dataset="curves",
            method=cls.method,
            iters=iters,
            seed=seed,
            backend="numpy",
            dtype=dtype,
            eval_every=max(1, iters // 4),
            layers=LAYERS,
            m1=250,
            k_full=50,
            average_start=iters + 1,
            checkpoint_every=iters,
            kfac={"lam0": lam0},
        )
        with tempfile.TemporaryDirectory() as out:
            log = run_experiment(
                cfg, out, progress=False, data=(X, None), data_label="CURVES fixture, 4×4 pooled"
            )
        rows.append(
            {
                "structure": cls.name,
                "symbol": cls.symbol,
                "errors": {r["iteration"]: r["train_error"] for r in log if "train_error" in r},
                "seconds_per_iteration": log[-1]["time"] / len(log),
            }
        )
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    its = list(rows[0]["errors"])
    head = "| structure | " + " | ".join(f"error at it. {k}" for k in its) + " | s / iteration |"
    lines = [head, "|---" * (len(its) + 2) + "|"]
    for r in rows:
        errs = " | ".join(f"{r['errors'][k]:.4g}" for k in its)
        lines.append(
            f"| {r['symbol']} (`{r['structure']}`) | {errs} | {r['seconds_per_iteration']:.3g} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--lam0",
        type=float,
        default=150.0,
        help="initial λ (the paper's 150; smaller: less damping)",
    )
    p.add_argument("--out", default=None, help="write the rows here as JSON")
    args = p.parse_args(argv)
    rows = compare(args.iters, args.seed, lam0=args.lam0)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
