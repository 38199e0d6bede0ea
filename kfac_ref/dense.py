"""Dense F̃ (§3), F̆ (§4.2), F̂ (§4.3) and their inverses, from dense Kronecker blocks only.

The obvious computation, for small networks: every block is ``kron(Ā, G)``, Ψ_{i,i+1} =
F̃_{i,i+1} F̃_{i+1,i+1}⁻¹ is a dense ``linalg.solve``, and nothing here factorizes a Kronecker
factor or runs the Appendix-B eigendecompositions. It shares no code with the efficient path
(:mod:`kfac_ref.inverse`, :mod:`kfac_ref.damping`), so the tests use it as their oracle and the
comparison tools (:mod:`kfac_ref.compare`, ``paper_figures/``) as the matrices they show.
:func:`kfac_ref.memory.check_dense_size` refuses a P×P matrix too large for memory before
anything is built.

Input: ``factors`` with ``A_bar[k][l]`` = Ā_{k,l} and ``G[k][l]`` = G_{k+1,l+1} (0-based layer
lists, see the table in :mod:`kfac_ref.inverse`); blocks in the θ order of :mod:`kfac_ref.vec`.
With γ > 0 the diagonal blocks are the factored-Tikhonov-damped (Ā + πγI) ⊗ (G + γ/π I) of
§6.3, π from the trace norms; off-diagonal blocks are never damped.
"""

from __future__ import annotations

from typing import Any

from .backend import get_array_module


def _pi(A: Any, G: Any) -> Any:
    """π = √[(tr Ā / dim Ā) / (tr G / dim G)] (§6.3), each trace floored at the dtype's tiny."""
    xp = get_array_module(A, G)
    tiny = xp.finfo(A.dtype).tiny
    return xp.sqrt(
        xp.maximum(xp.trace(A) / A.shape[0], tiny) / xp.maximum(xp.trace(G) / G.shape[0], tiny)
    )


def diagonal_block(factors: Any, k: int, gamma: float = 0.0) -> Any:
    """F̃_{k,k} = (Ā_{k,k} + πγI) ⊗ (G_{k+1,k+1} + γ/π I) (§3, §6.3), dense."""
    A, G = factors.A_bar[k][k], factors.G[k][k]
    xp = get_array_module(A, G)
    if gamma:
        p = _pi(A, G)
        A = A + p * gamma * xp.eye(A.shape[0], dtype=A.dtype)
        G = G + gamma / p * xp.eye(G.shape[0], dtype=G.dtype)
    return xp.kron(A, G)


def block(factors: Any, k: int, l: int, gamma: float = 0.0) -> Any:
    """F̃_{k,l} = Ā_{k,l} ⊗ G_{k+1,l+1} (§3); the diagonal ones damped with γ."""
    if k == l:
        return diagonal_block(factors, k, gamma)
    return get_array_module(factors.G[k][l]).kron(factors.A_bar[k][l], factors.G[k][l])


def slices(factors: Any) -> list[slice]:
    """The rows of each layer's block in θ (layer k: d_{k+1}(d_k+1) entries)."""
    out, start = [], 0
    for k in range(len(factors.G)):
        size = factors.G[k][k].shape[0] * factors.A_bar[k][k].shape[0]
        out.append(slice(start, start + size))
        start += size
    return out


def _assemble(factors: Any, gamma: float, pairs: Any) -> Any:
    sl = slices(factors)
    G00 = factors.G[0][0]
    xp = get_array_module(G00)
    F = xp.zeros((sl[-1].stop, sl[-1].stop), dtype=G00.dtype)
    for k, l in pairs:
        F[sl[k], sl[l]] = block(factors, k, l, gamma)
    return F


def F_tilde(factors: Any, gamma: float = 0.0) -> Any:
    """Dense F̃: every block Ā_{k,l} ⊗ G_{k+1,l+1} (§3), the diagonal ones damped (§6.3)."""
    L = len(factors.G)
    return _assemble(factors, gamma, [(k, l) for k in range(L) for l in range(L)])


def F_breve(factors: Any, gamma: float = 0.0) -> Any:
    """Dense F̆ = diag(F̃_{1,1}, …, F̃_{ℓ,ℓ}) (§4.2), damped (§6.3)."""
    return _assemble(factors, gamma, [(k, k) for k in range(len(factors.G))])


def psi(factors: Any, k: int, gamma: float = 0.0) -> Any:
    """Ψ_{k,k+1} = F̃_{k,k+1} F̃_{k+1,k+1}⁻¹ (§4.3), by a dense solve (F̃_{k+1,k+1} symmetric)."""
    xp = get_array_module(factors.G[k][k])
    return xp.linalg.solve(diagonal_block(factors, k + 1, gamma), block(factors, k, k + 1).T).T


def xi_and_sigmas(factors: Any, gamma: float = 0.0) -> tuple[Any, list[Any]]:
    """Ξ (identity blocks, −Ψ_{k,k+1} above the diagonal) and the conditional covariances
    Σ_{k|k+1} = F̃_{k,k} − Ψ_{k,k+1} F̃_{k+1,k+1} Ψ_{k,k+1}ᵀ, Σ_ℓ = F̃_{ℓ,ℓ} (§4.3), dense."""
    sl, L = slices(factors), len(factors.G)
    xp = get_array_module(factors.G[0][0])
    Xi = xp.eye(sl[-1].stop, dtype=factors.G[0][0].dtype)
    sigmas = []
    for k in range(L):
        F_kk = diagonal_block(factors, k, gamma)
        if k == L - 1:
            sigmas.append(F_kk)
            continue
        P = psi(factors, k, gamma)
        Xi[sl[k], sl[k + 1]] = -P
        sigmas.append(F_kk - P @ diagonal_block(factors, k + 1, gamma) @ P.T)
    return Xi, sigmas


def F_hat(factors: Any, gamma: float = 0.0) -> Any:
    """Dense F̂ = Ξ⁻¹ Λ⁻¹ Ξ⁻ᵀ with Λ⁻¹ = diag(Σ_{k|k+1}) (§4.3): the matrix whose inverse is
    block-tridiagonal and which agrees with F̃ on the tridiagonal blocks."""
    Xi, sigmas = xi_and_sigmas(factors, gamma)
    xp = get_array_module(Xi)
    sl = slices(factors)
    Lambda_inv = xp.zeros_like(Xi)
    for k, S in enumerate(sigmas):
        Lambda_inv[sl[k], sl[k]] = S
    Xi_inv = xp.linalg.inv(Xi)
    M = Xi_inv @ Lambda_inv @ Xi_inv.T
    return 0.5 * (M + M.T)


def F_hat_inverse(factors: Any, gamma: float = 0.0) -> Any:
    """Dense F̂⁻¹ = Ξᵀ Λ Ξ, Λ = diag(Σ_{k|k+1}⁻¹) (§4.3), each Σ inverted densely."""
    Xi, sigmas = xi_and_sigmas(factors, gamma)
    xp = get_array_module(Xi)
    sl = slices(factors)
    Lambda = xp.zeros_like(Xi)
    for k, S in enumerate(sigmas):
        Lambda[sl[k], sl[k]] = xp.linalg.inv(S)
    return Xi.T @ Lambda @ Xi
