"""The damping switches of ``KFACConfig`` (§6.3–§6.6, §7) against dense oracles.

``use_rescaling`` (δ = Δ), ``tikhonov="exact"`` ((F̆ + γ²I)⁻¹, the paper's eqn. 6), ``pi="one"``
(π_i = 1), ``adapt_gamma`` (γ = √(λ + η)) and ``adapt_lambda`` (λ = λ0), one at a time and
combined. The oracles are written here: block-diagonal matrices of ``numpy.kron`` blocks of the
exact factors (:func:`kfac_ref.factors.kronecker_factors`), F̂ from :mod:`kfac_ref.dense` of
factors damped here (it shares no code with the efficient path), ``numpy.linalg.inv``/``solve``
and the dense exact Fisher. float64; 1e-9 relative (condition numbers < 1e6 here).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest

from kfac_ref import MLP, dense, get_backend, to_numpy
from kfac_ref.compare import approximate_fisher
from kfac_ref.config import KFACConfig
from kfac_ref.damping import damped_diagonal_factors, layer_pi, reduction_ratio, tied_gamma
from kfac_ref.errors import ConfigError, NonFiniteError
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.inverse import BlockDiagonalInverse, BlockTridiagonalInverse
from kfac_ref.optimizer import KFAC
from kfac_ref.rescale import raw_proposal_from_model
from kfac_ref.statistics import FactorStats
from kfac_ref.structures import STRUCTURES, configured_structure
from kfac_ref.tikhonov import ExactTikhonovInverse, exact_tikhonov_inverse
from kfac_ref.vec import weights_to_theta

BE = get_backend("numpy", "float64")
TOL = 1e-9


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture(scope="module")
def small():
    """A 4-layer autoencoder-like net (linear code layer), inputs in [0, 1], two batches."""
    mlp = MLP([6, 5, 3, 5, 6], ["logistic", "linear", "logistic"], "bernoulli")
    rng = np.random.default_rng(3)
    W = mlp.init_gaussian(seed=1, scale=1.5)
    return mlp, W, rng.random((24, 6)), rng.random((24, 6))


def exact_config(structure: str = "block_diagonal", **kw) -> KFACConfig:
    """Exact statistics on the whole batch, inverses every iteration, exact Fisher on all cases."""
    base = dict(
        structure=structure, stats_method="exact", tau1=1.0, tau2=1.0, T3=1, lam0=2.0, eta=1e-3
    )
    base.update(kw)
    return KFACConfig(**base)


# --------------------------------------------------------------------------- dense oracles
def block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    P = sum(b.shape[0] for b in blocks)
    M, start = np.zeros((P, P)), 0
    for b in blocks:
        M[start : start + b.shape[0], start : start + b.shape[0]] = b
        start += b.shape[0]
    return M


def damped_matrix(f, structure: str, gamma: float, pi: str, tikhonov: str) -> np.ndarray:
    """The matrix the optimizer inverts, from the factors ``f`` (KroneckerFactors) alone:
    exact: diag(Ā ⊗ G) + γ² I; π = 1: (Ā + γI) ⊗ (G + γI) on the diagonal (F̆, or F̂ of those
    blocks with the off-diagonal ones undamped); trace: π_i written out here."""
    L = f.n_layers
    A = [f.A_bar[k][k] for k in range(L)]
    G = [f.G[k][k] for k in range(L)]
    if tikhonov == "exact":
        F = block_diag([np.kron(a, g) for a, g in zip(A, G, strict=True)])
        return F + gamma**2 * np.eye(F.shape[0])
    if pi == "one":
        p = [1.0] * L
    else:
        p = [
            math.sqrt((np.trace(a) / a.shape[0]) / (np.trace(g) / g.shape[0]))
            for a, g in zip(A, G, strict=True)
        ]
    Ad = [a + p[k] * gamma * np.eye(a.shape[0]) for k, a in enumerate(A)]
    Gd = [g + gamma / p[k] * np.eye(g.shape[0]) for k, g in enumerate(G)]
    if structure == "block_diagonal":
        return block_diag([np.kron(a, g) for a, g in zip(Ad, Gd, strict=True)])
    damped = copy.deepcopy(f)
    for k in range(L):
        damped.A_bar[k][k], damped.G[k][k] = Ad[k], Gd[k]
    return dense.F_hat(damped, 0.0)  # F̂ of the damped diagonal blocks (§4.3)


def dense_direction(mlp, W, X, structure, gamma, eta, pi="trace", tikhonov="factored"):
    """Δ = −M⁻¹∇h with M = :func:`damped_matrix` of the exact factors at W on X; ∇h as θ."""
    _, grads, _ = mlp.loss_and_grad(W, X, X, eta)
    g = weights_to_theta(grads)
    f = kronecker_factors(mlp, W, X, method="exact")
    return -np.linalg.solve(damped_matrix(f, structure, gamma, pi, tikhonov), g), g


def model_change(F, lam_eta, g, d) -> float:
    """M(δ) − M(0) = ½ δᵀ(F + (λ+η)I)δ + ∇hᵀδ (§6)."""
    return 0.5 * d @ F @ d + 0.5 * lam_eta * d @ d + g @ d


def test_the_trace_oracle_here_is_the_library_dense_matrix(small):
    """The π_i written out above agree with :func:`approximate_fisher` (so the oracle is sound)."""
    mlp, W, X, _ = small
    f = kronecker_factors(mlp, W, X, method="exact")
    for structure in ("block_diagonal", "block_tridiagonal"):
        ours = damped_matrix(f, structure, 0.3, "trace", "factored")
        assert rel(ours, approximate_fisher(mlp, W, X, structure, gamma=0.3)) < 1e-12


# -------------------------------------------------------------------- the inverses alone
def _stats(f) -> FactorStats:
    return FactorStats(*f.diagonal(), *f.off_diagonal())


#: (structure, pi, tikhonov): every damping each factored structure implements
COMBOS = [
    (name, pi, tik)
    for name in ("block_diagonal", "block_tridiagonal")
    for tik in STRUCTURES[name].tikhonov_choices
    for pi in STRUCTURES[name].pi_choices
    if not (tik == "exact" and pi != "trace")
]


def test_every_factored_combination_is_listed():
    assert sorted(COMBOS) == sorted(
        [
            ("block_diagonal", "trace", "factored"),
            ("block_diagonal", "one", "factored"),
            ("block_diagonal", "trace", "exact"),
            ("block_tridiagonal", "trace", "factored"),
            ("block_tridiagonal", "one", "factored"),
        ]
    )


@pytest.mark.parametrize("gamma", [1e-3, 0.3, 5.0])
@pytest.mark.parametrize("structure, pi, tikhonov", COMBOS)
def test_each_damping_applies_the_inverse_of_its_dense_matrix(
    make_net, structure, pi, tikhonov, gamma
):
    net = make_net((5, 4, 3, 2), "tanh", "bernoulli", seed=4, n=30)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    inv = STRUCTURES[structure].from_stats(_stats(f), gamma, pi=pi, tikhonov=tikhonov)
    M_inv = np.linalg.inv(damped_matrix(f, structure, gamma, pi, tikhonov))
    V = net.weights_of(np.random.default_rng(0).standard_normal(net.mlp.n_params))
    assert rel(weights_to_theta(inv.apply(V)), M_inv @ weights_to_theta(V)) < TOL


def test_pi_one_differs_from_the_trace_norm(make_net):
    """The switch is live: with unequal factor scales π_i ≠ 1 and the two inverses differ."""
    net = make_net((5, 4, 3, 2), "tanh", "bernoulli", seed=4, n=30)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    V = net.weights_of(np.random.default_rng(0).standard_normal(net.mlp.n_params))
    out = {
        pi: weights_to_theta(BlockDiagonalInverse.from_stats(_stats(f), 0.3, pi=pi).apply(V))
        for pi in ("trace", "one")
    }
    assert rel(out["one"], out["trace"]) > 1e-3


def test_exact_tikhonov_is_the_dense_inverse_of_F_breve_plus_cI_for_random_factors():
    """(Ā ⊗ G + cI)⁻¹ per block from random SPD and rank-deficient PSD factors, c = γ²."""
    rng = np.random.default_rng(5)
    A = [rng.standard_normal((4, 4)), rng.standard_normal((3, 2))]
    A = [a @ a.T for a in A]  # the second is 3×3 of rank 2
    G = [rng.standard_normal((2, 5)), rng.standard_normal((3, 3))]
    G = [g @ g.T / 5 for g in G]
    c = 0.04
    inv = exact_tikhonov_inverse(A, G, c)
    oracle = np.linalg.inv(
        block_diag([np.kron(a, g) for a, g in zip(A, G, strict=True)]) + c * np.eye(17)
    )
    V = [rng.standard_normal((2, 4)), rng.standard_normal((3, 3))]
    assert rel(weights_to_theta(inv.apply(V)), oracle @ weights_to_theta(V)) < TOL
    assert all(float(d.min()) >= c for d in inv.denom)


def test_exact_tikhonov_float32_eigendecomposes_in_float64_when_asked():
    rng = np.random.default_rng(6)
    a, g = rng.standard_normal((5, 5)), rng.standard_normal((3, 3))
    A, G = [(a @ a.T).astype(np.float32)], [(g @ g.T).astype(np.float32)]
    inv = exact_tikhonov_inverse(A, G, 1e-2, np.float64)
    assert {x.dtype for x in inv.Q_A + inv.Q_G + inv.denom} == {np.dtype(np.float32)}
    oracle = np.linalg.inv(np.kron(A[0].astype(float), G[0].astype(float)) + 1e-2 * np.eye(15))
    V = [rng.standard_normal((3, 5)).astype(np.float32)]
    assert rel(weights_to_theta(inv.apply(V)), oracle @ weights_to_theta(V)) < 1e-5


def test_exact_tikhonov_refuses_non_finite_factors_and_c_zero():
    A, G = [np.eye(2)], [np.eye(3)]
    with pytest.raises(NonFiniteError, match="c = γ² > 0"):
        exact_tikhonov_inverse(A, G, 0.0)
    with pytest.raises(NonFiniteError, match=r"G_\{1,1\}"):
        exact_tikhonov_inverse(A, [np.full((3, 3), np.nan)], 1.0)


def test_layer_pi_and_damped_factors_with_pi_one():
    rng = np.random.default_rng(0)
    a, g = rng.standard_normal((30, 4)), rng.standard_normal((30, 3)) * 0.1
    A, G = a.T @ a / 30, g.T @ g / 30
    assert layer_pi(A, G, "one") == 1.0
    assert float(layer_pi(A, G, "trace")) == pytest.approx(
        math.sqrt((np.trace(A) / 4) / (np.trace(G) / 3)), rel=1e-14
    )
    (Ad,), (Gd,) = damped_diagonal_factors([A], [G], 0.3, "one")
    np.testing.assert_allclose(Ad - A, 0.3 * np.eye(4), rtol=1e-13)
    np.testing.assert_allclose(Gd - G, 0.3 * np.eye(3), rtol=1e-13)
    with pytest.raises(ConfigError, match="pi"):
        layer_pi(A, G, "frobenius")


def test_tied_gamma_and_raw_proposal_model():
    assert tied_gamma(2.0, 0.25) == 1.5
    D = [np.ones((2, 2))]
    r = raw_proposal_from_model(np.array([[4.0]]), np.array([-1.0]), D)
    assert (r.alpha, r.mu, r.model_change) == (1.0, 0.0, 1.0)  # ½·4 − 1: uphill in the model
    assert r.delta[0] is D[0]
    assert math.isnan(
        raw_proposal_from_model(np.array([[np.nan]]), np.array([1.0]), D).model_change
    )


def test_reduction_ratio_of_a_predicted_increase_is_nan():
    """A raw proposal the model says goes uphill: ρ says nothing, the step counts as failed."""
    assert math.isnan(reduction_ratio(11.0, 10.0, 0.5))
    assert reduction_ratio(9.0, 10.0, -2.0) == 0.5


# ------------------------------------------------------------------ configuration checks
@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(use_rescaling=1), "use_rescaling"),
        (dict(adapt_gamma="no"), "adapt_gamma"),
        (dict(adapt_lambda=None), "adapt_lambda"),
        (dict(tikhonov="plain"), "tikhonov"),
        (dict(pi=1), "pi"),
        (dict(pi="frobenius"), "pi"),
        (dict(tikhonov="exact", pi="one"), "no effect with tikhonov='exact'"),
        (dict(structure="block_tridiagonal", tikhonov="exact"), "tikhonov='exact'.*block_diagonal"),
        (dict(structure="full", tikhonov="exact"), "full"),
        (dict(structure="exact", tikhonov="exact"), "exact"),
        (dict(structure="full", pi="one"), "pi='one'.*block_diagonal, block_tridiagonal"),
        (dict(adapt_gamma=False, gamma0=0.5), "gamma0"),
    ],
)
def test_config_refuses_bad_damping_options(kw, message):
    with pytest.raises(ConfigError, match=message):
        configured_structure(KFACConfig(**kw))  # the structure checks its name and damping


def test_config_defaults_are_the_paper_method():
    cfg = KFACConfig()
    assert (cfg.use_rescaling, cfg.tikhonov, cfg.pi, cfg.adapt_gamma, cfg.adapt_lambda) == (
        True,
        "factored",
        "trace",
        True,
        True,
    )
    KFACConfig(structure="block_tridiagonal", pi="one", adapt_gamma=False, adapt_lambda=False)


# ------------------------------------------------------------- the optimizer's first step
@pytest.mark.parametrize("use_rescaling", [True, False])
@pytest.mark.parametrize("structure, pi, tikhonov", COMBOS)
def test_first_step_of_every_combination_against_dense(
    small, structure, pi, tikhonov, use_rescaling
):
    """δ = αΔ, Δ = −M⁻¹∇h with M the dense damped matrix of the combination at γ0; α from the
    dense exact-Fisher model, or α = 1 without re-scaling, where M(Δ) − M(0) is reported as is."""
    mlp, W, X, _ = small
    cfg = exact_config(structure, pi=pi, tikhonov=tikhonov, use_rescaling=use_rescaling)
    opt = KFAC(mlp, cfg, BE)
    new_W, _, info = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    gamma = cfg.resolved.gamma0
    Delta, g = dense_direction(mlp, W, X, structure, gamma, cfg.eta, pi, tikhonov)
    F = exact_fisher(mlp, W, X)
    lam_eta = cfg.lam0 + cfg.eta
    if use_rescaling:
        alpha = -(g @ Delta) / (Delta @ F @ Delta + lam_eta * Delta @ Delta)
    else:
        alpha = 1.0
    step = weights_to_theta(new_W) - weights_to_theta(W)
    assert rel(step, alpha * Delta) < TOL
    assert info["alpha"] == pytest.approx(alpha, rel=TOL) and info["mu"] == 0.0
    assert info["model_change"] == pytest.approx(
        model_change(F, lam_eta, g, alpha * Delta), rel=TOL
    )


@pytest.mark.parametrize("structure", ["block_diagonal", "block_tridiagonal"])
def test_without_rescaling_delta_is_delta_exactly_and_momentum_is_off(small, structure):
    """Two steps with momentum on: δ is Δ to the last bit (``use_rescaling=False`` → α = 1,
    μ = 0), and the second Δ is the dense one at θ1."""
    mlp, W0, X1, X2 = small
    cfg = exact_config(structure, max_stat_decay=0.0, use_rescaling=False, use_momentum=True)
    opt = KFAC(mlp, cfg, BE)
    W1, state, _ = opt.step(W0, opt.init_state(W0), X1, X1, BE.rng(0))
    W2, _, info = opt.step(W1, state, X2, X2, BE.rng(1))
    assert (info["alpha"], info["mu"]) == (1.0, 0.0)
    Delta, g = dense_direction(mlp, W1, X2, structure, state.gamma, cfg.eta)
    assert rel(weights_to_theta(W2) - weights_to_theta(W1), Delta) < TOL
    F = exact_fisher(mlp, W1, X2)
    expected = model_change(F, state.lam + cfg.eta, g, Delta)
    assert info["model_change"] == pytest.approx(expected, rel=TOL)


def test_raw_step_is_the_direction_bit_for_bit(small):
    """use_rescaling=False: θ + δ with δ the very arrays −F̆⁻¹∇h of the optimizer's inverse."""
    mlp, W, X, _ = small
    cfg = exact_config(use_rescaling=False)
    opt = KFAC(mlp, cfg, BE)
    new_W, state, _ = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    _, grads, _ = mlp.loss_and_grad(W, X, X, cfg.eta)
    Delta = [-v for v in state.inverse.apply(grads)]
    for a, b in zip(state.delta, Delta, strict=True):
        np.testing.assert_array_equal(a, b)
    for w_new, w, d in zip(new_W, W, Delta, strict=True):
        np.testing.assert_array_equal(w_new, w + d)


