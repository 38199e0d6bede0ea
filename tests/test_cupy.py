"""The CuPy backend gives the NumPy results (float64, relative error ≤ 1e-10), and backend choice.

Tests marked ``gpu`` need CuPy and a CUDA GPU and are skipped cleanly otherwise; the backend
selection tests (environment variable, error messages) run everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from kfac_ref.backend import (
    BACKEND_ENV_VAR,
    cupy_available,
    get_array_module,
    get_backend,
    to_numpy,
)
from kfac_ref.errors import BackendError
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import approximate_fisher, damped_diagonal, exact_fisher, fisher_vector_product
from kfac_ref.inverse import (
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.mlp import MLP
from kfac_ref.vec import weights_to_theta

RTOL = 1e-10


def _rel(X, Y) -> float:
    X, Y = to_numpy(X), to_numpy(Y)
    return float(np.linalg.norm(X - Y) / np.linalg.norm(Y))


@pytest.fixture(scope="module")
def gpu():
    if not cupy_available():
        pytest.skip("CuPy with a CUDA GPU is not available")
    return get_backend("cupy", dtype="float64")


@pytest.fixture(scope="module", params=["bernoulli", "gaussian", "softmax"])
def pair(request, gpu):
    """The same network, weights and data on the host and on the GPU."""
    output = request.param
    mlp = MLP((6, 5, 4, 3), ["tanh", "logistic"], output)
    host = get_backend("numpy")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    Y = (rng.random((40, 3)) < 0.5).astype(float) if output != "softmax" else np.eye(3)[rng.integers(0, 3, 40)]
    if output == "gaussian":
        Y = rng.standard_normal((40, 3))
    cpu = (mlp.init_gaussian(seed=1, backend=host, scale=1.5), X, Y)
    dev = (mlp.init_gaussian(seed=1, backend=gpu, scale=1.5), gpu.asarray(X), gpu.asarray(Y))
    return mlp, cpu, dev


@pytest.mark.gpu
def test_forward_backward_on_cupy(pair):
    mlp, (W, X, Y), (Wd, Xd, Yd) = pair
    assert get_array_module(Wd[0]).__name__ == "cupy"
    h, grads, fwd = mlp.loss_and_grad(W, X, Y, eta=1e-3)
    hd, grads_d, fwd_d = mlp.loss_and_grad(Wd, Xd, Yd, eta=1e-3)
    assert get_array_module(hd).__name__ == "cupy"
    assert abs(float(hd) - float(h)) <= RTOL * abs(float(h))
    assert _rel(weights_to_theta(grads_d), weights_to_theta(grads)) < RTOL
    assert _rel(fwd_d.output, fwd.output) < RTOL


@pytest.mark.gpu
def test_exact_and_approximate_fisher_on_cupy(pair):
    mlp, (W, X, _), (Wd, Xd, _) = pair
    assert _rel(exact_fisher(mlp, Wd, Xd), exact_fisher(mlp, W, X)) < RTOL
    f, fd = kronecker_factors(mlp, W, X), kronecker_factors(mlp, Wd, Xd)
    for k in range(mlp.n_layers):
        for l in range(mlp.n_layers):
            assert _rel(fd.A_bar[k][l], f.A_bar[k][l]) < RTOL
            assert _rel(fd.G[k][l], f.G[k][l]) < RTOL
    for structure in ("full", "block_diagonal", "block_tridiagonal"):
        for gamma in (0.0, 1e-2) if mlp.output.name != "softmax" else (1e-2,):
            got = approximate_fisher(mlp, Wd, Xd, structure, gamma, fd)
            assert _rel(got, approximate_fisher(mlp, W, X, structure, gamma, f)) < RTOL


def _inverses_and_fvp(mlp, W, X, Y, gamma: float) -> list:
    """F̆⁻¹∇h, F̂⁻¹∇h (damped, §4, §6.3) and F∇h (§2.2) as θ-vectors, on whichever backend."""
    f = kronecker_factors(mlp, W, X)
    _, grads, _ = mlp.loss_and_grad(W, X, Y)
    A, G = damped_diagonal(f, gamma)
    A_off, G_off = f.off_diagonal()
    return [
        weights_to_theta(apply_block_diagonal_inverse(block_diagonal_inverse(A, G), grads)),
        weights_to_theta(apply_block_tridiagonal_inverse(block_tridiagonal_inverse(A, G, A_off, G_off), grads)),
        weights_to_theta(fisher_vector_product(mlp, W, X, grads)),
    ]


@pytest.mark.gpu
def test_efficient_inverses_and_fvp_on_cupy(pair):
    mlp, (W, X, Y), (Wd, Xd, Yd) = pair
    host = _inverses_and_fvp(mlp, W, X, Y, gamma=1e-2)
    dev = _inverses_and_fvp(mlp, Wd, Xd, Yd, gamma=1e-2)
    for got, want in zip(dev, host, strict=True):
        assert get_array_module(got).__name__ == "cupy"
        assert _rel(got, want) < RTOL


# ------------------------------------------------------------------ backend selection (no GPU needed)
def test_cupy_unavailable_raises_backend_error():
    if cupy_available():
        pytest.skip("CuPy is available here")
    with pytest.raises(BackendError, match=r"backend 'cupy' was requested but (CuPy is not installed|no CUDA GPU)"):
        get_backend("cupy")


def test_environment_variable_selects_backend(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV_VAR, "numpy")
    assert get_backend().name == "numpy"
    monkeypatch.setenv(BACKEND_ENV_VAR, "NumPy")
    assert get_backend().xp is np
    monkeypatch.setenv(BACKEND_ENV_VAR, "")
    assert get_backend().name == "numpy"
    monkeypatch.setenv(BACKEND_ENV_VAR, "bogus")
    with pytest.raises(BackendError, match=r"unknown backend 'bogus'; choose one of numpy, cupy"):
        get_backend()
    assert get_backend("numpy").name == "numpy"  # an explicit name wins over the variable
    monkeypatch.setenv(BACKEND_ENV_VAR, "cupy")
    if cupy_available():
        assert get_backend().name == "cupy"
    else:
        with pytest.raises(BackendError, match="backend 'cupy' was requested"):
            get_backend()
    monkeypatch.delenv(BACKEND_ENV_VAR)
    backend = get_backend(dtype="float32")
    assert backend.name == "numpy" and backend.dtype == np.float32
