"""Cheap approximations of F̃⁻¹ (§4): block-diagonal F̆⁻¹ (§4.2), block-tridiagonal F̂⁻¹ (§4.3),
and Appendix B's inverse of a sum of two Kronecker products.

All functions take the (already damped, §6.3) factors and act on gradient blocks in matrix
form: V[k] has the shape of W_{k+1}, (d_{k+1}, d_k+1), and stands for vec(V[k]) (see
:mod:`kfac_ref.vec`). With (A ⊗ B) vec(X) = vec(B X Aᵀ):

* F̆⁻¹:  U_k = G_{k,k}⁻¹ V_k Ā_{k,k}⁻¹                                      (§4.2)
* F̂⁻¹ = Ξᵀ Λ Ξ:  u_k = V_k − Ψ^G_k V_{k+1} Ψ^Āᵀ_k,  z_k = Σ_{k|k+1}⁻¹ u_k,
  w_k = z_k − Ψ^Gᵀ_{k-1} z_{k-1} Ψ^Ā_{k-1}                                  (§4.3)

with Ψ^Ā_k = Ā_{k,k+1} Ā_{k+1,k+1}⁻¹ and Ψ^G_k = G_{k,k+1} G_{k+1,k+1}⁻¹ (0-based layer k; the
paper's Ψ_{i,i+1} with i = k+1), Σ_{k|k+1} = Ā_{k,k} ⊗ G_{k,k} − (Ψ^Ā Ā_{k+1,k+1} Ψ^Āᵀ) ⊗
(Ψ^G G_{k+1,k+1} Ψ^Gᵀ) and Σ_ℓ = F̃_{ℓ,ℓ}.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .backend import get_array_module, linalg_for
from .errors import NonFiniteError


# ---------------------------------------------------------------- small dense helpers
def symmetrize(M: Any) -> Any:
    """(M + Mᵀ)/2: removes round-off asymmetry before a symmetric factorization."""
    return 0.5 * (M + M.T)


def _check_finite(name: str, M: Any) -> None:
    xp = get_array_module(M)
    if not bool(xp.isfinite(M).all()):
        raise NonFiniteError(f"{name} contains NaN or infinite entries")


def _try_cholesky(la: Any, M: Any) -> Any:
    """Lower Cholesky factor of M, or None where M is not numerically positive definite."""
    try:
        L = la.cholesky(M)
    except Exception:  # numpy.linalg.LinAlgError; cupy returns NaN instead of raising
        return None
    return L if bool(get_array_module(L).isfinite(L).all()) else None


def _with_jitter(factorize: Callable[[Any], Any], M: Any, name: str) -> Any:
    """``factorize(M)``; where it fails (returns None) because M is not numerically positive
    definite, retry on M + jitter·I (1e-10·tr(M)/dim, then ×100, 4 tries) and warn.

    ``M`` must already be symmetric and finite. Raises :class:`NonFiniteError` naming ``name``
    when even the largest jitter fails.
    """
    xp = get_array_module(M)
    out = factorize(M)
    if out is not None:
        return out
    scale = float(xp.trace(M)) / M.shape[0] or 1.0
    jitter = 1e-10 * scale
    for _ in range(4):
        out = factorize(M + jitter * xp.eye(M.shape[0], dtype=M.dtype))
        if out is not None:
            # outside any try: a warning turned into an error must reach the caller
            warnings.warn(f"{name} was not positive definite; added jitter {jitter:.3g}", RuntimeWarning, stacklevel=3)
            return out
        jitter *= 100.0
    raise NonFiniteError(f"{name} is not positive definite even with jitter {jitter / 100:.3g}; increase damping")


def spd_cholesky(M: Any, name: str = "matrix") -> Any:
    """Lower Cholesky factor of a symmetric positive-definite M.

    If M is not numerically positive definite, retry with a small jitter (1e-10·tr(M)/dim,
    then ×100 up to 3 times) and warn; a matrix with NaN/inf entries raises
    :class:`NonFiniteError` naming ``name``.
    """
    la = linalg_for(M)
    _check_finite(name, M)
    return _with_jitter(lambda X: _try_cholesky(la, X), symmetrize(M), name)


def spd_inverse(M: Any, name: str = "matrix") -> Any:
    """M⁻¹ for symmetric positive-definite M (one Cholesky factorization; jitter as above)."""
    la = linalg_for(M)
    _check_finite(name, M)
    return _with_jitter(la.spd_inverse, symmetrize(M), name)


# ------------------------------------------------------------------ §4.2 block diagonal
@dataclass
class BlockDiagonalInverse:
    """F̆⁻¹ = diag(Ā_{k,k}⁻¹ ⊗ G_{k,k}⁻¹) stored as the inverse factors (§4.2)."""

    A_inv: list[Any]
    G_inv: list[Any]


def block_diagonal_inverse(A_diag: Sequence[Any], G_diag: Sequence[Any]) -> BlockDiagonalInverse:
    """The inverse factors of F̆ from the (damped) diagonal factors Ā_{k,k}, G_{k,k} (§4.2)."""
    return BlockDiagonalInverse(
        A_inv=[spd_inverse(A, f"Ā_{{{k},{k}}}") for k, A in enumerate(A_diag)],
        G_inv=[spd_inverse(G, f"G_{{{k + 1},{k + 1}}}") for k, G in enumerate(G_diag)],
    )


def apply_block_diagonal_inverse(inv: BlockDiagonalInverse, V: Sequence[Any]) -> list[Any]:
    """(F̆⁻¹ v)_k = vec(G_{k,k}⁻¹ V_k Ā_{k,k}⁻¹) (§4.2)."""
    return [G_inv @ V_k @ A_inv for A_inv, G_inv, V_k in zip(inv.A_inv, inv.G_inv, V, strict=True)]


# ----------------------------------------------------------------------- Appendix B
@dataclass
class KronSumInverse:
    """(A ⊗ B ± C ⊗ D)⁻¹ = (K₁ ⊗ K₂)(I ± S₁ ⊗ S₂)⁻¹(K₁ ⊗ K₂)ᵀ (Appendix B).

    ``denom[r, c]`` = 1 ± s₂[r] s₁[c], so the inverse applied to vec(X) is
    vec(K₂ [(K₂ᵀ X K₁) ⊘ denom] K₁ᵀ).
    """

    K1: Any
    K2: Any
    denom: Any


def generalized_eigh(C: Any, A: Any, name: str = "A") -> tuple[Any, Any]:
    """s, K with C K = A K diag(s), Kᵀ A K = I (A SPD, C symmetric) (Appendix B).

    K plays the role of A^{-1/2} E₁ in Appendix B: with A = L Lᵀ, K = L⁻ᵀ E where
    L⁻¹ C L⁻ᵀ = E diag(s) Eᵀ (any square root of A works, as the paper notes).
    """
    la = linalg_for(A)
    _check_finite(name, A)
    _check_finite(f"C paired with {name}", C)
    C = symmetrize(C)
    return _with_jitter(lambda X: la.generalized_eigh(C, X), symmetrize(A), name)


def kron_sum_inverse(A: Any, B: Any, C: Any, D: Any, sign: int = -1) -> KronSumInverse:
    """Factors of (A ⊗ B + sign · C ⊗ D)⁻¹ (Appendix B), A, B SPD, C, D symmetric PSD.

    In the "minus" case the eigenvalues s₁, s₂ are clipped to [0, 1], where mathematics puts
    them for a positive-definite Σ (the authors' code clips too); this keeps 1 − s₂s₁ᵀ ≥ 0.
    """
    xp = get_array_module(A)
    s1, K1 = generalized_eigh(C, A, "A (Appendix B)")
    s2, K2 = generalized_eigh(D, B, "B (Appendix B)")
    if sign < 0:
        s1 = xp.clip(s1, 0.0, 1.0)
        s2 = xp.clip(s2, 0.0, 1.0)
    denom = 1.0 + sign * (s2[:, None] * s1[None, :])
    if sign < 0:
        # s₁, s₂ carry round-off of order √dim·ε even when 1 − s₂s₁ is exactly 0 mathematically
        tiny = 4.0 * xp.finfo(denom.dtype).eps * max(A.shape[0], B.shape[0]) ** 0.5
        if bool((denom <= tiny).any()):
            raise NonFiniteError(
                "Σ_{i|i+1} is singular (1 − s₁s₂ = 0 in Appendix B): the factors are exactly "
                "dependent; use damping γ > 0"
            )
    return KronSumInverse(K1=K1, K2=K2, denom=denom)


def apply_kron_sum_inverse(inv: KronSumInverse, X: Any) -> Any:
    """Y = K₂ [(K₂ᵀ X K₁) ⊘ (1 ± s₂s₁ᵀ)] K₁ᵀ, i.e. (A ⊗ B ± C ⊗ D)⁻¹ vec(X) (Appendix B)."""
    return inv.K2 @ ((inv.K2.T @ X @ inv.K1) / inv.denom) @ inv.K1.T


# ---------------------------------------------------------------- §4.3 block tridiagonal
def psi_A(A_off: Any, A_next_inv: Any) -> Any:
    """Ψ^Ā_{i-1,i} = Ā_{i-1,i} Ā_{i,i}⁻¹ (§4.3)."""
    return A_off @ A_next_inv


def psi_G(G_off: Any, G_next_inv: Any) -> Any:
    """Ψ^G_{i,i+1} = G_{i,i+1} G_{i+1,i+1}⁻¹ (§4.3)."""
    return G_off @ G_next_inv


@dataclass
class BlockTridiagonalInverse:
    """F̂⁻¹ = Ξᵀ Λ Ξ (§4.3): Ψ^Ā_k, Ψ^G_k (k = 0..ℓ-2), Σ_{k|k+1}⁻¹ (Appendix B) and Σ_ℓ⁻¹."""

    psi_A: list[Any]
    psi_G: list[Any]
    sigma_cond: list[KronSumInverse]
    sigma_last: BlockDiagonalInverse


def block_tridiagonal_inverse(
    A_diag: Sequence[Any], G_diag: Sequence[Any], A_off: Sequence[Any], G_off: Sequence[Any]
) -> BlockTridiagonalInverse:
    """Ψ, Σ_{k|k+1}⁻¹ and Σ_ℓ⁻¹ from the factors (§4.3). Diagonal factors damped, off-diagonal not.

    Args:
        A_diag, G_diag: Ā_{k,k}, G_{k+1,k+1} for k = 0..ℓ-1 (damped, §6.3).
        A_off, G_off: Ā_{k,k+1}, G_{k+1,k+2} for k = 0..ℓ-2.
    """
    L = len(A_diag)
    A_inv = [spd_inverse(A, f"Ā_{{{k},{k}}}") for k, A in enumerate(A_diag)]
    G_inv = [spd_inverse(G, f"G_{{{k + 1},{k + 1}}}") for k, G in enumerate(G_diag)]
    pA = [psi_A(A_off[k], A_inv[k + 1]) for k in range(L - 1)]
    pG = [psi_G(G_off[k], G_inv[k + 1]) for k in range(L - 1)]
    # C = Ψ^Ā Ā_{k+1,k+1} Ψ^Āᵀ = Ā_{k,k+1} Ā_{k+1,k+1}⁻¹ Ā_{k,k+1}ᵀ, D likewise (Appendix B).
    sigma_cond = [
        kron_sum_inverse(
            A_diag[k], G_diag[k], symmetrize(pA[k] @ A_off[k].T), symmetrize(pG[k] @ G_off[k].T), -1
        )
        for k in range(L - 1)
    ]
    return BlockTridiagonalInverse(
        psi_A=pA, psi_G=pG, sigma_cond=sigma_cond,
        sigma_last=BlockDiagonalInverse(A_inv=[A_inv[-1]], G_inv=[G_inv[-1]]),
    )


def apply_xi(inv: BlockTridiagonalInverse, V: Sequence[Any]) -> list[Any]:
    """u = Ξ v: u_k = V_k − Ψ^G_k V_{k+1} Ψ^Āᵀ_k, u_ℓ = V_ℓ (§4.3)."""
    L = len(V)
    return [V[k] - inv.psi_G[k] @ V[k + 1] @ inv.psi_A[k].T for k in range(L - 1)] + [V[-1]]


def apply_lambda(inv: BlockTridiagonalInverse, U: Sequence[Any]) -> list[Any]:
    """z = Λ u: z_k = Σ_{k|k+1}⁻¹ u_k (Appendix B), z_ℓ = Σ_ℓ⁻¹ u_ℓ (§4.3)."""
    Z = [apply_kron_sum_inverse(S, U_k) for S, U_k in zip(inv.sigma_cond, U[:-1], strict=True)]
    return Z + apply_block_diagonal_inverse(inv.sigma_last, [U[-1]])


def apply_xi_transpose(inv: BlockTridiagonalInverse, Z: Sequence[Any]) -> list[Any]:
    """w = Ξᵀ z: w_1 = z_1, w_k = z_k − Ψ^Gᵀ_{k-1} z_{k-1} Ψ^Ā_{k-1} (§4.3)."""
    return [Z[0]] + [Z[k] - inv.psi_G[k - 1].T @ Z[k - 1] @ inv.psi_A[k - 1] for k in range(1, len(Z))]


def apply_block_tridiagonal_inverse(inv: BlockTridiagonalInverse, V: Sequence[Any]) -> list[Any]:
    """F̂⁻¹ v = Ξᵀ Λ Ξ v (§4.3)."""
    return apply_xi_transpose(inv, apply_lambda(inv, apply_xi(inv, V)))