def test_without_rescaling_an_uphill_model_fails_the_lm_rule(small):
    """A tiny γ and λ make the raw step overshoot: M(Δ) > M(0), ρ is NaN, λ rises by 1/ω1."""
    mlp, W, X, _ = small
    cfg = exact_config(use_rescaling=False, T1=1, gamma0=1e-3, lam0=1e-3, gamma_min=0.0)
    opt = KFAC(mlp, cfg, BE)
    _, state, info = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    assert info["model_change"] > 0 and math.isnan(info["rho"])
    assert state.lam == pytest.approx(cfg.lam0 / cfg.resolved.omega1, rel=1e-14)


# ----------------------------------------------------------------- γ and λ over iterations
def test_fixed_gamma_follows_lambda_and_forces_a_refresh(small):
    """adapt_gamma=False: γ_k = √(λ_{k−1} + η) at every iteration, no γ search; with T3 = 100
    and no early refreshes the inverse is recomputed exactly when λ moved γ, and Δ at such an
    iteration is the dense one with the new γ (ε = 0: the statistics are this batch's)."""
    mlp, W, X1, X2 = small
    cfg = exact_config(
        adapt_gamma=False, T1=1, T2=100, T3=100, inverse_recompute_first=0, max_stat_decay=0.0
    )
    opt = KFAC(mlp, cfg, BE)
    st = opt.init_state(W)
    assert st.gamma == math.sqrt(cfg.lam0 + cfg.eta)
    refreshed = []
    for k in range(1, 7):
        X = X1 if k % 2 else X2
        lam_before, gamma_before = st.lam, st.gamma
        W, st, info = opt.step(W, st, X, X, BE.rng(k))
        gamma = math.sqrt(lam_before + cfg.eta)
        assert info["gamma"] == gamma == st.gamma and info["gamma_searched"] == 0
        assert info["refreshed"] == int(k == 1 or gamma != gamma_before)
        refreshed.append(info["refreshed"])
    assert st.lam != cfg.lam0 and sum(refreshed[1:]) >= 1  # λ moved γ, which forced a refresh


