"""Bad input is refused with an error of a kfac_ref class whose message names the problem."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from kfac_ref.appendix_b import kron_sum_inverse
from kfac_ref.backend import get_backend
from kfac_ref.compare import approximate_fisher, compare_fisher, dense_F_tilde
from kfac_ref.errors import (
    BackendError,
    ConfigError,
    KFACError,
    NonFiniteError,
    ShapeError,
    TooLargeError,
)
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import (
    empirical_fisher,
    exact_fisher,
    fisher_vector_product,
    monte_carlo_fisher,
)
from kfac_ref.linalg import spd_inverse
from kfac_ref.memory import check_dense_size
from kfac_ref.mlp import MLP
from kfac_ref.vec import theta_to_weights


@pytest.fixture
def net(make_net):
    return make_net((4, 5, 3), "tanh", "softmax", seed=0, n=6)


# ------------------------------------------------------------------ shapes
def test_mismatched_weight_shapes(net):
    W = [net.weights[0], np.zeros((3, 4))]
    msg = r"W_2 has shape \(3, 4\); expected \(3, 6\) = \(d_2, d_1\+1\)"
    with pytest.raises(ShapeError, match=msg):
        net.mlp.check_weights(W)
    for call in (
        lambda: net.mlp.forward(W, net.X),
        lambda: net.mlp.loss(W, net.X, net.Y),
        lambda: net.mlp.loss_and_grad(W, net.X, net.Y),
        lambda: exact_fisher(net.mlp, W, net.X),
        lambda: kronecker_factors(net.mlp, W, net.X),
        lambda: approximate_fisher(net.mlp, W, net.X),
    ):
        with pytest.raises(ShapeError, match=msg):
            call()
    with pytest.raises(ShapeError, match="expected 2 weight matrices, got 1"):
        net.mlp.forward(net.weights[:1], net.X)


def test_inputs_of_the_wrong_width(net):
    X = np.zeros((6, 3))
    msg = r"X has shape \(6, 3\); expected \(n_examples, 4\)"
    for call in (
        lambda: net.mlp.forward(net.weights, X),
        lambda: net.mlp.loss(net.weights, X, net.Y),
        lambda: exact_fisher(net.mlp, net.weights, X),
        lambda: kronecker_factors(net.mlp, net.weights, X),
    ):
        with pytest.raises(ShapeError, match=msg):
            call()
    with pytest.raises(ShapeError, match=r"X has shape \(4,\)"):
        net.mlp.forward(net.weights, np.zeros(4))
    with pytest.raises(ShapeError, match="X has no rows"):
        net.mlp.check_inputs(np.zeros((0, 4)))


def test_targets_of_the_wrong_shape(net):
    Y = np.zeros((6, 4))
    with pytest.raises(ShapeError, match=r"targets have shape \(6, 4\); expected \(6, 3\)"):
        net.mlp.check_inputs(net.X, Y)
    with pytest.raises(ShapeError, match=r"targets have shape \(6, 4\); expected \(6, 3\)"):
        empirical_fisher(net.mlp, net.weights, net.X, Y)
    with pytest.raises(
        ShapeError, match=r"targets have shape \(6, 4\) but outputs have shape \(6, 3\)"
    ):
        net.mlp.loss(net.weights, net.X, Y)
    with pytest.raises(ShapeError, match=r"targets have shape \(5, 3\)"):
        net.mlp.loss_and_grad(net.weights, net.X, Y[:5, :3])


def test_direction_and_theta_of_the_wrong_shape(net):
    with pytest.raises(ShapeError, match="the direction V must have one matrix per layer"):
        fisher_vector_product(net.mlp, net.weights, net.X, [np.zeros((5, 4)), np.zeros((3, 6))])
    with pytest.raises(ShapeError, match=r"θ has shape \(7,\); expected \(43,\)"):
        theta_to_weights(np.zeros(7), net.mlp.shapes)


# ------------------------------------------------------------------ unknown names
def test_unknown_activation_output_backend_structure(net):
    with pytest.raises(
        ConfigError,
        match=r"unknown activation 'sigmoid'; choose one of logistic, tanh, linear, relu",
    ):
        MLP((3, 4, 2), "sigmoid", "gaussian")
    with pytest.raises(
        ConfigError, match=r"unknown output 'poisson'; choose one of bernoulli, gaussian, softmax"
    ):
        MLP((3, 4, 2), "tanh", "poisson")
    with pytest.raises(BackendError, match=r"unknown backend 'torch'; choose one of numpy, cupy"):
        get_backend("torch")
    with pytest.raises(
        ConfigError,
        match=r"unknown structure 'kronecker'; choose one of full, block_diagonal, "
        r"block_tridiagonal",
    ):
        approximate_fisher(net.mlp, net.weights, net.X, "kronecker")
    f = kronecker_factors(net.mlp, net.weights, net.X)
    with pytest.raises(ConfigError, match="dense_F_tilde builds 'full' or 'block_diagonal'"):
        dense_F_tilde(f, structure="block_tridiagonal")
    with pytest.raises(ConfigError, match="unknown factor method 'mc'"):
        kronecker_factors(net.mlp, net.weights, net.X, method="mc")
    with pytest.raises(ConfigError, match="method='empirical' needs the training targets Y"):
        kronecker_factors(net.mlp, net.weights, net.X, method="empirical")


def test_bad_network_configuration():
    with pytest.raises(ConfigError, match="layer_sizes must list at least two positive widths"):
        MLP((3, 0, 2), "tanh", "gaussian")
    with pytest.raises(ConfigError, match="layer_sizes must list at least two positive widths"):
        MLP((3,), [], "gaussian")
    with pytest.raises(ConfigError, match="3 layers need 2 hidden activations, got 1"):
        MLP((3, 4, 4, 2), ["tanh"], "gaussian")


def test_bad_sample_count(net):
    with pytest.raises(ConfigError, match="n_samples must be at least 1, got 0"):
        monte_carlo_fisher(net.mlp, net.weights, net.X, n_samples=0)


# ------------------------------------------------------------------ values and dtypes
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_and_targets(net, bad):
    X = net.X.copy()
    X[2, 1] = bad
    with pytest.raises(NonFiniteError, match="X contains NaN or infinite values"):
        exact_fisher(net.mlp, net.weights, X)
    with pytest.raises(NonFiniteError, match="X contains NaN or infinite values"):
        kronecker_factors(net.mlp, net.weights, X)
    Y = net.Y.copy()
    Y[0, 0] = bad
    with pytest.raises(NonFiniteError, match="targets contain NaN or infinite values"):
        empirical_fisher(net.mlp, net.weights, net.X, Y)


@pytest.mark.parametrize("dtype", ["float16", "int64", "complex128"])
def test_unsupported_dtypes(net, dtype):
    with pytest.raises(
        ConfigError, match=rf"unsupported dtype '{dtype}'; choose one of float32, float64"
    ):
        get_backend("numpy", dtype=dtype)
    X = net.X.astype(dtype)
    with pytest.raises(
        ConfigError, match=rf"X has dtype {dtype}; expected one of float32, float64"
    ):
        net.mlp.forward(net.weights, X)
    with pytest.raises(ConfigError, match=rf"X has dtype {dtype}"):
        exact_fisher(net.mlp, net.weights, X)


def test_float32_is_accepted(net):
    backend = get_backend("numpy", dtype="float32")
    W = net.mlp.init_gaussian(seed=0, backend=backend)
    out = net.mlp.forward(W, backend.asarray(net.X)).output
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_errors_share_a_base_class():
    for cls in (BackendError, ConfigError, NonFiniteError, ShapeError, TooLargeError):
        assert issubclass(cls, KFACError)
    assert issubclass(ConfigError, ValueError) and issubclass(ShapeError, ValueError)


# ------------------------------------------------------------------ too large
def test_dense_fisher_too_large_is_refused_before_allocating():
    """~100k parameters: a dense F would need 3 × 8e10 bytes; refuse at once, allocate nothing."""
    mlp = MLP((300, 300, 30), "tanh", "bernoulli")
    assert mlp.n_params == 99_330
    weights = [np.zeros(shape) for shape in mlp.shapes]
    X = np.zeros((4, 300))
    msg = r"a dense Fisher for 99330 parameters needs about \d+ MiB .* over the limit of 2048 MiB"
    calls = [
        lambda: exact_fisher(mlp, weights, X),
        lambda: monte_carlo_fisher(mlp, weights, X, n_samples=1),
        lambda: empirical_fisher(mlp, weights, X, np.zeros((4, 30))),
        lambda: approximate_fisher(mlp, weights, X, "block_tridiagonal"),
        lambda: compare_fisher(mlp, weights, X),
    ]
    tracemalloc.start()
    start = time.perf_counter()
    for call in calls:
        with pytest.raises(TooLargeError, match=msg):
            call()
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 20 * 2**20, f"allocated {peak / 2**20:.0f} MiB before refusing"


def test_dense_size_limit_is_configurable():
    check_dense_size(100, 8, max_bytes=3 * 100 * 100 * 8)
    with pytest.raises(TooLargeError, match=r"\(3 × 101² × 8 bytes\), over the limit of 0 MiB"):
        check_dense_size(101, 8, max_bytes=3 * 100 * 100 * 8)


# ------------------------------------------------------------- singular and non-finite matrices
def test_kron_sum_inverse_on_exactly_singular_sigma():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((3, 5))
    A = M @ M.T + np.eye(3)
    N = rng.standard_normal((2, 4))
    B = N @ N.T + np.eye(2)
    with pytest.raises(NonFiniteError, match=r"Σ_\{i\|i\+1\} is singular .* use damping γ > 0"):
        kron_sum_inverse(A, B, A, B, sign=-1)


def test_spd_factorizations_reject_nan_and_indefinite_matrices():
    with pytest.raises(NonFiniteError, match=r"Ā_\{0,0\} contains NaN or infinite entries"):
        spd_inverse(np.array([[1.0, np.nan], [np.nan, 1.0]]), "Ā_{0,0}")
    with pytest.raises(NonFiniteError, match="G is not positive definite even with jitter"):
        spd_inverse(-np.eye(3), "G")


# ------------------------------------------------------------------ memory estimates vs peaks
def _state_bytes(opt, state) -> int:
    """Bytes of the arrays a K-FAC state holds (its state_dict's host arrays)."""
    total, stack = 0, [opt.state_dict(state)]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, np.ndarray):
            total += v.nbytes
    return total


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("structure", ["full", "exact"])
def test_dense_structure_estimate_bounds_a_measured_step(structure, dtype):
    """The memory a dense structure's check counts (its P×P arrays in the training dtype and
    in float64) against a step's measured peak (tracemalloc: what the step allocates, plus the
    state it holds) on a net with P = 1012, every step refreshing the inverse and searching γ:
    within [1, 1.25] × the peak (measured: 1.06–1.22). Counting 3 P² of the training dtype, as
    before, was 2.3–4.3× below it."""
    from kfac_ref.config import KFACConfig
    from kfac_ref.optimizer import KFAC
    from kfac_ref.structures import get_structure

    backend = get_backend("numpy", dtype)
    mlp = MLP((12, 40, 12), "logistic", "bernoulli")
    X = backend.asarray(np.random.default_rng(0).random((20, 12)))
    opt = KFAC(mlp, KFACConfig(structure=structure, T1=1, T2=1, T3=1), backend)
    W = mlp.init_sparse(0, backend)
    W, state, _ = opt.step(W, opt.init_state(W), X, X, backend.rng(1))
    held = _state_bytes(opt, state)
    tracemalloc.start()
    try:
        opt.step(W, state, X, X, backend.rng(2))
        peak = tracemalloc.get_traced_memory()[1] + held
    finally:
        tracemalloc.stop()
    estimate = get_structure(structure).peak_bytes(mlp.n_params, np.dtype(dtype).itemsize)
    assert peak <= estimate <= 1.25 * peak, (estimate / peak, estimate, peak)


