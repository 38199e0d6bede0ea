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
# # 2. The Fisher and its Kronecker-factored approximation (§2.2 and §3)
#
# K-FAC's first approximation replaces each layer-pair block of the Fisher, an expectation of a
# Kronecker product, by the Kronecker product of two expectations. This notebook computes both
# sides exactly on small networks with `kfac_ref`, shows where the approximation is exact and
# where it is not, draws small versions of the paper's Figures 2 and 3, and reports per-block
# errors. The full-size figures (the paper's 256-20-20-20-20-20-10 network) are made by
# `paper_figures/fisher_blocks.py`.

# %%
import matplotlib.pyplot as plt
import numpy as np

from kfac_ref.compare import (
    approximate_fisher,
    block_mean_abs,
    block_relative_errors,
    compare_fisher,
    relative_error,
)
from kfac_ref.factors import exact_G_passes, kronecker_factors
from kfac_ref.fisher import empirical_fisher, exact_fisher, monte_carlo_fisher, per_case_gradients
from kfac_ref.mlp import MLP
from kfac_ref.vec import layer_offsets, per_case_vec_grad

rng = np.random.default_rng(0)

# %% [markdown]
# ## The Fisher: targets from the model, not from the data
#
# The Fisher of §2.2 is
#
# $$
# F = \mathbb{E}_{x}\, \mathbb{E}_{y \sim P(y \mid x, \theta)}\big[\mathcal{D}\theta\,
# \mathcal{D}\theta^\top\big],
# $$
#
# where the inner expectation is over targets **drawn from the network's own predictive
# distribution**. For the matching losses used here it equals the generalized Gauss–Newton
# matrix $\mathbb{E}_x[J^\top F_R J]$ with $J = \partial s_\ell / \partial\theta$ and $F_R$ the
# Fisher of the output distribution ($\operatorname{diag}(p) - pp^\top$ for softmax).
# `exact_fisher` computes the inner expectation exactly (by backpropagating the $d_\ell$ columns
# of a square root of $F_R$); `monte_carlo_fisher` samples targets as K-FAC does (§5). Replacing
# the samples by the training labels gives the *empirical* Fisher, a different matrix.

# %%
mlp = MLP([6, 5, 4, 3], "tanh", "softmax")
weights = mlp.init_gaussian(seed=2, scale=1.5)
n = 200
X = rng.standard_normal((n, 6))
Y = np.eye(3)[rng.integers(0, 3, size=n)]

F = exact_fisher(mlp, weights, X)
samples = [1, 4, 16, 64, 256]
mc_err = [
    relative_error(monte_carlo_fisher(mlp, weights, X, S, rng=np.random.default_rng(S)), F)
    for S in samples
]
emp_err = relative_error(empirical_fisher(mlp, weights, X, Y), F)
for S, e in zip(samples, mc_err, strict=True):
    print(f"Monte Carlo Fisher with {S:3d} target(s) per case: relative error {e:.4f}")
print(f"empirical Fisher (training labels):           relative error {emp_err:.4f}")
assert mc_err[-1] < mc_err[0] / 4  # error ∝ 1/√S

fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.loglog(samples, mc_err, "o-", label="Monte Carlo, y ~ model")
ax.loglog(samples, mc_err[0] / np.sqrt(samples), "k:", label="∝ 1/√S")
ax.axhline(emp_err, color="C3", ls="--", label="empirical Fisher")
ax.set_xlabel("targets sampled per case, S")
ax.set_ylabel("‖F_S − F‖ / ‖F‖")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## A block of F is an expectation of Kronecker products
#
# Since $\operatorname{vec}(\mathcal{D}W_i) = \bar a_{i-1} \otimes g_i$ (notebook 1), the block of
# $F$ for layers $i$ and $j$ is
#
# $$
# F_{i,j} = \mathbb{E}\big[\operatorname{vec}(\mathcal{D}W_i)
# \operatorname{vec}(\mathcal{D}W_j)^\top\big]
#         = \mathbb{E}\big[\bar a_{i-1} \bar a_{j-1}^\top \otimes g_i g_j^\top\big].
# $$
#
# We rebuild $F_{1,2}$ from the per-case Kronecker products, averaging over cases and over the
# exact backward passes that stand for the expectation over $y$.

