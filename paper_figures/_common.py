"""Shared pieces of the matrix figures (paper Figures 2, 3, 5 and 6): options, data, the
partially trained classifier, the middle-layer matrices, progress lines, and atomic
PNG/PDF/JSON/NPZ output.

Orchestration only: every number comes from a :mod:`kfac_ref` function; this file loads data,
trains, slices and writes files. The two scripts that use it are ``fisher_blocks.py``
(Figures 2–3) and ``inverse_quality.py`` (Figures 5–6).

The network (paper §3, Figures 2–3): a 256-20-20-20-20-20-10 classifier with tanh
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

Data (``--data-dir``, else ``$KFAC_REF_DATA_DIR``, else ``~/.cache/kfac_ref``), read with
``kfac_ref.experiments.data.load_mnist(download=False)`` and down-scaled to 16×16 by area averaging
(``downscale_images``), as the paper does:

* the four original MNIST files → the first ``--train-cases`` of the 60,000 training cases;
* only ``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz`` → the 10,000 real digits
  of the MNIST test split (e.g. ``--data-dir ../shared/data/mnist-t10k`` on the build machines);
* no MNIST file at all → a **stand-in**: CURVES images (``make_curves``) down-scaled to 16×16,
  labelled by the arg-max of a fixed random linear "teacher" (10 classes). A notice says so.

A damaged or incomplete MNIST directory is an error, not a silent stand-in. Every figure and
JSON names the data used and the number of cases (``data`` in the JSON).

Training (``--trainer``). ``auto`` (default) and ``kfac`` use ``kfac_ref.optimizer.KFAC`` in
batch mode, as the paper trained its example: block-diagonal, the paper's constants except
λ0 = :data:`KFAC_LAM0`, so γ0 = √(λ0 + η) ≈ 0.1; its γ search (§6.6) runs every T2 = 20
iterations, so the default 20 iterations end with the γ that search chose, and the inverses use
that γ, as in the paper. ``natgrad`` is a short loop of damped block-diagonal natural-gradient
steps (``kfac_ref.natgrad.natgrad_step``: exact factors, F̆⁻¹ of the γ-damped factors, the step
length from the exact-Fisher quadratic model with λ + η = γ², fixed γ = 0.01; §4.2, §6.3, §7
without momentum), kept as a small, fast trainer for the tests. The JSON names the trainer, the
iterations and the training error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kfac_ref.backend import KNOWN_BACKENDS, Backend, get_backend, to_numpy
from kfac_ref.compare import APPROXIMATIONS as COMPARED
from kfac_ref.compare import DENSE_F_TILDE, dense_approximation, dense_F_tilde
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import checks
from kfac_ref.experiments.cli import ArgumentParser
from kfac_ref.experiments.io import atomic_path, open_regular
from kfac_ref.factors import KroneckerFactors, kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.mlp import MLP
from kfac_ref.natgrad import natgrad_step
from kfac_ref.rng import RunGenerator
from kfac_ref.vec import layer_offsets

PAPER_WIDTHS = (256, 20, 20, 20, 20, 20, 10)  # the example network of Figures 2–3 (§3)
MIDDLE_FIRST, MIDDLE_COUNT = 1, 4  # 0-based layer index of W_2, and four layers W_2..W_5
SIDE_IN, SIDE_OUT = 28, 16  # MNIST / CURVES images are 28×28, down-scaled to 16×16
N_CLASSES = 10
DEFAULT_OUT = "figures_out"
# λ0 of the K-FAC trainer. The autoencoders' λ0 = 150 (§6.5) starts γ = √λ0 at its clamp of 1 and
# this small classifier barely moves in a few dozen batch iterations; with λ0 = 0.01 (γ0 = 0.1)
# it reaches 3.3 % training error in 20 iterations on the 10,000 real test-split digits (the
# paper: 5 % after 7 iterations, 0 % after 22).
KFAC_LAM0 = 1e-2
FISHER_CHUNK = 250  # cases per exact-Fisher chunk (one progress-bar step)
#: Memory checked before any work (:func:`check_memory`). P×P float64 arrays of the middle
#: layers held at the peak: 32 measured (tracemalloc) for inverse_quality.py at --hidden 16
#: and 24, 17 for fisher_blocks.py; and bytes per training case (images, 16×16 rows, one-hot
#: targets, the batch-mode trainer's activations).
MATRIX_COPIES = 34
CASE_BYTES = 8 * (3 * SIDE_IN**2 + 6 * SIDE_OUT**2)


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
    data_dir: Path | None = None
    scale: str = "linear"
    decades: float = 4.0
    dpi: int = 150
    formats: tuple[str, ...] = ("png", "pdf")
    overwrite: bool = False
    progress: bool = True
    init: str = "gaussian"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def widths(self) -> tuple[int, ...]:
        """(d_0, …, d_ℓ): the paper's 256-20-20-20-20-20-10 unless ``--hidden`` changes 20."""
        return (PAPER_WIDTHS[0],) + (self.hidden,) * 5 + (PAPER_WIDTHS[-1],)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (``--quick``-dependent defaults are in the text),
    the description kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        if isinstance(action.default, (list, tuple)):
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def description_of(doc: str | None) -> str:
    """The first paragraph of a script's docstring: the whole sentence(s), for ``--help``."""
    return (doc or "").strip().split("\n\n")[0]


