# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Notation and the network (§2 of Martens & Grosse, 2015)
#
# This notebook walks through §2.1 of *Optimizing Neural Networks with Kronecker-factored
# Approximate Curvature* (arXiv:1503.05671) with `kfac_ref`: the forward pass, the backward pass
# written in the paper's symbols, the `vec` convention every later formula depends on, and a
# finite-difference check that the hand-written backward pass computes the gradient.
#
# Everything is float64 and seeded; it runs in a few seconds on a CPU.

# %%
import matplotlib.pyplot as plt
import numpy as np

from kfac_ref.mlp import MLP
from kfac_ref.vec import (
    layer_offsets,
    per_case_vec_grad,
    theta_to_weights,
    unvec,
    vec,
    weights_to_theta,
)

rng = np.random.default_rng(0)

# %% [markdown]
# ## The network
#
# A network with $\ell$ layers maps an input $x = a_0$ to an output through, for
# $i = 1, \dots, \ell$,
#
# $$
# \bar a_{i-1} = \begin{bmatrix} a_{i-1} \\ 1 \end{bmatrix}, \qquad
# s_i = W_i \bar a_{i-1}, \qquad a_i = \phi_i(s_i).
# $$
#
# The appended 1 (the *homogeneous coordinate*) puts the bias in the last column of
# $W_i \in \mathbb{R}^{d_i \times (d_{i-1}+1)}$, so a layer has one weight matrix and nothing
# else. The loss of a case is $L(y, z) = -\log r(y \mid z)$ for a predictive distribution
# $r$; `kfac_ref` always parametrizes $r$ by $z = s_\ell$, its natural parameter (softmax
# outputs with cross-entropy here), so that $\mathcal{D}s_\ell = \text{prediction} - y$.
#
# Below: a 4-5-3-2 network (three weight layers) with tanh hidden units and a softmax output.

# %%
mlp = MLP([4, 5, 3, 2], "tanh", "softmax")
weights = mlp.init_gaussian(seed=1)
n = 8
X = rng.standard_normal((n, 4))
Y = np.eye(2)[rng.integers(0, 2, size=n)]  # one-hot targets

print(mlp)
for i, W in enumerate(weights, start=1):
    print(f"W_{i}: shape {W.shape} = (d_{i}, d_{i - 1}+1)")

# %% [markdown]
# `mlp.forward` returns every $\bar a_{i-1}$ and $s_i$ for the batch. Python lists are 0-based:
# `fwd.abar[k]` is $\bar a_k$ and `fwd.s[k]` is $s_{k+1}$ (see `kfac_ref/vec.py`). Batches are
# row-major: each case is a row. Let us recompute the forward pass by hand.

# %%
fwd = mlp.forward(weights, X)
a = X
for k, W in enumerate(weights):
    abar = np.hstack([a, np.ones((n, 1))])  # ā_k = [a_k; 1]
    s = abar @ W.T  # s_{k+1} = W_{k+1} ā_k, one row per case
    assert np.allclose(abar, fwd.abar[k]) and np.allclose(s, fwd.s[k])
    a = np.tanh(s) if k < mlp.n_layers - 1 else None
print(
    "forward pass reproduced; last column of every ā is 1:",
    all(np.all(ab[:, -1] == 1) for ab in fwd.abar),
)

# %% [markdown]
# ## The backward pass in the paper's symbols
#
# Write $\mathcal{D}v = \partial L / \partial v$ for one case. The paper's backward pass is
#
# $$
# g_\ell = \mathcal{D}s_\ell = \frac{\partial L}{\partial s_\ell}, \qquad
# \mathcal{D}a_{i-1} = W_i^\top g_i \ \text{(bias row dropped)}, \qquad
# g_{i-1} = \mathcal{D}a_{i-1} \odot \phi_{i-1}'(s_{i-1}), \qquad
# \mathcal{D}W_i = g_i \bar a_{i-1}^\top .
# $$
#
# For the softmax/cross-entropy pair, $g_\ell = p - y$ with $p = \operatorname{softmax}(s_\ell)$.
# The gradient of the objective $h(\theta)$ (the mean of $L$ over the cases) is the mean of
# $\mathcal{D}W_i$ over the cases.

# %%
p = np.exp(fwd.s[-1]) / np.exp(fwd.s[-1]).sum(axis=1, keepdims=True)
g = [None] * mlp.n_layers
g[-1] = p - Y  # g_ℓ = Ds_ℓ
for k in range(mlp.n_layers - 1, 0, -1):
    Da = g[k] @ weights[k][:, :-1]  # W_{k+1}ᵀ g_{k+1}, without the bias column of W
    g[k - 1] = Da * (1 - np.tanh(fwd.s[k - 1]) ** 2)  # ⊙ φ'(s_k) for tanh
