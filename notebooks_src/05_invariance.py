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
# # 5. Invariance under affine re-parametrizations (§10)
#
# Gradient descent depends on how a network is parametrized: centre the inputs, rescale a
# layer's units, or mix them linearly, and the same function gets a different gradient step.
# The exact natural gradient $F^{-1}\nabla h$ does not change under any invertible linear
# re-parametrization of θ (and under smooth ones to first order): it is defined by the
# network's function and output distribution, not by its coordinates. §10 of the paper proves that
# K-FAC keeps a large part
# of this property: with no factored damping (γ = 0) and exact factors, the block-diagonal and
# the block-tridiagonal updates are **invariant to any invertible affine transformation of the
# activities** $\bar a_i$ and of the pre-activations $s_i$. Centering the activities — a trick
# that often helps gradient descent — is one such transformation, so K-FAC gets its benefit for
# free.
#
# This notebook builds the transformed network with `kfac_ref.reparam`, takes one step in both
# parametrizations, and compares the two resulting networks *as functions*. It also shows what
# breaks the invariance in practice: factored Tikhonov damping γ > 0 and the λ of the
# quadratic model. Everything is float64 and seeded; it runs in about a second.

# %%
import matplotlib.pyplot as plt
import numpy as np

from kfac_ref.backend import get_backend
from kfac_ref.compare import damped_diagonal
from kfac_ref.config import KFACConfig
from kfac_ref.factors import kronecker_factors
from kfac_ref.inverse import (
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.mlp import MLP
from kfac_ref.optimizer import KFAC
from kfac_ref.reparam import (
    ReparametrizedMLP,
    affine_omega,
    centering_omegas,
    transform_factors,
    transform_gradients,
    transform_weights,
    untransform_weights,
)

rng = np.random.default_rng(0)

# %% [markdown]
# ## A small network
#
# Four layers, 8-8-6-6-3, tanh hidden units and Bernoulli outputs; 128 inputs whose mean is
# far from zero (so that centering changes something) and targets drawn from a random
# "teacher" network. The theorem needs invertible factors (γ = 0), and how well it holds in
# floating point depends on their conditioning, printed below.

# %%
mlp = MLP([8, 8, 6, 6, 3], "tanh", "bernoulli")
X = 0.5 + rng.standard_normal((128, 8))
teacher = mlp.init_gaussian(seed=1, scale=2.0)
Y = (rng.random((128, 3)) < mlp.output.predict(mlp.forward(teacher, X).output)).astype(float)
W = mlp.init_gaussian(seed=0, scale=1.5)
L = mlp.n_layers

factors = kronecker_factors(mlp, W, X, method="exact")
for k in range(L):
    print(
        f"layer {k + 1}: cond(Ā_{k},{k}) = {np.linalg.cond(factors.A_bar[k][k]):8.1f}, "
        f"cond(G_{k + 1},{k + 1}) = {np.linalg.cond(factors.G[k][k]):6.1f}"
    )

# %% [markdown]
# ## The transformed network
#
# Pick invertible matrices $\Omega_{i}$ for the homogeneous activities and $\Phi_i$ for the
# pre-activations of the hidden layers, and let the transformed network compute with
#
# $$
# \bar a^\dagger_i = \Omega_i \bar a_i, \qquad s^\dagger_i = \Phi_i s_i, \qquad
# W^\dagger_i = \Phi_i W_i \Omega_{i-1}^{-1},
# $$
#
# so that $s^\dagger_i = W^\dagger_i \bar a^\dagger_{i-1}$ and each unit is
# $\bar a^\dagger_i = \Omega_i \bar\phi_i(\Phi_i^{-1} s^\dagger_i)$. $\Omega_i = \begin{bmatrix}
# M_i & c_i \\ 0 & 1\end{bmatrix}$ maps $a_i \mapsto M_i a_i + c_i$ and keeps the homogeneous 1,
# so it is a general affine map of the activities; $\Phi_\ell = I$, because the loss reads the
# output $s_\ell$ directly. With $W^\dagger = \Phi W \Omega^{-1}$ the transformed network
# computes exactly the same function, only in other coordinates. Two examples:
#
# * **centering**: $M_i = I$, $c_i = -\mathbb{E}[a_i]$ (the batch mean), $\Phi_i = I$;
# * **general**: random well-conditioned $M_i$, $c_i$ and $\Phi_i$ (singular values in
#   [0.5, 1.5]).
#
# `ReparametrizedMLP` *is* the transformed network: an `MLP` whose parameters are the $W^\dagger$
# and whose forward and backward passes run in the new coordinates. Every K-FAC routine of the
# package therefore applies to it unchanged — nothing below maps K-FAC quantities by formula.


# %%
def well_conditioned(d, gen):
    """I + R with ‖R‖₂ = 1/2: singular values in [0.5, 1.5]."""
    R = gen.standard_normal((d, d))
    return np.eye(d) + 0.5 * R / np.linalg.norm(R, 2)


gen = np.random.default_rng(5)
d = mlp.layer_sizes
transforms = {
    "centering": (centering_omegas(mlp, W, X), None),
    "general affine": (
        [affine_omega(well_conditioned(d[k], gen), gen.standard_normal(d[k])) for k in range(L)],
        [well_conditioned(d[k], gen) for k in range(1, L)],
    ),
}
out = mlp.forward(W, X).output
for name, (omegas, phis) in transforms.items():
    rmlp = ReparametrizedMLP(mlp, omegas, phis)
    fwd = rmlp.forward(transform_weights(W, omegas, phis), X)
    same = np.abs(fwd.output - out).max()
    print(f"{name:15s}: max |output difference| = {same:.1e}")
    assert same < 1e-13

centered = ReparametrizedMLP(mlp, *transforms["centering"]).forward(
    transform_weights(W, *transforms["centering"]), X
)
assert all(np.abs(a[:, :-1].mean(axis=0)).max() < 1e-14 for a in centered.abar)
print("centering: every layer's input has zero mean on the batch")

# %% [markdown]
# ## Why the K-FAC update transforms like the weights
#
# By the chain rule the per-case quantities of the transformed network are
# $g^\dagger_i = \Phi_i^{-\top} g_i$ and $\mathcal{D}W^\dagger_i = \Phi_i^{-\top}
# \mathcal{D}W_i \Omega_{i-1}^\top$, so its Kronecker factors are congruent to the old ones,
#
# $$
# \bar A^\dagger_{i,j} = \Omega_i \bar A_{i,j} \Omega_j^\top, \qquad
# G^\dagger_{i,j} = \Phi_i^{-\top} G_{i,j} \Phi_j^{-1}.
# $$
#
# The block-diagonal update of layer $i$ is then
#
# $$
# U^\dagger_i = (G^\dagger_{i,i})^{-1}\, \nabla_{W^\dagger_i} h\, (\bar A^\dagger_{i-1,i-1})^{-1}
# = \Phi_i G_{i,i}^{-1} \Phi_i^{\top} \cdot \Phi_i^{-\top} \nabla_{W_i} h\, \Omega_{i-1}^\top
#   \cdot \Omega_{i-1}^{-\top} \bar A_{i-1,i-1}^{-1} \Omega_{i-1}^{-1}
# = \Phi_i\, U_i\, \Omega_{i-1}^{-1},
# $$
#
# **the same map as the weights**: $W^\dagger - \varepsilon U^\dagger = \Phi (W - \varepsilon U)
# \Omega^{-1}$, so after the step both parametrizations still compute the same function. For
# $\hat F$ the same cancellations go through $\Psi$ and $\Sigma$ (§10 of the paper). The
# gradient, in contrast, transforms with $\Phi^{-\top}$ and $\Omega^{\top}$ — the *wrong* way
# unless Φ and Ω are orthogonal. First the factors and gradients, computed from the transformed
# network's own passes:

# %%
omegas, phis = transforms["general affine"]
rmlp = ReparametrizedMLP(mlp, omegas, phis)
W_dag = transform_weights(W, omegas, phis)
factors_dag = kronecker_factors(rmlp, W_dag, X, method="exact")
mapped = transform_factors(factors, omegas, phis)
err_A = max(
    np.abs(factors_dag.A_bar[k][l] - mapped.A_bar[k][l]).max() for k in range(L) for l in range(L)
)
err_G = max(np.abs(factors_dag.G[k][l] - mapped.G[k][l]).max() for k in range(L) for l in range(L))
_, grads, _ = mlp.loss_and_grad(W, X, Y)
_, grads_dag, _ = rmlp.loss_and_grad(W_dag, X, Y)
err_g = max(
    np.abs(a - b).max()
    for a, b in zip(grads_dag, transform_gradients(grads, omegas, phis), strict=True)
)
print(f"Ā† vs Ω Ā Ωᵀ: {err_A:.1e};  G† vs Φ⁻ᵀ G Φ⁻¹: {err_G:.1e};  ∇h† vs Φ⁻ᵀ ∇h Ωᵀ: {err_g:.1e}")
assert max(err_A, err_G, err_g) < 1e-12

# %% [markdown]
# Now the updates themselves, $U = \breve F^{-1} \nabla h$ or $\hat F^{-1} \nabla h$ from exact
# factors and γ = 0, for the original and the transformed network. `transform_weights` applied
# to $U$ is exactly $\Phi U \Omega^{-1}$.


# %%
def kfac_update(net, weights, structure, gamma=0.0):
    """U = F̆⁻¹∇h (block_diagonal) or F̂⁻¹∇h (block_tridiagonal), exact factors, damping γ (§4,
    §6.3)."""
    f = kronecker_factors(net, weights, X, method="exact")
    _, g, _ = net.loss_and_grad(weights, X, Y)
    A_diag, G_diag = damped_diagonal(f, gamma)
    if structure == "block_diagonal":
        return apply_block_diagonal_inverse(block_diagonal_inverse(A_diag, G_diag), g)
    A_off, G_off = f.off_diagonal()
    return apply_block_tridiagonal_inverse(
        block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off), g
    )


