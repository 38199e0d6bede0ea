"""Exact-vs-approximate diagnostics (:mod:`kfac_ref.diagnostics`) against dense oracles.

Every matrix of the oracle is built here from brute-force expectations over every (case, y)
pair (``brute_force.py``, no kfac_ref code): F = E[Dθ Dθᵀ], F̃ entrywise as E[ā_p ā_q] E[g_p g_q]
(§3), the damped diagonal blocks (Ā + πγI) ⊗ (G + γ/π I) with π from the traces (§6.3), F̆ its
block diagonal (§4.2), F̂ as the covariance of a Gaussian chain (§4.3: its far blocks are
F̂_{i,j} = F̂_{i,j−1} F̂_{j−1,j−1}⁻¹ F̂_{j−1,j}, a different construction from the Ξ, Λ of
:mod:`kfac_ref.dense`), inverses by ``np.linalg.inv``. The gradient is the brute-force mean of
Dθ with the training targets.

Tolerances: float64; relative 1e-8 (the damped matrices have condition numbers below 1e5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from brute_force import atoms, gradient

from kfac_ref import config, optimizer
from kfac_ref.backend import get_backend
from kfac_ref.cumulants import DenseSizeError
from kfac_ref.diagnostics import check_diagnose_size, diagnose, diagnose_kfac
from kfac_ref.errors import ConfigError, ShapeError
from kfac_ref.mlp import MLP

RTOL = 1e-8
GAMMA, LAM_PLUS_ETA = 0.1, 0.05


def problem(output: str, seed: int = 0, n: int = 5):
    rng = np.random.default_rng(seed)
    mlp = MLP((3, 4, 3, 3, 2), "tanh", output)
    weights = [rng.standard_normal(s) for s in mlp.shapes]
    X = rng.standard_normal((n, 3))
    if output == "softmax":
        Y = np.eye(2)[rng.integers(0, 2, n)]
    elif output == "bernoulli":
        Y = rng.random((n, 2))
    else:
        Y = rng.standard_normal((n, 2))
    return mlp, weights, X, Y


def edges(mlp: MLP, layers: list[int]) -> list[tuple[int, int, int]]:
    """(start, stop, R) of each layer's entries in θ (R = d_out), for ``layers``."""
    sizes = [r * c for r, c in mlp.shapes]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return [(starts[k], starts[k + 1], mlp.shapes[k][0]) for k in layers]


class Oracle:
    """Dense matrices restricted to ``layers``, built from brute-force expectations."""

    def __init__(self, mlp, weights, X, Y, layers, gamma=GAMMA):
        w, A, G = atoms(weights, X, mlp.output.name)
        idx = np.concatenate([np.arange(a, b) for a, b, _ in edges(mlp, layers)])
        A, G = A[:, idx], G[:, idx]
        D = A * G
        self.F = D.T @ (w[:, None] * D)
        EA, EG = A.T @ (w[:, None] * A), G.T @ (w[:, None] * G)
        self.F_tilde = EA * EG
        self.grad = gradient(weights, X, Y, mlp.output.name)[idx]
        off = np.concatenate([[0], np.cumsum([b - a for a, b, _ in edges(mlp, layers)])])
        self.sl = [slice(off[i], off[i + 1]) for i in range(len(layers))]
        self.damped = self.F_tilde.copy()
        for s, (_, _, R) in zip(self.sl, edges(mlp, layers), strict=True):
            Abar, Gk = EA[s, s][::R, ::R], EG[s, s][:R, :R]
            pi = math.sqrt((np.trace(Abar) / len(Abar)) / (np.trace(Gk) / len(Gk)))
            self.damped[s, s] = np.kron(
                Abar + pi * gamma * np.eye(len(Abar)), Gk + gamma / pi * np.eye(len(Gk))
            )
        self.F_breve = np.zeros_like(self.F)
        for s in self.sl:
            self.F_breve[s, s] = self.damped[s, s]
        self.F_hat = self.chain()

    def chain(self) -> np.ndarray:
        """The Gaussian chain agreeing with the damped F̃ on the tridiagonal blocks (§4.3)."""
        sl, T = self.sl, self.damped
        H = np.zeros_like(T)
        for i in range(len(sl)):
            for j in range(max(0, i - 1), min(len(sl), i + 2)):
                H[sl[i], sl[j]] = T[sl[i], sl[j]]
        for gap in range(2, len(sl)):
            for i in range(len(sl) - gap):
                j = i + gap
                H[sl[i], sl[j]] = (
                    H[sl[i], sl[j - 1]]
                    @ np.linalg.inv(H[sl[j - 1], sl[j - 1]])
                    @ H[sl[j - 1], sl[j]]
                )
                H[sl[j], sl[i]] = H[sl[i], sl[j]].T
        return H