def test_fixed_gamma_step_against_dense_after_lambda_moved(small):
    """Without momentum: the step after λ's first change is α Δ(√(λ1 + η)), dense."""
    mlp, W0, X1, X2 = small
    cfg = exact_config(
        adapt_gamma=False,
        T1=1,
        T3=100,
        T2=100,
        inverse_recompute_first=0,
        max_stat_decay=0.0,
        use_momentum=False,
    )
    opt = KFAC(mlp, cfg, BE)
    W1, st1, _ = opt.step(W0, opt.init_state(W0), X1, X1, BE.rng(0))
    assert st1.lam != cfg.lam0
    W2, _, info = opt.step(W1, st1, X2, X2, BE.rng(1))
    gamma = math.sqrt(st1.lam + cfg.eta)
    Delta, g = dense_direction(mlp, W1, X2, "block_diagonal", gamma, cfg.eta)
    F = exact_fisher(mlp, W1, X2)
    alpha = -(g @ Delta) / (Delta @ F @ Delta + (st1.lam + cfg.eta) * Delta @ Delta)
    assert info["refreshed"] == 1 and info["gamma"] == gamma
    assert rel(weights_to_theta(W2) - weights_to_theta(W1), alpha * Delta) < TOL


def test_fixed_lambda_keeps_lambda0_and_still_logs_rho(small):
    mlp, W, X1, X2 = small
    cfg = exact_config(adapt_lambda=False, T1=2, T2=4, T3=2)
    opt = KFAC(mlp, cfg, BE)
    st = opt.init_state(W)
    rhos = []
    for k in range(1, 9):
        X = X1 if k % 2 else X2
        W, st, info = opt.step(W, st, X, X, BE.rng(k))
        assert info["lam"] == st.lam == cfg.lam0
        if k % 2:
            assert math.isnan(info["rho"])
        else:
            h_new = float(mlp.loss(W, X, X, cfg.eta))
            assert info["rho"] == pytest.approx(
                (h_new - info["loss"]) / info["model_change"], rel=1e-12
            )
            rhos.append(info["rho"])
    assert len(rhos) == 4 and all(np.isfinite(rhos))
    # the same run with the rule on moves λ (the switch is live)
    on = KFAC(mlp, dataclasses.replace(cfg, adapt_lambda=True), BE)
    st_on, W_on = on.init_state(W), W
    for k in range(1, 5):
        X = X1 if k % 2 else X2
        W_on, st_on, _ = on.step(W_on, st_on, X, X, BE.rng(k))
    assert st_on.lam != cfg.lam0


