"""The K-FAC optimizer (§6–§8, Algorithm 2) against dense oracles, and end to end.

float64 throughout. The dense oracles build F̆, F̂ (:func:`kfac_ref.compare.approximate_fisher`)
and the exact F (:func:`kfac_ref.fisher.exact_fisher`) as P×P matrices and solve with
``numpy.linalg``; the optimizer uses the Kronecker/Appendix-B algebra and Fisher-vector products.
Tolerances: 1e-9 relative for the dense comparisons (condition numbers here are < 1e5).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kfac_ref import MLP, get_backend, to_numpy
from kfac_ref.compare import approximate_fisher
from kfac_ref.config import KFACConfig, SGDConfig
from kfac_ref.errors import ConfigError, NonFiniteError
from kfac_ref.experiments.schedules import draw_minibatch, minibatch_size
from kfac_ref.experiments.sgd import SGDMomentum
from kfac_ref.fisher import exact_fisher
from kfac_ref.optimizer import KFAC
from kfac_ref.statistics import choose_subset
from kfac_ref.vec import weights_to_theta

BE = get_backend("numpy", "float64")
STRUCTURES = ("block_diagonal", "block_tridiagonal")
TOL = 1e-9


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture(scope="module")
def small():
    """A 4-layer net with a linear code layer (as the autoencoders), inputs in [0, 1]."""
    mlp = MLP([6, 5, 3, 5, 6], ["logistic", "linear", "logistic"], "bernoulli")
    rng = np.random.default_rng(3)
    W = mlp.init_gaussian(seed=1, scale=1.5)
    X1 = rng.random((24, 6))
    X2 = rng.random((24, 6))
    return mlp, W, X1, X2


def exact_config(structure: str = "block_diagonal", **kw) -> KFACConfig:
    """Exact statistics on the whole batch, inverses every iteration, exact Fisher on all cases."""
    base = dict(
        structure=structure, stats_method="exact", tau1=1.0, tau2=1.0, T3=1, lam0=2.0, eta=1e-3
    )
    base.update(kw)
    return KFACConfig(**base)


def dense_direction(mlp, W, X, structure, gamma, eta):
    """Δ = −F̆⁻¹∇h or −F̂⁻¹∇h with dense matrices, and ∇h as θ-vectors."""
    _, grads, _ = mlp.loss_and_grad(W, X, X, eta)
    g = weights_to_theta(grads)
    F_approx = approximate_fisher(mlp, W, X, structure, gamma=gamma)
    return -np.linalg.solve(F_approx, g), g


# --------------------------------------------------------------------- Δ, α, μ vs dense
@pytest.mark.parametrize("structure", STRUCTURES)
def test_first_step_is_alpha_times_dense_natural_direction(small, structure):
    mlp, W, X, _ = small
    cfg = exact_config(structure)
    opt = KFAC(mlp, cfg, BE)
    new_W, state, info = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    gamma = cfg.resolved.gamma0
    Delta, g = dense_direction(mlp, W, X, structure, gamma, cfg.eta)
    F = exact_fisher(mlp, W, X)
    alpha = -(g @ Delta) / (Delta @ F @ Delta + (cfg.lam0 + cfg.eta) * Delta @ Delta)
    step = weights_to_theta(new_W) - weights_to_theta(W)
    assert info["mu"] == 0.0
    assert info["alpha"] == pytest.approx(alpha, rel=TOL)
    assert rel(step, alpha * Delta) < TOL
    assert info["model_change"] == pytest.approx(0.5 * alpha * (g @ Delta), rel=TOL)
    assert info["stat_decay"] == 0.0 and info["refreshed"] == 1 and info["gamma"] == gamma


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("tau2", [1.0, 0.25])
def test_second_step_alpha_mu_solve_the_dense_quadratic_model(small, structure, tau2):
    """k = 2 with ε = 0 (max_stat_decay = 0): Δ from the factors at θ1, α and μ from the 2×2
    model built with the dense exact Fisher on the τ2-subset (the same subset, same generator)."""
    mlp, W0, X1, X2 = small
    cfg = exact_config(structure, max_stat_decay=0.0, tau2=tau2)
    opt = KFAC(mlp, cfg, BE)
    W1, state, _ = opt.step(W0, opt.init_state(W0), X1, X1, BE.rng(0))
    delta0 = weights_to_theta(W1) - weights_to_theta(W0)
    W2, state2, info = opt.step(W1, state, X2, X2, BE.rng(1))

    Delta, g = dense_direction(mlp, W1, X2, structure, state.gamma, cfg.eta)
    idx = choose_subset(X2.shape[0], tau2, BE.rng(1))  # exact stats, τ1 = 1: the only draw
    Xf = X2 if idx is None else X2[idx]
    F = exact_fisher(mlp, W1, Xf)
    lam_eta = state.lam + cfg.eta
    V = np.stack([Delta, delta0], axis=1)
    Q = V.T @ F @ V + lam_eta * V.T @ V
    r = V.T @ g
    alpha, mu = -np.linalg.solve(Q, r)
    assert info["alpha"] == pytest.approx(alpha, rel=TOL)
    assert info["mu"] == pytest.approx(mu, rel=TOL)
    assert abs(mu) > 1e-6  # the momentum term is really exercised
    assert rel(weights_to_theta(W2) - weights_to_theta(W1), alpha * Delta + mu * delta0) < TOL
    assert info["model_change"] == pytest.approx(0.5 * np.array([alpha, mu]) @ r, rel=TOL)
    assert info["fisher_cases"] == Xf.shape[0]


@pytest.mark.parametrize("structure", STRUCTURES)
def test_without_momentum_mu_is_zero_and_alpha_the_closed_form(small, structure):
    """K-FAC without momentum (§7 off; the paper's "no moment." runs): at k = 2, where the
    momentum model would give μ ≠ 0 (previous test), μ = 0 and δ = αΔ with
    α = −∇hᵀΔ / (ΔᵀFΔ + (λ + η)‖Δ‖²) (§6.4), F the dense exact Fisher."""
    mlp, W0, X1, X2 = small
    cfg = exact_config(structure, max_stat_decay=0.0, use_momentum=False)
    opt = KFAC(mlp, cfg, BE)
    W1, state, _ = opt.step(W0, opt.init_state(W0), X1, X1, BE.rng(0))
    W2, _, info = opt.step(W1, state, X2, X2, BE.rng(1))
    Delta, g = dense_direction(mlp, W1, X2, structure, state.gamma, cfg.eta)
    F = exact_fisher(mlp, W1, X2)
    alpha = -(g @ Delta) / (Delta @ F @ Delta + (state.lam + cfg.eta) * Delta @ Delta)
    assert info["mu"] == 0.0
    assert info["alpha"] == pytest.approx(alpha, rel=TOL)
    assert rel(weights_to_theta(W2) - weights_to_theta(W1), alpha * Delta) < TOL
    assert info["model_change"] == pytest.approx(0.5 * alpha * (g @ Delta), rel=TOL)


# ------------------------------------------------------------------------ γ search
def _model_change_with_gamma(mlp, W, X, cfg, gamma) -> float:
    fixed = dataclasses.replace(cfg, T2=20, gamma0=gamma)
    opt = KFAC(mlp, fixed, BE)
    return opt.step(W, opt.init_state(W), X, X, BE.rng(0))[2]["model_change"]


GAMMA_CASES = {
    # one linear layer with Gaussian output: F̃ = F exactly (§3), so with λ ≈ 0 the least damped
    # K-FAC direction is the Newton step of M and the smallest γ wins
    "down": dict(net="linear", structure="block_diagonal", gamma0=1.0, lam0=1e-4),
    # the small logistic net at its random initialization: the gradient-like direction of a
    # heavily damped F̆ models better than a barely damped one
    "up": dict(net="small", structure="block_diagonal", gamma0=0.01, lam0=0.05),
    "same": dict(net="small", structure="block_tridiagonal", gamma0=0.1, lam0=0.05),
}


@pytest.mark.parametrize("expect", list(GAMMA_CASES))
def test_gamma_search_keeps_the_candidate_with_lowest_model(small, expect):
    """T2 = 1: every iteration tries (ω2γ, γ, γ/ω2), here with ω2 = 0.1 so the three differ a lot;
    each reported M(δ) − M(0) is checked against a run with that γ fixed."""
    case = dict(GAMMA_CASES[expect])
    if case.pop("net") == "linear":
        mlp = MLP([5, 4], [], "gaussian")
        W = mlp.init_gaussian(seed=2)
        X = np.random.default_rng(4).standard_normal((30, 5))
        Y = X[:, :4] @ np.random.default_rng(5).standard_normal((4, 4))
    else:
        mlp, W, X, _ = small
        Y = X
    cfg = exact_config(T2=1, omega2=0.1, gamma_min=0.0, gamma_max=None, **case)
    opt = KFAC(mlp, cfg, BE)
    _, state, info = opt.step(W, opt.init_state(W), X, Y, BE.rng(0))
    gamma0 = cfg.resolved.gamma0
    gammas = {"down": 0.1 * gamma0, "same": gamma0, "up": gamma0 / 0.1}
    changes = {name: info[f"model_change_gamma_{name}"] for name in gammas}
    for name, gamma in gammas.items():
        fixed = KFAC(mlp, dataclasses.replace(cfg, T2=20, gamma0=gamma), BE)
        alone = fixed.step(W, fixed.init_state(W), X, Y, BE.rng(0))[2]["model_change"]
        assert changes[name] == pytest.approx(alone, rel=1e-10)
    assert min(changes, key=changes.get) == expect
    assert info["gamma"] == pytest.approx(gammas[expect]) and state.gamma == info["gamma"]
    assert info["model_change"] == changes[expect]


def test_gamma_candidates_are_clamped_as_in_the_code(small):
    mlp, W, X, _ = small
    cfg = exact_config("block_diagonal", T2=1, gamma0=2.0, omega2=0.5, gamma_max=1.0, eta=1e-2)
    opt = KFAC(mlp, cfg, BE)
    _, state, info = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    up = _model_change_with_gamma(mlp, W, X, cfg, 1.0)  # γ/ω2 = 4 clamped to γ_max = 1
    assert info["model_change_gamma_up"] == pytest.approx(up, rel=1e-10)


# --------------------------------------------------------------------- λ and schedules
def test_lambda_follows_the_lm_rule_every_T1(small):
    mlp, W, X, _ = small
    cfg = KFACConfig(T1=2, T3=1, T2=4, lam0=100.0, tau1=1.0, tau2=1.0)
    opt = KFAC(mlp, cfg, BE)
    st = opt.init_state(W)
    for k in range(1, 7):
        lam_before = st.lam
        W, st, info = opt.step(W, st, X, X, BE.rng(k))
        if k % 2:
            assert np.isnan(info["rho"]) and st.lam == lam_before
        else:
            h_new = float(mlp.loss(W, X, X, cfg.eta))
            assert info["loss_after"] == pytest.approx(h_new, rel=1e-12)
            assert info["rho"] == pytest.approx(
                (h_new - info["loss"]) / info["model_change"], rel=1e-12
            )
            factor = (
                cfg.resolved.omega1
                if info["rho"] > 0.75
                else 1 / cfg.resolved.omega1
                if info["rho"] < 0.25
                else 1.0
            )
            assert st.lam == pytest.approx(lam_before * factor, rel=1e-14)
    assert st.lam < 100.0  # over-damped start: ρ ≈ 2 > 3/4, λ decreases


def test_inverse_recomputed_at_k_le_3_and_every_T3(small):
    mlp, W, X, _ = small
    opt = KFAC(mlp, KFACConfig(T3=4, T2=8), BE)
    st = opt.init_state(W)
    refreshed = []
    for k in range(1, 10):
        W, st, info = opt.step(W, st, X, X, BE.rng(k))
        refreshed.append(info["refreshed"])
    assert refreshed == [1, 1, 1, 1, 0, 0, 0, 1, 0]


# ------------------------------------------------------------------- dtypes, backends
@pytest.mark.parametrize("structure", STRUCTURES)
def test_float32_training_keeps_float32_and_agrees_with_float64(small, structure):
    """Factorizations as ``KFACConfig.linalg = "auto"`` makes them (Cholesky in float64),
    everything else float32: three steps agree with the float64 run to float32 accuracy, and
    no array is promoted."""
    mlp, W, X1, X2 = small
    be32 = get_backend("numpy", "float32")
    cfg = exact_config(structure)
    runs = {}
    for be in (BE, be32):
        opt = KFAC(mlp, cfg, be)
        Wk = [be.asarray(w) for w in W]
        st = opt.init_state(Wk)
        for k, X in enumerate((X1, X2, X1), start=1):
            Xb = be.asarray(X)
            Wk, st, _ = opt.step(Wk, st, Xb, Xb, be.rng(k))
        runs[be.dtype] = (Wk, st)
    W32, st32 = runs[be32.dtype]
    arrays = W32 + st32.stats.arrays() + st32.delta
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}
    assert rel(weights_to_theta(W32), weights_to_theta(runs[BE.dtype][0])) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("structure", STRUCTURES)
def test_cupy_steps_match_numpy(cupy_kind, small, structure):
    """Two steps on the GPU (or the CuPy stand-in) equal the host's to 1e-9 (exact statistics: no
    random draws differ)."""
    gpu = get_backend("cupy", "float64")
    mlp, W, X1, X2 = small
    cfg = exact_config(structure, tau2=1.0)
    out = []
    for be in (BE, gpu):
        opt = KFAC(mlp, cfg, be)
        Wk = [be.asarray(w) for w in W]
        st = opt.init_state(Wk)
        for k, X in enumerate((X1, X2), start=1):
            Wk, st, info = opt.step(Wk, st, be.asarray(X), be.asarray(X), be.rng(k))
        out.append((np.concatenate([to_numpy(w).ravel() for w in Wk]), opt.state_dict(st), info))
    assert rel(out[1][0], out[0][0]) < 1e-9
    assert out[1][2]["alpha"] == pytest.approx(out[0][2]["alpha"], rel=1e-9)
    assert isinstance(out[1][1]["stats"]["A_diag"][0], np.ndarray)  # state_dict is host data


# ----------------------------------------------------------------- checkpoint / resume
@pytest.mark.parametrize("structure", STRUCTURES)
def test_state_dict_round_trip_resumes_exactly(small, structure):
    mlp, W0, X1, X2 = small
    cfg = KFACConfig(structure=structure, T1=3, T3=2, T2=4, tau1=0.5, tau2=0.5)
    batches = [X1 if k % 2 else X2 for k in range(1, 13)]

    def run(opt, W, st, ks):
        for k in ks:
            X = batches[k - 1]
            W, st, _ = opt.step(W, st, X, X, BE.rng([7, k]))
        return W, st

    opt = KFAC(mlp, cfg, BE)
    W_full, st_full = run(opt, W0, opt.init_state(W0), range(1, 13))
    W7, st7 = run(opt, W0, opt.init_state(W0), range(1, 8))
    saved = opt.state_dict(st7)
    assert all(type(v) in (int, float, str, dict, list, type(None)) for v in saved.values())
    fresh = KFAC(mlp, cfg, BE)
    W_res, st_res = run(fresh, [w.copy() for w in W7], fresh.load_state_dict(saved), range(8, 13))
    for a, b in zip(W_full, W_res, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (
        (st_full.k, st_full.lam, st_full.gamma)
        == (st_res.k, st_res.lam, st_res.gamma)
        == (12, st_res.lam, st_res.gamma)
    )


def test_load_state_dict_refuses_another_structure(small):
    mlp, W, X, _ = small
    opt = KFAC(mlp, KFACConfig(), BE)
    _, st, _ = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    other = KFAC(mlp, KFACConfig(structure="block_tridiagonal"), BE)
    with pytest.raises(ConfigError, match="block_diagonal"):
        other.load_state_dict(opt.state_dict(st))


# ------------------------------------------------------------------------ failures
def test_nan_target_raises_naming_the_iteration(small):
    mlp, W, X, _ = small
    opt = KFAC(mlp, KFACConfig(), BE)
    W1, st, _ = opt.step(W, opt.init_state(W), X, X, BE.rng(0))
    Y = X.copy()
    Y[2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="iteration 2: targets"):
        opt.step(W1, st, X, Y, BE.rng(1))


def test_nan_weights_raise_naming_the_iteration(small):
    mlp, W, X, _ = small
    opt = KFAC(mlp, KFACConfig(), BE)
    bad = [w.copy() for w in W]
    bad[1][0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="iteration 1: the weights"):
        opt.step(bad, opt.init_state(W), X, X, BE.rng(0))


def test_non_finite_model_raises_and_leaves_weights_untouched(small):
    mlp, W, X, _ = small
    opt = KFAC(mlp, KFACConfig(), BE)
    st = opt.init_state(W)
    st.delta = [np.full_like(w, np.nan) for w in W]  # a corrupted δ₀
    before = [w.copy() for w in W]
    with pytest.raises(NonFiniteError, match="iteration 1: the quadratic model"):
        opt.step(W, st, X, X, BE.rng(0))
    for a, b in zip(W, before, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------ end to end
def curve_images(n: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """n images side×side of a smooth curve through 3 random points (as CURVES, §11), in [0, 1]."""
    P = rng.random((n, 3, 2))
    t = np.linspace(0.0, 1.0, 40)[None, :, None]
    curve = (1 - t) ** 2 * P[:, :1] + 2 * t * (1 - t) * P[:, 1:2] + t**2 * P[:, 2:]  # (n, 40, 2)
    g = (np.arange(side) + 0.5) / side
    pix = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)  # (side², 2)
    d2 = ((pix[None, :, None, :] - curve[:, None, :, :]) ** 2).sum(-1).min(-1)
    return np.exp(-d2 / (2 * (0.6 / side) ** 2))


def reconstruction_error(mlp, W, X) -> float:
    pred = mlp.output.predict(mlp.forward(W, X).output)
    return float(((pred - X) ** 2).sum(axis=1).mean())


def train(opt, W, X, iters, seed, m1):
    st = opt.init_state(W)
    n = X.shape[0]
    for k in range(1, iters + 1):
        m = minibatch_size(k, m1, n, k_full=iters // 2)
        idx = draw_minibatch(n, m, seed, k)
        W, st, _ = opt.step(W, st, X[idx], X[idx], BE.rng([seed, k, 1]))
    return reconstruction_error(opt.mlp, W, X)


def test_kfac_beats_tuned_sgd_on_a_small_deep_autoencoder():
    """64-32-16-4-16-32-64 (logistic, linear code, Bernoulli output) on 400 8×8 curve images;
    same iterations and the same mini-batches for every method; SGD's lr the best of a grid."""
    X = curve_images(400, 8, np.random.default_rng(0))
    mlp = MLP(
        [64, 32, 16, 4, 16, 32, 64],
        ["logistic", "logistic", "linear", "logistic", "logistic"],
        "bernoulli",
    )
    W0 = mlp.init_sparse(seed=0, backend=BE)
    iters, m1 = 120, 50
    start = reconstruction_error(mlp, W0, X)
    sgd = {
        lr: train(SGDMomentum(mlp, SGDConfig(lr=lr, mu_max=0.99), BE), W0, X, iters, 1, m1)
        for lr in (0.01, 0.03, 0.1, 0.3)
    }
    sgd = {lr: e for lr, e in sgd.items() if np.isfinite(e)}
    best_sgd = min(sgd.values())
    for structure in STRUCTURES:
        err = train(KFAC(mlp, KFACConfig(structure=structure, lam0=10.0), BE), W0, X, iters, 1, m1)
        assert err < 0.7 * best_sgd, (structure, err, sgd, start)
