"""The network of §2.1: forward pass, hand-written backward pass, J v, the vec convention.

Oracles: central finite differences of ``mlp.loss`` (relative error ≤ 1e-7 in float64 with
step 1e-6: the truncation error is O(eps²) and the round-off O(1e-16/eps)), an independent
forward pass written with SciPy, and ``numpy.kron`` for the vec identities.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from kfac_ref.activations import ACTIVATIONS, get_activation
from kfac_ref.mlp import MLP
from kfac_ref.vec import (
    layer_offsets,
    per_case_vec_grad,
    theta_to_weights,
    unvec,
    vec,
    weights_to_theta,
)

FD_RTOL = 1e-7


def _kink_margin(net) -> float:
    """Smallest |s| of the hidden layers: finite differences need it far above the FD step."""
    fwd = net.mlp.forward(net.weights, net.X)
    return min(float(np.abs(s).min()) for s in fwd.s[:-1]) if len(fwd.s) > 1 else np.inf


def _check_gradient(net, oracle, eta: float) -> float:
    h, grads, _ = net.mlp.loss_and_grad(net.weights, net.X, net.Y, eta=eta)
    fd = oracle.fd_gradient(
        lambda t: net.mlp.loss(net.weights_of(t), net.X, net.Y, eta=eta), net.theta
    )
    assert float(h) == pytest.approx(
        float(net.mlp.loss(net.weights, net.X, net.Y, eta=eta)), rel=1e-14
    )
    return oracle.rel_err(weights_to_theta(grads), fd)


# ------------------------------------------------------------------ gradients (§2.1)
@pytest.mark.parametrize("eta", [0.0, 0.05])
def test_gradient_matches_finite_differences(tiny_net, oracle, eta):
    if any(a.name == "relu" for a in tiny_net.mlp.activations):
        assert _kink_margin(tiny_net) > 1e-3, "relu test net too close to a kink for FD"
    assert _check_gradient(tiny_net, oracle, eta) < FD_RTOL


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    depth=st.integers(2, 5),
    widths=st.lists(st.integers(1, 5), min_size=6, max_size=6),
    act=st.sampled_from(["logistic", "tanh", "linear"]),
    output=st.sampled_from(["bernoulli", "gaussian", "softmax"]),
    seed=st.integers(0, 2**16),
)
def test_gradient_property(make_net, oracle, depth, widths, act, output, seed):
    sizes = tuple(widths[: depth + 1])
    if output == "softmax" and sizes[-1] == 1:
        sizes = sizes[:-1] + (2,)
    net = make_net(sizes, act, output, seed=seed, n=7)
    assert _check_gradient(net, oracle, eta=0.01) < FD_RTOL


def test_loss_and_gradient_of_l2_term(make_net):
    """h = mean L + (η/2)‖θ‖² and ∇h gains η θ (§2.1)."""
    net = make_net((3, 4, 2), "tanh", "gaussian", seed=3)
    eta = 0.3
    h0, g0, _ = net.mlp.loss_and_grad(net.weights, net.X, net.Y)
    h1, g1, _ = net.mlp.loss_and_grad(net.weights, net.X, net.Y, eta=eta)
    theta = net.theta
    assert float(h1 - h0) == pytest.approx(0.5 * eta * theta @ theta, rel=1e-13)
    np.testing.assert_allclose(
        weights_to_theta(g1) - weights_to_theta(g0), eta * theta, rtol=1e-12, atol=1e-15
    )


# ------------------------------------------------------------------ forward pass (§2.1)
@pytest.mark.parametrize("output", ["bernoulli", "gaussian", "softmax"])
def test_forward_and_loss_match_independent_implementation(make_net, output):
    net = make_net((4, 5, 3, 3), ["tanh", "logistic"], output, seed=7)
    W1, W2, W3 = net.weights
    a0 = net.X
    s1 = a0 @ W1[:, :-1].T + W1[:, -1]
    a1 = np.tanh(s1)
    s2 = a1 @ W2[:, :-1].T + W2[:, -1]
    a2 = scipy.special.expit(s2)
    s3 = a2 @ W3[:, :-1].T + W3[:, -1]
    fwd = net.mlp.forward(net.weights, net.X)
    for got, want in zip(fwd.s, [s1, s2, s3], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    for got, a in zip(fwd.abar, [a0, a1, a2], strict=True):
        np.testing.assert_allclose(
            got, np.hstack([a, np.ones((a.shape[0], 1))]), rtol=1e-13, atol=1e-14
        )
    np.testing.assert_allclose(fwd.dphi[0], 1 - a1**2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fwd.dphi[1], a2 * (1 - a2), rtol=1e-12, atol=1e-14)
    Y = net.Y
    if output == "bernoulli":
        p = scipy.special.expit(s3)
        per_case = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(axis=1)
    elif output == "gaussian":
        per_case = 0.5 * ((Y - s3) ** 2).sum(axis=1)
    else:
        per_case = -(Y * scipy.special.log_softmax(s3, axis=1)).sum(axis=1)
    assert float(net.mlp.loss(net.weights, net.X, Y)) == pytest.approx(per_case.mean(), rel=1e-13)
    np.testing.assert_allclose(
        net.mlp.network_output(net.weights, net.X), s3, rtol=1e-13, atol=1e-14
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_network_output_is_the_forward_pass_output_bit_for_bit(make_net, dtype):
    """The memory-light pass (h(θ + δ), evaluations) gives exactly the cached pass's s_ℓ, so
    using it changes no number; it keeps no per-layer activities."""
    net = make_net((6, 5, 4, 5, 6), ["logistic", "linear", "tanh"], "bernoulli", seed=2)
    W = [w.astype(dtype) for w in net.weights]
    X = net.X.astype(dtype)
    out = net.mlp.network_output(W, X)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, net.mlp.forward(W, X).output)
    Y = net.Y.astype(dtype)
    assert net.mlp.loss(W, X, Y, 1e-3) == net.mlp.objective_from_output(
        W, net.mlp.forward(W, X).output, Y, 1e-3
    )


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_derivative_matches_finite_differences(name):
    act = get_activation(name)
    s = np.linspace(-4, 4, 41) + 0.013  # no point at the relu kink
    a = act.forward(s)
    fd = (act.forward(s + 1e-6) - act.forward(s - 1e-6)) / 2e-6
    np.testing.assert_allclose(act.derivative(s, a), fd, rtol=1e-8, atol=1e-9)


def test_logistic_is_stable_for_large_inputs():
    act = get_activation("logistic")
    s = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    a = act.forward(s)
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, scipy.special.expit(s), rtol=1e-15, atol=0)


def test_backward_returns_per_case_Ds(make_net, oracle):
    """g[k][c] = ∂L_c/∂s_{k+1} for one case c, by finite differences of s (§2.1)."""
    net = make_net((3, 4, 5, 2), "tanh", "softmax", seed=11, n=5)
    mlp, W = net.mlp, net.weights
    fwd = mlp.forward(W, net.X)
    g = mlp.backward(W, fwd, mlp.output.ds(fwd.output, net.Y))
    # perturb s_1 of case c by adding δ to the bias of W_1 restricted to case c: do it by hand
    c, k = 2, 0
    act = mlp.activations

    def loss_from_s1(s1_c):
        a = np.hstack([act[0].forward(s1_c), [1.0]])
        s2 = W[1] @ a
        a2 = np.hstack([act[1].forward(s2), [1.0]])
        s3 = W[2] @ a2
        return float(mlp.output.loss(s3[None, :], net.Y[c : c + 1])[0])

    fd = oracle.fd_gradient(loss_from_s1, fwd.s[k][c].copy())
    np.testing.assert_allclose(g[k][c], fd, rtol=1e-7, atol=1e-10)


def test_jvp_matches_finite_differences(make_net, oracle):
    """MLP.jvp: J v = R s_ℓ against a central difference of the output along v."""
    net = make_net((4, 3, 5, 2), ["logistic", "tanh"], "bernoulli", seed=5)
    v = np.random.default_rng(0).standard_normal(net.theta.size)
    V = net.weights_of(v)
    fwd = net.mlp.forward(net.weights, net.X)
    got = net.mlp.jvp(net.weights, fwd, V)
    np.testing.assert_allclose(got, oracle.fd_output_jvp(net, v), rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------ initialization (§13)
def test_sparse_initialization_without_replacement():
    mlp = MLP((30, 20, 4), "logistic", "bernoulli")
    weights = mlp.init_sparse(seed=1, replace=False)
    for W, (d_out, d_in1) in zip(weights, mlp.shapes, strict=True):
        assert W.shape == (d_out, d_in1)
        assert (W[:, -1] == 0).all(), "biases start at zero"
        nnz = (W[:, :-1] != 0).sum(axis=1)
        assert (nnz == min(15, d_in1 - 1)).all()
    np.testing.assert_array_equal(weights[0], mlp.init_sparse(seed=1, replace=False)[0])


def test_sparse_initialization_with_replacement_as_the_code():
    """15 indices drawn with replacement ([code]): E[distinct of d] = d (1 − (1 − 1/d)^15)."""
    mlp = MLP((25, 2000, 6, 2000), ["logistic", "linear"], "bernoulli")
    weights = mlp.init_sparse(seed=3)  # the default follows the released code
    for W, d, expected in zip(weights[::2], (25, 6), (11.45, 5.61), strict=True):
        nnz = (W[:, :-1] != 0).sum(axis=1)
        assert (W[:, -1] == 0).all() and (nnz <= min(15, d)).all()
        exact = d * (1 - (1 - 1 / d) ** 15)
        assert abs(exact - expected) < 0.01
        # 2000 units: the mean count's standard error is below 0.04
        assert abs(nnz.mean() - exact) < 5 * nnz.std() / np.sqrt(len(nnz))
    np.testing.assert_array_equal(weights[1], mlp.init_sparse(seed=3)[1])
    assert not np.array_equal(weights[0], mlp.init_sparse(seed=3, replace=False)[0])


def test_gaussian_initialization_scale():
    mlp = MLP((400, 300, 2), "tanh", "gaussian")
    W1 = mlp.init_gaussian(seed=0, scale=2.0)[0]
    # entries N(0, 4/400): the sample std of 120 300 entries is within 1 % of 0.1
    assert W1.std() == pytest.approx(0.1, rel=0.01)


# ------------------------------------------------------------------ the vec convention
def test_vec_conventions():
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(3), rng.standard_normal(4)
    np.testing.assert_allclose(vec(np.outer(u, v)), np.kron(v, u), rtol=1e-15)
    A, B, X = rng.standard_normal((4, 4)), rng.standard_normal((3, 3)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(np.kron(A, B) @ vec(X), vec(B @ X @ A.T), rtol=1e-12)
    np.testing.assert_array_equal(unvec(vec(X), X.shape), X)
    np.testing.assert_array_equal(vec(X), X.flatten(order="F"))


def test_theta_roundtrip_and_offsets():
    mlp = MLP((3, 5, 2), "tanh", "softmax")
    W = mlp.init_gaussian(seed=2)
    theta = weights_to_theta(W)
    assert theta.shape == (mlp.n_params,) == (5 * 4 + 2 * 6,)
    assert layer_offsets(mlp.shapes) == [0, 20, 32]
    np.testing.assert_array_equal(theta[:20], W[0].flatten(order="F"))
    for got, want in zip(theta_to_weights(theta, mlp.shapes), W, strict=True):
        np.testing.assert_array_equal(got, want)


def test_per_case_vec_grad_is_vec_of_outer_product():
    rng = np.random.default_rng(1)
    abar, g = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    got = per_case_vec_grad(abar, g)
    want = np.stack([vec(np.outer(g[c], abar[c])) for c in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-15)
    np.testing.assert_allclose(
        got, np.stack([np.kron(abar[c], g[c]) for c in range(6)]), rtol=1e-15
    )
