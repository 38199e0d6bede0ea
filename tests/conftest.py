"""Shared fixtures for the tests of the mathematical core (§2–§4, §6.3, §10), and a tiny
training run for the tests of the experiments' errors (checkpoints, paths, command line,
figure scripts; the last section).

Everything here is float64 and seeded. Tiny networks (2–5 weight layers, uneven widths) come
from the session fixture ``make_net``; the independent oracles (finite differences of the
network output and of the loss, dense F_R from closed forms written with SciPy) come from
``oracle``. Both are session-scoped so hypothesis tests may use them.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import fakecupy
import numpy as np
import pytest
import scipy.special

from kfac_ref.mlp import MLP
from kfac_ref.vec import theta_to_weights, weights_to_theta


@pytest.fixture(autouse=True, scope="session")
def _offline() -> None:
    """No test downloads anything by accident: data loaders see ``$KFAC_REF_OFFLINE=1``
    (download tests pass ``download=True`` and a local server's URL)."""
    os.environ["KFAC_REF_OFFLINE"] = "1"


# ------------------------------------------------------------------ CuPy: real GPU and stand-in
@functools.cache
def real_cupy_available() -> bool:
    """Real CuPy with a usable GPU (asked once, before any test installs the stand-in)."""
    from kfac_ref.backend import cupy_available

    return not fakecupy.is_stand_in(sys.modules.get("cupy")) and cupy_available()


@pytest.fixture(params=["cupy", "stand-in"])
def cupy_kind(request) -> str:
    """Where a ``gpu`` test runs: on real CuPy and a GPU (skipped without one), and always on the
    strict CuPy stand-in of ``tests/fakecupy``, installed as ``cupy``/``cupyx`` for the test."""
    if request.param == "cupy":
        if not real_cupy_available():
            pytest.skip("real CuPy with a usable CUDA GPU is not available")
        yield "cupy"
        return
    with fakecupy.installed():
        yield "stand-in"


def pytest_collection_modifyitems(config, items) -> None:
    """Every test marked ``gpu`` must take ``cupy_kind``, so it also runs on the stand-in."""
    for item in items:
        if item.get_closest_marker("gpu") and "cupy_kind" not in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid} is marked gpu but does not use the cupy_kind fixture"
            )


ACTIVATIONS = ("logistic", "tanh", "linear", "relu")
OUTPUTS = ("bernoulli", "gaussian", "softmax")

# (layer sizes, hidden activation) of the parametrized ``tiny_net``: 2 to 5 weight layers,
# uneven widths, every activation and every output.
TINY_SIZES = {
    "logistic": (4, 6, 3, 5, 3),
    "tanh": (5, 3, 4, 3),
    "linear": (3, 5, 4, 2, 3, 4),
    "relu": (4, 6, 3),
}


@dataclass
class Net:
    """A seeded tiny network with its weights, inputs X (n, d_0) and targets Y (n, d_ℓ)."""

    mlp: MLP
    weights: list[np.ndarray]
    X: np.ndarray
    Y: np.ndarray

    @property
    def theta(self) -> np.ndarray:
        return weights_to_theta(self.weights)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return self.mlp.shapes

    def weights_of(self, theta: np.ndarray) -> list[np.ndarray]:
        return theta_to_weights(theta, self.shapes)