def gradient(net, weights, structure=None, gamma=None):
    """U = ∇h: the update direction of gradient descent."""
    return net.loss_and_grad(weights, X, Y)[1]


for structure in ("block_diagonal", "block_tridiagonal"):
    U, U_dag = kfac_update(mlp, W, structure), kfac_update(rmlp, W_dag, structure)
    rel = max(
        np.abs(a - b).max() / np.abs(b).max()
        for a, b in zip(U_dag, transform_weights(U, omegas, phis), strict=True)
    )
    print(f"{structure:17s}: U† = Φ U Ω⁻¹ up to a relative {rel:.1e}")
    assert rel < 1e-9
U, U_dag = gradient(mlp, W), gradient(rmlp, W_dag)
rel = max(
    np.abs(a - b).max() / np.abs(b).max()
    for a, b in zip(U_dag, transform_weights(U, omegas, phis), strict=True)
)
print(f"{'gradient':17s}: U† differs from Φ U Ω⁻¹ by a relative {rel:.2f}")
assert rel > 0.1

# %% [markdown]
# ## The theorem: one step, two parametrizations, one function
#
# Take the step $W \leftarrow W - \varepsilon U$ with ε = 0.1 in each parametrization, map the
# transformed weights back with `untransform_weights`, and compare the outputs of the two
# networks on the batch. "change" is how far the step moved the outputs, for scale.

