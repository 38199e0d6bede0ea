"""Predictive distributions and their matching losses (§2.1, §2.2).

For each output: Ds_ℓ = ∂L/∂s_ℓ (finite differences, ≤ 1e-8 rel. + 1e-9 abs.); F_R = C Cᵀ =
Cov(y) = the
Hessian of L in s_ℓ (finite-difference Hessian, ≤ 1e-6; Cov(y) by exact enumeration of the
outcomes, ≤ 1e-13); F_R v; sampling (mean and covariance within 5 standard errors over 40 000
seeded draws); finite losses at s = ±1000.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kfac_ref.errors import ShapeError
from kfac_ref.outputs import OUTPUTS, get_output

D = 3


def _s(seed: int = 0, n: int = 5, d: int = D) -> np.ndarray:
    return 1.5 * np.random.default_rng(seed).standard_normal((n, d))


def _targets(name: str, s: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, d = s.shape
    if name == "bernoulli":
        return rng.random((n, d))  # soft targets in [0, 1] are allowed by the cross-entropy
    if name == "gaussian":
        return rng.standard_normal((n, d))
    return np.eye(d)[rng.integers(0, d, n)]


def _outcomes(name: str, d: int) -> list[np.ndarray]:
    """Every value y can take (finite support only)."""
    if name == "bernoulli":
        return [np.array(y, dtype=float) for y in itertools.product([0, 1], repeat=d)]
    return list(np.eye(d))


def _log_prob(name: str, s_c: np.ndarray, y: np.ndarray) -> float:
    """log r(y | s) of one case, written independently of kfac_ref."""
    if name == "bernoulli":
        p = 1 / (1 + np.exp(-s_c))
        return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
    z = s_c - s_c.max()
    return float(z @ y - np.log(np.exp(z).sum()))


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_ds_is_derivative_of_loss(name, oracle):
    out = get_output(name)
    s, y = _s(), None
    y = _targets(name, s)
    ds = out.ds(s, y)
    for c in range(s.shape[0]):
        fd = oracle.fd_gradient(
            lambda sc, c=c: out.loss(sc[None, :], y[c : c + 1])[0], s[c].copy(), eps=1e-5
        )
        np.testing.assert_allclose(ds[c], fd, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_fisher_sqrt_squares_to_F_R_which_is_the_loss_hessian(name, oracle):
    out = get_output(name)
    s = _s(2)
    y = _targets(name, s)
    C = out.fisher_sqrt(s)
    F_R = C @ C.transpose(0, 2, 1)
    np.testing.assert_allclose(F_R, oracle.dense_output_fisher(name, s), rtol=1e-13, atol=1e-15)
    # the Hessian of the loss in the natural parameter: finite differences of ds
    eps = 1e-5
    for c in range(s.shape[0]):
        H = np.empty((D, D))
        for j in range(D):
            e = np.zeros(D)
            e[j] = eps
            H[:, j] = (
                out.ds(s[c : c + 1] + e, y[c : c + 1])[0]
                - out.ds(s[c : c + 1] - e, y[c : c + 1])[0]
            ) / (2 * eps)
        np.testing.assert_allclose(F_R[c], H, rtol=1e-6, atol=1e-9)
    # and the second difference of the loss itself (independent of ds): rel. 1e-5 at step 1e-4
    c, h = 0, 1e-4
    L = lambda v: float(out.loss((s[c] + v)[None, :], y[c : c + 1])[0])  # noqa: E731
    for i, j in itertools.product(range(D), repeat=2):
        ei, ej = np.eye(D)[i] * h, np.eye(D)[j] * h
        H_ij = (L(ei + ej) - L(ei - ej) - L(-ei + ej) + L(-ei - ej)) / (4 * h * h)
        assert H_ij == pytest.approx(F_R[c, i, j], abs=1e-6)


@pytest.mark.parametrize("name", ["bernoulli", "softmax"])
def test_F_R_is_covariance_of_sufficient_statistic(name):
    """F_R = Cov(y) exactly, by enumerating all outcomes y (T(y) = y for these families)."""
    out = get_output(name)
    s = _s(3)
    C = out.fisher_sqrt(s)
    for c in range(s.shape[0]):
        ys = _outcomes(name, D)
        probs = np.array([np.exp(_log_prob(name, s[c], y)) for y in ys])
        assert probs.sum() == pytest.approx(1.0, abs=1e-14)
        mean = sum(p * y for p, y in zip(probs, ys, strict=True))
        cov = sum(p * np.outer(y - mean, y - mean) for p, y in zip(probs, ys, strict=True))
        np.testing.assert_allclose(out.predict(s[c : c + 1])[0], mean, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(C[c] @ C[c].T, cov, rtol=1e-12, atol=1e-15)


def test_gaussian_F_R_is_identity():
    out = get_output("gaussian")
    C = out.fisher_sqrt(_s())
    np.testing.assert_array_equal(C, np.broadcast_to(np.eye(D), C.shape))


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_fisher_vp_is_F_R_times_v(name):
    out = get_output(name)
    s = _s(4)
    v = np.random.default_rng(5).standard_normal(s.shape)
    C = out.fisher_sqrt(s)
    want = np.einsum("nij,nkj,nk->ni", C, C, v)
    np.testing.assert_allclose(out.fisher_vp(s, v), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_sample_has_model_mean_and_covariance(name):
    """Targets y ~ P(y|s) (§5): sample mean and covariance within 5 standard errors."""
    out = get_output(name)
    s_row = np.array([[0.7, -1.2, 0.2]])
    N = 40_000
    s = np.repeat(s_row, N, axis=0)
    y = out.sample(s, np.random.default_rng(12345))
    assert y.shape == s.shape and y.dtype == s.dtype
    if name != "gaussian":
        assert set(np.unique(y)) <= {0.0, 1.0}
    if name == "softmax":
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    mean = out.predict(s_row)[0]
    F_R = out.fisher_sqrt(s_row)[0] @ out.fisher_sqrt(s_row)[0].T
    se_mean = np.sqrt(np.diag(F_R) / N)
    assert (np.abs(y.mean(axis=0) - mean) < 5 * se_mean).all()
    yc = y - mean
    cov = yc.T @ yc / N
    # standard error of each covariance entry: sd of the product (y_i − μ_i)(y_j − μ_j) / √N
    se_cov = np.array(
        [[np.std(yc[:, i] * yc[:, j]) for j in range(D)] for i in range(D)]
    ) / np.sqrt(N)
    assert (np.abs(cov - F_R) < 5 * se_cov + 1e-12).all()
    # and a wrong model (s_1 moved by 0.3; softmax is blind to a common shift) is clearly rejected
    wrong = out.predict(s_row + np.array([0.3, 0.0, 0.0]))[0]
    assert (np.abs(y.mean(axis=0) - wrong) > 5 * se_mean).any()


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_losses_stable_for_large_inputs(name):
    out = get_output(name)
    s = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 3.0]])
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    for f in (
        out.loss(s, y),
        out.ds(s, y),
        out.fisher_sqrt(s),
        out.predict(s),
        out.fisher_vp(s, s),
    ):
        assert np.isfinite(f).all()
    L = out.loss(s, y)
    if name == "bernoulli":
        # case 0: y = 0 at s = 1000 costs 1000, y = 1 at s = −1000 costs 1000, log 2 for s = 0
        np.testing.assert_allclose(
            L, [2000 + np.log(2), 2000 + np.log(1 + np.exp(3.0))], rtol=1e-14
        )
    elif name == "softmax":
        np.testing.assert_allclose(L, [2000.0, 2000.0], rtol=1e-14)
    else:
        np.testing.assert_allclose(
            L, [0.5 * (1000**2 + 1001**2), 0.5 * (1001**2 + 1000**2 + 9)], rtol=1e-14
        )


def test_loss_rejects_mismatched_targets():
    out = get_output("softmax")
    with pytest.raises(
        ShapeError, match=r"targets have shape \(2, 4\) but outputs have shape \(2, 3\)"
    ):
        out.loss(np.zeros((2, 3)), np.zeros((2, 4)))
