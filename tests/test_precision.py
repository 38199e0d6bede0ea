"""Factorizations in the training precision with a float64 redo (``KFACConfig.linalg``),
the batched forward-mode products (:meth:`MLP.jvps`) and the order of the Ξ products.

Oracles: ``numpy.linalg.eigvalsh`` / ``inv`` / ``solve`` in float64 on dense matrices
(``numpy.kron``), the single-direction :meth:`MLP.jvp`, and plain left-to-right products.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import kfac_ref.mlp as mlp_module
from kfac_ref import MLP, get_backend
from kfac_ref.appendix_b import apply_kron_sum_inverse, generalized_eigh, kron_sum_inverses
from kfac_ref.config import KFACConfig
from kfac_ref.errors import ConfigError, NonFiniteError
from kfac_ref.linalg import TRUST, Precision, chain3, linalg_for, spd_inverses
from kfac_ref.optimizer import KFAC

EPS32 = float(np.finfo(np.float32).eps)


def spd(n: int, log10_cond: float, rng: np.random.Generator) -> np.ndarray:
    """A random SPD matrix with eigenvalues spread log-uniformly over 10^-log10_cond … 1."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * np.logspace(-log10_cond, 0, n)) @ Q.T


@pytest.mark.parametrize("log10_cond", [1.0, 3.0, 6.0])
def test_condition_estimates_are_lower_bounds(log10_cond):
    """κ̂ of the Cholesky route and of the generalized eigh never exceed the true κ, and come
    within a factor 100 of it (so a badly conditioned factor is seen as one)."""
    rng = np.random.default_rng(int(log10_cond))
    la = linalg_for(np.zeros(1))
    for n in (5, 40):
        M = spd(n, log10_cond, rng)
        ev = np.linalg.eigvalsh(M)
        kappa = ev[-1] / ev[0]
        _, ok, k_chol = la.spd_inverse(M, condition=True)
        C = spd(n, 2.0, rng)
        _, ok2, k_eigh = la.generalized_eigh(C, M, condition=True)
        assert ok and ok2
        for k_hat in (float(k_chol), float(k_eigh)):
            assert k_hat <= kappa * (1 + 1e-8)
            assert k_hat >= kappa / 100


def test_cholesky_inverses_are_float64_under_auto():
    """Under a Precision (linalg="auto") a Cholesky inverse is computed in float64 and cast
    back: for κ = 1e7 (κ ε₃₂ ≈ 1) it is then accurate to float32 rounding, which the float32
    computation misses by orders of magnitude. Nothing is counted as redone."""
    rng = np.random.default_rng(0)
    bad = spd(30, 7.0, rng).astype(np.float32)
    prec = Precision(np.float64)
    (inv,) = spd_inverses([bad], ["bad"], prec)
    assert prec.redone == [] and inv.dtype == np.float32
    ref = np.linalg.inv(bad.astype(np.float64))
    err = np.linalg.norm(inv - ref) / np.linalg.norm(ref)
    (plain32,) = spd_inverses([bad], ["bad"])
    err_plain = np.linalg.norm(plain32 - ref) / np.linalg.norm(ref)
    assert err < 1e-6
    assert err_plain > 100 * err


def test_nothing_is_redone_in_float64():
    rng = np.random.default_rng(1)
    prec = Precision(np.float64)
    spd_inverses([spd(10, 12.0, rng)], ["M"], prec)
    assert prec.redone == []


def _sigma_minus(A, B, C, D):
    return np.kron(A, B) - np.kron(C, D)