def base_parser(description: str, default_scale: str = "linear") -> argparse.ArgumentParser:
    """The options both matrix-figure scripts share (each script may add its own)."""
    p = ArgumentParser(description=description, formatter_class=HelpFormatter)
    p.add_argument(
        "--out", default=DEFAULT_OUT, help="output directory (PNG, PDF, JSON and NPZ go here)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files of an earlier run in --out (otherwise refused)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the MNIST files (all four originals, or only the two t10k-* "
        "files of the test split); default: $KFAC_REF_DATA_DIR, else "
        "~/.cache/kfac_ref. Without any MNIST file a labelled stand-in is used",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer cases and iterations (about half a minute on 2 cores)",
    )
    p.add_argument(
        "--seed", type=checks.seed_arg, default=0, help="seed of data, initialization and training"
    )
    p.add_argument(
        "--backend",
        choices=KNOWN_BACKENDS,
        default=None,
        help="array backend (default: $KFAC_REF_BACKEND, else numpy); float64 throughout",
    )
    p.add_argument(
        "--train-cases",
        type=checks.int_arg(2),
        default=None,
        help="training cases (default 10000, quick 2000)",
    )
    p.add_argument(
        "--cases",
        type=checks.int_arg(2),
        default=None,
        help="cases on which F, F̃, F̆ and F̂ are computed, the first of the training "
        "cases (default 2000, quick 500)",
    )
    p.add_argument(
        "--iters",
        type=checks.int_arg(0),
        default=None,
        help="training iterations (default 20, which ends with K-FAC's first γ search; quick 10)",
    )
    p.add_argument(
        "--hidden",
        type=checks.int_arg(1),
        default=PAPER_WIDTHS[1],
        help="width of the five hidden layers (20 is the paper's; smaller for tests)",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="factored Tikhonov damping γ of the inverses (§6.3; default: the trainer's "
        "final γ, as in the paper)",
    )
    p.add_argument(
        "--trainer",
        choices=["auto", "kfac", "natgrad"],
        default="auto",
        help="kfac: kfac_ref.optimizer.KFAC in batch mode; natgrad: damped F̆⁻¹ steps "
        "with fixed γ (a small trainer for tests); auto: kfac",
    )
    p.add_argument(
        "--init",
        choices=["gaussian", "sparse"],
        default="gaussian",
        help="initial weights: dense N(0, 1/fan_in), or the sparse initialization of the "
        "authors' code (15 nonzero N(0, 1) inputs per unit, §13)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="use the weights saved in this .npz (by either script) instead of training",
    )
    p.add_argument(
        "--scale",
        choices=["linear", "log"],
        default=default_scale,
        help="grey scale of the matrix panels: linear in |entry| up to the white level "
        "(the paper's), or log10 |entry| over --decades below it",
    )
    p.add_argument(
        "--decades",
        type=float,
        default=4.0,
        help="with --scale log: powers of ten shown below the white level (smaller is black)",
    )
    p.add_argument(
        "--vmax-quantile",
        type=float,
        default=0.995,
        help="white level = this quantile of |reference matrix| (1 = its maximum)",
    )
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG files")
    p.add_argument(
        "--formats",
        nargs="+",
        choices=["png", "pdf"],
        default=["png", "pdf"],
        help="figure file formats to write",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the one-line stage messages are still printed)",
    )
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return p