@pytest.mark.parametrize("expect", ["down", "same", "up"])
def test_gamma_search_with_exact_tikhonov_searches_c_equal_gamma_squared(small, expect):
    """T2 = 1 and ω2 = 0.1: each candidate's M(δ) − M(0) equals a run with that γ fixed, and the
    chosen γ is the argmin; γ0 is picked so that each of the three wins once."""
    mlp, W, X, _ = small
    gamma0 = {"down": 30.0, "same": 3.0, "up": 0.1}[expect]
    cfg = exact_config(
        tikhonov="exact", T2=1, omega2=0.1, gamma0=gamma0, lam0=0.05, gamma_min=0.0, gamma_max=None
    )
    opt = KFAC(mlp, cfg, BE)
    _, state, info = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    gammas = {"down": 0.1 * gamma0, "same": gamma0, "up": gamma0 / 0.1}
    changes = {name: info[f"model_change_gamma_{name}"] for name in gammas}
    for name, gamma in gammas.items():
        fixed = KFAC(mlp, dataclasses.replace(cfg, T2=20, gamma0=gamma), BE)
        alone = fixed.step(W, fixed.init_state(W), X, X, BE.rng(0))[2]["model_change"]
        assert changes[name] == pytest.approx(alone, rel=1e-10)
    best = min(changes, key=changes.get)
    assert best == expect
    assert info["gamma"] == pytest.approx(gammas[best]) and state.gamma == info["gamma"]
    assert isinstance(state.inverse, ExactTikhonovInverse)