# %%
EPS = 0.1
methods = {
    "K-FAC F̆ (γ = 0)": lambda net, Wt: kfac_update(net, Wt, "block_diagonal"),
    "K-FAC F̂ (γ = 0)": lambda net, Wt: kfac_update(net, Wt, "block_tridiagonal"),
    "gradient descent": gradient,
}


def step_gap(update, omegas, phis):
    """(max |output difference| after one step in each parametrization, max |output change|)."""
    rnet = ReparametrizedMLP(mlp, omegas, phis)
    Wt = transform_weights(W, omegas, phis)
    W_new = [w - EPS * u for w, u in zip(W, update(mlp, W), strict=True)]
    Wt_new = [w - EPS * u for w, u in zip(Wt, update(rnet, Wt), strict=True)]
    new = mlp.forward(W_new, X).output
    new_back = mlp.forward(untransform_weights(Wt_new, omegas, phis), X).output
    return np.abs(new - new_back).max(), np.abs(new - out).max()


gaps = {}
for tname, (om, ph) in transforms.items():
    for mname, update in methods.items():
        gaps[tname, mname] = step_gap(update, om, ph)
        print(
            f"{tname:15s} {mname:17s}: max |Δoutput| = {gaps[tname, mname][0]:.1e}   (change "
            f"{gaps[tname, mname][1]:.2f})"
        )

