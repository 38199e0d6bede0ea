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
# # 3. Approximating F̃⁻¹ (§4 and Appendix B)
#
# $\tilde F$ of notebook 2 is as large as $F$ and has no cheap inverse. §4 of the paper makes a
# second approximation, this time of the **inverse**: either keep only the diagonal blocks
# ($\breve F$, §4.2) or assume that $\tilde F^{-1}$ is block-tridiagonal ($\hat F$, §4.3). Both
# are applied to a vector with products of small matrices; the tridiagonal one needs the
# inverse of a sum of two Kronecker products, which Appendix B computes from two small
# eigendecompositions. Each step is checked below against dense linear algebra.
# `paper_figures/inverse_quality.py` draws the paper's Figures 5 and 6 at full size.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg

from kfac_ref.appendix_b import apply_kron_sum_inverse, kron_sum_inverse
from kfac_ref.compare import (
    compare_fisher,
    damped_diagonal,
    dense_F_hat,
    dense_F_tilde,
    relative_error,
)
from kfac_ref.factors import kronecker_factors
from kfac_ref.inverse import (
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from kfac_ref.mlp import MLP
from kfac_ref.vec import layer_offsets, theta_to_weights, vec, weights_to_theta

rng = np.random.default_rng(0)

mlp = MLP([10, 6, 6, 6, 6, 3], "tanh", "softmax")
weights = mlp.init_gaussian(seed=5, scale=1.5)
X = rng.standard_normal((400, 10))
gamma = 1e-2  # factored Tikhonov damping (§6.3) of the diagonal factors
factors = kronecker_factors(mlp, weights, X, method="exact")
A_diag, G_diag = damped_diagonal(factors, gamma)
A_off, G_off = factors.off_diagonal()
off = layer_offsets(mlp.shapes)
blk = [slice(off[k], off[k + 1]) for k in range(mlp.n_layers)]
L = mlp.n_layers
F_tilde = dense_F_tilde(factors, gamma, "full")
print(mlp, "—", off[-1], "parameters")

# %% [markdown]
# ## Why the inverse: F̃⁻¹ is close to block-tridiagonal
#
# Think of $\mathcal{D}\theta$ as a Gaussian vector with covariance $F$. Then the $(i, j)$ block
# of $F^{-1}$ holds (scaled) regression coefficients of $\operatorname{vec}(\mathcal{D}W_i)$ on
# $\operatorname{vec}(\mathcal{D}W_j)$ given all other layers. The gradient of a layer is
# computed from the activities below it and the derivatives above it, so once the neighbouring
# layers are known, distant layers add little: the inverse is nearly block-tridiagonal even
# though $F$ (and $\tilde F$) are dense. The mean absolute entry per block shows it.


# %%
def block_means(M):
    return np.array([[np.abs(M[blk[k], blk[l]]).mean() for l in range(L)] for k in range(L)])


fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), layout="constrained")
for ax, M, title in (
    (axes[0], F_tilde, "mean |F̃ block|"),
    (axes[1], np.linalg.inv(F_tilde), "mean |F̃⁻¹ block|"),
):
    m = block_means(M)
    ax.imshow(m, cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(L), [f"W_{i + 1}" for i in range(L)], fontsize=7)
    ax.set_yticks(range(L), [f"W_{i + 1}" for i in range(L)], fontsize=7)
plt.show()

# %% [markdown]
# ## Block-diagonal: F̆ (§4.2)
#
# Dropping the off-diagonal blocks leaves $\breve F = \operatorname{diag}(\bar A_{0,0} \otimes
# G_{1,1}, \dots)$, and $(A \otimes B)^{-1} = A^{-1} \otimes B^{-1}$ together with
# $(A \otimes B)\operatorname{vec}(X) = \operatorname{vec}(B X A^\top)$ give, for a vector
# $v$ whose layer-$i$ part is $\operatorname{vec}(V_i)$,
#
# $$
# (\breve F^{-1} v)_i = \operatorname{vec}\!\big(G_{i,i}^{-1}\, V_i\, \bar A_{i-1,i-1}^{-1}\big).
# $$
#
# Two small inverses per layer replace one huge one.

