"""Shared pieces of the matrix figures (paper Figures 2, 3, 5 and 6): options, data, the
partially trained classifier, the middle-layer matrices, and atomic PNG/PDF/JSON/NPZ output.

Orchestration only: every number comes from a :mod:`kfac_ref` function; this file loads data,
trains, slices and writes files. The two scripts that use it are ``fisher_blocks.py``
(Figures 2–3) and ``inverse_quality.py`` (Figures 5–6).

The network (paper §3, Figures 2–3; spec §12): a 256-20-20-20-20-20-10 classifier with tanh
hidden units and a softmax output, partially trained on 16×16 down-scaled MNIST. The figures show
the parameters of the **middle four layers** W_2..W_5 (4 × 20·21 = 1680 parameters).

Restriction to the middle layers. Every matrix shown is the 1680×1680 matrix of those
parameters alone (F, F̃, F̆, F̂ of W_2..W_5 with the other weights held fixed); inverses are
inverses of these 1680×1680 matrices. The per-case gradients of W_2..W_5 depend on x only
through a_1 = φ(W_1 ā_0), so the exact F of the middle layers is computed as the exact Fisher of
the sub-network a_1 → W_2 … W_6 → softmax (whose first four layers are W_2..W_5), sliced to its
first 1680 rows and columns: the same numbers as slicing the Fisher of the whole 7030-parameter
network, at a fraction of the cost (``tests/test_matrix_figures.py`` checks this equality).
Likewise the Kronecker factors Ā_{k,l}, G_{k,l} of the middle layers are those of the full network,
so F̃, F̆ and F̂ are built from the factors of the four middle layers only. F̂ is then the
block-tridiagonal-inverse approximation of the four-layer chain, which equals the middle part
of the whole network's F̂: F̂ is the covariance of a Gaussian chain (§4.3), and a chain's
marginal over consecutive layers is the chain of those layers (also checked in the tests).

Data. MNIST is read with ``kfac_ref.data.load_mnist(download=False)`` and down-scaled to
16×16 (``downscale_images``). Where MNIST is not on disk (no network on the build machines),
the figures use CURVES images (``make_curves``) down-scaled to 16×16 with deterministic labels:
the arg-max of a fixed random linear "teacher" applied to the centred images (10 classes); a
one-line notice says so. Without the data module, uniform random images with the same teacher
labels stand in.

Training (``--trainer``). ``auto`` (default) uses ``kfac_ref.optimizer.KFAC`` in batch mode
when it is importable, as the paper trained its example with K-FAC: block-diagonal, the
paper's defaults except λ0 = :data:`KFAC_LAM0`; the γ of its last iteration becomes the
default damping of the inverses, as in the paper. Otherwise (or with ``natgrad``) a short loop
of damped block-diagonal natural-gradient steps: exact factors (kfac_ref.factors), F̆⁻¹ of the
γ-damped factors (kfac_ref.inverse), the step length from the exact-Fisher quadratic model with
λ = γ² (§7 without momentum), fixed γ = 0.01. The JSON output names the trainer used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kfac_ref.backend import Backend, get_backend, to_numpy
from kfac_ref.errors import ConfigError, DataError
from kfac_ref.factors import KroneckerFactors, kronecker_factors
from kfac_ref.fisher import (
    damped_diagonal,
    dense_F_hat,
    dense_F_tilde,
    exact_fisher,
    fisher_vector_product,
)
from kfac_ref.inverse import apply_block_diagonal_inverse, block_diagonal_inverse
from kfac_ref.io import atomic_path
from kfac_ref.mlp import MLP
from kfac_ref.vec import layer_offsets

PAPER_WIDTHS = (256, 20, 20, 20, 20, 20, 10)  # the example network of Figures 2–3 (spec §12)
MIDDLE_FIRST, MIDDLE_COUNT = 1, 4  # 0-based layer index of W_2, and four layers W_2..W_5
SIDE_IN, SIDE_OUT = 28, 16  # MNIST / CURVES images are 28×28, down-scaled to 16×16
N_CLASSES = 10
DEFAULT_OUT = "figures_out"
# λ0 of the K-FAC trainer. The autoencoders' λ0 = 150 (§6.5) starts γ = √λ0 at its clamp of 1 and
# this small classifier barely moves in a few dozen batch iterations; with λ0 = 0.01 (γ0 = 0.1)
# it reaches ~8 % training error in 30 iterations on 10000 cases (the paper: 5 % after 7).
KFAC_LAM0 = 1e-2


# ----------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Settings:
    """Resolved options of one figure run (``--quick`` changes the defaults, not the method)."""

    out: Path
    quick: bool
    seed: int
    backend: str
    train_cases: int
    cases: int
    iters: int
    hidden: int
    gamma: float | None
    trainer: str
    weights: Path | None
    vmax_quantile: float

    @property
    def widths(self) -> tuple[int, ...]:
        """(d_0, …, d_ℓ): the paper's 256-20-20-20-20-20-10 unless ``--hidden`` changes 20."""
        return (PAPER_WIDTHS[0],) + (self.hidden,) * 5 + (PAPER_WIDTHS[-1],)


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options both matrix-figure scripts share."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT}/)")
    p.add_argument("--quick", action="store_true", help="fewer cases and iterations (under a minute on 2 cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialization and training (default 0)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                   help="array backend (default: $KFAC_REF_BACKEND or numpy); float64 throughout")
    p.add_argument("--train-cases", type=int, default=None, help="training cases (default 10000; quick 1000)")
    p.add_argument("--cases", type=int, default=None,
                   help="cases on which F, F̃, F̆, F̂ are computed (default 2000; quick 400)")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default 30; quick 15)")
    p.add_argument("--hidden", type=int, default=PAPER_WIDTHS[1],
                   help="width of the five hidden layers (default 20, the paper's; smaller for tests)")
    p.add_argument("--gamma", type=float, default=None,
                   help="factored Tikhonov damping γ of the inverses (§6.3; default: the trainer's final γ)")
    p.add_argument("--trainer", choices=["auto", "kfac", "natgrad"], default="auto",
                   help="auto: kfac_ref.optimizer.KFAC if importable, else natgrad (damped F̆⁻¹ steps)")
    p.add_argument("--weights", default=None,
                   help="use the weights saved in this .npz (by either script) instead of training")
    p.add_argument("--vmax-quantile", type=float, default=0.995,
                   help="white level = this quantile of |reference matrix| (default 0.995)")
    return p


