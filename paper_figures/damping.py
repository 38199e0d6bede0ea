"""The damping claims of §6 (arXiv §6.2–§6.6, §7): one-step proposals against γ, and one-at-a-time
ablations of K-FAC's damping pieces.

(a) One step, on a partially trained autoencoder (the "defaults" run below, at its last
checkpoint: weights, running statistics, λ). On one mini-batch (the size the run's schedule
gives at the next iteration, drawn with ``--seed``), for each γ of a log grid: the change of
the objective h(θ + δ) − h(θ) on the mini-batch and of the quadratic model M(δ) − M(0) (the
exact Fisher on the whole mini-batch, the run's λ + η), for the raw proposal δ = Δ (α = 1) and
the re-scaled δ = αΔ (α minimizing M along Δ, §6.4; no momentum term, so the re-scaling alone is
measured), with Δ = −(damped F̆)⁻¹∇h for three dampings of the block-diagonal F̆: factored
Tikhonov with the trace-norm π_i (§6.3), factored with π_i = 1, and exact Tikhonov
(F̆ + γ²I)⁻¹ (eqn. 6; γ² is the Tikhonov part of the factored damping, so all three share the
γ axis, and at γ = √(λ + η) the exact one is eqn. 6 with the model's own λ). float64.

(b) Training curves (raw iterate's training error against iterations and optimizer seconds)
of block-diagonal K-FAC with all pieces, and with one piece switched off at a time
(``KFACConfig``: use_rescaling, use_momentum, adapt_gamma, adapt_lambda, pi, tikhonov), plus
plain Tikhonov damping with a single λ ((F̆ + (λ+η)I)⁻¹: tikhonov="exact", adapt_gamma=False).
Each run is a resumable run directory under ``--runs`` (:func:`kfac_ref.experiments.run_experiment`;
a finished run is reused, an unfinished one resumed). A table gives the errors at fixed iterations.

The JSON holds every plotted number and, for each of the four claims of §6 (re-scaling makes the
proposals useful; a single Tikhonov λ is not enough; factored beats exact Tikhonov; the
trace-norm π_i beats π_i = 1), the numbers it is judged on and whether it reproduces here.

    python paper_figures/damping.py --quick                 # CURVES, 2000 cases, 150 iterations
    python paper_figures/damping.py                         # the same problem, 300 iterations
                                                            # (resumes the --quick runs)
    python paper_figures/damping.py --scale mnist --data-dir DIR   # MNIST, first 10,000 cases
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from _output import save_figure, save_json  # noqa: E402
from autoencoders import why_not_resumable  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    NullFormatter,
    SymmetricalLogLocator,
)

from kfac_ref.backend import KNOWN_BACKENDS, KNOWN_DTYPES, get_backend, to_numpy  # noqa: E402
from kfac_ref.errors import ConfigError  # noqa: E402
from kfac_ref.experiments import (  # noqa: E402
    RUN_FILES,
    RunConfig,
    autoencoder,
    batch_size,
    checkpoint,
    finished_log,
    io,
    load_run_data,
    run_data_info,
    run_experiment,
)
from kfac_ref.experiments.cli import ArgumentParser  # noqa: E402
from kfac_ref.experiments.exit_status import run_script  # noqa: E402
from kfac_ref.experiments.schedules import draw_minibatch  # noqa: E402
from kfac_ref.optimizer import KFAC, curvature_inverses, natural_gradient_direction  # noqa: E402
from kfac_ref.rescale import (  # noqa: E402
    quadratic_model_on_span,
    raw_proposal_from_model,
    rescaling_from_model,
)

#: one-at-a-time ablations: name → (legend, KFACConfig overrides); "defaults" is also probed
ABLATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "defaults": ("all pieces (§6–§7)", {}),
    "no-rescaling": ("δ = Δ: use_rescaling=False (§6.4)", {"use_rescaling": False}),
    "no-momentum": ("μ = 0: use_momentum=False (§7)", {"use_momentum": False}),
    "fixed-gamma": ("γ = √(λ+η): adapt_gamma=False (§6.6)", {"adapt_gamma": False}),
    "fixed-lambda": ("λ = λ0: adapt_lambda=False (§6.5)", {"adapt_lambda": False}),
    "pi-one": ("π_i = 1: pi='one' (§6.3)", {"pi": "one"}),
    "exact-tikhonov": ("(F̆ + γ²I)⁻¹: tikhonov='exact' (eqn. 6)", {"tikhonov": "exact"}),
    "single-lambda": (
        "(F̆ + (λ+η)I)⁻¹, one λ: exact + adapt_gamma=False",
        {"tikhonov": "exact", "adapt_gamma": False},
    ),
}
#: the dampings of the one-step probe: name → (legend, pi, tikhonov)
DAMPINGS = {
    "factored": ("factored, trace-norm π_i", "trace", "factored"),
    "pi-one": ("factored, π_i = 1", "one", "factored"),
    "exact": ("exact (F̆ + γ²I)⁻¹", "trace", "exact"),
}
#: the problems: RunConfig settings (the K-FAC method is block-diagonal: exact Tikhonov needs F̆)
SCALES: dict[str, dict[str, Any]] = {
    # autoencoders.py --quick: the first 2000 CURVES cases, m₁ = 250 → all at k = 100
    "quick": dict(dataset="curves", n_train=2000, n_test=0, m1=250, k_full=100, iters=300),
    # the first 10,000 MNIST cases, m₁ = 1000 → all at k = 200
    "mnist": dict(dataset="mnist", n_train=10000, n_test=0, m1=1000, k_full=200, iters=500),
    # CURVES, all 20,000 cases, the paper's schedule
    "curves": dict(dataset="curves", n_train=None, n_test=0, m1=1000, k_full=500, iters=1000),
}
QUICK_ITERS = 150  # --quick: past the λ0 = 150 plateau of the quick problem (about k = 110)
GAMMA_RANGE = (1e-4, 1e2)
GAMMA_POINTS = {"quick": 13, "full": 25}  # two or four per decade
STYLES = {"factored": "C0", "pi-one": "C2", "exact": "C3"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="quick", help="the problem")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ITERS} iterations and {GAMMA_POINTS['quick']} γ (default: the scale's "
        f"iterations and {GAMMA_POINTS['full']} γ)",
    )
    p.add_argument("--iters", type=int, default=None, help="iterations of every run")
    p.add_argument("--n-train", type=int, default=None, help="first N training cases")
    p.add_argument(
        "--layers", type=int, nargs="+", default=None, help="widths (default: the paper's)"
    )
    p.add_argument("--eval-every", type=int, default=10, help="iterations between evaluations")
    p.add_argument("--gammas", type=int, default=None, help="points of the γ grid")
    p.add_argument(
        "--ablations",
        nargs="*",
        default=list(ABLATIONS),
        choices=list(ABLATIONS),
        help="runs of part (b) ('defaults' is always run: part (a) probes it)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of θ₀, mini-batches and the probe")
    p.add_argument("--dtype", choices=KNOWN_DTYPES, default="float32")
    p.add_argument("--backend", choices=KNOWN_BACKENDS, default=None)
    p.add_argument("--data-dir", default=None, help="data directory")
    p.add_argument("--runs", default="runs", help="directory of the training runs")
    p.add_argument("--overwrite", action="store_true", help="retrain runs with other settings")
    p.add_argument("--out", default="figures_out", help="directory for the figure files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = p.parse_args(argv)
    for name in ("iters", "n_train", "eval_every", "gammas"):
        v = getattr(args, name)
        if v is not None and v < (2 if name == "gammas" else 1):
            p.error(f"--{name.replace('_', '-')} must be at least {2 if name == 'gammas' else 1}")
    if "defaults" not in args.ablations:
        args.ablations.insert(0, "defaults")
    return args


# ------------------------------------------------------------------------------ the runs
def run_config(args: argparse.Namespace, name: str) -> RunConfig:
    s = dict(SCALES[args.scale])
    s["iters"] = args.iters or (QUICK_ITERS if args.quick else s["iters"])
    if args.n_train is not None:
        s["n_train"] = args.n_train
    return RunConfig(
        method="kfac-blockdiag",
        seed=args.seed,
        backend=args.backend,
        dtype=args.dtype,
        data_dir=args.data_dir,
        layers=args.layers,
        eval_every=args.eval_every,
        kfac=dict(ABLATIONS[name][1]),
        **s,
    )


def run_dir(args: argparse.Namespace, cfg: RunConfig, name: str) -> Path:
    n = cfg.n_train or "all"
    return Path(args.runs) / f"damping-{args.scale}-{cfg.dataset}-n{n}-s{cfg.seed}" / name


def get_log(
    args: argparse.Namespace, cfg: RunConfig, out: Path, data: dict[str, Any]
) -> list[dict[str, Any]]:
    """A finished run's log (reused), else the run resumed from its checkpoint or trained; a
    directory holding another run is an error unless ``--overwrite``."""
    records = finished_log(cfg, out)
    if records is not None and records[0].get("data") == data["data"]:
        print(f"  reusing {out}")
        return records
    held = [n for n in RUN_FILES if (out / n).exists()]
    reason = why_not_resumable(out, cfg, data) if held else None
    if held and reason is not None and not args.overwrite:
        raise ConfigError(
            f"{out} holds a run that cannot be reused or resumed: {reason}. Pass --overwrite "
            "to train it afresh, or choose another --runs"
        )
    resume = bool(held) and reason is None
    print(f"  {'resuming' if resume else 'training'} {out}")
    run_experiment(
        cfg, out, resume=resume, overwrite=bool(held) and not resume, progress=not args.no_progress
    )
    return finished_log(cfg, out)


def curve(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """(iteration, optimizer seconds, raw iterate's training error) where evaluated."""
    pts = [r for r in records if r.get("train_error") is not None]
    return {
        "iteration": [r["iteration"] for r in pts],
        "time": [r["time"] for r in pts],
        "train_error_raw": [r.get("train_error_raw", r["train_error"]) for r in pts],
    }


def table(curves: dict[str, dict[str, list[float]]], iters: int) -> list[dict[str, Any]]:
    """Raw-iterate training error of every run at four evaluated iterations up to ``iters``."""
    common = sorted(set.intersection(*(set(c["iteration"]) for c in curves.values())))
    picks = [k for k in common if k <= iters]
    picks = sorted({picks[round(j * (len(picks) - 1) / 3)] for j in range(4)}) if picks else []
    return [
        {
            "iteration": k,
            **{n: c["train_error_raw"][c["iteration"].index(k)] for n, c in curves.items()},
        }
        for k in picks
    ]


# ------------------------------------------------------------------------- (a) one step
def probe(args: argparse.Namespace, cfg: RunConfig, out: Path) -> dict[str, Any]:
    """The one-step changes of h and M against γ at the run's last checkpoint (float64)."""
    payload = checkpoint.load_checkpoint(out / checkpoint.CHECKPOINT_NAME)
    be = get_backend(args.backend, "float64")
    mlp = autoencoder(cfg.dataset, cfg.layers)
    kcfg = cfg.kfac_config()
    state = KFAC(mlp, kcfg, be).load_state_dict(payload["opt_state"])
    W = [be.asarray(w) for w in payload["weights"]]
    X_train, _, _ = load_run_data(cfg, be)
    n = X_train.shape[0]
    m = batch_size(cfg, state.k + 1, n)
    idx = np.sort(draw_minibatch(n, m, args.seed, 2015))
    X = X_train[be.xp.asarray(idx)] if m < n else X_train
    h, grads, fwd = mlp.loss_and_grad(W, X, X, kcfg.eta)
    h = float(h)
    lam_eta = state.lam + kcfg.eta
    points = args.gammas or GAMMA_POINTS["quick" if args.quick else "full"]
    gammas = np.logspace(*np.log10(GAMMA_RANGE), points).tolist()
    out_d: dict[str, Any] = {
        "iteration": state.k,
        "batch_size": m,
        "lam": state.lam,
        "gamma_of_run": state.gamma,
        "gamma_tied": math.sqrt(lam_eta),
        "h": h,
        "gammas": gammas,
    }
    for name, (_, pi, tikhonov) in DAMPINGS.items():
        rows: dict[str, list[float]] = {
            k: [] for k in ("dh_raw", "dM_raw", "dh_rescaled", "dM_rescaled", "alpha")
        }
        # exact Tikhonov: one eigendecomposition of each factor serves the whole grid
        invs = curvature_inverses(state.stats, gammas, "block_diagonal", pi=pi, tikhonov=tikhonov)
        for inv in invs:
            Delta = natural_gradient_direction(inv, grads)
            Q, r = quadratic_model_on_span(mlp, W, fwd, grads, Delta, None, None, lam_eta)
            Q, r = to_numpy(Q), to_numpy(r)
            for kind, res in (
                ("raw", raw_proposal_from_model(Q, r, Delta)),
                ("rescaled", rescaling_from_model(Q, r, Delta, None)),
            ):
                new = [w + d for w, d in zip(W, res.delta, strict=True)]
                rows[f"dh_{kind}"].append(float(mlp.loss(new, X, X, kcfg.eta)) - h)
                rows[f"dM_{kind}"].append(res.model_change)
                if kind == "rescaled":
                    rows["alpha"].append(res.alpha)
        out_d[name] = rows
        print(f"  probe: {name} done ({len(gammas)} γ)")
    return out_d


# --------------------------------------------------------------------------- the claims
def _first_gamma_from_which(gammas: list[float], ok: list[bool]) -> float | None:
    """The smallest γ of the grid from which ``ok`` holds for every larger γ (None: never)."""
    start = None
    for g, good in zip(reversed(gammas), reversed(ok), strict=True):
        if not good:
            break
        start = g
    return start


def _at(gammas: list[float], values: list[float], gamma: float) -> float:
    """The value at the grid point nearest γ (log scale)."""
    j = int(np.argmin(np.abs(np.log(gammas) - math.log(gamma))))
    return values[j]


def _verdict(checks: dict[str, bool | None]) -> dict[str, Any]:
    """ "reproduces" when every check that could be made holds, "does not reproduce" when none
    does, else "partly"; a check is None where its run was not trained."""
    made = [v for v in checks.values() if v is not None]
    verdict = "reproduces" if all(made) else "does not reproduce" if not any(made) else "partly"
    return {"checks": checks, "verdict": verdict, "reproduces": verdict == "reproduces"}


def _lower(a: float | None, b: float | None) -> bool | None:
    """a < b, or None when either is missing."""
    return None if a is None or b is None else bool(a < b)


def judge(p: dict[str, Any], table_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The four claims of §6: the one-step numbers (part a) and the runs' raw-iterate training
    errors at the last tabulated iteration (part b) they are judged on, and the verdicts."""
    err = table_rows[-1] if table_rows else {}
    g, f, e, o = p["gammas"], p["factored"], p["exact"], p["pi-one"]
    g_run, g_tied = p["gamma_of_run"], p["gamma_tied"]
    raw_from = _first_gamma_from_which(g, [d < 0 for d in f["dh_raw"]])
    kfac_at_run = _at(g, f["dh_rescaled"], g_run)
    g_best = g[int(np.argmin(f["dh_rescaled"]))]
    out: dict[str, Any] = {}
    out["rescaling"] = {
        "claim": "without re-scaling, the raw proposal gives no objective improvement unless "
        "the factored damping γ is made very large (§6.4)",
        "gamma_of_run": g_run,
        "dh_raw_at_gamma_of_run": _at(g, f["dh_raw"], g_run),
        "dh_rescaled_at_gamma_of_run": kfac_at_run,
        "raw_decreases_h_for_every_gamma_from": raw_from,
        "raw_increases_h_at": [x for x, d in zip(g, f["dh_raw"], strict=True) if not d < 0],
        "rescaled_decreases_h_at": [x for x, d in zip(g, f["dh_rescaled"], strict=True) if d < 0],
        "best_dh_raw": min(f["dh_raw"]),
        "best_gamma_raw": g[int(np.argmin(f["dh_raw"]))],
        "best_dh_rescaled": min(f["dh_rescaled"]),
        "best_gamma_rescaled": g_best,
        "dh_raw_at_best_gamma_rescaled": _at(g, f["dh_raw"], g_best),
        "error_defaults": err.get("defaults"),
        "error_no_rescaling": err.get("no-rescaling"),
        **_verdict(
            {
                "raw_step_does_not_decrease_h_at_the_runs_gamma": _at(g, f["dh_raw"], g_run) >= 0,
                "raw_step_does_not_decrease_h_where_rescaled_is_best": _at(g, f["dh_raw"], g_best)
                >= 0,
                "raw_best_gains_less_than_half_of_rescaled_best": min(f["dh_raw"])
                > 0.5 * min(f["dh_rescaled"]),
                "rescaled_step_decreases_h_at_the_runs_gamma": kfac_at_run < 0,
                "run_without_rescaling_is_worse": _lower(
                    err.get("defaults"), err.get("no-rescaling")
                ),
            }
        ),
    }
    plain = _at(g, e["dh_raw"], g_tied)
    out["single_lambda"] = {
        "claim": "plain Tikhonov damping with a single λ, −(F̆ + (λ+η)I)⁻¹∇h, never gives "
        "updates comparable to K-FAC's (§6.2)",
        "lam_plus_eta": g_tied**2,
        "dh_plain_tikhonov": plain,
        "dh_plain_tikhonov_rescaled": _at(g, e["dh_rescaled"], g_tied),
        "dh_kfac_at_gamma_of_run": kfac_at_run,
        "error_defaults": err.get("defaults"),
        "error_single_lambda": err.get("single-lambda"),
        **_verdict(
            {
                "plain_step_gains_less_than_half_of_kfacs": plain > 0.5 * kfac_at_run,
                "single_lambda_run_is_worse": _lower(err.get("defaults"), err.get("single-lambda")),
            }
        ),
    }
    out["factored_vs_exact"] = {
        "claim": "factored Tikhonov damping often works better than the exact version (§6.3)",
        "best_dh_factored": min(f["dh_rescaled"]),
        "best_gamma_factored": g[int(np.argmin(f["dh_rescaled"]))],
        "best_dh_exact": min(e["dh_rescaled"]),
        "best_gamma_exact": g[int(np.argmin(e["dh_rescaled"]))],
        "factored_lower_at_fraction_of_grid": float(
            np.mean([a < b for a, b in zip(f["dh_rescaled"], e["dh_rescaled"], strict=True)])
        ),
        "error_factored": err.get("defaults"),
        "error_exact": err.get("exact-tikhonov"),
        **_verdict(
            {
                "factored_best_step_is_better": min(f["dh_rescaled"]) < min(e["dh_rescaled"]),
                "factored_run_is_better": _lower(err.get("defaults"), err.get("exact-tikhonov")),
            }
        ),
    }
    out["trace_norm_pi"] = {
        "claim": "the trace-norm π_i is the recommended choice; π_i = 1 can sometimes work well "
        "(§6.3)",
        "best_dh_trace": min(f["dh_rescaled"]),
        "best_dh_pi_one": min(o["dh_rescaled"]),
        "trace_lower_at_fraction_of_grid": float(
            np.mean([a < b for a, b in zip(f["dh_rescaled"], o["dh_rescaled"], strict=True)])
        ),
        "error_trace": err.get("defaults"),
        "error_pi_one": err.get("pi-one"),
        **_verdict(
            {
                "trace_best_step_is_better": min(f["dh_rescaled"]) < min(o["dh_rescaled"]),
                "trace_run_is_better": _lower(err.get("defaults"), err.get("pi-one")),
            }
        ),
    }
    return out


# --------------------------------------------------------------------------------- draw
def _label(v: float, _: Any = None) -> str:
    """A tick label as plain text ("1e-04", "0.3", "-1e+06")."""
    return f"{v:.0e}" if v and (abs(v) >= 1e3 or abs(v) < 1e-2) else f"{v:g}"


def _plain_ticks(axis: Any, minor: bool = False) -> None:
    """Plain-text tick labels (log-scale labels are otherwise mathtext, whose parsing costs more
    than the rest of the figure); ``minor``: label the minor ticks too (a short log axis)."""
    axis.set_major_formatter(FuncFormatter(_label))
    axis.set_minor_formatter(FuncFormatter(_label) if minor else NullFormatter())


def _symlog(ax: Any, values: list[list[float]]) -> None:
    """A symmetric log y axis, linear below the 5th percentile of |values|, ticks every 10³."""
    finite = np.abs([v for vs in values for v in vs if math.isfinite(v) and v != 0])
    linthresh = float(np.percentile(finite, 5)) if finite.size else 1e-6
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.yaxis.set_major_locator(SymmetricalLogLocator(base=1000, linthresh=linthresh))
    ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _: "" if 0 < abs(v) < 10 * linthresh else _label(v))
    )


def draw(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Row 1: Δh and ΔM against γ (part a); row 2: the ablations' training error against
    iterations and seconds (part b); row 3: the table."""
    fig = plt.figure(figsize=(13, 13))
    grid = fig.add_gridspec(3, 2, height_ratios=[1, 1, 0.45])
    p = result["probe"]
    for col, key in enumerate(("dh", "dM")):
        ax = fig.add_subplot(grid[0, col])
        series = []
        for name, (label, _, _) in DAMPINGS.items():
            for kind, ls in (("raw", "--"), ("rescaled", "-")):
                y = p[name][f"{key}_{kind}"]
                series.append(y)
                tag = "raw Δ (α = 1)" if kind == "raw" else "re-scaled αΔ"
                ax.plot(p["gammas"], y, ls, color=STYLES[name], marker=".", label=f"{label}: {tag}")
        ax.axhline(0.0, color="k", lw=0.6)
        ax.axvline(p["gamma_tied"], color="0.5", lw=0.8, ls=":", label="γ = √(λ + η)")
        ax.axvline(p["gamma_of_run"], color="0.5", lw=0.8, ls="-.", label="the run's γ")
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        _symlog(ax, series)
        ax.set_xlabel("γ (factored: (Ā + π_i γI) ⊗ (G + γ/π_i I); exact: F̆ + γ²I)")
        what = "h(θ + δ) − h(θ) on the mini-batch" if key == "dh" else "M(δ) − M(0)"
        ax.set_ylabel(what)
        ax.set_title(
            f"one step at k = {p['iteration']} (m = {p['batch_size']}, λ = {p['lam']:.3g}): {what}",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
        if col == 0:
            ax.legend(fontsize=6.5)
    curves = result["curves"]
    for col, xkey in enumerate(("iteration", "time")):
        ax = fig.add_subplot(grid[1, col])
        for j, (name, c) in enumerate(curves.items()):
            ax.plot(c[xkey], c["train_error_raw"], color=f"C{j}", label=ABLATIONS[name][0])
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis, minor=True)
        ax.set_xlabel("iterations" if xkey == "iteration" else "optimizer seconds")
        ax.set_ylabel("training error, raw iterate")
        ax.set_title("\n".join(textwrap.wrap(result["data"], 80)), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if col == 0:
            ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[2, :])
    ax.axis("off")
    rows = result["table"]
    if rows:
        names = list(curves)
        cells = [[f"{r[n]:.4g}" for n in names] for r in rows]
        t = ax.table(
            cellText=cells,
            rowLabels=[f"k = {r['iteration']}" for r in rows],
            colLabels=["\n".join(textwrap.wrap(n, 12)) for n in names],
            loc="center",
        )
        t.auto_set_font_size(False)
        t.set_fontsize(8)
        t.scale(1, 1.6)
        ax.set_title("training error of the raw iterate at fixed iterations", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem, dpi=110)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = io.require_writable_dir(args.out, "--out")
    io.require_writable_dir(args.runs, "--runs")
    cfgs = {name: run_config(args, name) for name in args.ablations}
    data = run_data_info(cfgs["defaults"])
    print(f"{cfgs['defaults'].dataset}: {data['data']}")
    start = time.perf_counter()
    curves: dict[str, Any] = {}
    for name, cfg in cfgs.items():
        curves[name] = curve(get_log(args, cfg, run_dir(args, cfg, name), data))
    runs_wall = time.perf_counter() - start
    start = time.perf_counter()
    p = probe(args, cfgs["defaults"], run_dir(args, cfgs["defaults"], "defaults"))
    probe_wall = time.perf_counter() - start
    rows = table(curves, cfgs["defaults"].iters)
    result = {
        "data": data["data"],
        "scale": args.scale,
        "settings": {k: v for k, v in cfgs["defaults"].to_json().items() if k != "kfac"},
        "ablations": {n: ABLATIONS[n][1] for n in cfgs},
        "probe": p,
        "curves": curves,
        "table": rows,
        "claims": judge(p, rows),
        "wall_seconds": {"runs": runs_wall, "probe": probe_wall},
    }
    stem = f"damping_{args.scale}" + ("_quick" if args.quick else "")
    paths = draw(result, out_dir, stem)
    paths.append(save_json(out_dir / f"{stem}.json", result))
    for row in rows:
        print(f"k = {row['iteration']:4d}: " + ", ".join(f"{n} {row[n]:.4g}" for n in curves))
    for name, c in result["claims"].items():
        print(f"claim {name}: {c['verdict']} ({c['checks']})")
    print(f"runs {runs_wall:.0f} s, probe {probe_wall:.0f} s")
    print("wrote " + ", ".join(str(x) for x in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
