"""Statistics (§5), damping rules (§6.3, §6.5, §6.6), re-scaling (§7) and KFACConfig.

float64, seeded. Exact values where the paper gives formulas; dense oracles for the statistics
(:func:`kfac_ref.factors.kronecker_factors`) and for the 2×2 model
(:func:`kfac_ref.fisher.exact_fisher`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from kfac_ref import MLP, get_backend
from kfac_ref.config import KFACConfig
from kfac_ref.damping import (
    damped_factors,
    gamma_candidates,
    omega1,
    omega2,
    pi_trace_norm,
    reduction_ratio,
    update_lambda,
)
from kfac_ref.errors import ConfigError
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher, fisher_vector_product
from kfac_ref.optimizer import KFAC
from kfac_ref.rescale import fisher_gram, quadratic_model, rescaling_from_model
from kfac_ref.statistics import (
    FactorStats,
    batch_factor_stats,
    choose_subset,
    ema_update,
    stat_decay,
    subset_forward,
    subset_size,
    update_stats,
)
from kfac_ref.structures import configured_structure
from kfac_ref.vec import theta_to_weights, weights_to_theta

BE = get_backend("numpy", "float64")


@pytest.fixture(scope="module")
def net():
    mlp = MLP([5, 4, 3, 4], ["tanh", "logistic"], "softmax")
    W = mlp.init_gaussian(seed=0, scale=1.2)
    X = np.random.default_rng(1).standard_normal((20, 5))
    return mlp, W, X


# ------------------------------------------------------------------------- §5 statistics
def test_decay_sequence_is_min_one_minus_one_over_k_and_cap():
    eps = [stat_decay(k) for k in range(1, 26)]
    assert eps[:4] == [0.0, 0.5, pytest.approx(2 / 3), 0.75]
    assert eps[18] == pytest.approx(1 - 1 / 19) and eps[19:] == [0.95] * 6
    assert [stat_decay(k, 0.5) for k in (1, 2, 3)] == [0.0, 0.5, 0.5]
    with pytest.raises(ConfigError):
        stat_decay(0)


def test_decaying_average_with_epsilon_k_is_the_plain_mean_at_first():
    """With ε_k = 1 − 1/k the running estimate after k batches is their plain mean (§5)."""
    vals = [np.full((2, 2), float(v)) for v in (3.0, 5.0, 10.0)]
    est = None
    for k, v in enumerate(vals, start=1):
        est = ema_update(est, v, stat_decay(k))
    np.testing.assert_allclose(est, np.full((2, 2), 6.0), rtol=1e-15)
    assert ema_update(np.ones(2), np.zeros(2), 0.95)[0] == pytest.approx(0.95)


@pytest.mark.parametrize("tridiagonal", [False, True])
def test_exact_batch_statistics_equal_the_dense_factor_blocks(net, tridiagonal):
    mlp, W, X = net
    st = batch_factor_stats(mlp, W, mlp.forward(W, X), None, tridiagonal, method="exact")
    ref = kronecker_factors(mlp, W, X, method="exact")
    A_diag, G_diag = ref.diagonal()
    for got, want in zip(st.A_diag + st.G_diag, A_diag + G_diag, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    if tridiagonal:
        A_off, G_off = ref.off_diagonal()
        for got, want in zip(st.A_off + st.G_off, A_off + G_off, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    else:
        assert st.A_off is None and st.G_off is None


def test_sampled_G_uses_model_targets_and_is_unbiased(net):
    """G from one target per case sampled from the model: with many copies of the batch its mean
    is within Monte Carlo error of the exact E_y[g gᵀ] (not the empirical Fisher's)."""
    mlp, W, X = net
    Xr = np.tile(X, (2000, 1))
    fwd = mlp.forward(W, Xr)
    sampled = batch_factor_stats(mlp, W, fwd, np.random.default_rng(0), True, "sample")
    exact = batch_factor_stats(mlp, W, mlp.forward(W, X), None, True, "exact")
    for s, e in zip(sampled.G_diag + sampled.G_off, exact.G_diag + exact.G_off, strict=True):
        assert np.abs(s - e).max() < 0.05 * np.abs(e).max()
    for s, e in zip(sampled.A_diag, exact.A_diag, strict=True):  # Ā does not depend on targets
        np.testing.assert_allclose(s, e, rtol=1e-12)


def test_subset_is_ceil_tau_n_distinct_sorted_cases():
    rng = np.random.default_rng(0)
    assert (
        subset_size(1000, 1 / 8) == 125
        and subset_size(10, 1 / 8) == 2
        and subset_size(3, 0.01) == 1
    )
    idx = choose_subset(1000, 1 / 8, rng)
    assert idx.shape == (125,) and len(set(idx.tolist())) == 125
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 1000
    assert choose_subset(50, 1.0, rng) is None


def test_subset_forward_takes_rows_of_every_cached_array(net):
    mlp, W, X = net
    idx = np.array([1, 4, 7])
    sub, full = subset_forward(mlp.forward(W, X), idx), mlp.forward(W, X[idx])
    for a, b in zip(sub.abar + sub.s + sub.dphi, full.abar + full.s + full.dphi, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_optimizer_running_statistics_are_the_decaying_average(net):
    """Three K-FAC steps with exact statistics on the whole batch: the state's factors are the
    ε_k-average of the exact factors at θ0, θ1, θ2 (§5)."""
    mlp, W, X = net
    Y = np.eye(4)[np.arange(X.shape[0]) % 4]  # one-hot classes for the softmax output
    opt = KFAC(
        mlp, KFACConfig(structure="block_tridiagonal", stats_method="exact", tau1=1.0, lam0=1.0), BE
    )
    st, est, Wk = opt.init_state(W), None, W
    for k in (1, 2, 3):
        batch = batch_factor_stats(mlp, Wk, mlp.forward(Wk, X), None, True, "exact")
        est = update_stats(est, batch, stat_decay(k))
        Wk, st, _ = opt.step(Wk, st, X, Y, BE.rng(k))
    for got, want in zip(st.stats.arrays(), est.arrays(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------------ §6 damping
def test_omega_constants_of_the_paper():
    assert omega1(5) == pytest.approx((19 / 20) ** 5) == pytest.approx(0.7737809375)
    assert omega2(20) == pytest.approx(math.sqrt(19 / 20) ** 20) == pytest.approx(0.95**10)
    cfg = KFACConfig()
    assert cfg.resolved.omega1 == omega1(5) and cfg.resolved.omega2 == omega2(20)
    assert dataclasses.replace(cfg, T1=10).resolved.omega1 == pytest.approx(0.95**10)
    assert KFACConfig(omega1=0.5).resolved.omega1 == 0.5


@pytest.mark.parametrize(
    "rho, factor",
    [
        (0.9, 0.8),
        (0.76, 0.8),
        (0.75, 1.0),
        (0.5, 1.0),
        (0.25, 1.0),
        (0.2, 1 / 0.8),
        (-3.0, 1 / 0.8),
        (math.nan, 1 / 0.8),
    ],
)
def test_levenberg_marquardt_rule_direction(rho, factor):
    assert update_lambda(10.0, rho, 0.8) == pytest.approx(10.0 * factor)


def test_lambda_bounds():
    assert update_lambda(1.0, 0.9, 0.5, lam_min=0.7) == 0.7
    assert update_lambda(1.0, 0.1, 0.5, lam_max=1.5) == 1.5


def test_reduction_ratio():
    assert reduction_ratio(9.0, 10.0, -2.0) == 0.5
    assert reduction_ratio(11.0, 10.0, -2.0) == -0.5
    assert math.isnan(reduction_ratio(10.0, 10.0, 0.0))
    assert math.isnan(reduction_ratio(10.5, 10.0, 0.25))  # a predicted increase: no ratio


def test_gamma_candidates_and_clamps():
    assert gamma_candidates(2.0, 0.5) == (1.0, 2.0, 4.0)
    assert gamma_candidates(2.0, 0.5, gamma_min=1.5, gamma_max=3.0) == (1.5, 2.0, 3.0)
    # [code]: only the outer candidates are clamped, γ itself may lie outside [γ_min, γ_max]
    assert gamma_candidates(12.0, 0.5, gamma_min=0.1, gamma_max=1.0) == (6.0, 12.0, 1.0)


def test_pi_is_the_trace_norm_ratio_and_damping_adds_pi_gamma():
    rng = np.random.default_rng(0)
    a, g = rng.standard_normal((30, 4)), rng.standard_normal((30, 3)) * 0.1
    A, G = a.T @ a / 30, g.T @ g / 30
    pi = math.sqrt((np.trace(A) / 4) / (np.trace(G) / 3))
    assert float(pi_trace_norm(A, G)) == pytest.approx(pi, rel=1e-14)
    Ad, Gd = damped_factors(A, G, 0.3)
    np.testing.assert_allclose(Ad - A, pi * 0.3 * np.eye(4), rtol=1e-13)
    np.testing.assert_allclose(Gd - G, 0.3 / pi * np.eye(3), rtol=1e-13)


# ----------------------------------------------------------------------- §7 re-scaling
def test_fisher_gram_is_the_dense_exact_fisher_quadratic_form(net):
    """[v_iᵀ F v_j] from J v and F_R equals the dense F's, and vᵀ(F w) with F w from
    :func:`kfac_ref.fisher.fisher_vector_product`."""
    mlp, W, X = net
    rng = np.random.default_rng(4)
    V = [rng.standard_normal(mlp.n_params) for _ in range(3)]
    fwd = mlp.forward(W, X)
    S = fisher_gram(mlp, fwd, [mlp.jvp(W, fwd, theta_to_weights(v, mlp.shapes)) for v in V])
    F = exact_fisher(mlp, W, X)
    Vm = np.stack(V, axis=1)
    np.testing.assert_allclose(S, Vm.T @ F @ Vm, rtol=1e-12)
    Fv = weights_to_theta(fisher_vector_product(mlp, W, X, theta_to_weights(V[1], mlp.shapes)))
    assert S[0, 1] == pytest.approx(V[0] @ Fv, rel=1e-12)


def rescale(grads, Delta, delta0, F_gram, lam_plus_eta):
    """α, μ, δ minimizing M over span{Δ, δ₀} (or span{Δ} for ``delta0`` None) from a Fisher
    Gram matrix: the package's two steps of §7, :func:`~kfac_ref.rescale.quadratic_model` and
    :func:`~kfac_ref.rescale.rescaling_from_model`, on NumPy arrays."""
    directions = [Delta] if delta0 is None else [Delta, delta0]
    Q, r = quadratic_model(grads, directions, F_gram, lam_plus_eta)
    return rescaling_from_model(
        np.asarray(Q, dtype=np.float64), np.asarray(r, dtype=np.float64), Delta, delta0
    )


def _gram(mlp, W, X, directions):
    fwd = mlp.forward(W, X)
    return fisher_gram(mlp, fwd, [mlp.jvp(W, fwd, D) for D in directions])


def test_rescale_matches_dense_quadratic_model(net):
    mlp, W, X = net
    rng = np.random.default_rng(5)
    shapes = mlp.shapes
    P = mlp.n_params
    g, D, d0 = (rng.standard_normal(P) for _ in range(3))
    F = exact_fisher(mlp, W, X)
    lam_eta = 0.3
    gw, Dw, d0w = (theta_to_weights(v, shapes) for v in (g, D, d0))
    res = rescale(gw, Dw, d0w, _gram(mlp, W, X, [Dw, d0w]), lam_eta)
    V = np.stack([D, d0], axis=1)
    Q = V.T @ (F + lam_eta * np.eye(P)) @ V
    r = V.T @ g
    c = -np.linalg.solve(Q, r)
    assert (res.alpha, res.mu) == (pytest.approx(c[0], rel=1e-10), pytest.approx(c[1], rel=1e-10))
    delta = V @ c
    np.testing.assert_allclose(weights_to_theta(res.delta), delta, rtol=1e-10)
    M = 0.5 * delta @ (F + lam_eta * np.eye(P)) @ delta + g @ delta  # M(δ) − M(0)
    assert res.model_change == pytest.approx(M, rel=1e-10) and res.model_change < 0


def test_rescale_without_previous_update_is_one_dimensional(net):
    mlp, W, X = net
    rng = np.random.default_rng(6)
    g, D = ([rng.standard_normal(s) for s in mlp.shapes] for _ in range(2))
    zeros = [np.zeros(s) for s in mlp.shapes]
    a = rescale(g, D, None, _gram(mlp, W, X, [D]), 0.1)
    b = rescale(g, D, zeros, _gram(mlp, W, X, [D, zeros]), 0.1)
    FD = fisher_vector_product(mlp, W, X, D)
    gD = sum((x * y).sum() for x, y in zip(g, D, strict=True))
    DFD = sum((x * y).sum() for x, y in zip(D, FD, strict=True)) + 0.1 * sum(
        (x * x).sum() for x in D
    )
    assert a.mu == b.mu == 0.0
    assert a.alpha == pytest.approx(-gD / DFD, rel=1e-12) == b.alpha
    assert a.model_change == pytest.approx(-0.5 * gD**2 / DFD, rel=1e-12)


def test_rescale_parallel_directions_use_the_pseudo_inverse(net):
    """Δ ∥ δ₀ makes the 2×2 matrix singular; the pseudo-inverse still gives the 1-D optimum."""
    mlp, W, X = net
    rng = np.random.default_rng(7)
    g, D = ([rng.standard_normal(s) for s in mlp.shapes] for _ in range(2))
    D2 = [2 * d for d in D]
    one = rescale(g, D, None, _gram(mlp, W, X, [D]), 0.1)
    two = rescale(g, D, D2, _gram(mlp, W, X, [D, D2]), 0.1)
    assert two.model_change == pytest.approx(one.model_change, rel=1e-9)
    for a, b in zip(one.delta, two.delta, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_rescale_non_finite_model_gives_nan():
    g = [np.ones((2, 2))]
    res = rescale(g, g, None, np.array([[np.nan]]), 0.1)
    assert np.isnan(res.model_change) and np.isnan(res.alpha)


# ---------------------------------------------------------------------- configuration
def test_config_defaults_cite_the_paper():
    cfg = KFACConfig()
    assert (cfg.structure, cfg.eta, cfg.lam0, cfg.T1, cfg.T2, cfg.T3) == (
        "block_diagonal",
        1e-5,
        150.0,
        5,
        20,
        20,
    )
    assert cfg.resolved.gamma0 == pytest.approx(math.sqrt(150 + 1e-5))
    assert (cfg.tau1, cfg.resolved.tau2, cfg.max_stat_decay) == (1 / 8, 1 / 4, 0.95)
    assert KFACConfig(constants="code").resolved.tau2 == 1.0
    assert KFACConfig(constants="code", tau2=0.5).resolved.tau2 == 0.5
    assert (
        cfg.resolved.gamma_min == pytest.approx(math.sqrt(1e-5)) and cfg.resolved.gamma_max == 1.0
    )
    assert KFACConfig(gamma_max=None).resolved.gamma_max == math.inf
    assert cfg.inverse_recompute_first == 3 and cfg.use_momentum
    assert cfg.use_rescaling and cfg.adapt_gamma and cfg.adapt_lambda  # §6.4, §6.6, §6.5
    assert (cfg.tikhonov, cfg.pi) == ("factored", "trace")  # §6.3
    assert cfg.linalg == "auto" and not hasattr(cfg, "linalg_float64")  # [code] eig(single(mat))


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(T2=30, T3=20), "T2"),
        (dict(T1=0), "T1"),
        (dict(structure="kronecker"), "structure"),
        (dict(tau1=0.0), "tau1"),
        (dict(tau2=1.5), "tau2"),
        (dict(omega1=1.0), "omega1"),
        (dict(max_stat_decay=1.0), "max_stat_decay"),
        (dict(lam0=-1.0), "lam0"),
        (dict(constants="matlab"), "constants"),
        (dict(stats_method="empirical"), "stats_method"),
        (dict(gamma0=0.0), "gamma0"),
        (dict(use_rescaling="yes"), "use_rescaling"),
        (dict(tikhonov="full"), "tikhonov"),
        (dict(pi="frobenius"), "pi"),
        (dict(adapt_gamma=0), "adapt_gamma"),
        (dict(adapt_lambda=1.0), "adapt_lambda"),
    ],
)
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        configured_structure(KFACConfig(**kw))  # the structure checks its name and damping


def test_factor_stats_arrays_order():
    st = FactorStats([np.zeros(1)], [np.ones(1)], [np.full(1, 2.0)], [np.full(1, 3.0)])
    assert [float(a[0]) for a in st.arrays()] == [0.0, 1.0, 2.0, 3.0]


def test_resolved_constants_are_frozen_and_not_part_of_the_saved_config():
    cfg = KFACConfig(constants="code", gamma_max=None)
    r = cfg.resolved
    assert (r.tau2, r.gamma_max, r.gamma_min) == (1.0, math.inf, math.sqrt(cfg.eta))
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.tau2 = 0.5  # type: ignore[misc]
    saved = dataclasses.asdict(cfg)
    assert "resolved" not in saved and saved["tau2"] is None and saved["gamma0"] is None