def rel(X: np.ndarray, Y: np.ndarray) -> float:
    return np.linalg.norm(X - Y) / np.linalg.norm(Y)


def vec_of(V: list[np.ndarray], layers: list[int]) -> np.ndarray:
    return np.concatenate([V[k].T.reshape(-1) for k in layers])


@pytest.mark.parametrize("output", ["softmax", "bernoulli", "gaussian"])
@pytest.mark.parametrize("layers", [None, [1, 2]], ids=["all", "layers_2_3"])
def test_every_quantity_against_dense_oracle(output: str, layers: list[int] | None) -> None:
    mlp, weights, X, Y = problem(output)
    ks = list(range(mlp.n_layers)) if layers is None else layers
    o = Oracle(mlp, weights, X, Y, ks)
    rng = np.random.default_rng(9)
    delta = [rng.standard_normal(s) for s in mlp.shapes]
    out = diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA, delta=delta, layers=layers)
    # F vs F̃ per block and overall (§3), and the §3.1 total error
    for a, i in enumerate(ks):
        for b, j in enumerate(ks):
            s, t = o.sl[a], o.sl[b]
            expected = rel(o.F_tilde[s, t], o.F[s, t])
            assert out[f"F_tilde_vs_F_block_{i + 1}_{j + 1}"] == pytest.approx(expected, rel=RTOL)
    assert out["F_tilde_vs_F"] == pytest.approx(rel(o.F_tilde, o.F), rel=RTOL)
    assert out["total_error"] == pytest.approx(np.abs(o.F - o.F_tilde).sum(), rel=RTOL)
    assert out["bound"] >= out["total_error"] > 0
    # damped inverses (§4.2, §4.3, §6.3)
    inv_tilde = np.linalg.inv(o.damped)
    inv_hat = np.linalg.inv(o.F_hat)
    far = [(a, b) for a in range(len(ks)) for b in range(len(ks)) if abs(a - b) >= 2]
    for a, b in far:  # the oracle's F̂ has a block-tridiagonal inverse
        assert np.abs(inv_hat[o.sl[a], o.sl[b]]).max() < 1e-8 * np.abs(inv_hat).max()
    assert out["F_breve_inv_vs_F_tilde_inv"] == pytest.approx(
        rel(np.linalg.inv(o.F_breve), inv_tilde), rel=RTOL
    )
    assert out["F_hat_inv_vs_F_tilde_inv"] == pytest.approx(rel(inv_hat, inv_tilde), rel=RTOL)
    # the step: cosine with −(F + (λ+η)I)⁻¹∇h and the optimally re-scaled M (§6, §7)
    K = o.F + LAM_PLUS_ETA * np.eye(len(o.F))
    d, d_F = vec_of(delta, ks), -np.linalg.inv(K) @ o.grad
    cos = d @ d_F / (np.linalg.norm(d) * np.linalg.norm(d_F))
    assert out["cosine_delta_vs_natural_gradient"] == pytest.approx(cos, rel=RTOL)
    q, b = d @ K @ d, o.grad @ d
    alpha = -b / q
    assert out["alpha_kfac"] == pytest.approx(alpha, rel=RTOL)
    assert out["model_change_kfac"] == pytest.approx(0.5 * alpha**2 * q + alpha * b, rel=RTOL)
    grid = np.linspace(-3, 3, 6001)  # and no α on a grid does better
    assert out["model_change_kfac"] <= (0.5 * grid**2 * q + grid * b).min() + 1e-15
    assert out["alpha_natural_gradient"] == pytest.approx(1.0, rel=RTOL)
    M_F = 0.5 * d_F @ K @ d_F + o.grad @ d_F
    assert out["model_change_natural_gradient"] == pytest.approx(M_F, rel=RTOL)
    assert 0.0 <= out["model_change_ratio"] <= 1.0 + 1e-12
    assert out["gamma"] == GAMMA and out["lam_plus_eta"] == LAM_PLUS_ETA