def resolve(args: argparse.Namespace) -> Settings:
    """Fill the defaults that depend on ``--quick`` and check the values."""
    quick = bool(args.quick)
    s = Settings(
        out=Path(args.out),
        quick=quick,
        seed=int(args.seed),
        backend=args.backend or os.environ.get("KFAC_REF_BACKEND") or "numpy",
        train_cases=args.train_cases or (1000 if quick else 10000),
        cases=args.cases or (400 if quick else 2000),
        iters=args.iters if args.iters is not None else (15 if quick else 30),
        hidden=int(args.hidden),
        gamma=args.gamma,
        trainer=args.trainer,
        weights=Path(args.weights) if args.weights else None,
        vmax_quantile=float(args.vmax_quantile),
    )
    if s.cases < 2 or s.train_cases < s.cases or s.iters < 0 or s.hidden < 1:
        raise ConfigError(f"need 2 ≤ --cases ≤ --train-cases, --iters ≥ 0, --hidden ≥ 1; got {s}")
    if not 0.0 < s.vmax_quantile <= 1.0:
        raise ConfigError(f"--vmax-quantile must be in (0, 1], got {s.vmax_quantile}")
    if s.gamma is not None and s.gamma < 0:
        raise ConfigError(f"--gamma must be ≥ 0, got {s.gamma}")
    return s


# -------------------------------------------------------------------------------------- data
@dataclass
class Images:
    """16×16 images as rows (n, 256) in [0, 1], integer labels (n,), and where they came from."""

    X: np.ndarray
    labels: np.ndarray
    source: str


