"""Figure 9 of the paper (§13): how K-FAC's per-iteration progress depends on the mini-batch size m.

On the MNIST deep autoencoder, three methods each train at several *fixed* mini-batch sizes:
block-diagonal K-FAC with momentum (§7), block-diagonal K-FAC without momentum (δ = αΔ, μ = 0),
and SGD with Nesterov momentum. Training error (squared error per case, the minimum of the raw
and averaged iterates, as the released code reports) is drawn against iterations and against
training cases processed (Σ m over the iterations), one column per method. The paper's finding:
"the per-iteration rate of progress of K-FAC tends to a superlinear function of m" with
momentum, linear or slightly sublinear without it, and much less dependent on m for the baseline;
this is what motivates the exponentially growing m of the main experiments.

The finding in numbers (``finding`` in the JSON, printed): for each method, a target error (the
highest final error among its m, so every m reaches it) and the first evaluated iteration k(m)
at which each m reaches it. Progress per iteration is taken as 1/k(m) and fitted as ∝ m^p
(least squares on log k against log m): p > 1 is superlinear in m, p ≈ 1 linear, p ≈ 0 no
dependence. Evaluations every ``--eval-every`` iterations make k(m) coarse; the JSON keeps it.

Sizes and length. The paper's values of m for Fig. 9 are not in the stored text of the paper;
the defaults, m ∈ {2000, 4000, 6000} for every method, are a choice: three sizes a factor of 3
apart, large enough that K-FAC's statistics are good, small enough for a 2-core CPU. The default
length is 200 iterations (the paper ran longer on a GPU; ``--iters``). SGD uses one learning
rate (``--sgd-lr``) at every m, as the question is how progress scales with m at fixed settings.

Runs are :func:`kfac_ref.experiments.run_experiment` run directories under ``--runs``, reused
when finished and resumed when not, with the same rules as ``autoencoders.py`` (whose run
handling this script uses); a K-FAC-without-momentum run at some m is the same run as the
candidate of that m in ``autoencoders.py``'s fixed-m grid, and is shared.

    python paper_figures/minibatch_size.py --data-dir DIR --quick   # 2000 digits, minutes
    python paper_figures/minibatch_size.py --data-dir DIR           # 60,000 digits, about an hour
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _output import save_figure  # noqa: E402
from autoencoders import LABELS, curve, get_log  # noqa: E402
from autoencoders import QUICK as FIGS_10_11_QUICK  # noqa: E402

from kfac_ref.backend import KNOWN_BACKENDS, KNOWN_DTYPES  # noqa: E402
from kfac_ref.experiments import RunConfig, io, run_data_info  # noqa: E402
from kfac_ref.experiments.cli import ArgumentParser  # noqa: E402
from kfac_ref.experiments.exit_status import run_script  # noqa: E402

METHODS = ("kfac-blockdiag", "kfac-blockdiag-nomomentum", "sgd-momentum")
#: --quick shares autoencoders.py --quick's problem (2000 cases), so their runs can be shared
QUICK = {**FIGS_10_11_QUICK, "iters": 40, "eval_every": 2, "m": [250, 500, 1000]}
FULL = {"iters": 200, "eval_every": 10, "m": [2000, 4000, 6000]}
SGD_LR = 0.02  # the middle of autoencoders.py's MNIST grid


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"small settings: {QUICK} (default {FULL})")
    p.add_argument("--m", type=int, nargs="+", default=None, help="the fixed mini-batch sizes")
    p.add_argument("--iters", type=int, default=None, help="iterations of every run")
    p.add_argument("--eval-every", type=int, default=None, help="evaluate every N iterations")
    p.add_argument("--n-train", type=int, default=None, help="first N training cases only")
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="custom widths d_0 … d_ℓ (default: the paper's MNIST autoencoder)",
    )
    p.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods (columns)"
    )
    p.add_argument("--sgd-lr", type=float, default=SGD_LR, help="SGD's learning rate at every m")
    p.add_argument("--seed", type=int, default=0, help="seed of θ₀, mini-batches and targets")
    p.add_argument("--backend", choices=KNOWN_BACKENDS, default=None, help="array backend")
    p.add_argument("--dtype", choices=KNOWN_DTYPES, default="float32", help="training precision")
    p.add_argument("--data-dir", default=None, help="data directory holding the MNIST files")
    p.add_argument("--runs", default="runs", help="directory of the training runs")
    p.add_argument(
        "--overwrite", action="store_true", help="retrain in place runs of other settings"
    )
    p.add_argument("--out", default="figures_out", help="directory for the figure files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = p.parse_args(argv)
    scale = QUICK if args.quick else FULL
    args.m = args.m if args.m is not None else scale["m"]
    args.iters = args.iters if args.iters is not None else scale["iters"]
    args.eval_every = args.eval_every if args.eval_every is not None else scale["eval_every"]
    for name, low in (("iters", 1), ("eval_every", 1), ("seed", 0)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be ≥ {low}, got {getattr(args, name)}")
    if min(args.m) < 1 or len(set(args.m)) != len(args.m):
        p.error(f"--m must list distinct sizes ≥ 1, got {args.m}")
    if not (math.isfinite(args.sgd_lr) and args.sgd_lr > 0):
        p.error(f"--sgd-lr must be a number > 0, got {args.sgd_lr:g}")
    args.run_actions = []
    return args


def run_config(args: argparse.Namespace, method: str, m: int) -> RunConfig:
    """The run of ``method`` at the fixed mini-batch size ``m``."""
    scale = QUICK if args.quick else FULL
    n_train = args.n_train if args.n_train is not None else scale.get("n_train")
    batch = {"sgd_batch": m, "sgd_lr": args.sgd_lr} if method == "sgd-momentum" else {}
    return RunConfig(
        dataset="mnist",
        method=method,
        iters=args.iters,
        seed=args.seed,
        backend=args.backend,
        dtype=args.dtype,
        eval_every=args.eval_every,
        n_train=n_train,
        n_test=scale.get("n_test"),
        layers=args.layers,
        m1=scale.get("m1", RunConfig.m1),
        k_full=scale.get("k_full", RunConfig.k_full),
        data_dir=args.data_dir,
        kfac_batch=None if method == "sgd-momentum" else m,
        **batch,
    )


def with_cases(c: dict[str, list[float]], m: int, n_train: int) -> dict[str, Any]:
    """The curve with the training cases processed at each evaluated iteration (k · m)."""
    return {**c, "cases": [k * min(m, n_train) for k in c["iteration"]]}


def progress_exponent(curves: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The iterations k(m) each m needs to reach the highest final error among the m, and the
    exponent p of 1/k(m) ∝ m^p fitted by least squares on logs (None when not every m's
    evaluated errors reach the target, or when fewer than two m are given)."""
    target = max(c["train_error"][-1] for c in curves.values())
    first = {}
    for m, c in curves.items():
        hits = [k for k, e in zip(c["iteration"], c["train_error"], strict=True) if e <= target]
        first[m] = hits[0] if hits else None
    out: dict[str, Any] = {"target_error": target, "iterations_to_target": first, "exponent": None}
    ms = sorted(m for m in first if first[m])
    if len(ms) >= 2:
        x = np.log(np.array(ms, dtype=float))
        y = -np.log(np.array([first[m] for m in ms], dtype=float))
        out["exponent"] = float(np.polyfit(x, y, 1)[0])
    return out


