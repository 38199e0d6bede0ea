"""The network of the matrix figures (paper Figures 2, 3, 5 and 6), its data and its training,
and the start every figure run shares (:func:`prepare`: options, overwrite check, the network).

Orchestration only: every number comes from a :mod:`kfac_ref` function; this file loads data
and trains. The two scripts that use it are ``fisher_blocks.py`` (Figures 2–3) and
``inverse_quality.py`` (Figures 5–6); the matrices they show are made in ``_matrices.py``.

The network (paper §3, Figures 2–3): a 256-20-20-20-20-20-10 classifier with tanh
hidden units and a softmax output, partially trained on 16×16 down-scaled MNIST. The figures show
the parameters of the **middle four layers** W_2..W_5 (4 × 20·21 = 1680 parameters).

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
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _options import (
    KFAC_LAM0,
    N_CLASSES,
    SIDE_IN,
    SIDE_OUT,
    Settings,
    base_parser,
    description_of,
    refuse_overwrite,
    resolve,
)
from _output import Stages, use_agg

from kfac_ref.backend import Backend, get_backend, to_numpy
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import checks
from kfac_ref.experiments.io import open_regular
from kfac_ref.mlp import MLP
from kfac_ref.natgrad import natgrad_step
from kfac_ref.rng import RunGenerator


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