def teacher_labels(X: np.ndarray, seed: int) -> np.ndarray:
    """Labels arg-max_c (X − mean) T[:, c] of a fixed random linear teacher T ~ N(0, 1) (seeded)."""
    T = np.random.default_rng([seed, 7919]).standard_normal((X.shape[1], N_CLASSES))
    return np.argmax((X - X.mean(axis=0)) @ T, axis=1)


def load_images(n: int, seed: int) -> Images:
    """``n`` 16×16 images with labels: MNIST if on disk, else CURVES + teacher, else random.

    Prints a one-line notice when it falls back from MNIST.
    """
    try:
        from kfac_ref import data
    except ImportError:
        X = np.random.default_rng(seed).random((n, SIDE_OUT * SIDE_OUT))
        print("notice: kfac_ref.data is missing; using uniform random 16×16 images with teacher labels")
        return Images(X, teacher_labels(X, seed), "random images (no data module), teacher labels")
    try:
        mnist = data.load_mnist(download=False)
    except DataError:
        X = data.downscale_images(data.make_curves(n, np.random.default_rng(seed)), SIDE_IN, SIDE_OUT)
        print("notice: MNIST is not on disk (download disabled); using CURVES images down-scaled to "
              "16×16 with labels from a fixed random linear teacher (10 classes)")
        return Images(X, teacher_labels(X, seed), f"CURVES (make_curves, seed {seed}) 16x16, teacher labels")
    X = data.downscale_images(mnist.X_train[:n], SIDE_IN, SIDE_OUT)
    return Images(X, np.asarray(mnist.y_train[:n], dtype=np.int64), f"MNIST 16x16 ({mnist.source})")


def one_hot(labels: np.ndarray, k: int = N_CLASSES) -> np.ndarray:
    """(n,) integer labels → (n, k) one-hot rows (softmax targets)."""
    Y = np.zeros((labels.shape[0], k))
    Y[np.arange(labels.shape[0]), labels] = 1.0
    return Y


# ---------------------------------------------------------------------------------- training
@dataclass
class TrainedNet:
    """The partially trained classifier and everything the figures report about it."""

    mlp: MLP
    weights: list[Any]
    X: Any  # all training cases (backend array)
    Y: Any
    X_cases: Any  # the first ``cases`` training cases: F, F̃, F̆, F̂ are computed on these
    trainer: str
    gamma: float  # γ of the trainer's last iteration (the paper uses it for the inverses)
    history: list[dict[str, float]] = field(default_factory=list)
    data_source: str = ""
    seconds: float = 0.0


def classification_error(mlp: MLP, weights: Sequence[Any], X: Any, Y: Any) -> float:
    """Fraction of cases whose arg-max output differs from the arg-max target."""
    out = mlp.forward(weights, X).output
    return float(to_numpy((out.argmax(axis=1) != Y.argmax(axis=1)).mean()))


def natgrad_step(mlp: MLP, weights: list[Any], X: Any, Y: Any, gamma: float, eta: float) -> tuple[list[Any], dict]:
    """One damped block-diagonal natural-gradient step in batch mode (§4.2, §6.3, §7 without μ).

    Δ = −F̆(γ)⁻¹ ∇h with exact factors on X; δ = α Δ with α = −∇hᵀΔ / (ΔᵀFΔ + (λ+η)‖Δ‖²),
    λ = γ² − η (K-FAC's γ = √(λ+η)), F the exact Fisher of the batch (Fisher-vector product).
    """
    h, grads, fwd = mlp.loss_and_grad(weights, X, Y, eta)
    factors = kronecker_factors(mlp, weights, X, method="exact")
    A_d, G_d = damped_diagonal(factors, gamma)
    Delta = [-D for D in apply_block_diagonal_inverse(block_diagonal_inverse(A_d, G_d), grads)]
    F_Delta = fisher_vector_product(mlp, weights, X, Delta, fwd)
    curvature = sum(float((D * FD).sum()) + gamma**2 * float((D * D).sum()) for D, FD in zip(Delta, F_Delta, strict=True))
    slope = sum(float((g * D).sum()) for g, D in zip(grads, Delta, strict=True))
    alpha = -slope / curvature
    return [W + alpha * D for W, D in zip(weights, Delta, strict=True)], {"loss": float(h), "alpha": alpha}


