"""What τ2 = 1/4 (the paper text) does against τ2 = 1 (the released code) on the quick CURVES
problem: the fidelity fixture's 2000 cases and θ₀, 500 iterations, both structures, a few seeds.

τ2 is the share of the mini-batch on which the exact-Fisher products of the §7 quadratic model
(α, μ) and of ρ (§6.5) are computed. For each run this prints the training error (raw iterate)
at k = 300, 400, 500, the largest error after k = 300 relative to the lowest error reached before
it ("spike factor"), and at the worst spike the λ, γ, α and ρ of the iterations before it.

    python benchmarks/tau2_spikes.py --seeds 0 1 2 --out runs/tau2_spikes.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_kfac3 import run_ours  # noqa: E402

from kfac_ref.experiments import io  # noqa: E402
from kfac_ref.structures import FACTORED as STRUCTURES  # noqa: E402  (the paper-scale ones)


def spike_summary(records: Sequence[dict[str, Any]], after: int = 300) -> dict[str, Any]:
    """Errors at 300/400/500 and the worst rise of the raw error above its running minimum."""
    errs = [
        (r["iteration"], r["train_error_raw"])
        for r in records
        if r.get("train_error_raw") is not None
    ]
    best, worst = math.inf, (None, 1.0)
    for k, e in errs:
        if k > after and e / best > worst[1]:
            worst = (k, e / best)
        best = min(best, e)
    at = {k: e for k, e in errs}
    out: dict[str, Any] = {f"error_{k}": at.get(k) for k in (300, 400, 500)}
    out["spike_factor"], out["spike_at"] = worst[1], worst[0]
    if worst[0] is not None:
        window = [r for r in records if worst[0] - 10 <= r["iteration"] <= worst[0]]
        out["before_spike"] = [
            {
                key: r.get(key)
                for key in (
                    "iteration",
                    "lam",
                    "gamma",
                    "alpha",
                    "mu",
                    "rho",
                    "model_change",
                    "loss",
                )
            }
            for r in window
        ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="seeds of the mini-batches and samples"
    )
    p.add_argument("--iters", type=int, default=500, help="iterations per run")
    p.add_argument(
        "--structures",
        nargs="+",
        default=list(STRUCTURES),
        choices=list(STRUCTURES),
        help="curvature structures (kfac_ref.structures)",
    )
    p.add_argument("--out", default=None, help="write every run's summary here as JSON")
    args = p.parse_args(argv)
    rows = []
    for structure in args.structures:
        for constants in ("code", "paper"):
            for seed in args.seeds:
                rec = run_ours(
                    args.iters, structure, progress=False, constants=constants, seed=seed
                )
                row = {
                    "structure": structure,
                    "tau2": 1.0 if constants == "code" else 0.25,
                    "seed": seed,
                    "seconds": rec[-1]["time"],
                    **spike_summary(rec),
                }
                rows.append(row)
                print(
                    f"{structure:17s} τ2 = {row['tau2']:<4} seed {seed}: error 300/400/500 = "
                    f"{row['error_300']:.4g} / {row['error_400']:.4g} / {row['error_500']:.4g}, "
                    f"worst rise ×{row['spike_factor']:.2f} at k = {row['spike_at']}",
                    flush=True,
                )
    if args.out:
        io.write_text_atomic(Path(args.out), json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