def test_default_delta_is_the_exact_factor_block_diagonal_step() -> None:
    mlp, weights, X, Y = problem("softmax", seed=1)
    ks = list(range(mlp.n_layers))
    o = Oracle(mlp, weights, X, Y, ks)
    out = diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA)
    d = -np.linalg.inv(o.F_breve) @ o.grad
    K = o.F + LAM_PLUS_ETA * np.eye(len(o.F))
    assert out["alpha_kfac"] == pytest.approx(-(o.grad @ d) / (d @ K @ d), rel=RTOL)
    d_F = -np.linalg.solve(K, o.grad)
    cos = d @ d_F / (np.linalg.norm(d) * np.linalg.norm(d_F))
    assert out["cosine_delta_vs_natural_gradient"] == pytest.approx(cos, rel=RTOL)
    assert cos > 0.0  # a descent direction close to the natural gradient, not an unrelated one


def test_weight_cost_enters_the_gradient() -> None:
    mlp, weights, X, Y = problem("bernoulli", seed=2)
    eta = 0.3
    ks = list(range(mlp.n_layers))
    o = Oracle(mlp, weights, X, Y, ks)
    grad = o.grad + eta * vec_of(weights, ks)
    delta = [np.ones(s) for s in mlp.shapes]
    out = diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA, delta=delta, eta=eta)
    d = vec_of(delta, ks)
    K = o.F + LAM_PLUS_ETA * np.eye(len(o.F))
    assert out["alpha_kfac"] == pytest.approx(-(grad @ d) / (d @ K @ d), rel=RTOL)