# %%
for tname in transforms:
    for mname in ("K-FAC F̆ (γ = 0)", "K-FAC F̂ (γ = 0)"):
        gap, change = gaps[tname, mname]
        assert change > 0.5 and gap < 1e-9, (tname, mname)
    gap, change = gaps[tname, "gradient descent"]
    assert gap > 0.1 * change > 0.01, tname

# %% [markdown]
# Both K-FAC updates give the same function to within round-off (~1e-13 for F̆; a little more
# for F̂, whose Appendix-B inverses divide by the factors $1 - s_1 s_2$, here as small as 0.03),
# while gradient descent's two steps land on visibly different functions.
#
# Gradient descent is invariant to the *orthogonal* part of this group: with
# $\Omega_i = \operatorname{diag}(Q_i, 1)$ and $\Phi_i$ orthogonal, $\Phi^{-\top} = \Phi$ and
# $\Omega^\top = \Omega^{-1}$, so the gradient transforms like the weights after all.


# %%
def orthogonal(dim, gen):
    return np.linalg.qr(gen.standard_normal((dim, dim)))[0]


rotations = (
    [affine_omega(orthogonal(d[k], gen), np.zeros(d[k])) for k in range(L)],
    [orthogonal(d[k], gen) for k in range(1, L)],
)
gap, change = step_gap(gradient, *rotations)
print(f"gradient descent, rotations of the units: max |Δoutput| = {gap:.1e} (change {change:.2f})")
assert gap < 1e-12

# %% [markdown]
# ## Factored Tikhonov damping breaks the invariance (a little)
#
# The theorem needs γ = 0. The damping of §6.3 adds multiples of the identity to the factors,
# and the transformed network damps *its own* factors: it inverts
# $\bar A^\dagger + \pi^\dagger\gamma I$, whereas the image of the original damped factor is
# $\Omega(\bar A + \pi\gamma I)\Omega^\top = \bar A^\dagger + \pi\gamma\,\Omega\Omega^\top$ (and
# likewise for $G$ with $\Phi^{-\top}\Phi^{-1}$). The two agree only when the transformation is
# orthogonal; a shear like centering is not, so even centering is no longer free. The gap grows
# in proportion to γ as long as γ is small next to the factors' smallest eigenvalues:

# %%
gammas = np.logspace(-9, -1, 9)
gap_gamma = {}
for structure in ("block_diagonal", "block_tridiagonal"):
    gap_gamma[structure] = np.array(
        [
            step_gap(lambda net, Wt, g=g: kfac_update(net, Wt, structure, g), omegas, phis)[0]  # noqa: B023
            for g in gammas
        ]
    )
fig, ax = plt.subplots(figsize=(4.5, 3.2), layout="constrained")
for structure, label in (("block_diagonal", "K-FAC F̆"), ("block_tridiagonal", "K-FAC F̂")):
    ax.loglog(gammas, gap_gamma[structure], "o-", label=label)
ax.set_xlabel("factored Tikhonov damping γ")
ax.set_ylabel("max |Δoutput| after one step")
ax.set_title("general affine re-parametrization", fontsize=9)
ax.legend(fontsize=8)
plt.show()
for structure, g in gap_gamma.items():
    slope = np.polyfit(np.log10(gammas[:5]), np.log10(g[:5]), 1)[0]
    print(
        f"{structure:17s}: gap at γ = 1e-9: {g[0]:.1e}, at γ = 1e-1: {g[-1]:.2f}; log-log slope "
        f"for small γ {slope:.2f}"
    )
    assert abs(slope - 1) < 0.1 and g[-1] > 1e-2

# %% [markdown]
# The gap saturates once γ is comparable to the factors' smallest eigenvalues. γ in K-FAC
# starts at √150 and was still near 0.6 after 150 iterations of notebook 4, so in practice the
# invariance is approximate. How approximate, at γ = 0.1, next to the step's own size and to
# gradient descent:

