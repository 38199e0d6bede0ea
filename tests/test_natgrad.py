"""The batch-mode damped natural-gradient step (:mod:`kfac_ref.natgrad`, §4.2, §6.3, §7) against
a dense float64 computation written out here: F̆(γ) as the block-diagonal matrix of
(Ā + πγI) ⊗ (G + γ/π I) with π from traces (§6.3), Δ = −F̆(γ)⁻¹∇h by a dense solve, F the dense
exact Fisher (:func:`kfac_ref.fisher.exact_fisher`, not the Fisher-vector product the step
uses), and α = −∇hᵀΔ / (ΔᵀFΔ + γ²‖Δ‖²)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from kfac_ref.factors import kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.natgrad import natgrad_step
from kfac_ref.vec import weights_to_theta

RTOL = 1e-9  # float64 throughout; the two paths differ only in rounding


def dense_step(net, gamma: float, eta: float, curvature_damping: float) -> tuple[np.ndarray, float]:
    """(θ + αΔ, α) densely; ``curvature_damping`` is the λ + η of M (γ² for the step)."""
    mlp, W, X, Y = net.mlp, net.weights, net.X, net.Y
    _, grads, _ = mlp.loss_and_grad(W, X, Y, eta)
    g = weights_to_theta(grads)
    f = kronecker_factors(mlp, W, X, method="exact")
    blocks = []
    for k in range(mlp.n_layers):
        A, G = f.A_bar[k][k], f.G[k][k]
        pi = np.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
        blocks.append(
            np.kron(A + pi * gamma * np.eye(A.shape[0]), G + gamma / pi * np.eye(G.shape[0]))
        )
    F_breve = scipy.linalg.block_diag(*blocks)
    Delta = -np.linalg.solve(F_breve, g)
    F = exact_fisher(mlp, W, X)
    alpha = -(g @ Delta) / (Delta @ F @ Delta + curvature_damping * (Delta @ Delta))
    return net.theta + alpha * Delta, float(alpha)


@pytest.mark.parametrize("output", ["softmax", "bernoulli", "gaussian"])
def test_natgrad_step_matches_dense_computation(make_net, output):
    net = make_net((5, 4, 3, 3), "tanh", output, seed=3, n=24)
    gamma, eta = 0.1, 1e-3
    new_weights, info = natgrad_step(net.mlp, net.weights, net.X, net.Y, gamma, eta)
    theta_new, alpha = dense_step(net, gamma, eta, gamma**2)
    assert all(W.dtype == np.float64 for W in new_weights)
    assert info["alpha"] == pytest.approx(alpha, rel=RTOL)
    np.testing.assert_allclose(weights_to_theta(new_weights), theta_new, rtol=RTOL, atol=1e-12)
    assert info["loss"] == pytest.approx(
        float(net.mlp.loss(net.weights, net.X, net.Y, eta)), rel=1e-12
    )
    # the tolerance separates real mistakes: λ + η = γ instead of γ², or γ = 0 in F̆
    _, wrong = dense_step(net, gamma, eta, gamma)
    assert abs(wrong - alpha) > 1e-3 * abs(alpha)
    theta_undamped, _ = dense_step(net, 1e-3, eta, gamma**2)
    assert np.linalg.norm(theta_undamped - theta_new) > 1e-3 * np.linalg.norm(theta_new - net.theta)


def test_natgrad_step_leaves_the_weights_untouched(make_net):
    net = make_net((4, 3, 2), "logistic", "softmax", seed=1, n=10)
    before = [W.copy() for W in net.weights]
    natgrad_step(net.mlp, net.weights, net.X, net.Y, 0.05, 1e-5)
    for W, B in zip(net.weights, before, strict=True):
        np.testing.assert_array_equal(W, B)
