"""The exact Fisher F (§2.2), its Monte Carlo estimate, the empirical Fisher, and F v.

The oracle is independent of the backward pass: the per-case Jacobian J = ∂s_ℓ/∂θ by central
finite differences of the network output (through ``vec.theta_to_weights``), the output Fisher
F_R from closed forms written with SciPy, and F = (1/n) Σ Jᵀ F_R J. Central differences with
step 1e-5 have truncation error ~1e-10 relative, so 1e-6 is a tight tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kfac_ref.fisher import (
    empirical_fisher,
    exact_fisher,
    fisher_vector_product,
    monte_carlo_fisher,
    per_case_gradients,
)
from kfac_ref.vec import weights_to_theta

ORACLE_RTOL = 1e-6


def test_exact_fisher_matches_gauss_newton_oracle(tiny_net, oracle):
    F = exact_fisher(tiny_net.mlp, tiny_net.weights, tiny_net.X)
    assert F.shape == (tiny_net.mlp.n_params,) * 2
    np.testing.assert_allclose(F, F.T, rtol=0, atol=1e-15 * np.abs(F).max())
    assert oracle.rel_err(F, oracle.gauss_newton(tiny_net)) < ORACLE_RTOL


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    depth=st.integers(2, 5),
    widths=st.lists(st.integers(2, 4), min_size=6, max_size=6),
    act=st.sampled_from(["logistic", "tanh", "linear", "relu"]),
    output=st.sampled_from(["bernoulli", "gaussian", "softmax"]),
    seed=st.integers(0, 2**16),
)
def test_exact_fisher_property(make_net, oracle, depth, widths, act, output, seed):
    net = make_net(tuple(widths[: depth + 1]), act, output, seed=seed, n=5)
    if act == "relu":  # finite differences must not cross a kink
        fwd = net.mlp.forward(net.weights, net.X)
        if min(np.abs(s).min() for s in fwd.s[:-1]) < 1e-3:
            return
    F = exact_fisher(net.mlp, net.weights, net.X)
    assert oracle.rel_err(F, oracle.gauss_newton(net)) < ORACLE_RTOL


def test_fisher_is_expectation_over_model_targets(make_net):
    """F = E_{y~model}[Dθ Dθᵀ]: enumerate y for a Bernoulli output with d_ℓ = 2 (§2.2)."""
    net = make_net((3, 4, 2), "tanh", "bernoulli", seed=4, n=6)
    mlp, W, X = net.mlp, net.weights, net.X
    fwd = mlp.forward(W, X)
    p = mlp.output.predict(fwd.output)
    F = np.zeros((mlp.n_params,) * 2)
    for y in ([0, 0], [0, 1], [1, 0], [1, 1]):
        Y = np.broadcast_to(np.array(y, float), p.shape)
        prob = np.prod(np.where(Y == 1, p, 1 - p), axis=1)  # P(y | x_c) per case
        J = per_case_gradients(mlp, fwd, mlp.backward(W, fwd, mlp.output.ds(fwd.output, Y)))
        F += (J * prob[:, None]).T @ J
    F /= X.shape[0]
    np.testing.assert_allclose(exact_fisher(mlp, W, X), F, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("output", ["bernoulli", "softmax", "gaussian"])
def test_monte_carlo_fisher_converges_to_exact(make_net, oracle, output):
    """20 000 model samples on 3 cases: relative error well below 5 %, but not zero."""
    net = make_net((3, 3, 3), "tanh", output, seed=8, n=3)
    F = exact_fisher(net.mlp, net.weights, net.X)
    F_mc = monte_carlo_fisher(
        net.mlp, net.weights, net.X, n_samples=20_000, rng=np.random.default_rng(0)
    )
    err = oracle.rel_err(F_mc, F)
    assert 1e-4 < err < 0.05
    # few samples are much worse: the estimate is a mean, not a different matrix
    F_few = monte_carlo_fisher(
        net.mlp, net.weights, net.X, n_samples=20, rng=np.random.default_rng(0)
    )
    assert oracle.rel_err(F_few, F) > 2 * err


def test_empirical_fisher_is_not_the_fisher(make_net, oracle):
    """The empirical Fisher (training targets) is (1/n) Σ ∇L ∇Lᵀ and differs from F (§2.2)."""
    net = make_net((4, 3, 3), "tanh", "softmax", seed=9, n=10)
    mlp, W, X, Y = net.mlp, net.weights, net.X, net.Y
    F_emp = empirical_fisher(mlp, W, X, Y)
    per_case_grads = np.stack(
        [
            oracle.fd_gradient(
                lambda t, c=c: mlp.loss(net.weights_of(t), X[c : c + 1], Y[c : c + 1]), net.theta
            )
            for c in range(X.shape[0])
        ]
    )
    want = per_case_grads.T @ per_case_grads / X.shape[0]
    assert oracle.rel_err(F_emp, want) < 1e-7
    assert oracle.rel_err(F_emp, exact_fisher(mlp, W, X)) > 0.3


# ------------------------------------------------------------------ Fisher-vector products
def test_fisher_vector_product_matches_dense_fisher(tiny_net):
    mlp, W, X = tiny_net.mlp, tiny_net.weights, tiny_net.X
    F = exact_fisher(mlp, W, X)
    rng = np.random.default_rng(3)
    for _ in range(3):
        v = rng.standard_normal(mlp.n_params)
        Fv = weights_to_theta(fisher_vector_product(mlp, W, X, tiny_net.weights_of(v)))
        np.testing.assert_allclose(Fv, F @ v, rtol=0, atol=1e-10 * np.linalg.norm(F @ v))


def test_fisher_vector_product_reuses_forward_pass(make_net):
    net = make_net((3, 5, 2), "logistic", "bernoulli", seed=2)
    V = [np.ones_like(W) for W in net.weights]
    fwd = net.mlp.forward(net.weights, net.X)
    a = fisher_vector_product(net.mlp, net.weights, net.X, V)
    b = fisher_vector_product(net.mlp, net.weights, None, V, fwd=fwd)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("output", ["bernoulli", "gaussian", "softmax"])
def test_fisher_vector_product_is_gauss_newton_by_finite_differences(make_net, oracle, output):
    """wᵀ F v = (1/n) Σ (J w)ᵀ F_R (J v), J w and J v by differences of the output (§2.2)."""
    net = make_net((4, 5, 3, 3), ["tanh", "logistic"], output, seed=21)
    rng = np.random.default_rng(1)
    v, w = rng.standard_normal(net.theta.size), rng.standard_normal(net.theta.size)
    Jv, Jw = oracle.fd_output_jvp(net, v), oracle.fd_output_jvp(net, w)
    s = net.mlp.forward(net.weights, net.X).output
    F_R = oracle.dense_output_fisher(output, s)
    want = np.einsum("ni,nij,nj->", Jw, F_R, Jv) / net.X.shape[0]
    Fv = weights_to_theta(fisher_vector_product(net.mlp, net.weights, net.X, net.weights_of(v)))
    assert w @ Fv == pytest.approx(want, rel=1e-8)