# -------------------------------------------------------------------- checkpoints, CuPy
def test_exact_tikhonov_state_round_trip_resumes_exactly(small):
    mlp, W0, X1, X2 = small
    cfg = KFACConfig(tikhonov="exact", adapt_gamma=False, T1=3, T3=2, T2=4, tau1=0.5, tau2=0.5)
    batches = [X1 if k % 2 else X2 for k in range(1, 11)]

    def run(opt, W, st, ks):
        for k in ks:
            W, st, _ = opt.step(W, st, batches[k - 1], batches[k - 1], BE.rng([7, k]))
        return W, st

    opt = KFAC(mlp, cfg, BE)
    W_full, _ = run(opt, W0, opt.init_state(W0), range(1, 11))
    W5, st5 = run(opt, W0, opt.init_state(W0), range(1, 6))
    saved = opt.state_dict(st5)
    assert set(saved["inverse"]) == {"Q_A", "Q_G", "denom"}
    fresh = KFAC(mlp, cfg, BE)
    W_res, _ = run(fresh, W5, fresh.load_state_dict(saved), range(6, 11))
    for a, b in zip(W_full, W_res, strict=True):
        np.testing.assert_array_equal(a, b)
    factored = KFAC(mlp, dataclasses.replace(cfg, tikhonov="factored"), BE)
    with pytest.raises(ConfigError, match="exact Tikhonov"):
        factored.load_state_dict(saved)
    with pytest.raises(ConfigError, match="factored Tikhonov"):
        fresh.load_state_dict(
            factored.state_dict(factored.step(W0, factored.init_state(W0), X1, X1, BE.rng(0))[1])
        )