def resolve(args: argparse.Namespace, extra: Sequence[str] = ()) -> Settings:
    """Fill the defaults that depend on ``--quick`` and check the values.

    ``extra`` names script-specific options copied into ``Settings.extra`` unchanged.
    """
    quick = bool(args.quick)
    s = Settings(
        out=checks.expand_path(args.out, "--out"),
        quick=quick,
        seed=checks.seed(args.seed),
        backend=args.backend or os.environ.get("KFAC_REF_BACKEND") or "numpy",
        train_cases=_given(args.train_cases, 2000 if quick else 10000),
        cases=_given(args.cases, 500 if quick else 2000),
        iters=_given(args.iters, 10 if quick else 20),
        hidden=int(args.hidden),
        gamma=args.gamma,
        trainer=args.trainer,
        weights=None if args.weights is None else checks.input_file(args.weights, "--weights"),
        vmax_quantile=float(args.vmax_quantile),
        data_dir=None if args.data_dir is None else checks.data_dir(args.data_dir),
        scale=args.scale,
        decades=float(args.decades),
        dpi=int(args.dpi),
        formats=tuple(dict.fromkeys(args.formats)),
        overwrite=bool(args.overwrite),
        progress=not args.no_progress,
        init=args.init,
        extra={name: getattr(args, name) for name in extra},
    )
    if s.cases < 2 or s.train_cases < s.cases or s.iters < 0 or s.hidden < 1:
        raise ConfigError(
            "need 2 ≤ --cases ≤ --train-cases, --iters ≥ 0 and --hidden ≥ 1; got --cases "
            f"{s.cases}, "
            f"--train-cases {s.train_cases}, --iters {s.iters}, --hidden {s.hidden}"
        )
    if not 0.0 < s.vmax_quantile <= 1.0:
        raise ConfigError(f"--vmax-quantile must be in (0, 1], got {s.vmax_quantile}")
    if s.gamma is not None and not (math.isfinite(s.gamma) and s.gamma >= 0):
        raise ConfigError(f"--gamma must be a finite number ≥ 0, got {s.gamma}")
    if not (math.isfinite(s.decades) and s.decades > 0):
        raise ConfigError(f"--decades must be a finite number > 0, got {s.decades}")
    if not 20 <= s.dpi <= 1200:
        raise ConfigError(f"--dpi must be in [20, 1200], got {s.dpi}")
    if s.data_dir is None:
        checks.data_dir()  # $KFAC_REF_DATA_DIR or the cache directory
    check_memory(s)
    return s


def _given(value: Any, default: Any) -> Any:
    """An option's value, or its default when it was not given (None): 0 is a value."""
    return default if value is None else value


def check_memory(s: Settings) -> None:
    """:class:`kfac_ref.errors.TooLargeError` before any work when the figure would not fit in
    this machine's memory: the middle layers' P×P matrices (:data:`MATRIX_COPIES`) and the
    training cases (:data:`CASE_BYTES` each)."""
    P = sum(s.hidden * (s.hidden + 1) for _ in range(MIDDLE_COUNT))
    need = MATRIX_COPIES * 8 * P * P + CASE_BYTES * s.train_cases
    checks.memory(
        need,
        f"--hidden {s.hidden} ({P:,} parameters in the middle layers) with --train-cases "
        f"{s.train_cases:,}",
        "use a smaller --hidden or fewer --train-cases",
        checks.physical_memory(),
    )


def refuse_overwrite(s: Settings, names: Sequence[str]) -> None:
    """Stop before any work if ``--out`` already holds one of ``names`` and ``--overwrite`` is
    off."""
    if s.overwrite:
        return
    existing = [n for n in names if (s.out / n).exists()]
    if existing:
        raise ConfigError(
            f"{s.out} already holds {', '.join(existing)} from an earlier run; pass --overwrite to "
            "replace them or choose another --out"
        )