# %%
ratios = {}
for tname, (om, ph) in transforms.items():
    for mname, update in (
        ("K-FAC F̆, γ = 0.1", lambda net, Wt: kfac_update(net, Wt, "block_diagonal", 0.1)),
        ("K-FAC F̂, γ = 0.1", lambda net, Wt: kfac_update(net, Wt, "block_tridiagonal", 0.1)),
    ):
        gap, change = step_gap(update, om, ph)
        ratios[tname, mname] = gap / change
        print(
            f"{tname:15s} {mname:17s}: max |Δoutput| = {gap:.3f}, change {change:.2f}, ratio "
            f"{gap / change:.2f}"
        )
    gap, change = gaps[tname, "gradient descent"]
    ratios[tname, "gradient descent"] = gap / change
    print(
        f"{tname:15s} {'gradient descent':17s}: max |Δoutput| = {gap:.3f}, change {change:.2f}, "
        f"ratio {gap / change:.2f}"
    )
    assert (
        max(ratios[tname, m] for m in ("K-FAC F̆, γ = 0.1", "K-FAC F̂, γ = 0.1"))
        < ratios[tname, "gradient descent"]
    )

# %% [markdown]
# The damped K-FAC steps disagree by a fraction of their own size, gradient descent's by a
# multiple of it (general transform) or a large fraction (centering). It is the idealized,
# undamped update that is exactly invariant; the paper offers the theorem as an explanation of
# K-FAC's robustness to the parametrization, not as a property of every practical step.
#
# ## The whole optimizer step
#
# `KFAC.step` adds more than γ: the update is re-scaled by α and μ from the quadratic model
# $M(\delta) = \frac12 \delta^\top(F + (\lambda+\eta)I)\delta + \nabla h^\top\delta$ (§7).
# $\delta^\top F \delta$ and $\nabla h^\top \delta$ are coordinate-free, but $\|\delta\|^2$
# (the λ term) and the ℓ2 cost η‖θ‖² are not. Run three steps of the full optimizer in both
# parametrizations — η = 0, exact statistics (`stats_method="exact"`) on the whole batch
# (τ1 = τ2 = 1), and equal, small λ0 = γ0. Once the damping is small, the remaining gap shrinks
# in proportion to it:

# %%
backend = get_backend("numpy", "float64")
full_gap = {}
for damping in (1e-2, 1e-4, 1e-6, 1e-8):
    cfg = KFACConfig(
        structure="block_tridiagonal",
        eta=0.0,
        lam0=damping,
        gamma0=damping,
        gamma_min=0.0,
        tau1=1.0,
        tau2=1.0,
        stats_method="exact",
    )
    opt, opt_dag = KFAC(mlp, cfg, backend), KFAC(rmlp, cfg, backend)
    Wa, Wb = W, W_dag
    sa, sb = opt.init_state(Wa), opt_dag.init_state(Wb)
    for k in range(1, 4):
        Wa, sa, info = opt.step(Wa, sa, X, Y, np.random.default_rng(k))
        Wb, sb, info_dag = opt_dag.step(Wb, sb, X, Y, np.random.default_rng(k))
    full_gap[damping] = np.abs(mlp.forward(Wa, X).output - rmlp.forward(Wb, X).output).max()
    print(
        f"λ0 = γ0 = {damping:.0e}: max |Δoutput| after 3 steps = {full_gap[damping]:.1e}; "
        f"α = {info['alpha']:.6f} vs {info_dag['alpha']:.6f}, μ = {info['mu']:.6f} vs "
        f"{info_dag['mu']:.6f}"
    )
assert 50 < full_gap[1e-6] / full_gap[1e-8] < 200 and full_gap[1e-8] < 1e-3 and full_gap[1e-2] > 0.1

# %% [markdown]
# As λ and γ shrink, α, μ and the whole step converge to their coordinate-free values, the gap
# falling a hundredfold per hundredfold less damping. The package's optimizer thus behaves as
# the theorem says when its damping is negligible, and departs from it more and more as the
# damping it needs for stability grows.