@pytest.mark.gpu
def test_switches_on_cupy_match_numpy(cupy_kind, small):
    """Two steps with every switch away from its default (exact Tikhonov, no re-scaling, γ tied
    to λ, λ fixed) and with π = 1 on F̂: the GPU (or the stand-in) equals the host to 1e-9."""
    gpu = get_backend("cupy", "float64")
    mlp, W, X1, X2 = small
    configs = [
        exact_config(
            tikhonov="exact", use_rescaling=False, adapt_gamma=False, adapt_lambda=False, T1=1
        ),
        exact_config("block_tridiagonal", pi="one", adapt_gamma=False, T1=1),
    ]
    for cfg in configs:
        out = []
        for be in (BE, gpu):
            opt = KFAC(mlp, cfg, be)
            Wk = [be.asarray(w) for w in W]
            st = opt.init_state(Wk)
            for k, X in enumerate((X1, X2), start=1):
                Wk, st, info = opt.step(Wk, st, be.asarray(X), be.asarray(X), be.rng(k))
            out.append(np.concatenate([to_numpy(w).ravel() for w in Wk]))
        assert rel(out[1], out[0]) < 1e-9


def test_exact_tikhonov_float32_training_keeps_float32(small):
    """float32 statistics: the eigendecompositions in float64 (linalg="auto"), the inverse and
    every step in float32, close to the float64 run."""
    mlp, W, X1, X2 = small
    be32 = get_backend("numpy", "float32")
    cfg = exact_config(tikhonov="exact")
    runs = {}
    for be in (BE, be32):
        opt = KFAC(mlp, cfg, be)
        Wk = [be.asarray(w) for w in W]
        st = opt.init_state(Wk)
        for k, X in enumerate((X1, X2, X1), start=1):
            Wk, st, _ = opt.step(Wk, st, be.asarray(X), be.asarray(X), be.rng(k))
        runs[be.dtype] = (Wk, st)
    W32, st32 = runs[be32.dtype]
    assert {a.dtype for a in W32 + st32.inverse.Q_A + st32.inverse.denom} == {np.dtype(np.float32)}
    assert rel(weights_to_theta(W32), weights_to_theta(runs[BE.dtype][0])) < 1e-5