# %%
V = theta_to_weights(rng.standard_normal(off[-1]), mlp.shapes)  # a "gradient" in matrix form
U = apply_block_diagonal_inverse(block_diagonal_inverse(A_diag, G_diag), V)
F_breve = dense_F_tilde(factors, gamma, "block_diagonal")
assert np.allclose(weights_to_theta(U), np.linalg.solve(F_breve, weights_to_theta(V)))
print("F̆⁻¹ v from the factors equals the dense solve")

# %% [markdown]
# ## Block-tridiagonal: F̂ (§4.3)
#
# Assume $\hat F^{-1}$ is block-tridiagonal and $\hat F$ agrees with $\tilde F$ on the
# diagonal and first off-diagonal blocks. In graphical-model terms, the layers' gradients form
# a chain: $\operatorname{vec}(\mathcal{D}W_\ell) \sim \mathcal{N}(0, \Sigma_\ell)$ and
# $\operatorname{vec}(\mathcal{D}W_i) \mid \operatorname{vec}(\mathcal{D}W_{i+1}) \sim
# \mathcal{N}(\Psi_{i,i+1} \operatorname{vec}(\mathcal{D}W_{i+1}), \Sigma_{i|i+1})$ with
#
# $$
# \Psi_{i,i+1} = \tilde F_{i,i+1} \tilde F_{i+1,i+1}^{-1}
#   = \underbrace{\bar A_{i-1,i} \bar A_{i,i}^{-1}}_{\Psi^{\bar A}_{i-1,i}} \otimes
#     \underbrace{G_{i,i+1} G_{i+1,i+1}^{-1}}_{\Psi^{G}_{i,i+1}}, \qquad
# \Sigma_{i|i+1} = \tilde F_{i,i} - \Psi_{i,i+1} \tilde F_{i+1,i+1} \Psi_{i,i+1}^\top .
# $$
#
# The precision matrix of this chain is $\hat F^{-1} = \Xi^\top \Lambda \Xi$ with
# $\Lambda = \operatorname{diag}(\Sigma_{1|2}^{-1}, \dots, \Sigma_{\ell-1|\ell}^{-1},
# \Sigma_\ell^{-1})$
# and $\Xi$ the identity with $-\Psi_{i,i+1}$ on its first block super-diagonal. Ψ is a
# Kronecker product, so it is stored as its two small factors; check it against the dense
# blocks of $\tilde F$.

# %%
tri = block_tridiagonal_inverse(A_diag, G_diag, A_off, G_off)
for k in range(L - 1):
    Psi_dense = F_tilde[blk[k], blk[k + 1]] @ np.linalg.inv(F_tilde[blk[k + 1], blk[k + 1]])
    assert np.allclose(np.kron(tri.psi_A[k], tri.psi_G[k]), Psi_dense)
print("Ψ_{i,i+1} = Ψ^Ā ⊗ Ψ^G matches F̃_{i,i+1} F̃_{i+1,i+1}⁻¹ for every i")

F_hat = dense_F_hat(factors, gamma)
F_hat_inv = np.linalg.inv(F_hat)
for k in range(L):
    for l in range(L):
        if abs(k - l) <= 1:  # F̂ = F̃ on the tridiagonal blocks ...
            assert np.allclose(F_hat[blk[k], blk[l]], F_tilde[blk[k], blk[l]])
        else:  # ... and F̂⁻¹ is zero off them
            assert np.abs(F_hat_inv[blk[k], blk[l]]).max() < 1e-8 * np.abs(F_hat_inv).max()

W_ = apply_block_tridiagonal_inverse(tri, V)
assert np.allclose(weights_to_theta(W_), np.linalg.solve(F_hat, weights_to_theta(V)))
print("F̂ agrees with F̃ on the tridiagonal blocks, F̂⁻¹ is block-tridiagonal, Ξᵀ Λ Ξ v is right")