@pytest.mark.parametrize("dependence", [0.5, 1 - 1e-5])
def test_appendix_b_block_redone_when_nearly_singular(dependence):
    """Σ = A ⊗ B − C ⊗ D with C = c·A, D = B (s₁ = c, s₂ = 1: 1 − s₁s₂ = 1 − c). At c = 1/2
    float32 is trusted; at c = 1 − 1e-5 (κ̂ ε / (1 − c) ≫ TRUST) the block is redone in float64,
    and the inverse then matches a dense float64 solve of the float32 inputs to 1e-4 where the
    float32 computation is off by more than 0.1 % (ε₃₂ / (1 − c) ≈ 1 %)."""
    rng = np.random.default_rng(2)
    A, B = spd(4, 1.0, rng), spd(3, 1.0, rng)
    C, D = dependence * A, B.copy()
    blocks32 = [tuple(M.astype(np.float32) for M in (A, B, C, D))]
    prec = Precision(np.float64)
    (inv,) = kron_sum_inverses(blocks32, -1, prec)
    X = rng.standard_normal((3, 4))
    exact = [M.astype(np.float64) for M in blocks32[0]]
    ref = np.linalg.solve(_sigma_minus(*exact), X.reshape(-1, order="F")).reshape(3, 4, order="F")
    got = apply_kron_sum_inverse(inv, X.astype(np.float32))
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    if dependence == 0.5:
        assert prec.redone == [] and err < 1e-5
    else:
        assert prec.redone == ["Σ_{1|2}"] and err < 1e-4
        (plain,) = kron_sum_inverses(blocks32, -1)
        err32 = np.linalg.norm(apply_kron_sum_inverse(plain, X.astype(np.float32)) - ref)
        assert err32 / np.linalg.norm(ref) > 1e-3


def test_trust_threshold_is_two_digits():
    assert TRUST == 1e-2  # documented in KFACConfig.linalg; change both together


# ------------------------------------------------------------------ the optimizer's modes
def _net():
    backend = get_backend("numpy", "float32")
    mlp = MLP([12, 8, 6, 8, 12], ["logistic", "linear", "logistic"], "bernoulli")
    W = mlp.init_sparse(seed=0, backend=backend)
    X = np.random.default_rng(0).random((64, 12)).astype(np.float32)
    return backend, mlp, W, X


def _run(cfg, steps=8):
    backend, mlp, W, X = _net()
    opt = KFAC(mlp, cfg, backend)
    st = opt.init_state(W)
    infos = []
    for k in range(1, steps + 1):
        W, st, info = opt.step(W, st, X, X, np.random.default_rng(k))
        infos.append(info)
    return W, infos