# ---------------------------------------------------------------------------------- progress
class Stages:
    """One line per stage with the seconds since the start, flushed at once (stdout)."""

    def __init__(self, name: str, enabled_bars: bool = True) -> None:
        self.name, self.t0, self.bars = name, time.perf_counter(), enabled_bars

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def __call__(self, message: str) -> None:
        print(f"[{self.name} {self.elapsed:6.1f} s] {message}", flush=True)

    def bar(self, total: int, desc: str) -> Any:
        """A tqdm bar on stderr (hidden with ``--no-progress`` or when stderr is not a terminal)."""
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=desc,
            disable=None if self.bars else True,
            leave=False,
            file=sys.stderr,
        )


# -------------------------------------------------------------------------------------- data
@dataclass
class Images:
    """16×16 images as rows (n, 256) in [0, 1], integer labels (n,), and what they are.

    ``origin``: ``"original"`` (MNIST training set), ``"subset"`` (the MNIST test split only) or
    ``"stand-in"`` (CURVES with teacher labels); ``label``: one line naming the data and the
    number of cases used; ``source``: the directory or generator.
    """

    X: np.ndarray
    labels: np.ndarray
    source: str
    origin: str = "stand-in"
    label: str = ""


def teacher_labels(X: np.ndarray, seed: int) -> np.ndarray:
    """Labels arg-max_c (X − mean) T[:, c] of a fixed random linear teacher T ~ N(0, 1) (seeded)."""
    T = np.random.default_rng([seed, 7919]).standard_normal((X.shape[1], N_CLASSES))
    return np.argmax((X - X.mean(axis=0)) @ T, axis=1)


def load_images(n: int, seed: int, data_dir: Path | None = None) -> Images:
    """``n`` 16×16 images with labels: MNIST (all four files, or the test split alone) when any
    MNIST file is in ``data_dir``, else the CURVES stand-in with teacher labels (and a notice).

    A damaged or incomplete MNIST directory raises :class:`kfac_ref.errors.DataError`; asking for
    more cases than the data holds raises :class:`ConfigError`.
    """
    from kfac_ref.experiments import data

    directory = data_dir if data_dir is not None else data.default_data_dir()
    if not data.find_mnist_files(directory):
        X = data.downscale_images(
            data.make_curves(n, np.random.default_rng(seed)), SIDE_IN, SIDE_OUT
        )
        print(
            f"notice: no MNIST file in {directory}; using a stand-in: CURVES images down-scaled to "
            "16×16, labelled by a fixed random linear teacher (10 classes). Pass --data-dir with "
            "the MNIST files for real digits.",
            flush=True,
        )
        label = f"stand-in (no MNIST file found): CURVES 16×16 with teacher labels, {n:,} cases"
        return Images(X, teacher_labels(X, seed), f"make_curves, seed {seed}", "stand-in", label)
    mnist = data.load_mnist(data_dir=directory, download=False)
    available = mnist.X_train.shape[0]
    if n > available:
        raise ConfigError(
            f"--train-cases {n} exceeds the {available:,} cases of {mnist.label} in {directory}"
        )
    X = data.downscale_images(mnist.X_train[:n], SIDE_IN, SIDE_OUT)
    used = "" if n == available else f", first {n:,} used"
    return Images(
        X,
        np.asarray(mnist.y_train[:n], dtype=np.int64),
        mnist.source,
        mnist.origin,
        f"{mnist.label}{used}, down-scaled to 16×16",
    )


def one_hot(labels: np.ndarray, k: int = N_CLASSES) -> np.ndarray:
    """(n,) integer labels → (n, k) one-hot rows (softmax targets)."""
    Y = np.zeros((labels.shape[0], k))
    Y[np.arange(labels.shape[0]), labels] = 1.0
    return Y


# ---------------------------------------------------------------------------------- training
@dataclass
class TrainedNet:
    """The partially trained classifier and everything the figures report about it.

    ``resume(n)`` (when set) trains ``n`` more iterations from where training stopped (same
    optimizer state) and returns the further-trained network; loaded weights cannot resume.
    """

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
    data_origin: str = ""
    data_label: str = ""
    resume: Callable[[int], TrainedNet] | None = None

    @property
    def iterations(self) -> int:
        return len(self.history)

    def train_error(self) -> float:
        return classification_error(self.mlp, self.weights, self.X, self.Y)


def classification_error(mlp: MLP, weights: Sequence[Any], X: Any, Y: Any) -> float:
    """Fraction of cases whose arg-max output differs from the arg-max target."""
    out = mlp.forward(weights, X).output
    return float(to_numpy((out.argmax(axis=1) != Y.argmax(axis=1)).mean()))