def train_kfac(mlp: MLP, weights: list[Any], X: Any, Y: Any, iters: int, backend: Backend, seed: int):
    """Batch-mode K-FAC (``kfac_ref.optimizer.KFAC``): ``iters`` steps on all of X.

    Returns (weights, history, γ of the last step). Raises ImportError where the optimizer is absent.
    """
    from kfac_ref import config, optimizer

    opt = optimizer.KFAC(mlp, config.KFACConfig(eta=1e-5, lam0=KFAC_LAM0), backend)
    state = opt.init_state(weights)
    history, gamma = [], float("nan")
    for k in range(1, iters + 1):
        step_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])  # an int: CuPy too
        weights, state, info = opt.step(weights, state, X, Y, backend.rng(step_seed))
        if "gamma" in info:
            gamma = float(to_numpy(info["gamma"]))
        loss = info["loss"] if "loss" in info else mlp.loss(weights, X, Y)
        history.append({"iteration": k, "loss": float(to_numpy(loss)),
                        "train_error": classification_error(mlp, weights, X, Y)})
    return weights, history, gamma


def train_natgrad(mlp: MLP, weights: list[Any], X: Any, Y: Any, iters: int, gamma: float, eta: float):
    """``iters`` :func:`natgrad_step` s with a fixed γ. Returns (weights, history, γ)."""
    history = []
    for k in range(1, iters + 1):
        weights, info = natgrad_step(mlp, weights, X, Y, gamma, eta)
        history.append({"iteration": k, **info, "train_error": classification_error(mlp, weights, X, Y)})
    return weights, history, gamma


def _load_network(path: Path, backend: Backend) -> tuple[MLP, list[Any], Any, float]:
    """(mlp, weights, X_cases, γ) from a ``.npz`` written by :func:`save_network`."""
    with np.load(path) as z:
        mlp = MLP([int(d) for d in z["layer_sizes"]], "tanh", "softmax")
        weights = [backend.asarray(z[f"W_{i + 1}"]) for i in range(mlp.n_layers)]
        X_cases, gamma = backend.asarray(z["X_cases"]), float(z["gamma"])
    mlp.check_weights(weights)
    return mlp, weights, X_cases, gamma


def partially_trained_network(s: Settings, natgrad_gamma: float = 0.01, eta: float = 1e-5) -> TrainedNet:
    """The Figure 2 network: data, W ~ N(0, 1/fan_in) (``init_gaussian``), ``s.iters`` training steps.

    The paper does not say how its classifier was initialized; the dense scaled Gaussian keeps
    the tanh units out of saturation (the sparse initialization of §13, meant for the logistic
    autoencoders, saturates them and trains this classifier several times slower).

    With ``s.weights`` the weights and the cases saved by :func:`save_network` are used instead
    (no training); the training set (for the reported error) is re-made from the seed.
    """
    backend = get_backend(s.backend, "float64")
    images = load_images(s.train_cases, s.seed)
    X, Y = backend.asarray(images.X), backend.asarray(one_hot(images.labels))
    t0 = time.perf_counter()
    if s.weights is not None:
        mlp, weights, X_cases, gamma = _load_network(s.weights, backend)
        return TrainedNet(mlp, weights, X, Y, X_cases, f"loaded from {s.weights}", gamma, [],
                          images.source, 0.0)
    mlp = MLP(s.widths, "tanh", "softmax")
    weights = mlp.init_gaussian(s.seed, backend)
    result, trainer = None, "natgrad (damped block-diagonal natural-gradient steps, batch mode)"
    if s.trainer in ("auto", "kfac"):
        try:
            result = train_kfac(mlp, weights, X, Y, s.iters, backend, s.seed)
            trainer = "kfac_ref.optimizer.KFAC (batch mode)"
        except ImportError:
            if s.trainer == "kfac":
                raise
    if result is None:
        result = train_natgrad(mlp, weights, X, Y, s.iters, natgrad_gamma, eta)
    weights, history, gamma = result
    return TrainedNet(mlp, weights, X, Y, X[: s.cases], trainer, gamma, history, images.source,
                      time.perf_counter() - t0)


