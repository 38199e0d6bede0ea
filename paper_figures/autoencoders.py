"""The deep-autoencoder figures of the paper (arXiv §13, Figs. 10–11).

Training error (squared reconstruction error per case, summed over pixels; the minimum of the
averaged and raw iterates, as the released code reports) against iterations and against optimizer
seconds, log scale, for K-FAC block-diagonal (F̆) and block-tridiagonal (F̂), both with momentum
(§7), and SGD with Nesterov momentum (the Sutskever et al. 2013 schedule), one pair of panels per
data set. The settings are the authors' released code's (``constants="code"``: τ2 = 1, sparse
initialization with replacement, m₁ = 1000 growing to the whole training set at k = 500);
``--constants paper`` gives the paper text's τ2 = 1/4.

SGD's learning rate is tuned on a short grid (each rate trained for ``--sgd-tune-iters``
iterations; the lowest training error wins) and the winner then trains for the same optimizer
time as the slowest K-FAC run, so the time panel compares equal budgets as the paper does.
``--sgd-seconds`` caps that budget when time is short (the legend then says so).

Where the authors published a run on the original data (``reference/``: their released code's
logs for CURVES, MNIST, FACES), its training error is drawn dashed on the iterations panel and
labelled as theirs: it used the original data set and the paper's schedule, so it lines up with
ours only when we train on the same data (see each panel's data label).

Each run is done by :func:`kfac_ref.experiments.run_experiment` under ``--runs``; a finished run
with the same settings and the same data is reused, an unfinished one with a matching checkpoint
is resumed (both are said, and listed at the end); a directory holding any other run is an error
unless ``--overwrite``. The figure is drawn only from the runs' logs.

    python paper_figures/autoencoders.py --quick                    # CURVES, 2000 cases, minutes
    python paper_figures/autoencoders.py         # CURVES, 20,000 cases (hours on a CPU)
    python paper_figures/autoencoders.py --datasets mnist --data-dir DIR   # MNIST (60k or 10k)
    python paper_figures/autoencoders.py --datasets curves mnist faces --backend cupy  # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _output import save_figure  # noqa: E402

from kfac_ref.backend import KNOWN_BACKENDS, KNOWN_DTYPES  # noqa: E402
from kfac_ref.errors import ConfigError, KFACError, NonFiniteError  # noqa: E402
from kfac_ref.experiments import (  # noqa: E402
    METHODS,
    RUN_FILES,
    RunConfig,
    checkpoint,
    checks,
    finished_log,
    io,
    run_data_info,
    run_experiment,
)
from kfac_ref.experiments.cli import ArgumentParser  # noqa: E402
from kfac_ref.experiments.exit_status import run_script  # noqa: E402
from kfac_ref.structures import STRUCTURES, methods  # noqa: E402

LABELS = {
    **{cls.method: f"K-FAC ({cls.label})" for cls in STRUCTURES.values()},
    "kfac-blockdiag-nomomentum": "K-FAC (block-diagonal F̆), no momentum",
    "sgd-momentum": "SGD + Nesterov momentum",
}
STYLES = {
    "kfac-blockdiag": "C0-",
    "kfac-tridiag": "C3-",
    "kfac-blockdiag-nomomentum": "C1-",
    "sgd-momentum": "C2-",
}  # the paper's colours; others: C4, C5, …
STYLES.update({m: f"C{4 + j}-" for j, m in enumerate(m for m in LABELS if m not in STYLES)})
REFERENCE = Path(__file__).resolve().parent / "reference"
REFERENCE_FILES = {d: REFERENCE / f"kfac3_{d}_trace.csv" for d in ("curves", "mnist", "faces")}

#: --quick: 2000 training cases and a schedule that reaches them at k = 100 (the fidelity
#: fixture's problem), 300 iterations; the same code and constants as the full figure.
QUICK = {"n_train": 2000, "n_test": 1000, "m1": 250, "k_full": 100, "iters": 300, "eval_every": 10}
FULL = {"eval_every": 25}
#: K-FAC iterations of the full figure per data set: what a 2-core CPU does in hours (the
#: paper's runs are longer: MNIST 1500, FACES 1550 iterations; ``--iters`` on a GPU).
FULL_ITERS = {"curves": 1000, "mnist": 500, "faces": 300}
#: K-FAC without momentum trains at a fixed m "chosen from a small range of candidates to give
#: the best overall per-second rate of progress" (§13): each candidate trains for the same
#: optimizer seconds, the lowest training error wins, and the winner goes on to the slowest
#: K-FAC run's time (as SGD does).
FIXED_M_METHODS = ("kfac-blockdiag-nomomentum",)
#: FACES' grid sits one step below MNIST's: per second m = 5000 is already far behind m = 2000,
#: which this grid keeps inside (paper_figures/README.md, the FACES panel).
FIXED_M_GRID = {
    "quick": {"curves": [250, 500, 1000], "mnist": [250, 500, 1000], "faces": [250, 500, 1000]},
    "full": {
        "curves": [1000, 2000, 5000],
        "mnist": [2000, 5000, 10000],
        "faces": [1000, 2000, 5000],
    },
}
FIXED_M_TUNE_SECONDS = {"quick": 20.0, "full": 600.0}
#: the RunConfig field each tuned method's grid varies
TUNED = {"sgd-momentum": "sgd_lr", **{m: "kfac_batch" for m in FIXED_M_METHODS}}
#: SGD learning-rate grid per data set (the paper tuned it, §13).
SGD_LR_GRID = {
    "curves": [0.02, 0.05, 0.1],
    "mnist": [0.01, 0.02, 0.05],
    "faces": [0.001, 0.002, 0.005],
}
SGD_TUNE_ITERS = {"quick": 150, "full": 1000}
SGD_MAX_ITERS = 10**7  # SGD stops on its time budget, not on an iteration count
#: The budgeted SGD run takes tens of thousands of cheap iterations: evaluate (the training and
#: test sets' errors, not counted in optimizer time) and checkpoint less often than K-FAC does.
SGD_BUDGET_CADENCE = {
    "quick": {"eval_every": 20, "checkpoint_every": 500},
    "full": {"eval_every": 250, "checkpoint_every": 2000},
}
#: At full scale the SGD grid runs are evaluated as rarely as the budget run that continues the
#: winner (only their last error is used). An evaluation passes the training set twice (raw and
#: averaged iterate) and the test set forward: on FACES (145,000 faces through 7.5 million
#: weights) that costs as much as about a hundred SGD iterations at m = 500, on MNIST about ninety
#: (by operation count), so the tens of thousands of budgeted iterations are evaluated rarely.
SGD_FULL_EVAL_EVERY = {"curves": 250, "mnist": 1000, "faces": 500}
#: At full scale K-FAC without momentum (grid and budget run) is evaluated every so many
#: iterations: at MNIST's m = 2000 an evaluation costs about seven iterations (by operation
#: count) and the budget holds about ten thousand, where FACES' run holds under a thousand
#: dearer ones.
FIXED_M_FULL_EVAL_EVERY = {"curves": 100, "mnist": 250, "faces": 25}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--datasets",
        nargs="+",
        default=["curves"],
        choices=["curves", "mnist", "faces"],
        help="data sets, one row of panels each (default: curves)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=[*methods(factored_only=True), *FIXED_M_METHODS, "sgd-momentum"],
        choices=list(METHODS),
        help="methods to train and plot (default: the paper's four)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small settings for a laptop CPU: {QUICK} (default: the full settings {FULL})",
    )
    p.add_argument(
        "--iters",
        type=checks.int_arg(1),
        default=None,
        help=f"K-FAC iterations (default per data set: {FULL_ITERS}; quick 300)",
    )
    p.add_argument(
        "--n-train",
        type=checks.int_arg(1),
        default=None,
        help="first N training cases only (default: all)",
    )
    p.add_argument(
        "--constants",
        choices=["code", "paper"],
        default="code",
        help="'code': the released code's τ2 = 1 (the published curves); 'paper': τ2 = 1/4",
    )
    p.add_argument(
        "--sgd-lr",
        type=float,
        nargs="+",
        default=None,
        help="SGD learning-rate grid (default per data set: " + str(SGD_LR_GRID) + ")",
    )
    p.add_argument(
        "--sgd-tune-iters",
        type=checks.int_arg(1),
        default=None,
        help="iterations of each SGD grid run (default 1000; quick 150)",
    )
    p.add_argument(
        "--fixed-m",
        type=int,
        nargs="+",
        default=None,
        help="candidate fixed mini-batch sizes of K-FAC without momentum (default per data set: "
        + str(FIXED_M_GRID)
        + ")",
    )
    p.add_argument(
        "--fixed-m-tune-seconds",
        type=float,
        default=None,
        help="optimizer seconds of each fixed-m candidate's run (default: quick "
        f"{FIXED_M_TUNE_SECONDS['quick']:g}, full {FIXED_M_TUNE_SECONDS['full']:g})",
    )
    p.add_argument(
        "--sgd-seconds",
        type=float,
        default=None,
        help="cap on the budgeted SGD run's optimizer seconds (default: none, SGD gets the slowest "
        "K-FAC run's time, as the paper compares equal times; a cap is stated in the legend)",
    )
    p.add_argument(
        "--seed",
        type=checks.seed_arg,
        default=0,
        help="seed of θ₀, mini-batches and sampled targets",
    )
    p.add_argument(
        "--backend",
        choices=KNOWN_BACKENDS,
        default=None,
        help="array backend (default: $KFAC_REF_BACKEND or numpy)",
    )
    p.add_argument("--dtype", choices=KNOWN_DTYPES, default="float32", help="training precision")
    p.add_argument(
        "--data-dir", default=None, help="data directory (default: $KFAC_REF_DATA_DIR or the cache)"
    )
    p.add_argument(
        "--runs",
        default="runs",
        help="directory of the training runs (default: runs). A finished run with the same "
        "settings and data is reused, an unfinished one resumed; one with other settings is an "
        "error unless --overwrite",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train afresh, in place, any run under --runs whose settings or data differ from this "
        "figure's (default: such a run is an error and nothing is replaced)",
    )
    p.add_argument(
        "--out", default="figures_out", help="directory for the figure files (default: figures_out)"
    )
    p.add_argument(
        "--no-reference", action="store_true", help="do not draw the authors' published run"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    args = p.parse_args(argv)
    for name in ("sgd_seconds", "fixed_m_tune_seconds"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            option = "--" + name.replace("_", "-")
            p.error(f"{option} must be a number of seconds > 0, got {value:g}")
    if args.fixed_m is not None and min(args.fixed_m) < 1:
        p.error(f"--fixed-m sizes must be integers ≥ 1, got {args.fixed_m}")
    bad = [lr for lr in args.sgd_lr or () if not (math.isfinite(lr) and lr > 0)]
    if bad:
        p.error(f"every --sgd-lr must be a number > 0, got {' '.join(f'{lr:g}' for lr in bad)}")
    for option in ("out", "runs"):
        setattr(args, option, checks.expand_path(getattr(args, option), f"--{option}"))
    args.data_dir = None if args.data_dir is None else str(checks.data_dir(args.data_dir))
    args.run_actions = []
    return args


def settings(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    """The run settings shared by every method (before the per-method ones)."""
    base: dict[str, Any] = dict(QUICK) if args.quick else {**FULL, "iters": FULL_ITERS[dataset]}
    if args.iters is not None:
        base["iters"] = args.iters
    if args.n_train is not None:
        base["n_train"] = args.n_train
    return base


def run_configs(args: argparse.Namespace, dataset: str, method: str) -> list[RunConfig]:
    """The runs behind one curve: one config, or one per candidate of the grid (SGD: a learning
    rate each, ``--sgd-tune-iters`` iterations; K-FAC without momentum: a fixed m each,
    ``--fixed-m-tune-seconds`` of optimizer time)."""
    base = settings(args, dataset)
    common = dict(
        dataset=dataset,
        method=method,
        seed=args.seed,
        backend=args.backend,
        dtype=args.dtype,
        data_dir=args.data_dir,
        constants=args.constants,
        **base,
    )
    if method in FIXED_M_METHODS:
        common.update(iters=SGD_MAX_ITERS, max_seconds=fixed_m_tune_seconds(args))
        if not args.quick:
            common["eval_every"] = FIXED_M_FULL_EVAL_EVERY[dataset]
        grid = args.fixed_m if args.fixed_m is not None else FIXED_M_GRID[_kind(args)][dataset]
        return [RunConfig(kfac_batch=m, **common) for m in grid]
    if method != "sgd-momentum":
        return [RunConfig(**common)]
    tune_iters = args.sgd_tune_iters
    common["iters"] = tune_iters if tune_iters is not None else SGD_TUNE_ITERS[_kind(args)]
    if not args.quick:
        common["eval_every"] = SGD_FULL_EVAL_EVERY[dataset]
    grid = args.sgd_lr if args.sgd_lr is not None else SGD_LR_GRID[dataset]
    return [RunConfig(sgd_lr=lr, **common) for lr in grid]


def _kind(args: argparse.Namespace) -> str:
    return "quick" if args.quick else "full"


def fixed_m_tune_seconds(args: argparse.Namespace) -> float:
    if args.fixed_m_tune_seconds is not None:
        return args.fixed_m_tune_seconds
    return FIXED_M_TUNE_SECONDS[_kind(args)]


def run_dir(args: argparse.Namespace, cfg: RunConfig) -> Path:
    tag = ("quick" if args.quick else "full") + (
        "" if cfg.constants == "code" else f"-{cfg.constants}"
    )
    name = cfg.method if cfg.method != "sgd-momentum" else f"{cfg.method}-lr{cfg.sgd_lr:g}"
    fixed = cfg.kfac_batch if cfg.kfac_batch is not None else cfg.sgd_batch
    if fixed is not None:
        name += f"-m{fixed}"
    return Path(args.runs) / f"{cfg.dataset}-{tag}-n{cfg.n_train or 'all'}-s{cfg.seed}" / name


def _same_data(records: list[dict[str, Any]], data: dict[str, Any]) -> bool:
    return bool(records) and records[0].get("data") == data["data"]


def why_not_resumable(out: Path, cfg: RunConfig, data: dict[str, Any]) -> str | None:
    """None when ``out`` holds a checkpoint of this very run (settings and data), else what the
    directory holds instead. Reads only JSON (``config.json``, ``log.jsonl``); the checkpoint
    itself is checked again, without any pickle, when it is resumed."""
    if not (out / checkpoint.CHECKPOINT_NAME).is_file():
        return f"it has no {checkpoint.CHECKPOINT_NAME} to continue from"
    try:
        saved = RunConfig.from_json(
            json.loads(io.read_text(out / "config.json", "configuration")),
            str(out / "config.json"),
        )
        records = io.read_jsonl(out / "log.jsonl")
    except (OSError, ValueError, KFACError) as exc:
        return f"its config.json or log.jsonl cannot be read ({exc})"
    diff = saved.differences(cfg)
    if diff:
        return "its settings differ: " + "; ".join(diff)
    if records and not _same_data(records, data):
        return f"it was trained on other data ({records[0].get('data')!r})"
    return None


def get_log(args: argparse.Namespace, cfg: RunConfig, data: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished run's log: reused when its settings and data match, resumed when its
    checkpoint does, trained when its directory holds no run; a directory holding another run is
    an error unless ``--overwrite``. Each decision is printed and kept in ``args.run_actions``."""
    out = run_dir(args, cfg)
    records = finished_log(cfg, out)
    if records is not None and _same_data(records, data):
        print(
            f"  reusing {out} ({records[-1]['iteration']} iterations, {records[-1]['time']:.0f} s)"
        )
        args.run_actions.append(("reused", out))
        return records
    held = [n for n in RUN_FILES if (out / n).exists()]
    reason = why_not_resumable(out, cfg, data) if held else None
    if held and reason is None:
        action = "resumed"
    elif not held:
        action = "trained"
    elif args.overwrite:
        action = "replaced"
        print(f"  replacing {out} (--overwrite; {reason})")
    else:
        raise ConfigError(
            f"{out} holds a run that cannot be reused or resumed for this figure: {reason}. Pass "
            "--overwrite to train it afresh there, or choose another --runs"
        )
    print(f"  {'resuming' if action == 'resumed' else 'training'} {out}")
    args.run_actions.append((action, out))
    run_experiment(
        cfg,
        out,
        resume=action == "resumed",
        overwrite=action == "replaced",
        progress=not args.no_progress,
    )
    return finished_log(cfg, out)