# %%
fwd = mlp.forward(weights, X)
passes = exact_G_passes(mlp, weights, fwd)  # one backward pass per column of C, F_R = C Cᵀ
off = layer_offsets(mlp.shapes)
F12 = (
    sum(
        per_case_vec_grad(fwd.abar[0], g[0]).T @ per_case_vec_grad(fwd.abar[1], g[1])
        for g in passes
    )
    / n
)
assert np.allclose(F12, F[off[0] : off[1], off[1] : off[2]])
assert np.allclose(
    sum(per_case_gradients(mlp, fwd, g).T @ per_case_gradients(mlp, fwd, g) for g in passes) / n, F
)
print("F_{1,2} =", F12.shape, "rebuilt from E[ā_0 ā_1ᵀ ⊗ g_1 g_2ᵀ]")

# %% [markdown]
# ## The approximation F̃
#
# K-FAC assumes the expectation of the Kronecker product factorizes:
#
# $$
# F_{i,j} \approx \tilde F_{i,j} = \mathbb{E}[\bar a_{i-1} \bar a_{j-1}^\top] \otimes
# \mathbb{E}[g_i g_j^\top]
#        = \bar A_{i-1,j-1} \otimes G_{i,j}.
# $$
#
# Only the small factors $\bar A$ (from the forward pass) and $G$ (from backward passes with
# targets sampled from the model) have to be estimated. `kronecker_factors` returns all of them;
# `approximate_fisher(..., "full")` assembles the dense $\tilde F$.

# %%
factors = kronecker_factors(mlp, weights, X, method="exact")
F_tilde = approximate_fisher(mlp, weights, X, "full", factors=factors)
assert np.allclose(
    F_tilde[off[0] : off[1], off[1] : off[2]], np.kron(factors.A_bar[0][1], factors.G[0][1])
)
print(f"‖F̃ − F‖/‖F‖ = {relative_error(F_tilde, F):.4f} on this 6-5-4-3 tanh network")

# %% [markdown]
# ## Where F̃ is exact, and where it is not
#
# The difference $F_{i,j} - \tilde F_{i,j}$ is a covariance between the products
# $\bar a \bar a^\top$ and $g g^\top$ (higher-order cumulants, §3.1): it vanishes when the
# backpropagated $g$'s are statistically independent of the activities $\bar a$. With a
# unit-variance Gaussian output, $g_\ell = s_\ell - y = -\varepsilon$ with
# $\varepsilon \sim \mathcal{N}(0, I)$ whatever the input; if moreover every layer is linear,
# each $g_i$ is a fixed linear map of $\varepsilon$, so the $g$'s are independent of $x$ and
# $\tilde F = F$ **exactly** — for a single layer and for a deep linear network alike. A
# nonlinearity (through $\phi'(s_i)$) or a softmax output (through $p(x)$) makes $g$ depend on
# $x$ and the approximation inexact.


# %%
def ftilde_error(sizes, hidden, output, seed=0):
    net = MLP(sizes, hidden, output)
    w = net.init_gaussian(seed=seed, scale=1.5)
    Xc = np.random.default_rng(seed).standard_normal((300, sizes[0]))
    return relative_error(approximate_fisher(net, w, Xc, "full"), exact_fisher(net, w, Xc))


cases = {
    "one linear layer, Gaussian output": ([5, 3], [], "gaussian"),
    "deep linear net, Gaussian output": ([5, 4, 4, 3], "linear", "gaussian"),
    "one layer, softmax output": ([5, 3], [], "softmax"),
    "deep linear net, softmax output": ([5, 4, 4, 3], "linear", "softmax"),
    "tanh net, Gaussian output": ([5, 4, 4, 3], "tanh", "gaussian"),
    "tanh net, softmax output": ([5, 4, 4, 3], "tanh", "softmax"),
}
errors = {name: ftilde_error(*spec) for name, spec in cases.items()}
for name, e in errors.items():
    print(f"{name:36s} ‖F̃ − F‖/‖F‖ = {e:.2e}")
assert errors["one linear layer, Gaussian output"] < 1e-12
assert errors["deep linear net, Gaussian output"] < 1e-12
assert all(e > 1e-3 for name, e in errors.items() if "Gaussian" not in name or "tanh" in name)

# %% [markdown]
# ## Figures 2 and 3 in miniature
#
# The paper compares $|F|$ and $|\tilde F|$ for the middle four layers of a partially trained
# 256-20-20-20-20-20-10 tanh classifier (Figure 2) and shows that $\tilde F^{-1}$ is close to
# block-tridiagonal although $\tilde F$ is not (Figure 3). Here is the same picture for the
# middle four layers $W_2, \dots, W_5$ of an (untrained) 16-8-8-8-8-8-4 tanh network.
# `compare_fisher` returns the dense matrices of the whole network (with factored Tikhonov
# damping $\gamma$ on the diagonal blocks, §6.3) and per-block errors; we keep the rows and
# columns of the middle layers, i.e. the matrices of those parameters alone, and invert those.
# Absolute values are drawn: black = 0, white = a high quantile; dashed lines separate the layers.