@pytest.mark.parametrize(
    ("sizes", "n"),
    [((8, 6, 6, 6, 4), 2000), ((20, 20, 10), 10)],
    ids=["per-case gradients dominate", "P×P matrices dominate"],
)
def test_compare_estimate_bounds_its_measured_peak(sizes, n):
    """What check_compare_size counts (13 P×P matrices and 4P + 3Σd + d_ℓ² entries per case)
    against compare_fisher's measured peak: within [1, 1.6] × the peak."""
    from kfac_ref.compare import COMPARE_COPIES
    from kfac_ref.memory import per_case_entries

    mlp = MLP(sizes, "tanh", "softmax")
    W = mlp.init_gaussian(0)
    X = np.random.default_rng(0).standard_normal((n, sizes[0]))
    tracemalloc.start()
    try:
        compare_fisher(mlp, W, X, gamma=1e-3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    P = mlp.n_params
    estimate = 8 * (COMPARE_COPIES * P * P + n * per_case_entries(sizes))
    assert peak <= estimate <= 1.6 * peak, (estimate / peak, estimate, peak)


def test_many_cases_are_refused_before_the_per_case_gradients():
    """400,000 cases of a 166-parameter net: the P² count alone passed; the n × P per-case
    gradients (about 2 GiB) do not."""
    mlp = MLP((8, 6, 6, 6, 4), "tanh", "softmax")
    X = np.zeros((400_000, 8))
    tracemalloc.start()
    try:
        for call in (
            lambda: compare_fisher(mlp, mlp.init_gaussian(0), X),
            lambda: exact_fisher(mlp, mlp.init_gaussian(0), X),
        ):
            with pytest.raises(TooLargeError, match=r"400,000 cases × 770 × 8 bytes"):
                call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20