def curve(records: list[dict[str, Any]]) -> dict[str, list[float]]:
    """(iteration, seconds, training error) at the evaluated iterations of a log; the plotted
    error is the lower of the raw and averaged iterates' (as the released code reports), and the
    raw iterate's is kept too (the authors' published traces are of the raw iterate)."""
    pts = [r for r in records if r.get("train_error") is not None]
    return {
        "iteration": [r["iteration"] for r in pts],
        "time": [r["time"] for r in pts],
        "train_error": [r["train_error"] for r in pts],
        "train_error_raw": [r.get("train_error_raw", r["train_error"]) for r in pts],
    }


#: Iterations at which the README's table sets our training error beside the authors'.
TABLE_ITERATIONS = (50, 100, 200, 300, 500, 1000)


def versus_authors(
    curves: dict[str, Any], ref: dict[str, list[float]] | None
) -> list[dict[str, Any]]:
    """Rows (k, the authors' raw training error, and for each K-FAC method ours: raw and
    reported) at :data:`TABLE_ITERATIONS`, where both logs have k."""
    if ref is None:
        return []
    theirs = dict(zip(ref["iteration"], ref["train_error"], strict=True))
    rows = []
    for k in TABLE_ITERATIONS:
        row: dict[str, Any] = {"iteration": k, "authors_raw": theirs.get(k)}
        for method, c in curves.items():
            if method not in TUNED and k in c["iteration"]:
                i = c["iteration"].index(k)
                row[f"{method}_raw"], row[f"{method}_reported"] = (
                    c["train_error_raw"][i],
                    c["train_error"][i],
                )
        if len(row) > 2:
            rows.append(row)
    return rows