# %% [markdown]
# ## Appendix B: inverting $A \otimes B \pm C \otimes D$
#
# Applying $\Lambda$ needs $\Sigma_{i|i+1}^{-1}$, and
# $\Sigma_{i|i+1} = A \otimes B - C \otimes D$ with $A = \bar A_{i-1,i-1}$, $B = G_{i,i}$,
# $C = \Psi^{\bar A} \bar A_{i,i} \Psi^{\bar A\top}$, $D = \Psi^{G} G_{i+1,i+1} \Psi^{G\top}$
# is not a single Kronecker product. Appendix B diagonalizes both terms at once: with the
# symmetric eigendecompositions $A^{-1/2} C A^{-1/2} = E_1 S_1 E_1^\top$,
# $B^{-1/2} D B^{-1/2} = E_2 S_2 E_2^\top$ and $K_1 = A^{-1/2} E_1$, $K_2 = B^{-1/2} E_2$,
#
# $$
# (A \otimes B \pm C \otimes D)^{-1} = (K_1 \otimes K_2)\,(I \pm S_1 \otimes S_2)^{-1}\,(K_1
# \otimes K_2)^\top ,
# $$
#
# whose middle factor is diagonal; applied to $\operatorname{vec}(X)$ this is
# $K_2\big[(K_2^\top X K_1) \oslash (1 \pm s_2 s_1^\top)\big] K_1^\top$. First a random test
# (for the minus sign the difference must stay positive definite, so the eigenvalues $S_1$,
# $S_2$ are kept below 1), then the real $\Sigma_{1|2}$.


# %%
def spd(m, seed):
    M = np.random.default_rng(seed).standard_normal((m, m))
    return M @ M.T / m + 0.5 * np.eye(m)


def psd_below(A, seed):
    """C = A^{1/2} Q diag(s) Qᵀ A^{1/2} with s in [0, 0.9): A^{-1/2} C A^{-1/2} has eigenvalues
    s."""
    m = A.shape[0]
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((m, m)))
    R = np.real(scipy.linalg.sqrtm(A))
    return R @ Q @ np.diag(0.9 * np.random.default_rng(seed + 1).random(m)) @ Q.T @ R


m1, m2 = 7, 5
A, B = spd(m1, 1), spd(m2, 2)
C, D = psd_below(A, 3), psd_below(B, 4)
Xv = rng.standard_normal((m2, m1))  # vec(X) has the length of A ⊗ B
for sign in (-1, +1):
    dense = np.linalg.inv(np.kron(A, B) + sign * np.kron(C, D)) @ vec(Xv)
    fast = vec(apply_kron_sum_inverse(kron_sum_inverse(A, B, C, D, sign), Xv))
    print(
        f"sign {sign:+d}: relative difference to the dense inverse "
        f"{relative_error(fast, dense):.1e}"
    )
    assert relative_error(fast, dense) < 1e-10

# the real Σ_{1|2} of the network
C12 = tri.psi_A[0] @ A_off[0].T
D12 = tri.psi_G[0] @ G_off[0].T
Sigma = np.kron(A_diag[0], G_diag[0]) - np.kron(C12, D12)
Sigma_dense = (
    F_tilde[blk[0], blk[0]]
    - np.kron(tri.psi_A[0], tri.psi_G[0])
    @ F_tilde[blk[1], blk[1]]
    @ np.kron(tri.psi_A[0], tri.psi_G[0]).T
)
assert np.allclose(Sigma, Sigma_dense)
assert np.allclose(
    vec(apply_kron_sum_inverse(tri.sigma_cond[0], V[0])), np.linalg.solve(Sigma, vec(V[0]))
)
print("Σ_{1|2}⁻¹ by Appendix B equals the dense solve")

# %% [markdown]
# The cost is what makes this worthwhile: two eigendecompositions of $m \times m$ and
# $n \times n$ matrices ($O(m^3 + n^3)$) instead of one inverse of an $mn \times mn$ matrix
# ($O(m^3 n^3)$).