def collect(args: argparse.Namespace) -> dict[str, Any]:
    probe = run_config(args, args.methods[0], args.m[0])
    data = run_data_info(probe)
    print(f"mnist: {data['data']}")
    n_train = data["n_train_used"]
    out: dict[str, Any] = {**data, "m": args.m, "iters": args.iters, "methods": {}}
    for method in args.methods:
        curves = {}
        for m in args.m:
            cfg = run_config(args, method, m)
            curves[m] = with_cases(curve(get_log(args, cfg, data)), m, n_train)
        out["methods"][method] = {"curves": curves, "finding": progress_exponent(curves)}
    return out


def draw(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    methods = result["methods"]
    fig, axes = plt.subplots(2, len(methods), figsize=(5 * len(methods), 8), squeeze=False)
    for col, (method, entry) in enumerate(methods.items()):
        for row, xkey in enumerate(("iteration", "cases")):
            ax = axes[row, col]
            for j, (m, c) in enumerate(sorted(entry["curves"].items())):
                ax.plot(c[xkey], c["train_error"], f"C{j}-", lw=1.5, label=f"m = {m:,}")
            ax.set_yscale("log")
            ax.set_xlabel("iterations" if xkey == "iteration" else "training cases processed")
            if xkey == "cases":  # six-digit tick labels would run into each other
                ax.ticklabel_format(axis="x", style="sci", scilimits=(3, 3), useMathText=True)
            ax.set_ylabel("training error (squared error per case)")
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                p = entry["finding"]["exponent"]
                fit = "" if p is None else f"\nprogress per iteration ∝ m^{p:.2f}"
                ax.set_title(f"{LABELS[method]}{fit}", fontsize=9)
            ax.legend(fontsize=8)
    fig.suptitle(f"MNIST autoencoder, fixed mini-batch sizes — {result['data']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = io.require_writable_dir(args.out, "--out")
    io.require_writable_dir(args.runs, "--runs")
    result = collect(args)
    stem = "fig9_minibatch_size" + ("_quick" if args.quick else "")
    paths = draw(result, out_dir, stem)
    io.write_text_atomic(out_dir / f"{stem}.json", json.dumps(result, indent=1))
    for method, entry in result["methods"].items():
        f = entry["finding"]
        ks = ", ".join(f"m = {m}: {k}" for m, k in f["iterations_to_target"].items())
        p = "—" if f["exponent"] is None else f"{f['exponent']:.2f}"
        print(
            f"{method:26s} iterations to reach {f['target_error']:.4g}: {ks}; "
            f"progress per iteration ∝ m^{p}"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