def tune(
    args: argparse.Namespace, dataset: str, data: dict[str, Any], method: str
) -> tuple[RunConfig, dict[float, float]]:
    """The grid runs of ``method`` (SGD: one per learning rate; K-FAC without momentum: one per
    fixed m) and the candidate whose run ends with the lowest training error (one that diverges
    scores ∞), as ``(its config, {candidate: final error})``."""
    key = TUNED[method]
    configs = run_configs(args, dataset, method)
    finals: dict[float, float] = {}
    for cfg in configs:
        value = getattr(cfg, key)
        try:
            finals[value] = curve(get_log(args, cfg, data))["train_error"][-1]
        except NonFiniteError as exc:
            print(f"  {method} {key} = {value:g} diverged ({exc}); scored as ∞")
            finals[value] = math.inf
    best = min(finals, key=lambda v: finals[v])
    (cfg,) = [c for c in configs if getattr(c, key) == best]
    return cfg, finals


def budgeted_curve(
    args: argparse.Namespace,
    dataset: str,
    data: dict[str, Any],
    method: str,
    budget: float | None,
    capped: bool,
) -> dict[str, Any]:
    """The curve of a tuned method (:func:`tune`) trained on for ``budget`` optimizer seconds
    (the slowest K-FAC run's, or the ``--sgd-seconds`` cap): its grid run's directory is resumed,
    so the budget run continues the tuning run's trajectory."""
    cfg, finals = tune(args, dataset, data, method)
    if budget is not None:
        cadence = dict(SGD_BUDGET_CADENCE[_kind(args)])
        if not args.quick:
            cadence["eval_every"] = SGD_FULL_EVAL_EVERY[dataset]
        cfg = RunConfig(
            **{
                **cfg.to_json(),
                "iters": SGD_MAX_ITERS,
                "max_seconds": budget,
                **(cadence if method == "sgd-momentum" else {}),
            }
        )
    c = curve(get_log(args, cfg, data))
    c.update(
        tuned=TUNED[method],
        choice=getattr(cfg, TUNED[method]),
        grid=finals,
        budget_seconds=budget,
        budget_capped=capped,
    )
    return c