def _step_seed(seed: int, k: int) -> int:
    """The NumPy generator seed of training iteration k (a device run uses one Philox generator)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


class Trainer:
    """Batch-mode training that can be continued: K-FAC (``kfac_ref.optimizer.KFAC``, its state
    kept between calls) or :func:`kfac_ref.natgrad.natgrad_step` with a fixed γ."""

    def __init__(
        self,
        kind: str,
        mlp: MLP,
        backend: Backend,
        seed: int,
        natgrad_gamma: float = 0.01,
        eta: float = 1e-5,
    ) -> None:
        self.kind, self.mlp, self.backend, self.seed = kind, mlp, backend, seed
        self.natgrad_gamma, self.eta, self.k = natgrad_gamma, eta, 0
        self.gamma = natgrad_gamma
        self.opt = self.state = None
        self.generator = RunGenerator(backend.xp, seed, _step_seed)
        if kind == "kfac":
            from kfac_ref import config, optimizer

            self.opt = optimizer.KFAC(mlp, config.KFACConfig(eta=eta, lam0=KFAC_LAM0), backend)
            self.gamma = float(self.opt.config.resolved.gamma0)

    @property
    def description(self) -> str:
        if self.kind == "kfac":
            return f"kfac_ref.optimizer.KFAC (batch mode, block-diagonal, λ0 = {KFAC_LAM0:g})"
        return (
            "natgrad (damped block-diagonal natural-gradient steps, batch mode, "
            f"γ = {self.natgrad_gamma:g})"
        )

    def run(
        self, weights: list[Any], X: Any, Y: Any, iters: int, bar: Any
    ) -> tuple[list[Any], list[dict]]:
        """``iters`` more iterations on all of (X, Y); one history row per iteration."""
        history = []
        if self.opt is not None and self.state is None:
            self.state = self.opt.init_state(weights)
        for _ in range(iters):
            self.k += 1
            if self.opt is not None:
                rng = self.generator.for_iteration(self.k)
                weights, self.state, info = self.opt.step(weights, self.state, X, Y, rng)
                self.gamma = float(info["gamma"])
                row = {
                    "loss": float(info["loss"]),
                    "gamma": self.gamma,
                    "lam": float(info["lam"]),
                    "gamma_searched": int(info["gamma_searched"]),
                }
            else:
                weights, info = natgrad_step(self.mlp, weights, X, Y, self.natgrad_gamma, self.eta)
                row = {**info, "gamma": self.natgrad_gamma}
            err = classification_error(self.mlp, weights, X, Y)
            history.append({"iteration": self.k, **row, "train_error": err})
            bar.set_postfix(error=f"{err:.3f}", gamma=f"{self.gamma:.3g}", refresh=False)
            bar.update(1)
        return weights, history


def _load_network(path: Path, backend: Backend) -> tuple[MLP, list[Any], Any, float]:
    """(mlp, weights, X_cases, γ) from a ``.npz`` written by :func:`save_network`."""
    try:
        with open_regular(path, "--weights") as f, np.load(f, allow_pickle=False) as z:
            mlp = MLP([int(d) for d in z["layer_sizes"]], "tanh", "softmax")
            weights = [backend.asarray(z[f"W_{i + 1}"]) for i in range(mlp.n_layers)]
            X_cases, gamma = backend.asarray(z["X_cases"]), float(z["gamma"])
    except KeyError as exc:
        raise ConfigError(
            f"--weights {path}: missing array {exc} (not written by these scripts?)"
        ) from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ConfigError(
            f"--weights {path}: not a readable .npz file ({type(exc).__name__}: {exc})"
        ) from exc
    mlp.check_finite_weights(weights)
    return mlp, weights, X_cases, gamma


def partially_trained_network(s: Settings, stages: Stages | None = None) -> TrainedNet:
    """The Figure 2 network: data, W ~ N(0, 1/fan_in) (``init_gaussian``; ``--init sparse``:
    ``init_sparse``), ``s.iters`` training steps.

    The paper does not say how its classifier was initialized; the dense scaled Gaussian keeps
    the tanh units out of saturation (the sparse initialization of §13, meant for the logistic
    autoencoders, saturates many of them: 10 % training error after 20 iterations on the 10,000
    test-split digits instead of 3.3 %).

    With ``s.weights`` the weights and the cases saved by :func:`save_network` are used instead
    (no training); the training set (for the reported error) is re-made from the seed.
    """
    stages = stages or Stages("figure", s.progress)
    backend = get_backend(s.backend, "float64")
    stages(f"data: loading {s.train_cases:,} cases")
    images = load_images(s.train_cases, s.seed, s.data_dir)
    stages(f"data: {images.label}")
    X, Y = backend.asarray(images.X), backend.asarray(one_hot(images.labels))
    common = {
        "data_source": images.source,
        "data_origin": images.origin,
        "data_label": images.label,
    }
    if s.weights is not None:
        mlp, weights, X_cases, gamma = _load_network(s.weights, backend)
        if mlp.layer_sizes[0] != X.shape[1]:
            raise ConfigError(
                f"--weights {s.weights}: input width {mlp.layer_sizes[0]}, data has {X.shape[1]}"
            )
        stages(f"training: skipped, weights loaded from {s.weights} (γ = {gamma:.3g})")
        return TrainedNet(
            mlp, weights, X, Y, X_cases, f"loaded from {s.weights}", gamma, [], **common
        )
    mlp = MLP(s.widths, "tanh", "softmax")
    weights = (
        mlp.init_sparse(s.seed, backend)
        if s.init == "sparse"
        else mlp.init_gaussian(s.seed, backend)
    )
    trainer = Trainer("natgrad" if s.trainer == "natgrad" else "kfac", mlp, backend, s.seed)
    X_cases = X[: s.cases]

    def train(w: list[Any], iters: int, previous: list[dict], seconds: float) -> TrainedNet:
        t0 = time.perf_counter()
        stages(f"training: {iters} iterations of {trainer.description} on {X.shape[0]:,} cases")
        with stages.bar(iters, "training") as bar:
            w, hist = trainer.run(w, X, Y, iters, bar)
        history = previous + hist
        net = TrainedNet(
            mlp,
            w,
            X,
            Y,
            X_cases,
            trainer.description,
            trainer.gamma,
            history,
            seconds=seconds + time.perf_counter() - t0,
            **common,
        )
        net.resume = lambda n: train(w, n, history, net.seconds)
        err = history[-1]["train_error"] if history else net.train_error()
        stages(
            f"training: done, {len(history)} iterations, training error {err:.2%}, "
            f"γ = {trainer.gamma:.3g} ({time.perf_counter() - t0:.1f} s)"
        )
        return net

    return train(weights, s.iters, [], 0.0)


# --------------------------------------------------------------------- middle-layer matrices
def prepare(
    doc: str | None,
    argv: Sequence[str] | None,
    name: str,
    outputs: Sequence[str],
    add_options: Callable[[argparse.ArgumentParser], Sequence[str]] | None = None,
    default_scale: str = "linear",
) -> tuple[Settings, TrainedNet, float, Stages]:
    """Parse the options, refuse to overwrite, train (or load) the network.

    Returns (settings, network, γ, stages). γ is ``--gamma`` if given, else the damping K-FAC
    had at its last step (as in the paper). ``add_options(parser)`` adds a script's own options
    and returns their destination names (kept in ``Settings.extra``).
    """
    use_agg()
    parser = base_parser(description_of(doc), default_scale)
    extra = add_options(parser) if add_options else ()
    s = resolve(parser.parse_args(argv), extra)
    refuse_overwrite(s, outputs)
    checks.output_dir(s.out, "--out")
    stages = Stages(name, s.progress)
    net = partially_trained_network(s, stages)
    return s, net, (s.gamma if s.gamma is not None else net.gamma), stages


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
    return KroneckerFactors(
        A_bar=[row[:count] for row in factors.A_bar[:count]],
        G=[row[:count] for row in factors.G[:count]],
    )


@dataclass
class MiddleMatrices:
    """Dense host matrices of the middle layers: F (exact), F̃, F̆, F̂, undamped and γ-damped.

    ``damped[name]`` adds the factored Tikhonov damping of §6.3 to the diagonal blocks: F̃, F̆,
    F̂ are built from the damped diagonal factors, and F becomes F + Δ with Δ = F̃(γ) − F̃(0)
    (block-diagonal), so inverses of equally damped matrices are compared (as
    ``kfac_ref.compare.compare_fisher`` does). ``factors`` (the middle layers' Kronecker factors)
    rebuild F̃ at other γ (:meth:`F_tilde_at`).
    """

    undamped: dict[str, np.ndarray]
    damped: dict[str, np.ndarray]
    shapes: list[tuple[int, int]]
    gamma: float
    factors: KroneckerFactors

    @property
    def boundaries(self) -> list[int]:
        """Indices where a new layer's block starts (for dashed lines), without 0 and P."""
        return layer_offsets(self.shapes)[1:-1]

    def F_tilde_at(self, gamma: float) -> np.ndarray:
        """F̃ with factored Tikhonov damping γ (§6.3), dense, host."""
        return to_numpy(dense_F_tilde(self.factors, gamma, DENSE_F_TILDE))

    def F_at(self, gamma: float) -> np.ndarray:
        """The exact F plus the same block-diagonal damping term as F̃(γ) (F̃(γ) − F̃(0))."""
        return self.undamped["F"] + (self.F_tilde_at(gamma) - self.undamped["F_tilde"])


APPROXIMATIONS = tuple(COMPARED)  # F̃ and one dense matrix per structure (kfac_ref.structures)


def exact_fisher_chunked(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    stages: Stages | None = None,
    chunk: int = FISHER_CHUNK,
) -> Any:
    """``exact_fisher`` as the case-weighted mean of its values on chunks of ``chunk`` cases
    (F is a mean over cases, §2.2), with a progress bar."""
    n = X.shape[0]
    total = None
    bar = stages.bar(-(-n // chunk), "exact F") if stages else None
    for start in range(0, n, chunk):
        part = X[start : start + chunk]
        term = exact_fisher(mlp, weights, part) * (part.shape[0] / n)
        total = term if total is None else total + term
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return total


def middle_matrices(
    net: TrainedNet,
    gamma: float,
    names: Sequence[str] = APPROXIMATIONS,
    stages: Stages | None = None,
) -> MiddleMatrices:
    """F of W_2..W_5 by ``exact_fisher`` (on the sub-network) and the approximations ``names``
    (F̃ is always built) from the factors of those layers, undamped and with damping γ."""
    sub, sub_w, A1 = subnetwork(net.mlp, net.weights, net.X_cases, MIDDLE_FIRST)
    shapes = middle_shapes(net.mlp)
    P = layer_offsets(shapes)[-1]
    if stages:
        stages(f"Fisher: exact F and Kronecker factors of W_2..W_5 on {A1.shape[0]:,} cases")
    F = to_numpy(exact_fisher_chunked(sub, sub_w, A1, stages))[:P, :P]
    factors = restrict_factors(kronecker_factors(sub, sub_w, A1, method="exact"), MIDDLE_COUNT)
    wanted = ["F_tilde"] + [n for n in names if n != "F_tilde"]
    undamped = {
        "F": F,
        **{n: to_numpy(dense_approximation(COMPARED[n])(factors, 0.0)) for n in wanted},
    }
    damped = {n: to_numpy(dense_approximation(COMPARED[n])(factors, gamma)) for n in wanted}
    damped["F"] = F + (damped["F_tilde"] - undamped["F_tilde"])  # Δ lives on the diagonal blocks
    return MiddleMatrices(undamped, damped, shapes, gamma, factors)


# ------------------------------------------------------------------------------------ output
def save_figure(
    fig: Any, out: Path, stem: str, dpi: int = 200, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Save ``fig`` as ``out/stem.<format>`` for each format, atomically; close it."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in formats:
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
    arrays.update(
        layer_sizes=np.array(net.mlp.layer_sizes),
        gamma=np.array(net.gamma),
        X_cases=to_numpy(net.X_cases),
    )
    with atomic_path(path, suffix=path.suffix) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def run_summary(s: Settings, net: TrainedNet, gamma: float) -> dict[str, Any]:
    """Settings and training facts that every JSON output starts with."""
    return {
        "network": {
            "layer_sizes": list(net.mlp.layer_sizes),
            "hidden": "tanh",
            "output": "softmax",
            "layers_shown": [MIDDLE_FIRST + 1 + k for k in range(MIDDLE_COUNT)],
        },
        "data": {
            "label": net.data_label,
            "origin": net.data_origin,
            "source": net.data_source,
            "train_cases": int(net.X.shape[0]),
            "fisher_cases": int(net.X_cases.shape[0]),
        },
        "trainer": net.trainer,
        "train_iterations": net.iterations,
        "train_seconds": net.seconds,
        "train_error": net.train_error(),
        "history": net.history,
        "cases": int(net.X_cases.shape[0]),
        "train_cases": int(net.X.shape[0]),
        "gamma": gamma,
        "seed": s.seed,
        "init": s.init,
        "backend": s.backend,
        "quick": s.quick,
    }


def footer(net: TrainedNet) -> str:
    """One line for the bottom of every figure: data, number of cases, training."""
    trained = (
        f"{net.iterations} iterations of {net.trainer.split(' (')[0]}"
        if net.iterations
        else net.trainer
    )
    return (
        f"Data: {net.data_label}.  Network trained on {int(net.X.shape[0]):,} cases ({trained}; "
        f"training error {net.train_error():.1%}); matrices from the first "
        f"{int(net.X_cases.shape[0]):,} cases."
    )


# ---------------------------------------------------------------------------------- plotting
def use_agg() -> None:
    """Select the non-interactive Agg backend (scripts and tests draw to files only)."""
    import matplotlib

    matplotlib.use("Agg")


def grey_map() -> Any:
    """The grey colormap with zero / below-range entries black and above-range white."""
    import matplotlib

    return matplotlib.colormaps["gray"].with_extremes(bad="black", under="black", over="white")


def show_abs(
    ax: Any,
    M: np.ndarray,
    vmax: float,
    boundaries: Sequence[int],
    title: str,
    scale: str = "linear",
    decades: float = 4.0,
    colorbar: bool = True,
) -> Any:
    """|M| in grey levels with dashed block lines and (by default) a colour bar beside the panel.

    ``linear`` (the paper's): black = 0, white = ``vmax`` and above. ``log``: log10 |M| from
    ``vmax``·10^(−decades) (black, and everything smaller, exact zeros included) to ``vmax``.
    """
    from matplotlib.colors import LogNorm, Normalize

    A = np.abs(np.asarray(M))
    if scale == "log":
        norm = LogNorm(vmin=vmax * 10.0 ** (-decades), vmax=vmax, clip=False)
        A = np.ma.masked_less_equal(A, 0.0)
    else:
        norm = Normalize(vmin=0.0, vmax=vmax, clip=False)
    im = ax.imshow(A, cmap=grey_map(), norm=norm, interpolation="antialiased")
    for b in boundaries:
        ax.axhline(b - 0.5, color="tab:orange", linestyle="--", linewidth=0.6)
        ax.axvline(b - 0.5, color="tab:orange", linestyle="--", linewidth=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(
            im, ax=ax, fraction=0.046, pad=0.02, extend="max" if scale == "linear" else "both"
        )
    return im


def white_level(M: np.ndarray, quantile: float) -> float:
    """The value drawn white: a high quantile of |M| (positive even for an all-zero M)."""
    v = float(np.quantile(np.abs(M), quantile))
    return v if v > 0 else float(np.abs(M).max()) or 1.0


def band_ratios(block_means: np.ndarray) -> dict[str, float]:
    """How block-tridiagonal a matrix of block means is (Figure 3's 4×4 panel).

    ``first_off_over_farther``: mean of the blocks with |k − l| = 1 ÷ mean of those with
    |k − l| ≥ 2 (≫ 1 for a block-tridiagonal matrix, about 1 when the off-diagonal blocks do not
    fall off with distance); ``diagonal_over_first_off``: mean of the diagonal blocks ÷ mean of
    the first off-diagonal ones (≫ 1 for a nearly block-diagonal matrix).
    """
    L = block_means.shape[0]
    k, l = np.indices((L, L))
    d = np.abs(k - l)
    diag, first, far = (
        float(block_means[m].mean()) if m.any() else math.nan for m in (d == 0, d == 1, d >= 2)
    )
    return {
        "first_off_over_farther": first / far if far > 0 else math.inf,
        "diagonal_over_first_off": diag / first if first > 0 else math.inf,
        "mean_diagonal": diag,
        "mean_first_off": first,
        "mean_farther": far,
    }
