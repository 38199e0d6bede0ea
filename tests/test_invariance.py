"""The invariance theorem of §10, checked numerically with :mod:`kfac_ref.reparam`.

Transform the activities ā_k ↦ Ω_k ā_k (Ω_k = [[M_k, c_k], [0, 1]]; centering is M = I,
c = −E[a]) and the pre-activations s_i ↦ Φ_i s_i, with W†_i = Φ_i W_i Ω_{i-1}⁻¹. The transformed
network (:class:`ReparametrizedMLP`) computes the same function. Its K-FAC quantities are
computed by the unchanged library functions from its own forward/backward passes, not by the
congruence formulas, so the theorem is tested, not assumed: with γ = 0 and exact factors, one
K-FAC step (F̆ or F̂) taken in the W† coordinates and mapped back gives the same network outputs
as the step taken in the W coordinates (≤ 1e-9), while a gradient-descent step does not
(outputs differ by > 1e-4), and neither does K-FAC with factored Tikhonov damping γ > 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kfac_ref.compare import approximate_fisher, damped_diagonal
from kfac_ref.errors import ConfigError, ShapeError
from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher, fisher_vector_product
from kfac_ref.inverse import (
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.reparam import (
    ReparametrizedMLP,
    affine_omega,
    centering_omega,
    centering_omegas,
    transform_factors,
    transform_gradients,
    transform_weights,
    untransform_weights,
)
from kfac_ref.vec import theta_to_weights, weights_to_theta

INVARIANT_ATOL = 1e-9  # network outputs after the step, outputs of order 1
LR = 0.05


def _well_conditioned(rng: np.random.Generator, d: int) -> np.ndarray:
    """I + R with ‖R‖₂ = 0.5: singular values in [0.5, 1.5], so cond ≤ 3."""
    R = rng.standard_normal((d, d))
    return np.eye(d) + 0.5 * R / np.linalg.norm(R, 2)


def _general_transforms(mlp, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    d = mlp.layer_sizes
    omegas = [
        affine_omega(_well_conditioned(rng, d[k]), rng.standard_normal(d[k]))
        for k in range(mlp.n_layers)
    ]
    phis = [_well_conditioned(rng, d[k]) for k in range(1, mlp.n_layers)]
    return omegas, phis


def _transforms(kind: str, net) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    if kind == "centering":
        return centering_omegas(net.mlp, net.weights, net.X), None
    return _general_transforms(net.mlp, seed=99)


def _kfac_step(
    mlp, weights, X, Y, structure: str, gamma: float = 0.0, lr: float = LR
) -> list[np.ndarray]:
    """W − lr·F̆⁻¹∇h or W − lr·F̂⁻¹∇h with exact factors (§4), computed for whatever ``mlp`` is."""
    factors = kronecker_factors(mlp, weights, X)
    _, grads, _ = mlp.loss_and_grad(weights, X, Y)
    A_diag, G_diag = damped_diagonal(factors, gamma)
    if structure == "block_diagonal":
        delta = apply_block_diagonal_inverse(block_diagonal_inverse(A_diag, G_diag), grads)
    else:
        A_off, G_off = factors.off_diagonal()
        delta = apply_block_tridiagonal_inverse(
            block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off), grads
        )
    return [W - lr * D for W, D in zip(weights, delta, strict=True)]


def _sgd_step(mlp, weights, X, Y, lr: float = LR) -> list[np.ndarray]:
    _, grads, _ = mlp.loss_and_grad(weights, X, Y)
    return [W - lr * g for W, g in zip(weights, grads, strict=True)]


def _output_gap(net, omegas, phis, step) -> tuple[float, float]:
    """(max |output difference| between the two parametrizations after ``step``, output change)."""
    mlp, W, X, Y = net.mlp, net.weights, net.X, net.Y
    rmlp = ReparametrizedMLP(mlp, omegas, phis)
    W_new = step(mlp, W, X, Y)
    Wd_new = step(rmlp, transform_weights(W, omegas, phis), X, Y)
    out = mlp.forward(W_new, X).output
    out_dagger = rmlp.forward(Wd_new, X).output
    out_back = mlp.forward(untransform_weights(Wd_new, omegas, phis), X).output
    np.testing.assert_allclose(out_dagger, out_back, rtol=1e-10, atol=1e-12)
    return float(np.abs(out - out_back).max()), float(np.abs(out - mlp.forward(W, X).output).max())


@pytest.fixture(
    params=[((4, 5, 3, 2), "tanh", "bernoulli"), ((5, 4, 4, 3, 2), "tanh", "gaussian")], ids=str
)
def inv_net(request, make_net):
    sizes, act, output = request.param
    return make_net(sizes, act, output, seed=len(sizes), n=64)


# ------------------------------------------------------------------ the re-parametrization
@pytest.mark.parametrize("kind", ["centering", "general"])
def test_transformed_network_computes_the_same_function(inv_net, kind):
    omegas, phis = _transforms(kind, inv_net)
    rmlp = ReparametrizedMLP(inv_net.mlp, omegas, phis)
    Wd = transform_weights(inv_net.weights, omegas, phis)
    fwd, fwd_d = inv_net.mlp.forward(inv_net.weights, inv_net.X), rmlp.forward(Wd, inv_net.X)
    np.testing.assert_allclose(fwd_d.output, fwd.output, rtol=1e-12, atol=1e-13)
    for k, (abar, abar_d) in enumerate(zip(fwd.abar, fwd_d.abar, strict=True)):
        np.testing.assert_allclose(abar_d, abar @ omegas[k].T, rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(abar_d[:, -1], 1.0)
        if kind == "centering":  # centered activities have zero mean on the batch
            np.testing.assert_allclose(abar_d[:, :-1].mean(axis=0), 0.0, atol=1e-14)
    for W, W_back in zip(inv_net.weights, untransform_weights(Wd, omegas, phis), strict=True):
        np.testing.assert_allclose(W_back, W, rtol=1e-12, atol=1e-13)
    assert inv_net.mlp.loss(inv_net.weights, inv_net.X, inv_net.Y) == pytest.approx(
        float(rmlp.loss(Wd, inv_net.X, inv_net.Y)), rel=1e-13
    )


def test_centering_omega_layout():
    Omega = centering_omega(np.array([1.0, -2.0]))
    np.testing.assert_array_equal(Omega, [[1, 0, -1], [0, 1, 2], [0, 0, 1]])
    np.testing.assert_array_equal(Omega @ np.array([1.0, -2.0, 1.0]), [0, 0, 1])


@pytest.mark.parametrize("kind", ["centering", "general"])
def test_factors_of_transformed_network_are_congruent(inv_net, kind):
    """Ā†_{k,l} = Ω_k Ā_{k,l} Ω_lᵀ, G†_{k,l} = Φ_{k+1}⁻ᵀ G_{k,l} Φ_{l+1}⁻¹, from the transformed
    passes."""
    omegas, phis = _transforms(kind, inv_net)
    rmlp = ReparametrizedMLP(inv_net.mlp, omegas, phis)
    direct = kronecker_factors(rmlp, transform_weights(inv_net.weights, omegas, phis), inv_net.X)
    mapped = transform_factors(
        kronecker_factors(inv_net.mlp, inv_net.weights, inv_net.X), omegas, phis
    )
    L = inv_net.mlp.n_layers
    for k in range(L):
        for l in range(L):
            np.testing.assert_allclose(
                direct.A_bar[k][l], mapped.A_bar[k][l], rtol=1e-11, atol=1e-13
            )
            np.testing.assert_allclose(direct.G[k][l], mapped.G[k][l], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(
            direct.A_bar[k][k],
            omegas[k]
            @ kronecker_factors(inv_net.mlp, inv_net.weights, inv_net.X).A_bar[k][k]
            @ omegas[k].T,
            rtol=1e-11,
            atol=1e-13,
        )


@pytest.mark.parametrize("kind", ["centering", "general"])
def test_gradient_of_transformed_network(inv_net, oracle, kind):
    """∇h† from the transformed backward pass = Φ⁻ᵀ DW Ωᵀ = finite differences of h(W(θ†))."""
    omegas, phis = _transforms(kind, inv_net)
    mlp, X, Y = inv_net.mlp, inv_net.X, inv_net.Y
    rmlp = ReparametrizedMLP(mlp, omegas, phis)
    Wd = transform_weights(inv_net.weights, omegas, phis)
    _, grads_d, _ = rmlp.loss_and_grad(Wd, X, Y)
    _, grads, _ = mlp.loss_and_grad(inv_net.weights, X, Y)
    for a, b in zip(grads_d, transform_gradients(grads, omegas, phis), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)

    def h_of_theta_dagger(t):
        return mlp.loss(untransform_weights(theta_to_weights(t, mlp.shapes), omegas, phis), X, Y)

    fd = oracle.fd_gradient(h_of_theta_dagger, weights_to_theta(Wd))
    assert oracle.rel_err(weights_to_theta(grads_d), fd) < 1e-7


def test_fisher_and_fvp_of_transformed_network(inv_net):
    """F† = Tᵀ F T for the linear map θ = T θ†; the transformed J v (jvp override) gives F† v."""
    omegas, phis = _transforms("general", inv_net)
    mlp, X = inv_net.mlp, inv_net.X
    rmlp = ReparametrizedMLP(mlp, omegas, phis)
    Wd = transform_weights(inv_net.weights, omegas, phis)
    P = mlp.n_params
    T = np.stack(
        [
            weights_to_theta(untransform_weights(theta_to_weights(e, mlp.shapes), omegas, phis))
            for e in np.eye(P)
        ],
        axis=1,
    )
    F = exact_fisher(mlp, inv_net.weights, X)
    F_d = exact_fisher(rmlp, Wd, X)
    np.testing.assert_allclose(F_d, T.T @ F @ T, rtol=1e-9, atol=1e-12 * np.abs(F_d).max())
    v = np.random.default_rng(0).standard_normal(P)
    Fv = weights_to_theta(fisher_vector_product(rmlp, Wd, X, theta_to_weights(v, mlp.shapes)))
    np.testing.assert_allclose(Fv, F_d @ v, rtol=0, atol=1e-10 * np.linalg.norm(F_d @ v))


# ------------------------------------------------------------------ the theorem
@pytest.mark.parametrize("structure", ["block_diagonal", "block_tridiagonal"])
@pytest.mark.parametrize("kind", ["centering", "general"])
def test_kfac_step_is_invariant_but_sgd_is_not(inv_net, kind, structure):
    omegas, phis = _transforms(kind, inv_net)

    def kfac(m, W, X, Y):
        return _kfac_step(m, W, X, Y, structure)

    gap, change = _output_gap(inv_net, omegas, phis, kfac)
    assert change > 0.05, "the step must move the outputs for the test to mean anything"
    assert gap < INVARIANT_ATOL
    sgd_gap, sgd_change = _output_gap(inv_net, omegas, phis, _sgd_step)
    assert sgd_change > 1e-3 and sgd_gap > 1e-4


@pytest.mark.parametrize("structure", ["block_diagonal", "block_tridiagonal"])
def test_factored_damping_breaks_invariance(inv_net, structure):
    """The theorem needs γ = 0: factored Tikhonov damping (§6.3) is not invariant."""
    omegas, phis = _transforms("general", inv_net)

    def damped(m, W, X, Y):
        return _kfac_step(m, W, X, Y, structure, gamma=0.1)

    gap, _ = _output_gap(inv_net, omegas, phis, damped)
    assert gap > 1e-4


def test_exact_natural_gradient_is_invariant(inv_net):
    """The exact natural gradient F⁻¹∇h is invariant too (any smooth re-parametrization)."""
    omegas, phis = _transforms("general", inv_net)

    def natural(m, W, X, Y):
        _, grads, _ = m.loss_and_grad(W, X, Y)
        step = np.linalg.solve(exact_fisher(m, W, X), weights_to_theta(grads))
        return [w - LR * d for w, d in zip(W, theta_to_weights(step, m.shapes), strict=True)]

    gap, change = _output_gap(inv_net, omegas, phis, natural)
    # F is far less well conditioned than its Kronecker factors: a tolerance relative to the step
    assert change > 0.05 and gap < 1e-7 * change


@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    depth=st.integers(2, 4),
    widths=st.lists(st.integers(2, 5), min_size=5, max_size=5),
    output=st.sampled_from(["bernoulli", "gaussian"]),
    structure=st.sampled_from(["block_diagonal", "block_tridiagonal"]),
    centering=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_invariance_property(make_net, depth, widths, output, structure, centering, seed):
    net = make_net(tuple(widths[: depth + 1]), "tanh", output, seed=seed, n=64, scale=1.5)
    if centering:
        omegas, phis = centering_omegas(net.mlp, net.weights, net.X), None
    else:
        omegas, phis = _general_transforms(net.mlp, seed)

    # round-off in the two parametrizations grows with the conditioning of the factors: keep the
    # draws (about 95 %) whose dense F̆ or F̂ has cond < 1e6
    assume(np.linalg.cond(approximate_fisher(net.mlp, net.weights, net.X, structure)) < 1e6)

    def kfac(m, W, X, Y):
        return _kfac_step(m, W, X, Y, structure, lr=0.01)

    gap, change = _output_gap(net, omegas, phis, kfac)
    assert gap < 1e-8 * max(change, 1.0)


# ------------------------------------------------------------------ bad transforms
def test_reparametrization_rejects_bad_transforms(make_net):
    net = make_net((3, 4, 2), "tanh", "gaussian")
    good = centering_omegas(net.mlp, net.weights, net.X)
    bad = [good[0], good[1].copy()]
    bad[1][-1, 0] = 0.5
    with pytest.raises(ConfigError, match=r"last row of Ω_1 must be \[0, …, 0, 1\]"):
        ReparametrizedMLP(net.mlp, bad)
    with pytest.raises(ShapeError, match=r"expected 2 matrices Ω_0..Ω_1, got 1"):
        ReparametrizedMLP(net.mlp, good[:1])
    with pytest.raises(ShapeError, match=r"Ω_1 has shape \(4, 4\); expected \(5, 5\)"):
        ReparametrizedMLP(net.mlp, [good[0], np.eye(4)])
    with pytest.raises(ShapeError, match=r"Φ_1 has shape \(3, 3\); expected \(4, 4\)"):
        ReparametrizedMLP(net.mlp, good, [np.eye(3)])