# --------------------------------------------------------------------- middle-layer matrices
def prepare(description: str, argv: Sequence[str] | None) -> tuple[Settings, TrainedNet, float, float]:
    """Parse the options, train (or load) the network: (settings, network, γ, start time).

    γ is ``--gamma`` if given, else the damping K-FAC had at its last step (as in the paper).
    """
    use_agg()
    s = resolve(base_parser(description).parse_args(argv))
    t0 = time.perf_counter()
    net = partially_trained_network(s)
    return s, net, (s.gamma if s.gamma is not None else net.gamma), t0


def middle_shapes(mlp: MLP) -> list[tuple[int, int]]:
    """Shapes of W_2..W_5, the layers shown in the figures."""
    return mlp.shapes[MIDDLE_FIRST : MIDDLE_FIRST + MIDDLE_COUNT]


def middle_slice(mlp: MLP) -> slice:
    """Where W_2..W_5 sit in θ of the whole network (for tests and notebooks)."""
    off = layer_offsets(mlp.shapes)
    return slice(off[MIDDLE_FIRST], off[MIDDLE_FIRST + MIDDLE_COUNT])


def subnetwork(mlp: MLP, weights: Sequence[Any], X: Any, first: int) -> tuple[MLP, list[Any], Any]:
    """The network a_first → W_{first+1} … W_ℓ → output, its weights, and its inputs a_first.

    Its per-case gradients of W_{first+1}.. equal those of the whole network (same ā, same g).
    """
    if first == 0:
        return mlp, list(weights), X
    sub = MLP(mlp.layer_sizes[first:], [a.name for a in mlp.activations[first:]], mlp.output.name)
    a_first = mlp.forward(weights, X).abar[first][:, :-1]
    return sub, list(weights[first:]), a_first


def restrict_factors(factors: KroneckerFactors, count: int) -> KroneckerFactors:
    """The factor blocks of the first ``count`` layers only."""
    return KroneckerFactors(A_bar=[row[:count] for row in factors.A_bar[:count]],
                            G=[row[:count] for row in factors.G[:count]])


@dataclass
class MiddleMatrices:
    """Dense host matrices of the middle layers: F (exact), F̃, F̆, F̂, undamped and γ-damped.

    ``damped[name]`` adds the factored Tikhonov damping of §6.3 to the diagonal blocks: F̃, F̆,
    F̂ are built from the damped diagonal factors, and F becomes F + Δ with Δ = F̃(γ) − F̃(0)
    (block-diagonal), so inverses of equally damped matrices are compared (as
    ``kfac_ref.compare.compare_fisher`` does).
    """

    undamped: dict[str, np.ndarray]
    damped: dict[str, np.ndarray]
    shapes: list[tuple[int, int]]
    gamma: float

    @property
    def boundaries(self) -> list[int]:
        """Indices where a new layer's block starts (for dashed lines), without 0 and P."""
        return layer_offsets(self.shapes)[1:-1]


APPROXIMATIONS = ("F_tilde", "F_breve", "F_hat")


def middle_matrices(net: TrainedNet, gamma: float, names: Sequence[str] = APPROXIMATIONS) -> MiddleMatrices:
    """F of W_2..W_5 by ``exact_fisher`` (on the sub-network) and the approximations ``names``
    (F̃ is always built) from the factors of those layers, undamped and with damping γ."""
    sub, sub_w, A1 = subnetwork(net.mlp, net.weights, net.X_cases, MIDDLE_FIRST)
    shapes = middle_shapes(net.mlp)
    P = layer_offsets(shapes)[-1]
    F = to_numpy(exact_fisher(sub, sub_w, A1))[:P, :P]
    factors = restrict_factors(kronecker_factors(sub, sub_w, A1, method="exact"), MIDDLE_COUNT)
    build = {
        "F_tilde": lambda g: dense_F_tilde(factors, g, "full"),
        "F_breve": lambda g: dense_F_tilde(factors, g, "block_diagonal"),
        "F_hat": lambda g: dense_F_hat(factors, g),
    }
    wanted = ["F_tilde"] + [n for n in names if n != "F_tilde"]
    undamped = {"F": F, **{n: to_numpy(build[n](0.0)) for n in wanted}}
    damped = {n: to_numpy(build[n](gamma)) for n in wanted}
    damped["F"] = F + (damped["F_tilde"] - undamped["F_tilde"])  # Δ lives on the diagonal blocks
    return MiddleMatrices(undamped, damped, shapes, gamma)


