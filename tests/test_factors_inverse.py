"""Kronecker factors and F̃ (§3), F̆⁻¹ (§4.2), F̂ and F̂⁻¹ (§4.3), Appendix B, damping (§6.3).

Dense oracles: ``numpy.kron``, :mod:`kfac_ref.dense` (F̆, F̂ from dense blocks, Ψ by dense
solves, no Appendix B: it shares no code with :mod:`kfac_ref.inverse`,
:mod:`kfac_ref.appendix_b`), ``numpy.linalg.solve``/
``inv`` of them, Schur complements of dense F̃ blocks, per-case loops for Ā, enumeration of y
for G. Tolerances:
1e-12 for identities of a few matrix products, 1e-9 relative for efficient inverses against a
dense solve (the nets are chosen with cond(F̂) < 1e7, so round-off stays near 1e-10), 5 % for
Monte Carlo estimates with 20 000 samples per case.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kfac_ref import dense
from kfac_ref.appendix_b import apply_kron_sum_inverse, kron_sum_inverse
from kfac_ref.compare import approximate_fisher, damped_diagonal, dense_F_tilde
from kfac_ref.damping import damped_factors, pi_trace_norm
from kfac_ref.errors import NonFiniteError
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.inverse import (
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.linalg import spd_inverse
from kfac_ref.vec import layer_offsets, per_case_vec_grad, weights_to_theta

INV_RTOL = 1e-9

# Nets with 2–5 weight layers and uneven widths whose undamped factors are well conditioned
# (cond(F̂) < 1e7), for the γ = 0 checks: (sizes, activation, output, weight scale).
GAMMA0_NETS = [
    ((5, 4, 3), "tanh", "bernoulli", 2.0),
    ((3, 4, 4, 2), "logistic", "gaussian", 4.0),
    ((6, 4, 5, 3, 2), "tanh", "bernoulli", 2.0),
    ((5, 3, 4, 4, 3, 3), "tanh", "gaussian", 3.0),
]
DAMPED_NETS = [
    ((5, 4, 3), "relu", "softmax"),
    ((4, 5, 3, 2), "linear", "gaussian"),
    ((6, 4, 5, 3, 2), "logistic", "softmax"),
    ((3, 5, 2, 4, 3, 4), "tanh", "bernoulli"),
    ((5, 3, 4, 4, 3, 3), "relu", "gaussian"),
]


def _blocks(mlp):
    off = layer_offsets(mlp.shapes)
    return [slice(off[k], off[k + 1]) for k in range(mlp.n_layers)]


def _rel(X, Y) -> float:
    return float(np.linalg.norm(X - Y) / np.linalg.norm(Y))


# ====================================================================== factors (§3)
def test_A_bar_matches_per_case_sum(make_net):
    net = make_net((4, 3, 5, 2), "tanh", "softmax", seed=1, n=9)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    fwd = net.mlp.forward(net.weights, net.X)
    for k, l in itertools.product(range(3), repeat=2):
        want = sum(np.outer(fwd.abar[k][c], fwd.abar[l][c]) for c in range(9)) / 9
        np.testing.assert_allclose(f.A_bar[k][l], want, rtol=1e-13, atol=1e-15)
        assert f.A_bar[k][l].shape == (net.mlp.layer_sizes[k] + 1, net.mlp.layer_sizes[l] + 1)
    # Ā_{0,0} is the second moment of [x; 1]: its last row holds the input means and a 1
    np.testing.assert_allclose(f.A_bar[0][0][-1], np.append(net.X.mean(axis=0), 1.0), rtol=1e-14)


def test_exact_G_is_expectation_over_model_targets(make_net):
    """G_{k,l} = E_x E_{y~model}[g_k g_lᵀ], by enumerating all y ∈ {0,1}² (§3, §5)."""
    net = make_net((3, 4, 3, 2), "logistic", "bernoulli", seed=2, n=7, scale=2.0)
    mlp, W, X = net.mlp, net.weights, net.X
    fwd = mlp.forward(W, X)
    p = mlp.output.predict(fwd.output)
    G = [
        [np.zeros((mlp.layer_sizes[k + 1], mlp.layer_sizes[l + 1])) for l in range(3)]
        for k in range(3)
    ]
    for y in itertools.product([0.0, 1.0], repeat=2):
        Y = np.broadcast_to(np.array(y), p.shape)
        prob = np.prod(np.where(Y == 1, p, 1 - p), axis=1)
        g = mlp.backward(W, fwd, mlp.output.ds(fwd.output, Y))
        for k, l in itertools.product(range(3), repeat=2):
            G[k][l] += (g[k] * prob[:, None]).T @ g[l] / X.shape[0]
    f = kronecker_factors(mlp, W, X)
    for k, l in itertools.product(range(3), repeat=2):
        np.testing.assert_allclose(f.G[k][l], G[k][l], rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("output", ["bernoulli", "softmax", "gaussian"])
def test_exact_G_matches_monte_carlo(make_net, output):
    """Sampled G (§5) → exact G: 20 000 samples per case, relative error < 5 % and > 0."""
    net = make_net((3, 4, 3), "tanh", output, seed=3, n=4)
    exact = kronecker_factors(net.mlp, net.weights, net.X)
    mc = kronecker_factors(
        net.mlp, net.weights, net.X, method="sample", rng=np.random.default_rng(7), n_samples=20_000
    )
    for k, l in itertools.product(range(2), repeat=2):
        err = _rel(mc.G[k][l], exact.G[k][l])
        assert 1e-5 < err < 0.05, (k, l, err)
        np.testing.assert_array_equal(mc.A_bar[k][l], exact.A_bar[k][l])


def test_empirical_factors_use_training_targets(make_net):
    net = make_net((3, 4, 2), "tanh", "bernoulli", seed=4, n=8)
    f = kronecker_factors(net.mlp, net.weights, net.X, method="empirical", Y=net.Y)
    fwd = net.mlp.forward(net.weights, net.X)
    r = net.mlp.output.predict(fwd.output) - net.Y
    np.testing.assert_allclose(f.G[1][1], r.T @ r / 8, rtol=1e-13)
    assert _rel(f.G[1][1], kronecker_factors(net.mlp, net.weights, net.X).G[1][1]) > 0.1


def test_F_tilde_blocks_are_kronecker_products(make_net):
    net = make_net((4, 3, 5, 2), "tanh", "softmax", seed=5, n=9)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    Ft = dense_F_tilde(f)
    sl = _blocks(net.mlp)
    for k, l in itertools.product(range(3), repeat=2):
        np.testing.assert_array_equal(Ft[sl[k], sl[l]], np.kron(f.A_bar[k][l], f.G[k][l]))
    np.testing.assert_array_equal(
        Ft, approximate_fisher(net.mlp, net.weights, net.X, "full", 0.0, f)
    )


def test_F_block_is_expectation_of_kronecker_products(make_net):
    """F_{i,j} = E[ā_{i-1}ā_{j-1}ᵀ ⊗ g_i g_jᵀ] (§3): the exact F before any approximation."""
    net = make_net((3, 4, 2), "tanh", "gaussian", seed=6, n=5)
    mlp, W, X = net.mlp, net.weights, net.X
    fwd = mlp.forward(W, X)
    C = mlp.output.fisher_sqrt(fwd.output)
    passes = [mlp.backward(W, fwd, C[:, :, j]) for j in range(C.shape[2])]
    F = exact_fisher(mlp, W, X)
    sl = _blocks(mlp)
    for i, j in itertools.product(range(2), repeat=2):
        want = (
            sum(
                np.kron(np.outer(fwd.abar[i][c], fwd.abar[j][c]), np.outer(g[i][c], g[j][c]))
                for g in passes
                for c in range(5)
            )
            / 5
        )
        np.testing.assert_allclose(F[sl[i], sl[j]], want, rtol=1e-12, atol=1e-15)
        # per-case vec(DW) = ā ⊗ g
        np.testing.assert_allclose(
            per_case_vec_grad(fwd.abar[i], passes[0][i])[0],
            np.kron(fwd.abar[i][0], passes[0][i][0]),
        )


def test_F_tilde_is_exact_for_one_linear_layer_with_gaussian_output(make_net):
    """ℓ = 1, linear output, Gaussian noise: g is independent of ā, so F̃ = F (§3)."""
    net = make_net((5, 3), [], "gaussian", seed=7, n=11)
    F = exact_fisher(net.mlp, net.weights, net.X)
    Ft = approximate_fisher(net.mlp, net.weights, net.X, "full")
    assert _rel(Ft, F) < 1e-12
    # not so with a Bernoulli output: g depends on x through p(1 − p)
    net_b = make_net((5, 3), [], "bernoulli", seed=7, n=11)
    assert (
        _rel(
            approximate_fisher(net_b.mlp, net_b.weights, net_b.X),
            exact_fisher(net_b.mlp, net_b.weights, net_b.X),
        )
        > 1e-3
    )


@pytest.mark.parametrize("sizes", [(4, 5, 3, 2), (4, 5, 4, 3, 2)])
def test_F_tilde_is_approximate_for_deep_tanh_net(make_net, sizes):
    net = make_net(sizes, "tanh", "softmax", seed=8, n=30, scale=1.5)
    F = exact_fisher(net.mlp, net.weights, net.X)
    Ft = approximate_fisher(net.mlp, net.weights, net.X, "full")
    err = _rel(Ft, F)
    assert 1e-3 < err < 1.0
    # the diagonal blocks carry less error than the matrix as a whole does off the diagonal
    sl = _blocks(net.mlp)
    for k in range(len(sizes) - 1):
        assert _rel(Ft[sl[k], sl[k]], F[sl[k], sl[k]]) > 1e-3


# ====================================================================== damping (§6.3)
def test_pi_trace_norm_and_damped_factors():
    rng = np.random.default_rng(0)
    MA, MG = rng.standard_normal((5, 9)), rng.standard_normal((3, 9))
    A, G = MA @ MA.T / 9, 0.01 * MG @ MG.T / 9
    pi = float(pi_trace_norm(A, G))
    assert pi == pytest.approx(np.sqrt((np.trace(A) / 5) / (np.trace(G) / 3)), rel=1e-14)
    gamma = 0.3
    Ad, Gd = damped_factors(A, G, gamma)
    np.testing.assert_allclose(Ad, A + pi * gamma * np.eye(5), rtol=1e-15)
    np.testing.assert_allclose(Gd, G + gamma / pi * np.eye(3), rtol=1e-15)
    Ad2, Gd2 = damped_factors(A, G, gamma, pi=2.0)
    np.testing.assert_allclose(Ad2 - A, 0.6 * np.eye(5), atol=1e-15)
    np.testing.assert_allclose(Gd2 - G, 0.15 * np.eye(3), atol=1e-15)
    A0, G0 = damped_factors(A, G, 0.0)
    assert A0 is A and G0 is G
    # an all-zero G (saturated units) gives a large finite π, not inf/NaN
    assert np.isfinite(float(pi_trace_norm(A, np.zeros((3, 3)))))


def test_damped_F_breve_blocks(make_net):
    net = make_net((4, 3, 5, 2), "tanh", "softmax", seed=9, n=9)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    gamma = 0.05
    Fb = approximate_fisher(net.mlp, net.weights, net.X, "block_diagonal", gamma, f)
    Ft = approximate_fisher(net.mlp, net.weights, net.X, "full", gamma, f)
    sl = _blocks(net.mlp)
    for k, l in itertools.product(range(3), repeat=2):
        if k == l:
            A, G = f.A_bar[k][k], f.G[k][k]
            pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
            want = np.kron(A + pi * gamma * np.eye(A.shape[0]), G + gamma / pi * np.eye(G.shape[0]))
            np.testing.assert_allclose(Fb[sl[k], sl[k]], want, rtol=1e-13)
            np.testing.assert_array_equal(Ft[sl[k], sl[k]], Fb[sl[k], sl[k]])
        else:
            assert not Fb[sl[k], sl[l]].any()
            # off-diagonal blocks of F̃ are never damped
            np.testing.assert_array_equal(Ft[sl[k], sl[l]], np.kron(f.A_bar[k][l], f.G[k][l]))


# ====================================================================== F̆⁻¹ and F̂⁻¹ (§4)
def _efficient_vs_dense(net, gamma: float, n_vectors: int = 2) -> tuple[float, float, float]:
    """Relative errors of F̆⁻¹v and F̂⁻¹v against dense solves; also cond(F̂)."""
    mlp, W, X = net.mlp, net.weights, net.X
    f = kronecker_factors(mlp, W, X)
    A_diag, G_diag = damped_diagonal(f, gamma)
    A_off, G_off = f.off_diagonal()
    breve = block_diagonal_inverse(A_diag, G_diag)
    hat = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off)
    F_breve = dense.F_breve(f, gamma)
    F_hat = dense.F_hat(f, gamma)
    rng = np.random.default_rng(0)
    e_breve = e_hat = 0.0
    for _ in range(n_vectors):
        v = rng.standard_normal(mlp.n_params)
        V = net.weights_of(v)
        e_breve = max(
            e_breve,
            _rel(
                weights_to_theta(apply_block_diagonal_inverse(breve, V)),
                np.linalg.solve(F_breve, v),
            ),
        )
        e_hat = max(
            e_hat,
            _rel(
                weights_to_theta(apply_block_tridiagonal_inverse(hat, V)), np.linalg.solve(F_hat, v)
            ),
        )
    return e_breve, e_hat, float(np.linalg.cond(F_hat))


@pytest.mark.parametrize("sizes, act, output, scale", GAMMA0_NETS, ids=lambda p: str(p))
def test_efficient_inverses_match_dense_solve_undamped(make_net, sizes, act, output, scale):
    net = make_net(sizes, act, output, seed=len(sizes), n=60, scale=scale)
    e_breve, e_hat, cond = _efficient_vs_dense(net, gamma=0.0)
    assert cond < 1e7, "test net should be well conditioned"
    assert e_breve < INV_RTOL and e_hat < INV_RTOL


@pytest.mark.parametrize("gamma", [1e-3, 0.1])
@pytest.mark.parametrize("sizes, act, output", DAMPED_NETS, ids=lambda p: str(p))
def test_efficient_inverses_match_dense_solve_damped(make_net, sizes, act, output, gamma):
    net = make_net(sizes, act, output, seed=len(sizes) + 10, n=30)
    e_breve, e_hat, _ = _efficient_vs_dense(net, gamma=gamma)
    assert e_breve < INV_RTOL and e_hat < INV_RTOL


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    depth=st.integers(2, 5),
    widths=st.lists(st.integers(2, 5), min_size=6, max_size=6),
    act=st.sampled_from(["tanh", "logistic", "linear", "relu"]),
    output=st.sampled_from(["bernoulli", "gaussian", "softmax"]),
    gamma=st.sampled_from([0.0, 1e-2, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_efficient_inverses_property(make_net, depth, widths, act, output, gamma, seed):
    if gamma == 0.0:
        # undamped factors are PD (and, for random nets, usually well conditioned) only for
        # tanh units with Bernoulli/Gaussian outputs; keep the draws whose cond(F̂) < 1e6
        act = "tanh"
        output = "gaussian" if output == "softmax" else output
    net = make_net(tuple(widths[: depth + 1]), act, output, seed=seed, n=40, scale=2.0)
    if gamma == 0.0:
        F_hat = dense.F_hat(kronecker_factors(net.mlp, net.weights, net.X))
        assume(np.linalg.cond(F_hat) < 1e6)
    e_breve, e_hat, _ = _efficient_vs_dense(net, gamma, n_vectors=1)
    assert e_breve < INV_RTOL and e_hat < INV_RTOL


def test_softmax_undamped_factor_is_singular_and_jittered(make_net):
    """Softmax: F_R 1 = 0, so G_{ℓ,ℓ} is singular at γ = 0; the inverse adds jitter and warns."""
    net = make_net((4, 3, 3), "tanh", "softmax", seed=1, n=20)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    np.testing.assert_allclose(f.G[1][1] @ np.ones(3), 0.0, atol=1e-15)
    with pytest.warns(RuntimeWarning, match=r"G_\{2,2\} was not positive definite; added jitter"):
        block_diagonal_inverse(*f.diagonal())


# ====================================================================== F̂ structure (§4.3)
@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    depth=st.integers(3, 5),
    widths=st.lists(st.integers(2, 5), min_size=6, max_size=6),
    act=st.sampled_from(["tanh", "logistic", "relu"]),
    output=st.sampled_from(["bernoulli", "gaussian", "softmax"]),
    gamma=st.sampled_from([1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_F_hat_agrees_with_F_tilde_on_tridiagonal_and_inverse_is_tridiagonal(
    make_net, depth, widths, act, output, gamma, seed
):
    net = make_net(tuple(widths[: depth + 1]), act, output, seed=seed, n=30, scale=1.5)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    F_tilde = dense.F_tilde(f, gamma)
    F_hat = dense.F_hat(f, gamma)
    F_hat_inv = np.linalg.inv(F_hat)
    sl = _blocks(net.mlp)
    far_differs = []
    for k, l in itertools.product(range(depth), repeat=2):
        if abs(k - l) <= 1:
            assert _rel(F_hat[sl[k], sl[l]], F_tilde[sl[k], sl[l]]) < 1e-9
        else:
            assert np.linalg.norm(F_hat_inv[sl[k], sl[l]]) < 1e-8 * np.linalg.norm(F_hat_inv)
            far_differs.append(_rel(F_hat[sl[k], sl[l]], F_tilde[sl[k], sl[l]]))
    assert max(far_differs) > 1e-3


def test_F_hat_differs_from_F_tilde_far_from_the_diagonal(make_net):
    net = make_net((5, 4, 4, 3, 3), "tanh", "softmax", seed=12, n=40, scale=1.5)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    gamma = 1e-3
    F_tilde, F_hat = dense.F_tilde(f, gamma), dense.F_hat(f, gamma)
    sl = _blocks(net.mlp)
    for k, l in itertools.product(range(4), repeat=2):
        err = _rel(F_hat[sl[k], sl[l]], F_tilde[sl[k], sl[l]])
        assert (err < 1e-9) if abs(k - l) <= 1 else (err > 1e-3)
    # F̆ keeps only the diagonal blocks
    F_breve = approximate_fisher(net.mlp, net.weights, net.X, "block_diagonal", gamma, f)
    assert not F_breve[sl[0], sl[1]].any()


def test_xi_lambda_factorization_of_F_hat_inverse(make_net):
    """F̂⁻¹ = Ξᵀ Λ Ξ (§4.3): the efficient operator, as a dense matrix, is inv(F̂)."""
    net = make_net((4, 3, 4, 2), "tanh", "bernoulli", seed=13, n=40, scale=2.0)
    f = kronecker_factors(net.mlp, net.weights, net.X)
    hat = block_tridiagonal_inverse(*f.diagonal(), *f.off_diagonal())
    P = net.mlp.n_params
    M = np.stack(
        [
            weights_to_theta(apply_block_tridiagonal_inverse(hat, net.weights_of(e)))
            for e in np.eye(P)
        ],
        axis=1,
    )
    F_hat = dense.F_hat(f)
    assert _rel(M, np.linalg.inv(F_hat)) < 1e-9
    assert _rel(M, dense.F_hat_inverse(f)) < 1e-9
    np.testing.assert_allclose(M, M.T, rtol=0, atol=1e-9 * np.abs(M).max())


def test_sigma_cond_is_schur_complement(make_net):
    """Σ_{i|i+1} = F̃_{i,i} − Ψ F̃_{i+1,i+1} Ψᵀ is the Schur complement in the 2×2 block of F̃."""
    net = make_net((4, 5, 3, 2), "tanh", "softmax", seed=14, n=30)
    gamma = 0.01
    f = kronecker_factors(net.mlp, net.weights, net.X)
    A_diag, G_diag = damped_diagonal(f, gamma)
    hat = block_tridiagonal_inverse(A_diag, G_diag, *f.off_diagonal())
    F_tilde = dense_F_tilde(f, gamma)
    sl = _blocks(net.mlp)
    for k in range(2):
        F_kk = np.kron(A_diag[k], G_diag[k])
        F_nn = np.kron(A_diag[k + 1], G_diag[k + 1])
        Psi = np.kron(hat.psi_A[k], hat.psi_G[k])
        np.testing.assert_allclose(
            Psi, F_tilde[sl[k], sl[k + 1]] @ np.linalg.inv(F_nn), rtol=1e-9, atol=1e-13
        )
        sigma = F_kk - Psi @ F_nn @ Psi.T
        schur = F_tilde[sl[k], sl[k]] - F_tilde[sl[k], sl[k + 1]] @ np.linalg.solve(
            F_tilde[sl[k + 1], sl[k + 1]], F_tilde[sl[k + 1], sl[k]]
        )
        assert _rel(sigma, schur) < 1e-10
        # Appendix B applied to a vector is Σ⁻¹ v
        U = np.random.default_rng(k).standard_normal(net.weights[k].shape)
        got = weights_to_theta([apply_kron_sum_inverse(hat.sigma_cond[k], U)])
        assert _rel(got, np.linalg.solve(schur, weights_to_theta([U]))) < 1e-9


# ====================================================================== Appendix B
def _spd(rng, d, shift=0.5):
    M = rng.standard_normal((d, d + 2))
    return M @ M.T / (d + 2) + shift * np.eye(d)


def _psd(rng, d, rank):
    M = rng.standard_normal((d, rank))
    return M @ M.T / max(rank, 1)


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("dims", [(1, 1), (2, 3), (4, 2), (5, 5)])
def test_kron_sum_inverse_matches_dense_inverse(sign, dims):
    rng = np.random.default_rng(dims[0] * 10 + dims[1] + (sign > 0))
    m, n = dims
    A, B = _spd(rng, m), _spd(rng, n)
    C, D = _psd(rng, m, max(m - 1, 1)), _psd(rng, n, n)
    if sign < 0:  # keep A ⊗ B − C ⊗ D positive definite: scale C so that A⁻¹C has eigenvalues < 0.9
        C *= 0.9 / max(np.linalg.eigvals(np.linalg.solve(A, C)).real.max(), 1e-12)
        D *= 0.9 / np.linalg.eigvals(np.linalg.solve(B, D)).real.max()
    dense_inv = np.linalg.inv(np.kron(A, B) + sign * np.kron(C, D))
    inv = kron_sum_inverse(A, B, C, D, sign=sign)
    X = rng.standard_normal((n, m))
    got = apply_kron_sum_inverse(inv, X)
    want = (dense_inv @ X.flatten(order="F")).reshape(m, n).T
    assert _rel(got, want) < 1e-11
    # the full operator, column by column
    cols = [
        apply_kron_sum_inverse(inv, E.reshape(m, n).T).flatten(order="F") for E in np.eye(m * n)
    ]
    assert _rel(np.stack(cols, axis=1), dense_inv) < 1e-11


@pytest.mark.parametrize("seed", range(6))
def test_kron_sum_inverse_detects_exactly_singular_sigma(seed):
    """A ⊗ B − C ⊗ D singular (a common unit eigenvalue of A⁻¹C and B⁻¹D) → NonFiniteError."""
    rng = np.random.default_rng(seed)
    m, n = 2 + seed % 4, 3 + seed % 3
    A, B = _spd(rng, m), _spd(rng, n)
    u, w = rng.standard_normal(m), rng.standard_normal(n)
    C = np.outer(u, u) / (u @ np.linalg.solve(A, u))  # rank one with uᵀA⁻¹u = 1
    D = np.outer(w, w) / (w @ np.linalg.solve(B, w))
    with pytest.raises(NonFiniteError, match=r"Σ_\{i\|i\+1\} is singular"):
        kron_sum_inverse(A, B, C, D, sign=-1)
    with pytest.raises(NonFiniteError, match="singular"):
        kron_sum_inverse(A, B, A, B, sign=-1)


def test_spd_inverse_matches_numpy():
    rng = np.random.default_rng(3)
    A = _spd(rng, 6)
    assert _rel(spd_inverse(A), np.linalg.inv(A)) < 1e-13