def collect(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """For each data set: its data label, the settings, and the plotted curve of each method."""
    out: dict[str, dict[str, Any]] = {}
    for dataset in args.datasets:
        scheduled = [m for m in args.methods if m not in TUNED]
        probe = run_configs(args, dataset, (scheduled or list(args.methods))[0])[0]
        data = run_data_info(probe)
        print(f"{dataset}: {data['data']}")
        curves: dict[str, Any] = {}
        for method in scheduled:
            (cfg,) = run_configs(args, dataset, method)
            curves[method] = curve(get_log(args, cfg, data))
        # every fixed-m and SGD run gets the optimizer time of the slowest K-FAC run (or the cap)
        budget = max((c["time"][-1] for c in curves.values()), default=None)
        capped = args.sgd_seconds is not None and (budget is None or args.sgd_seconds < budget)
        if capped:
            budget = args.sgd_seconds
        for method in (m for m in args.methods if m in TUNED):
            curves[method] = budgeted_curve(args, dataset, data, method, budget, capped)
        out[dataset] = {
            **data,
            "settings": settings(args, dataset),
            "constants": args.constants,
            "curves": curves,
            "versus_authors": versus_authors(curves, reference_trace(dataset)),
        }
    return out


def reference_trace(dataset: str) -> dict[str, list[float]] | None:
    """The authors' published run on the original data (raw iterate), or None."""
    path = REFERENCE_FILES.get(dataset)
    if path is None or not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {
        "iteration": [int(r["iter"]) for r in rows],
        "train_error": [float(r["train_err"]) for r in rows],
    }


def settings_text(args: argparse.Namespace, entry: dict[str, Any]) -> str:
    s = entry["settings"]
    kind = "quick settings" if args.quick else "paper settings"
    m1 = s.get("m1", 1000)
    k_full = s.get("k_full", 500)
    tau2 = "τ2 = 1 (code)" if entry["constants"] == "code" else "τ2 = 1/4 (paper text)"
    return f"{kind}: m₁ = {m1} → all at k = {k_full}, {tau2}"


def draw(
    args: argparse.Namespace, data: dict[str, dict[str, Any]], out_dir: Path, stem: str
) -> list[Path]:
    """Two panels per data set (error vs iterations, vs optimizer seconds); PNG + PDF."""
    n = len(data)
    fig, axes = plt.subplots(n, 2, figsize=(12, 4.4 * n), squeeze=False)
    for row, (dataset, entry) in enumerate(data.items()):
        ref = None if args.no_reference else reference_trace(dataset)
        for col, xkey in enumerate(("iteration", "time")):
            ax = axes[row, col]
            for method, c in entry["curves"].items():
                label = LABELS[method]
                if method in TUNED:
                    name = "lr" if method == "sgd-momentum" else "m"
                    label += f" ({name} {c['choice']:g}, best of {sorted(c['grid'])})"
                    if c.get("budget_capped"):
                        label += f", time capped at {c['budget_seconds']:g} s"
                ax.plot(c[xkey], c["train_error"], STYLES[method], label=label, lw=1.5)
            if xkey == "iteration" and ref is not None:
                ax.plot(
                    ref["iteration"],
                    ref["train_error"],
                    "k--",
                    lw=1.2,
                    label=f"authors' code (F̂), original {dataset.upper()} data, published run",
                )
            if xkey == "iteration":
                # K-FAC's iterations set the range: SGD takes many more, smaller steps in the same
                # time and runs on beyond the panel (the time panel shows all of it).
                kfac = [c for m, c in entry["curves"].items() if m not in TUNED] or list(
                    entry["curves"].values()
                )
                ax.set_xlim(0, max(max(c["iteration"]) for c in kfac) * 1.02)
            ax.set_yscale("log")
            sgd_note = (
                " (the fixed-m curves run on beyond the panel)"
                if any(m in TUNED for m in entry["curves"])
                else ""
            )
            ax.set_xlabel("iterations" + sgd_note if xkey == "iteration" else "optimizer seconds")
            ax.set_ylabel("training error (squared error per case)")
            heading = textwrap.wrap(f"{dataset.upper()}: {entry['data']}", 75)  # fits a panel
            ax.set_title("\n".join([*heading, settings_text(args, entry)]), fontsize=9)
            ax.grid(True, which="both", alpha=0.3)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = checks.output_dir(args.out, "--out")
    checks.output_dir(args.runs, "--runs")
    if args.data_dir is None:
        checks.data_dir()  # $KFAC_REF_DATA_DIR or the cache directory
    data = collect(args)
    stem = "autoencoders_" + "_".join(args.datasets) + ("_quick" if args.quick else "")
    if args.constants != "code":
        stem += f"_{args.constants}"
    paths = draw(args, data, out_dir, stem)
    io.write_text_atomic(out_dir / f"{stem}.json", json.dumps(data, indent=1))
    for dataset, entry in data.items():
        for method, c in entry["curves"].items():
            print(
                f"{dataset:7s} {method:15s} final training error {c['train_error'][-1]:.4f} "
                f"after {c['iteration'][-1]} iterations, {c['time'][-1]:.1f} optimizer s"
            )
        for row in entry["versus_authors"]:
            ours = ", ".join(f"{m} {row[m + '_raw']:.4g}" for m in LABELS if m + "_raw" in row)
            theirs = "—" if row["authors_raw"] is None else f"{row['authors_raw']:.4g}"
            print(
                f"{dataset:7s} k = {row['iteration']:4d}: raw-iterate training error, ours: "
                f"{ours}; "
                f"authors' published run (original data): {theirs}"
            )
    for action in ("reused", "resumed", "trained", "replaced"):
        done = [str(out) for a, out in args.run_actions if a == action]
        if done:
            print(f"runs {action}: {', '.join(done)}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
