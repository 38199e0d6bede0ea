"""How good K-FAC's approximations are along training, measured against the exact quantities on
two small networks: ‖F − F̃‖/‖F‖ per layer pair (§3), the §3.1 total error Σ|F − F̃| and its
cumulant bound, ‖F̆⁻¹ − F̃⁻¹‖ and ‖F̂⁻¹ − F̃⁻¹‖ relative to ‖F̃⁻¹‖ at the run's γ (§4, §6.3), and
the cosine and quadratic-model decrease of K-FAC's proposal Δ against the exact natural-gradient
step −(F + (λ+η)I)⁻¹∇h (§6, §7).

Both networks are trained by ``kfac_ref.optimizer.KFAC`` in batch mode (every iteration sees all
training cases) and diagnosed every ``--*-every`` iterations by
``kfac_ref.diagnostics.diagnose_kfac``: the run's current γ, λ + η and damped inverse, Δ = −(that
inverse)∇h at the current weights, everything on a fixed set of cases with their exact Fisher.

* ``autoencoder``: a CURVES-like autoencoder at reduced widths on a few hundred images of the
  CURVES stand-in (``make_curves``, pooled 28×28 → ``--ae-side``²), logistic units, a linear
  code layer and Bernoulli outputs (``kfac_ref.experiments.autoencoder``), sparse initialization
  and λ0 = 150 (§13, §6.5; ``--ae-lam0``: with 150, γ stays near √λ0 and the damping dominates
  F̃, so every approximation is close to the exact step; 0.01 shows them apart); diagnosed on
  all its training cases, all layers.
* ``classifier``: the network of the paper's Figure 2 (256-20-20-20-20-20-10 tanh, softmax, 16×16
  MNIST, trained as ``fisher_blocks.py`` trains it: dense N(0, 1/fan_in) start, λ0 = 0.01; the
  same data options, the same random numbers per iteration: with the block-diagonal structure it
  follows the training of Figures 2–3 step for step), diagnosed on the first ``--clf-cases``
  training cases and on the middle four layers W_2..W_5 only (1680 parameters, as Figure 2
  shows; the 7030 of the whole network are too many for the dense matrices): every quantity is
  then that of those layers' parameters, the others held fixed.

Writes to ``--out`` (default ``figures_out/``) ``approximation_diagnostics.{png,pdf,json}``; the
JSON holds every plotted number (every diagnosed key, per problem and iteration) and the settings.

    python paper_figures/approximation_diagnostics.py --quick --data-dir DIR   # about a minute
    python paper_figures/approximation_diagnostics.py --data-dir DIR           # several minutes
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _networks as networks
import _options as options
import _output as output
import numpy as np

from kfac_ref.backend import get_backend
from kfac_ref.config import KFACConfig
from kfac_ref.diagnostics import check_diagnose_size, diagnose_kfac
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import autoencoder, reconstruction_error
from kfac_ref.experiments.cli import ArgumentParser, HelpFormatter
from kfac_ref.experiments.data import downscale_images, make_curves
from kfac_ref.experiments.exit_status import run_script
from kfac_ref.experiments.io import require_writable_dir
from kfac_ref.mlp import MLP
from kfac_ref.optimizer import KFAC
from kfac_ref.structures import FACTORED

STEM = "approximation_diagnostics"
PROBLEMS = ("autoencoder", "classifier")
ETA = 1e-5  # §13
AE_LAM0 = 150.0  # §6.5, the paper's λ0
#: (full, quick) defaults of the per-problem options
DEFAULTS = {
    "ae_iters": (100, 30),
    "ae_every": (10, 10),
    "ae_cases": (400, 200),
    "ae_side": (7, 4),
    "clf_iters": (20, 8),
    "clf_every": (1, 2),
    "clf_train_cases": (10000, 1000),
    "clf_cases": (500, 200),
}
#: autoencoder widths for each --ae-side: the code layer (3) and the narrowing of CURVES' net
AE_LAYERS = {4: (16, 8, 4, 3, 4, 8, 16), 7: (49, 12, 8, 4, 8, 12, 49)}


def parse_args(argv: Sequence[str] | None) -> Any:
    p = ArgumentParser(description=options.description_of(__doc__), formatter_class=HelpFormatter)
    p.add_argument("--out", default=options.DEFAULT_OUT, help="directory for the PNG, PDF and JSON")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run in --out"
    )
    p.add_argument(
        "--quick", action="store_true", help="fewer iterations and cases (about a minute)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialization, training")
    p.add_argument(
        "--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS), help="what to train"
    )
    p.add_argument(
        "--structure",
        choices=list(FACTORED),
        default="block_diagonal",
        help="K-FAC's curvature structure for both runs (F̆, §4.2, or F̂, §4.3)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="MNIST directory for the classifier (as fisher_blocks.py; without MNIST files a "
        "labelled stand-in is used); default: $KFAC_REF_DATA_DIR, else ~/.cache/kfac_ref",
    )
    helps = {
        "ae_iters": "autoencoder: training iterations",
        "ae_every": "autoencoder: diagnose every N iterations",
        "ae_cases": "autoencoder: CURVES images (training and diagnosed cases)",
        "ae_side": f"autoencoder: images pooled to SIDE×SIDE (widths: {AE_LAYERS})",
        "clf_iters": "classifier: training iterations",
        "clf_every": "classifier: diagnose every N iterations",
        "clf_train_cases": "classifier: training cases",
        "clf_cases": "classifier: diagnosed cases (the first of the training cases)",
    }
    for name, (full, quick) in DEFAULTS.items():
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=None,
            help=f"{helps[name]} (default {full}, quick {quick})",
        )
    p.add_argument(
        "--ae-layers",
        type=int,
        nargs="+",
        default=None,
        help="autoencoder widths d_0 … d_ℓ (d_0 = d_ℓ = SIDE²; default from --ae-side)",
    )
    p.add_argument(
        "--ae-lam0",
        type=float,
        default=AE_LAM0,
        help="autoencoder: K-FAC's initial λ (150 is the paper's; its γ0 = √(λ0 + η) then damps "
        "F̃ so strongly that every approximation is close to the exact step; 0.01 shows more)",
    )
    p.add_argument(
        "--clf-hidden", type=int, default=20, help="classifier: width of its 5 hidden layers"
    )
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG")
    p.add_argument(
        "--formats", nargs="+", choices=["png", "pdf"], default=["png", "pdf"], help="formats"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return resolve(p.parse_args(argv))


def resolve(args: Any) -> Any:
    """Fill the --quick-dependent defaults and check the values."""
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be an integer ≥ 1, got {getattr(args, name)}")
    if args.ae_layers is None:
        if args.ae_side not in AE_LAYERS:
            raise ConfigError(
                f"--ae-side {args.ae_side} has no default widths (choose {sorted(AE_LAYERS)} or "
                "pass --ae-layers)"
            )
        args.ae_layers = list(AE_LAYERS[args.ae_side])
    if 28 % args.ae_side:
        raise ConfigError(
            f"--ae-side must divide 28 (images are pooled 28×28 → side²), got {args.ae_side}"
        )
    if args.ae_layers[0] != args.ae_side**2 or args.ae_layers[-1] != args.ae_side**2:
        raise ConfigError(
            f"--ae-layers must start and end with {args.ae_side**2} (= --ae-side²), got "
            f"{args.ae_layers}"
        )
    if args.clf_cases > args.clf_train_cases:
        raise ConfigError(
            f"--clf-cases ({args.clf_cases}) must not exceed --clf-train-cases "
            f"({args.clf_train_cases})"
        )
    if not (np.isfinite(args.ae_lam0) and args.ae_lam0 > 0):
        raise ConfigError(f"--ae-lam0 must be a number > 0, got {args.ae_lam0}")
    if args.clf_hidden < 1 or not 10 <= args.dpi <= 1200:
        raise ConfigError(
            f"need --clf-hidden ≥ 1 and 10 ≤ --dpi ≤ 1200, got {args.clf_hidden}, {args.dpi}"
        )
    return args


# ---------------------------------------------------------------------------------- problems
def autoencoder_problem(args: Any) -> dict[str, Any]:
    """The CURVES-like autoencoder: network, start, data, K-FAC settings, what is diagnosed."""
    X = downscale_images(
        make_curves(args.ae_cases, np.random.default_rng(args.seed)), 28, args.ae_side
    )
    mlp = autoencoder("curves", args.ae_layers)
    side = args.ae_side
    return {
        "name": "autoencoder",
        "mlp": mlp,
        "weights": mlp.init_sparse(seed=args.seed, backend=get_backend("numpy", "float64")),
        "X": X,
        "Y": X,
        "X_diag": X,
        "Y_diag": X,
        "lam0": args.ae_lam0,
        "iters": args.ae_iters,
        "every": args.ae_every,
        "layers": None,
        "error": lambda W: reconstruction_error(mlp, W, X),
        "error_name": "squared reconstruction error per case",
        "label": f"{'-'.join(map(str, args.ae_layers))} autoencoder (P = {mlp.n_params}), "
        f"{args.ae_cases} CURVES stand-in images pooled to {side}×{side}, sparse init, λ0 = "
        f"{args.ae_lam0:g}",
    }


def classifier_problem(args: Any) -> dict[str, Any]:
    """The Figure 2 classifier, data as ``fisher_blocks.py`` loads them, middle layers diagnosed."""
    images = networks.load_images(args.clf_train_cases, args.seed, _data_dir(args))
    X, Y = images.X, networks.one_hot(images.labels)
    widths = (options.PAPER_WIDTHS[0], *(args.clf_hidden,) * 5, options.PAPER_WIDTHS[-1])
    mlp = MLP(widths, "tanh", "softmax")
    first = options.MIDDLE_FIRST
    layers = list(range(first, first + options.MIDDLE_COUNT))
    return {
        "name": "classifier",
        "mlp": mlp,
        "weights": mlp.init_gaussian(args.seed, get_backend("numpy", "float64")),
        "X": X,
        "Y": Y,
        "X_diag": X[: args.clf_cases],
        "Y_diag": Y[: args.clf_cases],
        "lam0": options.KFAC_LAM0,
        "iters": args.clf_iters,
        "every": args.clf_every,
        "layers": layers,
        "error": lambda W: networks.classification_error(mlp, W, X, Y),
        "error_name": "training classification error",
        "label": f"Figure 2's {'-'.join(map(str, widths))} tanh classifier, {images.label}; "
        f"W_2..W_5 diagnosed on the first {args.clf_cases:,} cases, λ0 = {options.KFAC_LAM0:g}",
        "data_origin": images.origin,
    }


def _data_dir(args: Any) -> Path | None:
    return Path(args.data_dir).expanduser() if args.data_dir else None


def train_and_diagnose(problem: dict[str, Any], args: Any, stages: output.Stages) -> dict[str, Any]:
    """K-FAC in batch mode; :func:`diagnose_kfac` after every ``every``-th step (and the last)."""
    mlp, W = problem["mlp"], problem["weights"]
    X, Y = problem["X"], problem["Y"]
    cfg = KFACConfig(structure=args.structure, eta=ETA, lam0=problem["lam0"])
    opt = KFAC(mlp, cfg, get_backend("numpy", "float64"))
    state, records = opt.init_state(W), []
    t_train = t_diag = 0.0
    stages(f"{problem['name']}: {problem['iters']} iterations, diagnosed every {problem['every']}")
    with stages.bar(problem["iters"], problem["name"]) as bar:
        for k in range(1, problem["iters"] + 1):
            t0 = time.perf_counter()
            rng = np.random.default_rng(networks._step_seed(args.seed, k))  # as fisher_blocks.py
            W, state, info = opt.step(W, state, X, Y, rng)
            t_train += time.perf_counter() - t0
            if k % problem["every"] == 0 or k == problem["iters"]:
                t0 = time.perf_counter()
                d = diagnose_kfac(
                    opt, W, state, problem["X_diag"], problem["Y_diag"], problem["layers"]
                )
                t_diag += time.perf_counter() - t0
                records.append(
                    {
                        "iteration": k,
                        "loss": float(info["loss"]),
                        "error": float(problem["error"](W)),
                        "lam": float(state.lam),
                        **d,
                    }
                )
            bar.update(1)
    last = records[-1]
    stages(
        f"{problem['name']}: done ({t_train:.1f} s training, {t_diag:.1f} s diagnostics); last: "
        f"cos(Δ, natural gradient) = {last['cosine_delta_vs_natural_gradient']:.3f}, "
        f"Σ|F − F̃| = {last['total_error']:.4g} (bound {last['bound']:.4g})"
    )
    return {
        "label": problem["label"],
        "error_name": problem["error_name"],
        "layers_diagnosed": [k + 1 for k in (problem["layers"] or range(mlp.n_layers))],
        "layer_sizes": list(mlp.layer_sizes),
        "n_params": mlp.n_params,
        "diagnosed_cases": int(problem["X_diag"].shape[0]),
        "training_cases": int(X.shape[0]),
        "lam0": problem["lam0"],
        "records": records,
        "seconds_training": t_train,
        "seconds_diagnostics": t_diag,
    }


# ---------------------------------------------------------------------------------- drawing
def band_means(rec: dict[str, float], layers: list[int]) -> dict[str, float]:
    """Mean of ‖F_ij − F̃_ij‖/‖F_ij‖ over diagonal, first off-diagonal and farther pairs."""
    groups: dict[str, list[float]] = {"diagonal": [], "first off-diagonal": [], "farther": []}
    for i in layers:
        for j in layers:
            name = "diagonal" if i == j else "first off-diagonal" if abs(i - j) == 1 else "farther"
            groups[name].append(rec[f"F_tilde_vs_F_block_{i}_{j}"])
    return {k: float(np.mean(v)) for k, v in groups.items() if v}


def draw(results: dict[str, Any], args: Any) -> Any:
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(
        5, len(names), figsize=(6.2 * len(names), 15), layout="constrained", squeeze=False
    )
    for c, name in enumerate(names):
        r = results[name]
        recs, its = r["records"], [rec["iteration"] for rec in r["records"]]
        ax = axes[0, c]
        ax.plot(its, [rec["error"] for rec in recs], "k.-")
        ax.set_ylabel(r["error_name"], fontsize=8)
        ax.set_title(f"{name}: {r['label']}", fontsize=8, wrap=True)
        ax = axes[1, c]
        bands = [band_means(rec, r["layers_diagnosed"]) for rec in recs]
        ax.plot(its, [rec["F_tilde_vs_F"] for rec in recs], "k.-", label="whole matrix")
        for key, style in zip(bands[0], ("C0.-", "C1.-", "C2.-"), strict=False):
            ax.plot(its, [b[key] for b in bands], style, label=f"{key} blocks (mean)")
        ax.set_ylabel("‖F_ij − F̃_ij‖ / ‖F_ij‖ (§3)", fontsize=8)
        ax.legend(fontsize=7)
        ax = axes[2, c]
        ax.semilogy(its, [rec["total_error"] for rec in recs], "k.-", label="Σ|F − F̃|")
        ax.semilogy(its, [rec["bound"] for rec in recs], "C3.--", label="cumulant bound")
        ax.semilogy(its, [rec["kappa4_abs_sum"] for rec in recs], "C0:", label="Σ|κ4|")
        ax.semilogy(its, [rec["kappa3_terms_abs_sum"] for rec in recs], "C2:", label="Σ|κ(ā)κ3|")
        ax.set_ylabel("§3.1 sums over weight pairs (F a mean over cases)", fontsize=8)
        ax.legend(fontsize=7)
        ax = axes[3, c]
        ax.semilogy(its, [rec["F_breve_inv_vs_F_tilde_inv"] for rec in recs], "C0.-", label="F̆⁻¹")
        ax.semilogy(its, [rec["F_hat_inv_vs_F_tilde_inv"] for rec in recs], "C1.-", label="F̂⁻¹")
        ax.set_ylabel("‖· − F̃⁻¹‖ / ‖F̃⁻¹‖ at the run's γ (§4, §6.3)", fontsize=8)
        ax.legend(fontsize=7)
        ax = axes[4, c]
        ax.plot(
            its,
            [rec["cosine_delta_vs_natural_gradient"] for rec in recs],
            "k.-",
            label="cos(Δ, Δ_F)",
        )
        ax.plot(
            its,
            [rec["model_change_ratio"] for rec in recs],
            "C3.--",
            label="M(α*Δ) / M(Δ_F) (share of the exact decrease)",
        )
        ax.set_ylim(min(0.0, *(rec["cosine_delta_vs_natural_gradient"] for rec in recs)), 1.05)
        ax.set_ylabel("K-FAC's Δ vs Δ_F = −(F + (λ+η)I)⁻¹∇h (§6, §7)", fontsize=8)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"K-FAC ({args.structure}) against the exact Fisher along training (float64, NumPy)",
        fontsize=10,
    )
    return fig


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train and diagnose each problem, draw, write JSON; returns the JSON's content."""
    args = parse_args(argv)
    output.use_agg()
    out = Path(args.out)
    names = [f"{STEM}.{ext}" for ext in (*args.formats, "json")]
    if not args.overwrite and (existing := [n for n in names if (out / n).exists()]):
        raise ConfigError(
            f"{out} already holds {', '.join(existing)} from an earlier run; pass --overwrite "
            "to replace them or choose another --out"
        )
    require_writable_dir(out, "--out")
    stages = output.Stages(STEM, not args.no_progress)
    builders = {"autoencoder": autoencoder_problem, "classifier": classifier_problem}
    problems = [builders[name](args) for name in args.problems]
    for p in problems:  # refuse a net too large for the dense matrices before training
        check_diagnose_size(p["mlp"], p["X_diag"].shape[0], p["layers"])
    results = {p["name"]: train_and_diagnose(p, args, stages) for p in problems}
    stages(f"figure: drawing into {out}/")
    files = output.save_figure(draw(results, args), out, STEM, args.dpi, args.formats)
    settings = {k: v for k, v in vars(args).items() if k not in ("debug", "no_progress")}
    result = {"settings": settings, "problems": results, "seconds": stages.elapsed}
    files.append(output.save_json(out / f"{STEM}.json", result))
    stages("wrote " + ", ".join(str(f) for f in files))
    return result


if __name__ == "__main__":
    sys.exit(run_script(main))