# %%
def best_time(f, repeats=3):
    """The fastest of ``repeats`` wall-clock timings of f(), in milliseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


kron_sum_inverse(A, B, C, D, -1)  # warm-up: the first call pays for lazy imports
for m in (10, 20, 40):
    A, B = spd(m, 1), spd(m, 2)
    C, D = psd_below(A, 3), psd_below(B, 4)
    t_fast = best_time(lambda: kron_sum_inverse(A, B, C, D, -1))  # noqa: B023 (called at once)
    t_dense = best_time(lambda: np.linalg.inv(np.kron(A, B) - np.kron(C, D)))  # noqa: B023
    print(
        f"m = n = {m:2d}: Appendix B {t_fast:7.2f} ms, dense ({m * m}×{m * m}) inverse "
        f"{t_dense:8.2f} ms"
    )

# %% [markdown]
# ## Which approximation of the inverse is better?
#
# The paper's Figure 6 compares $\breve F^{-1}$ and $\hat F^{-1}$ with $\tilde F^{-1}$ on its
# example network and finds the tridiagonal one markedly closer, even on the diagonal blocks,
# although both approximate the *matrix* $\tilde F$ very differently: $\breve F$ is a poor
# approximation of $\tilde F$ (it drops every off-diagonal block), $\hat F$ a close one.
# `compare_fisher` computes all of these (inverses of equally damped matrices) on this network.

# %%
cmp = compare_fisher(mlp, weights, X, gamma=gamma)
print(cmp.table())
mat_err = {
    name: relative_error(cmp.matrices[name], cmp.matrices["F_tilde"])
    for name in ("F_breve", "F_hat")
}
print(
    f"as approximations of the matrix F̃: ‖F̆ − F̃‖/‖F̃‖ = {mat_err['F_breve']:.3f}, "
    f"‖F̂ − F̃‖/‖F̃‖ = {mat_err['F_hat']:.3f}"
)
assert mat_err["F_hat"] < mat_err["F_breve"]
inv_err = {name: cmp.inverse_errors[name]["vs_F_tilde"] for name in ("F_breve", "F_hat")}
assert inv_err["F_hat"] < inv_err["F_breve"]

fig, axes = plt.subplots(2, 3, figsize=(10, 6.6), layout="constrained")
ref = cmp.inverses["F_tilde"]
v = np.quantile(np.abs(ref), 0.995)
for row, (name, sym) in enumerate((("F_breve", "F̆⁻¹"), ("F_hat", "F̂⁻¹"))):
    approx = cmp.inverses[name]
    for ax, M, title in (
        (axes[row, 0], ref, "|F̃⁻¹|"),
        (axes[row, 1], approx, f"|{sym}|"),
        (axes[row, 2], approx - ref, f"|{sym} − F̃⁻¹|  ({inv_err[name]:.3f})"),
    ):
        ax.imshow(np.abs(M), cmap="gray", vmin=0, vmax=v)
        for b in off[1:-1]:
            ax.axhline(b - 0.5, color="tab:orange", ls="--", lw=0.6)
            ax.axvline(b - 0.5, color="tab:orange", ls="--", lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle(f"Figure 6 in miniature: approximate inverses vs F̃⁻¹ (γ = {gamma})")
plt.show()

# %% [markdown]
# Per block, the tridiagonal approximation wins on the diagonal blocks too — the point the
# paper makes about Figure 6:

# %%
diag_breve = np.diag(cmp.inverse_block_errors["F_breve"]["vs_F_tilde"])
diag_hat = np.diag(cmp.inverse_block_errors["F_hat"]["vs_F_tilde"])
for k in range(L):
    print(f"W_{k + 1}: diagonal block error of F̆⁻¹ {diag_breve[k]:.4f}, of F̂⁻¹ {diag_hat[k]:.4f}")
assert diag_hat.mean() < diag_breve.mean()