def make_targets(output: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """Training targets of the right kind: {0,1} for bernoulli, reals for gaussian, one-hot rows."""
    if output == "bernoulli":
        return (rng.random((n, d)) < 0.5).astype(np.float64)
    if output == "gaussian":
        return rng.standard_normal((n, d))
    return np.eye(d)[rng.integers(0, d, size=n)]


def build_net(
    sizes: tuple[int, ...],
    activations: str | list[str],
    output: str,
    seed: int = 0,
    n: int = 16,
    scale: float = 1.0,
) -> Net:
    """A float64 network with dense Gaussian weights (biases included), inputs N(0, 1)."""
    mlp = MLP(sizes, activations, output)
    weights = mlp.init_gaussian(seed=seed, scale=scale)
    rng = np.random.default_rng(seed + 1000)
    X = rng.standard_normal((n, sizes[0]))
    return Net(mlp, weights, X, make_targets(output, n, sizes[-1], rng))


# ------------------------------------------------------------------ independent oracles
def fd_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function f at the vector x."""
    grad = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = eps
        grad[j] = (float(f(x + e)) - float(f(x - e))) / (2 * eps)
    return grad


def fd_output_jacobian(net: Net, eps: float = 1e-5) -> np.ndarray:
    """J = ∂s_ℓ/∂θ per case by central differences of the network output: (n, d_ℓ, P)."""
    theta = net.theta
    cols = []
    for j in range(theta.size):
        e = np.zeros_like(theta)
        e[j] = eps
        plus = net.mlp.forward(net.weights_of(theta + e), net.X).output
        minus = net.mlp.forward(net.weights_of(theta - e), net.X).output
        cols.append((plus - minus) / (2 * eps))
    return np.stack(cols, axis=2)


def fd_output_jvp(net: Net, v: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """J v per case (n, d_ℓ) by a central difference of the output along θ-direction v."""
    theta = net.theta
    plus = net.mlp.forward(net.weights_of(theta + eps * v), net.X).output
    minus = net.mlp.forward(net.weights_of(theta - eps * v), net.X).output
    return (plus - minus) / (2 * eps)


def dense_output_fisher(output: str, s: np.ndarray) -> np.ndarray:
    """F_R per case, (n, d, d), from closed forms written independently with SciPy (§2.2)."""
    n, d = s.shape
    if output == "bernoulli":
        p = scipy.special.expit(s)
        return np.einsum("ni,ij->nij", p * (1 - p), np.eye(d))
    if output == "gaussian":
        return np.broadcast_to(np.eye(d), (n, d, d)).copy()
    p = scipy.special.softmax(s, axis=1)
    return np.einsum("ni,ij->nij", p, np.eye(d)) - p[:, :, None] * p[:, None, :]


def gauss_newton_oracle(net: Net, eps: float = 1e-5) -> np.ndarray:
    """(1/n) Σ Jᵀ F_R J with J by finite differences and F_R from closed forms (§2.2)."""
    J = fd_output_jacobian(net, eps)
    s = net.mlp.forward(net.weights, net.X).output
    F_R = dense_output_fisher(net.mlp.output.name, s)
    return np.einsum("nip,nij,njq->pq", J, F_R, J) / net.X.shape[0]


def rel_err(X: Any, Y: Any) -> float:
    """‖X − Y‖_F / ‖Y‖_F."""
    return float(np.linalg.norm(np.asarray(X) - np.asarray(Y)) / np.linalg.norm(np.asarray(Y)))


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def make_net():
    """Factory ``make_net(sizes, activations, output, seed=0, n=16, scale=1.0) -> Net``."""
    return build_net


@pytest.fixture(scope="session")
def oracle():
    """Independent oracles: finite differences, closed-form F_R, the Gauss–Newton F, rel_err."""
    return SimpleNamespace(
        fd_gradient=fd_gradient,
        fd_output_jacobian=fd_output_jacobian,
        fd_output_jvp=fd_output_jvp,
        dense_output_fisher=dense_output_fisher,
        gauss_newton=gauss_newton_oracle,
        make_targets=make_targets,
        rel_err=rel_err,
    )


@pytest.fixture(
    params=[(a, o) for a in ACTIVATIONS for o in OUTPUTS], ids=lambda p: f"{p[0]}-{p[1]}"
)
def tiny_net(request) -> Net:
    """Every hidden activation × every output, on 2–5 weight layers with uneven widths."""
    act, out = request.param
    seed = ACTIVATIONS.index(act) * 10 + OUTPUTS.index(out)
    return build_net(TINY_SIZES[act], act, out, seed=seed, n=12)


# ------------------------------------------------------------------ tiny runs (error tests)
# Shared by the tests of checkpoints, paths, the command line and the figure scripts: a tiny
# autoencoder run on 64 + 32 smooth 16-pixel cases in float64, and a stand-in for CURVES.
RUN_LAYERS = [16, 6, 3, 6, 16]


@pytest.fixture(scope="session")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    """(X_train, X_test): 64 and 32 cases of 16 pixels in (0, 1), a smooth 3-D family."""
    rng = np.random.default_rng(0)
    basis, codes = rng.random((3, 16)), rng.random((96, 3))
    X = 1.0 / (1.0 + np.exp(-4.0 * (codes @ basis - 0.75)))
    return X[:64], X[64:]


def make_tiny_config(**kw: Any) -> Any:
    """A 4-iteration block-diagonal K-FAC run of :data:`RUN_LAYERS` (checkpoints at 2 and 4)."""
    from kfac_ref.experiments import RunConfig

    base = dict(
        dataset="curves",
        method="kfac-blockdiag",
        iters=4,
        layers=RUN_LAYERS,
        m1=16,
        k_full=4,
        eval_every=2,
        checkpoint_every=2,
        dtype="float64",
        kfac={"T3": 2, "T2": 4},
    )
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def tiny_config():
    """The factory :func:`make_tiny_config`."""
    return make_tiny_config


@pytest.fixture
def fake_curves(monkeypatch, tiny_data):
    """``load_dataset`` returns a small CURVES-like set (64 + 32 cases of 16 pixels) instead of
    generating the 30,000 images; every other line of the CLI runs as it does for real.
    Returns the list of the data sets asked for (a test can check none was loaded)."""
    from kfac_ref.experiments import data

    ds = data.Dataset("curves", tiny_data[0], tiny_data[1], origin="stand-in", label="tiny CURVES")
    calls: list[str] = []

    def load(name, **kw):
        calls.append(name)
        return ds

    monkeypatch.setattr(data, "load_dataset", load)
    return calls


class Evil:
    """A pickle whose loading creates a file: proof, if the file appears, that code ran."""

    def __init__(self, sentinel: Any) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.sentinel,))


@pytest.fixture
def evil_pickle(tmp_path):
    """(bytes of a pickle that creates ``tmp_path/code_ran`` when loaded, that path)."""
    import pickle

    sentinel = tmp_path / "code_ran"
    return pickle.dumps(Evil(sentinel)), sentinel


def _one_line_error(text: str) -> str:
    lines = text.strip().splitlines()
    assert "Traceback" not in text and lines, text
    assert lines[-1].startswith("error: "), text
    return lines[-1]


@pytest.fixture(scope="session")
def one_line_error():
    """``one_line_error(stderr)``: the last line, after asserting it is ``error: …`` and that
    no traceback was printed."""
    return _one_line_error