@pytest.mark.parametrize("structure", ["block_diagonal", "block_tridiagonal"])
def test_linalg_modes(structure):
    """ "float64" and "training" factorize in float64 and in float32, redo nothing and differ
    (the mode is used); "auto" stays within float32 round-off of "float64" on a
    well-conditioned net and logs how many factorizations it redid."""
    base = dict(structure=structure, T1=2, T2=4, T3=2)
    W64, infos64 = _run(KFACConfig(linalg="float64", **base))
    W32, infos32 = _run(KFACConfig(linalg="training", **base))
    Wauto, infos = _run(KFACConfig(**base))
    assert all(i["linalg_redone"] == 0 for i in infos64 + infos32)
    assert any(not np.array_equal(a, b) for a, b in zip(W64, W32, strict=True))
    for a, b in zip(W32, W64, strict=True):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert all(isinstance(i["linalg_redone"], int) for i in infos)
    for a, b in zip(Wauto, W64, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_linalg_mode_is_checked():
    with pytest.raises(ConfigError, match="linalg"):
        KFACConfig(linalg="double")
    with pytest.raises(TypeError, match="linalg_float64"):  # the older spelling is gone
        KFACConfig(linalg_float64=True)


def test_auto_redoes_an_ill_conditioned_factor_in_a_step():
    """Tiny damping (γ0 = λ0 = 1e-6) on a net fed pairs of nearly equal inputs: in float32
    throughout ("training") Σ_{i|i+1} comes out singular; "auto" redoes the untrustworthy
    factorizations in float64 and its update agrees with the all-float64 factorizations of
    "float64" to 1 % (float32 statistics and products limit both; measured 0.2 %)."""
    backend, mlp, W, X = _net()
    X = np.repeat(X[:, :6], 2, axis=1) + 1e-4 * X  # pairs of nearly equal inputs
    base = dict(structure="block_tridiagonal", gamma0=1e-6, gamma_min=0.0, lam0=1e-6)

    def update(mode):
        opt = KFAC(mlp, KFACConfig(linalg=mode, **base), backend)
        W1, _, info = opt.step(W, opt.init_state(W), X, X, np.random.default_rng(1))
        return np.concatenate(
            [(a - b).ravel().astype(np.float64) for a, b in zip(W1, W, strict=True)]
        ), info

    with pytest.raises(NonFiniteError, match="singular"):
        update("training")
    d_auto, info_auto = update("auto")
    d_64, info_64 = update("float64")
    assert info_auto["linalg_redone"] > 0 and info_64["linalg_redone"] == 0
    assert np.linalg.norm(d_auto - d_64) / np.linalg.norm(d_64) < 1e-2


# ------------------------------------------------------------------ products
def test_jvps_match_jvp_for_each_direction(make_net):
    net = make_net((5, 4, 6, 3), ["logistic", "tanh"], "bernoulli", seed=3)
    fwd = net.mlp.forward(net.weights, net.X)
    rng = np.random.default_rng(0)
    Vs = [net.weights_of(rng.standard_normal(net.theta.size)) for _ in range(4)]
    got = net.mlp.jvps(net.weights, fwd, Vs)
    assert len(got) == 4
    for J, V in zip(got, Vs, strict=True):
        np.testing.assert_allclose(J, net.mlp.jvp(net.weights, fwd, V), rtol=1e-12, atol=1e-14)
    (one,) = net.mlp.jvps(net.weights, fwd, Vs[:1])
    np.testing.assert_array_equal(one, net.mlp.jvp(net.weights, fwd, Vs[0]))


def test_jvps_takes_one_direction_at_a_time_above_the_memory_bound(make_net, monkeypatch):
    """Above ``JVPS_STACK_BYTES`` (the full batches of §13) the directions are not stacked: the
    products are :meth:`MLP.jvp`'s, one array per direction, equal to the stacked ones."""
    net = make_net((5, 4, 6, 3), ["logistic", "tanh"], "bernoulli", seed=3)
    fwd = net.mlp.forward(net.weights, net.X)
    rng = np.random.default_rng(1)
    Vs = [net.weights_of(rng.standard_normal(net.theta.size)) for _ in range(3)]
    stacked = net.mlp.jvps(net.weights, fwd, Vs)
    assert all(J.base is not None for J in stacked)  # views of one (3, n, d_ℓ) buffer
    bound = 3 * net.X.shape[0] * 6 * net.X.dtype.itemsize  # exactly the stacked widest layer
    monkeypatch.setattr(mlp_module, "JVPS_STACK_BYTES", bound)
    at_bound = net.mlp.jvps(net.weights, fwd, Vs)
    assert all(J.base is not None for J in at_bound)
    monkeypatch.setattr(mlp_module, "JVPS_STACK_BYTES", bound - 1)
    single = net.mlp.jvps(net.weights, fwd, Vs)
    for J, S, V in zip(single, stacked, Vs, strict=True):
        np.testing.assert_array_equal(J, net.mlp.jvp(net.weights, fwd, V))
        np.testing.assert_allclose(J, S, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shapes", [((30, 2), (2, 40), (40, 3)), ((3, 40), (40, 2), (2, 30))])
def test_chain3_product_and_order(shapes):
    rng = np.random.default_rng(0)
    A, B, C = (rng.standard_normal(s) for s in shapes)
    np.testing.assert_allclose(chain3(A, B, C), A @ B @ C, rtol=1e-12, atol=1e-12)
    # the cheaper order, checked by flops of the two orders
    (a0, a1), b1, c1 = A.shape, B.shape[1], C.shape[1]
    left, right = a0 * a1 * b1 + a0 * b1 * c1, a1 * b1 * c1 + a0 * a1 * c1
    expected = (A @ B) @ C if left <= right else A @ (B @ C)
    np.testing.assert_array_equal(chain3(A, B, C), expected)


def test_batched_rescaling_matches_one_direction_at_a_time(monkeypatch):
    """The optimizer's one-pass J Δ, J δ₀ gives the α, μ of one JVP per direction (float64)."""
    backend = get_backend("numpy", "float64")
    mlp = MLP([6, 5, 4, 6], ["logistic", "tanh"], "bernoulli")
    W = mlp.init_sparse(seed=1, backend=backend)
    X = np.random.default_rng(3).random((40, 6))
    cfg = KFACConfig(structure="block_tridiagonal", T1=2, T2=2, T3=2)

    def run():
        opt = KFAC(mlp, cfg, backend)
        st, Wk, out = opt.init_state(W), W, []
        for k in range(1, 6):
            Wk, st, info = opt.step(Wk, st, X, X, np.random.default_rng(k))
            out.append((info["alpha"], info["mu"]))
        return out

    batched = run()
    monkeypatch.setattr(
        MLP, "jvps", lambda self, w, fwd, Vs: [self.jvp(w, fwd, V) for V in Vs], raising=True
    )
    single = run()
    np.testing.assert_allclose(np.array(batched), np.array(single), rtol=1e-9, atol=1e-12)
    assert dataclasses.is_dataclass(cfg)


def test_generalized_eigh_identities():
    """C K = A K diag(s) and Kᵀ A K = I (Appendix B), against dense products in float64."""
    rng = np.random.default_rng(4)
    A, C = spd(6, 2.0, rng), spd(6, 1.0, rng)
    s, K = generalized_eigh(C, A)
    np.testing.assert_allclose(C @ K, A @ K * s, atol=1e-10)
    np.testing.assert_allclose(K.T @ A @ K, np.eye(6), atol=1e-10)


# ------------------------------------------------------------------ thread pools
def test_lapack_threads_scopes_scipys_own_pool_and_restores_it():
    """Where SciPy's LAPACK has a BLAS library of its own (the PyPI wheels), the refresh runs it
    on ``lapack_threads`` threads and gives the previous count back, also after an error;
    NumPy's pool is never touched."""
    from threadpoolctl import ThreadpoolController

    from kfac_ref.linalg import lapack_threads, scipy_lapack_pool

    pool = scipy_lapack_pool()
    if pool is None:
        pytest.skip("SciPy and NumPy share one BLAS library here: nothing to scope")
    others = [c for c in ThreadpoolController().lib_controllers if c.filepath != pool.filepath]
    before = pool.get_num_threads()
    numpy_threads = [c.get_num_threads() for c in others]
    with lapack_threads(1, np):
        assert pool.get_num_threads() == 1
        assert [c.get_num_threads() for c in others] == numpy_threads
    assert pool.get_num_threads() == before
    with pytest.raises(RuntimeError), lapack_threads(1, np):
        raise RuntimeError("inside")
    assert pool.get_num_threads() == before
    with lapack_threads(None, np):
        assert pool.get_num_threads() == before


def test_lapack_threads_leaves_the_trajectory_alone():
    """The thread count changes how fast LAPACK runs, not what the step computes: 8 F̂ steps
    with the default (1) and with None agree to float32 round-off (1e-5 on the loss)."""
    base = dict(structure="block_tridiagonal", T3=2, T2=4)
    (_, one), (_, left) = _run(KFACConfig(**base)), _run(KFACConfig(lapack_threads=None, **base))
    for a, b in zip(one, left, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(b["loss"])


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1", True])
def test_lapack_threads_must_be_a_positive_integer_or_none(bad):
    with pytest.raises(ConfigError, match="lapack_threads"):
        KFACConfig(lapack_threads=bad)