# ------------------------------------------------------------------------------------ output
def save_figure(fig: Any, out: Path, stem: str, dpi: int = 200) -> list[Path]:
    """Save ``fig`` as ``out/stem.png`` and ``out/stem.pdf`` atomically; close it."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{stem}.{ext}"
        with atomic_path(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def save_json(path: Path, obj: dict[str, Any]) -> Path:
    """``obj`` as indented JSON (arrays as lists, NaN/inf as null), atomically."""
    with atomic_path(path, suffix=path.suffix) as tmp:
        tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n", encoding="utf-8")
    return path


def save_network(path: Path, net: TrainedNet) -> Path:
    """The weights W_1..W_ℓ, the widths, γ and the cases the matrices used, as ``.npz``."""
    arrays = {f"W_{i + 1}": to_numpy(W) for i, W in enumerate(net.weights)}
    arrays.update(layer_sizes=np.array(net.mlp.layer_sizes), gamma=np.array(net.gamma),
                  X_cases=to_numpy(net.X_cases))
    with atomic_path(path, suffix=path.suffix) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def run_summary(s: Settings, net: TrainedNet, gamma: float) -> dict[str, Any]:
    """Settings and training facts that every JSON output starts with."""
    return {
        "network": {"layer_sizes": list(net.mlp.layer_sizes), "hidden": "tanh", "output": "softmax",
                    "layers_shown": [MIDDLE_FIRST + 1 + k for k in range(MIDDLE_COUNT)]},
        "data": net.data_source,
        "trainer": net.trainer,
        "train_iterations": len(net.history),
        "train_seconds": net.seconds,
        "train_error": classification_error(net.mlp, net.weights, net.X, net.Y),
        "history": net.history,
        "cases": int(net.X_cases.shape[0]),
        "train_cases": int(net.X.shape[0]),
        "gamma": gamma,
        "seed": s.seed,
        "backend": s.backend,
        "quick": s.quick,
    }


# ---------------------------------------------------------------------------------- plotting
def use_agg() -> None:
    """Select the non-interactive Agg backend (scripts and tests draw to files only)."""
    import matplotlib

    matplotlib.use("Agg")


def show_abs(ax: Any, M: np.ndarray, vmax: float, boundaries: Sequence[int], title: str) -> Any:
    """|M| in grey levels, black = 0, white = ``vmax`` and above (as in the paper), dashed block lines."""
    im = ax.imshow(np.abs(M), cmap="gray", vmin=0.0, vmax=vmax, interpolation="antialiased")
    for b in boundaries:
        ax.axhline(b - 0.5, color="tab:orange", linestyle="--", linewidth=0.6)
        ax.axvline(b - 0.5, color="tab:orange", linestyle="--", linewidth=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def white_level(M: np.ndarray, quantile: float) -> float:
    """The value drawn white: a high quantile of |M| (positive even for an all-zero M)."""
    v = float(np.quantile(np.abs(M), quantile))
    return v if v > 0 else float(np.abs(M).max()) or 1.0


def tridiagonal_ratio(block_means: np.ndarray) -> float:
    """Mean |entry| of the blocks off the block tridiagonal ÷ that of the tridiagonal blocks."""
    L = block_means.shape[0]
    k, l = np.indices((L, L))
    off = np.abs(k - l) > 1
    return float(block_means[off].mean() / block_means[~off].mean()) if off.any() else 0.0