# %%
net = MLP([16, 8, 8, 8, 8, 8, 4], "tanh", "softmax")
w = net.init_gaussian(seed=4, scale=1.5)
Xn = np.random.default_rng(4).standard_normal((500, 16))
gamma = 1e-2
cmp = compare_fisher(net, w, Xn, gamma=gamma)
whole = layer_offsets(net.shapes)
mid = slice(whole[1], whole[5])  # W_2..W_5
mid_shapes = net.shapes[1:5]
bounds = layer_offsets(mid_shapes)[1:-1]


def show(ax, M, vmax, title):
    ax.imshow(np.abs(M), cmap="gray", vmin=0, vmax=vmax)
    for b in bounds:
        ax.axhline(b - 0.5, color="tab:orange", ls="--", lw=0.6)
        ax.axvline(b - 0.5, color="tab:orange", ls="--", lw=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


F_mid = cmp.matrices["F"][mid, mid]  # the exact F (undamped) of the whole network, sliced
Ft_mid = approximate_fisher(net, w, Xn, "full")[mid, mid]
v = np.quantile(np.abs(F_mid), 0.995)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
show(axes[0], F_mid, v, "|F|")
show(axes[1], Ft_mid, v, "|F̃|")
show(axes[2], F_mid - Ft_mid, v, f"|F − F̃|  (rel. error {relative_error(Ft_mid, F_mid):.3f})")
fig.suptitle("Figure 2 in miniature (middle four layers)")
plt.show()

# %%
Ft_damped = cmp.matrices["F_tilde"][mid, mid]
inv = np.linalg.inv(Ft_damped)
means = block_mean_abs(inv, mid_shapes)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), layout="constrained")
show(axes[0], Ft_mid, np.quantile(np.abs(Ft_mid), 0.995), "|F̃|")
show(axes[1], inv, np.quantile(np.abs(inv), 0.995), f"|F̃⁻¹|  (γ = {gamma})")
axes[2].imshow(means, cmap="gray")
for (k, l), m in np.ndenumerate(means):
    axes[2].text(
        l,
        k,
        f"{m:.2g}",
        ha="center",
        va="center",
        fontsize=8,
        color="w" if m < means.max() / 2 else "k",
    )
axes[2].set_xticks(range(4), ["W_2", "W_3", "W_4", "W_5"])
axes[2].set_yticks(range(4), ["W_2", "W_3", "W_4", "W_5"])
axes[2].set_title("mean |entry| per block of F̃⁻¹", fontsize=9)
fig.suptitle("Figure 3 in miniature (middle four layers)")
plt.show()


def off_tridiagonal_ratio(m):
    k, l = np.indices(m.shape)
    far = np.abs(k - l) > 1
    return m[far].mean() / m[~far].mean()


r_F, r_inv = off_tridiagonal_ratio(block_mean_abs(Ft_mid, mid_shapes)), off_tridiagonal_ratio(means)
print(f"mean |entry| off the block tridiagonal ÷ on it: F̃ {r_F:.3f}, F̃⁻¹ {r_inv:.3f}")
assert r_inv < r_F

# %% [markdown]
# ## Per-block errors
#
# `compare_fisher` also reports $\|\tilde F_{i,j} - F_{i,j}\|_F / \|F_{i,j}\|_F$ for every pair of
# layers, here for all six layers of the network. No block is exact here; on this seeded, untrained
# network the errors are largest in the
# blocks of the first two layers and smallest towards the output layer. The table below gives the
# whole-matrix errors of the whole network; there the approximations carry the damping γ on
# their diagonal blocks and F does not, as `compare_fisher` documents.

# %%
E = cmp.block_errors["F_tilde"]
assert np.allclose(E, block_relative_errors(cmp.matrices["F_tilde"], cmp.matrices["F"], net.shapes))
fig, ax = plt.subplots(figsize=(4.2, 3.6))
im = ax.imshow(E, cmap="viridis")
for (k, l), e in np.ndenumerate(E):
    ax.text(
        l,
        k,
        f"{e:.2f}",
        ha="center",
        va="center",
        fontsize=7,
        color="w" if e < E.max() / 2 else "k",
    )
labels = [f"W_{i + 1}" for i in range(net.n_layers)]
ax.set_xticks(range(net.n_layers), labels)
ax.set_yticks(range(net.n_layers), labels)
ax.set_title("‖F̃ᵢⱼ − Fᵢⱼ‖ / ‖Fᵢⱼ‖", fontsize=9)
fig.colorbar(im, ax=ax)
plt.show()
print(cmp.table())