def test_float32_inputs_are_diagnosed_in_float64() -> None:
    mlp, weights, X, Y = problem("softmax", seed=3)
    w32 = [W.astype(np.float32) for W in weights]
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    out64 = diagnose(
        mlp, [W.astype(np.float64) for W in w32], X32.astype(np.float64), Y, GAMMA, 0.1
    )
    out32 = diagnose(mlp, w32, X32, Y32, GAMMA, 0.1)
    for key, value in out64.items():
        assert out32[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_diagnose_kfac_uses_the_optimizer_state() -> None:
    mlp, weights, X, Y = problem("softmax", seed=4, n=40)
    opt = optimizer.KFAC(mlp, config.KFACConfig(lam0=1.0), get_backend("numpy", "float64"))
    state = opt.init_state(weights)
    with pytest.raises(ConfigError, match="after at least one step"):
        diagnose_kfac(opt, weights, state, X, Y)
    rng = np.random.default_rng(0)
    for _ in range(3):
        weights, state, _ = opt.step(weights, state, X, Y, rng)
    out = diagnose_kfac(opt, weights, state, X, Y)
    ks = list(range(mlp.n_layers))
    o = Oracle(mlp, weights, X, Y, ks, gamma=state.gamma)
    grad = o.grad + opt.config.eta * vec_of(weights, ks)
    d = -vec_of(state.inverse.apply(mlp.loss_and_grad(weights, X, Y, opt.config.eta)[1]), ks)
    K = o.F + (state.lam + opt.config.eta) * np.eye(len(o.F))
    d_F = -np.linalg.solve(K, grad)
    cos = d @ d_F / (np.linalg.norm(d) * np.linalg.norm(d_F))
    assert out["cosine_delta_vs_natural_gradient"] == pytest.approx(cos, rel=1e-7)
    assert out["gamma"] == state.gamma
    assert out["lam_plus_eta"] == pytest.approx(state.lam + opt.config.eta, rel=1e-15)
    assert out["F_breve_inv_vs_F_tilde_inv"] == pytest.approx(
        rel(np.linalg.inv(o.F_breve), np.linalg.inv(o.damped)), rel=RTOL
    )


def test_size_check_refuses_before_computing(monkeypatch: pytest.MonkeyPatch) -> None:
    import kfac_ref.diagnostics as diagnostics

    def fail(*args, **kwargs):
        raise AssertionError("computed before the size check")

    monkeypatch.setattr(diagnostics, "kronecker_cumulants", fail)
    mlp = MLP((256, 20, 20, 20, 20, 20, 10), "tanh", "softmax")
    weights = mlp.init_gaussian(0)
    X, Y = np.zeros((3, 256)), np.eye(10)[[0, 1, 2]]
    with pytest.raises(ConfigError, match=r"7030 parameters.*limit of 2048 MiB"):
        diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA)
    with pytest.raises(DenseSizeError, match="1680 parameters"):
        check_diagnose_size(mlp, 2000, layers=[1, 2, 3, 4], max_bytes=100 * 2**20)
    need = check_diagnose_size(mlp, 2000, layers=[1, 2, 3, 4])
    assert need >= 12 * 1680**2 * 8
    # the case count enters the estimate (the forward pass of every case, per-case work)
    assert check_diagnose_size(mlp, 200_000, layers=[1, 2, 3, 4]) > need + 200_000 * 256 * 8


def test_bad_arguments_are_refused() -> None:
    mlp, weights, X, Y = problem("softmax")
    with pytest.raises(ConfigError, match="consecutive"):
        diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA, layers=[0, 2])
    with pytest.raises(ConfigError, match="λ \\+ η"):
        diagnose(mlp, weights, X, Y, GAMMA, 0.0)
    with pytest.raises(ConfigError, match="γ"):
        diagnose(mlp, weights, X, Y, -1.0, LAM_PLUS_ETA)
    with pytest.raises(ShapeError, match="delta"):
        diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA, delta=weights[:-1])


@pytest.mark.gpu
@pytest.mark.parametrize("output", ["softmax", "gaussian"])
def test_cumulants_and_diagnose_on_cupy(cupy_kind: str, output: str) -> None:
    """The same numbers on the device (real CuPy, or the strict stand-in), arrays kept there."""
    from kfac_ref.backend import get_array_module, to_numpy
    from kfac_ref.cumulants import kronecker_cumulants

    dev = get_backend("cupy", "float64")
    mlp, weights, X, Y = problem(output)
    Wd, Xd, Yd = [dev.asarray(W) for W in weights], dev.asarray(X), dev.asarray(Y)
    host, got = kronecker_cumulants(mlp, weights, X), kronecker_cumulants(mlp, Wd, Xd)
    assert get_array_module(got.kappa4).__name__ == "cupy"
    for name in ("F", "F_tilde", "kappa4", "kappa3_term_1", "kappa3_term_2"):
        np.testing.assert_allclose(to_numpy(getattr(got, name)), getattr(host, name), atol=1e-12)
    want = diagnose(mlp, weights, X, Y, GAMMA, LAM_PLUS_ETA, layers=[1, 2])
    out = diagnose(mlp, Wd, Xd, Yd, GAMMA, LAM_PLUS_ETA, layers=[1, 2])
    assert all(type(v) is float for v in out.values())
    assert out == pytest.approx(want, rel=1e-9)