g_lib = mlp.backward(weights, fwd, mlp.output.ds(fwd.output, Y))
assert all(np.allclose(a_, b_) for a_, b_ in zip(g, g_lib, strict=True))

DW = [g_k.T @ abar_k / n for g_k, abar_k in zip(g, fwd.abar, strict=True)]  # mean of g ā^T
h, grads, _ = mlp.loss_and_grad(weights, X, Y)
assert all(np.allclose(a_, b_) for a_, b_ in zip(DW, grads, strict=True))
print(f"h(θ) = {float(h):.6f}; hand-written g_i and DW_i match kfac_ref.mlp")

# %% [markdown]
# ## The `vec` convention
#
# The parameter vector stacks the columns of each $W_i$:
# $\theta = [\operatorname{vec}(W_1); \dots; \operatorname{vec}(W_\ell)]$. With column
# stacking two identities hold that the whole paper leans on:
#
# $$
# \operatorname{vec}(u v^\top) = v \otimes u, \qquad (A \otimes B)\operatorname{vec}(X) =
# \operatorname{vec}(B X A^\top).
# $$
#
# The first gives the per-case gradient of a layer as a Kronecker product,
# $\operatorname{vec}(\mathcal{D}W_i) = \bar a_{i-1} \otimes g_i$, which is where §3's Kronecker
# factors come from. Both are checked numerically here.

# %%
u, v = rng.standard_normal(3), rng.standard_normal(4)
assert np.allclose(vec(np.outer(u, v)), np.kron(v, u))

A, B, Xm = rng.standard_normal((4, 4)), rng.standard_normal((3, 3)), rng.standard_normal((3, 4))
assert np.allclose(np.kron(A, B) @ vec(Xm), vec(B @ Xm @ A.T))
assert np.allclose(unvec(vec(Xm), Xm.shape), Xm)

# per case: vec(DW_i) = ā_{i-1} ⊗ g_i
for k in range(mlp.n_layers):
    per_case = per_case_vec_grad(fwd.abar[k], g[k])  # (n, (d_k+1)·d_{k+1})
    assert np.allclose(per_case[0], np.kron(fwd.abar[k][0], g[k][0]))
    assert np.allclose(per_case.mean(axis=0), vec(DW[k]))

theta = weights_to_theta(weights)
print("θ has", theta.size, "entries; layer blocks start at", layer_offsets(mlp.shapes))

# %% [markdown]
# ## Finite-difference check of the gradient
#
# The backward pass is hand-written, so we test it against central differences of the
# objective: for each coordinate $j$ of $\theta$,
# $\big(h(\theta + \epsilon e_j) - h(\theta - \epsilon e_j)\big) / 2\epsilon$ with
# $\epsilon = 10^{-6}$, including the $\ell_2$ term $\tfrac{\eta}{2}\|\theta\|^2$ of the paper's
# objective. The truncation error is $O(\epsilon^2)$ and the rounding error about
# $10^{-16}/\epsilon$, so agreement to about $10^{-8}$ is expected.

# %%
eta = 1e-3


def h_of(theta_vec: np.ndarray) -> float:
    return float(mlp.loss(theta_to_weights(theta_vec, mlp.shapes), X, Y, eta))


_, grads_eta, _ = mlp.loss_and_grad(weights, X, Y, eta)
analytic = weights_to_theta(grads_eta)
eps = 1e-6
numeric = np.array(
    [(h_of(theta + eps * e) - h_of(theta - eps * e)) / (2 * eps) for e in np.eye(theta.size)]
)
max_err = np.abs(analytic - numeric).max() / np.abs(analytic).max()
print(f"max |analytic − finite difference| / max |gradient| = {max_err:.2e}")
assert max_err < 1e-7

# %%
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.scatter(numeric, analytic, s=12)
lim = np.abs(numeric).max() * 1.1
ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
ax.set_xlabel("finite difference")
ax.set_ylabel("backward pass (kfac_ref.mlp)")
ax.set_title(f"∂h/∂θ_j, all {theta.size} coordinates")
plt.show()

# %% [markdown]
# Every coordinate lies on the diagonal. The next notebook uses these per-case gradients
# $\bar a_{i-1} \otimes g_i$ to build the Fisher matrix and its Kronecker-factored
# approximation.