def test_block_tridiagonal_has_no_exact_tikhonov():
    with pytest.raises(ConfigError, match="block_tridiagonal"):
        BlockTridiagonalInverse.check_damping("trace", "exact")


def test_exact_tikhonov_shares_one_eigendecomposition_between_gammas(make_net, monkeypatch):
    """The γ candidates of §6.6 with exact damping: one eigendecomposition per factor for all
    three, and each inverse equal to the one built alone."""
    import kfac_ref.tikhonov as tikhonov

    net = make_net((5, 4, 3, 2), "tanh", "bernoulli", seed=4, n=30)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    gammas = [0.05, 0.3, 2.0]
    alone = [BlockDiagonalInverse.from_stats(_stats(f), g, tikhonov="exact") for g in gammas]
    calls = []
    eigh = tikhonov._eigh
    monkeypatch.setattr(tikhonov, "_eigh", lambda M: calls.append(M.shape) or eigh(M))
    shared = BlockDiagonalInverse.from_stats_gammas(_stats(f), gammas, tikhonov="exact")
    assert len(calls) == 2 * f.n_layers
    V = net.weights_of(np.random.default_rng(0).standard_normal(net.mlp.n_params))
    for a, b in zip(alone, shared, strict=True):
        for x, y in zip(a.apply(V), b.apply(V), strict=True):
            np.testing.assert_array_equal(x, y)


def test_gamma_list_errors_name_the_gamma(make_net):
    net = make_net((5, 4, 3, 2), "tanh", "bernoulli", seed=4, n=30)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    bad = _stats(f)
    bad.G_diag[1] = bad.G_diag[1] * np.nan
    for tikhonov in ("factored", "exact"):
        with pytest.raises(NonFiniteError, match="γ = 0.5"):
            BlockDiagonalInverse.from_stats_gammas(bad, [0.5], tikhonov=tikhonov)
