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

from .backend import HostBatch, get_array_module, linalg_for
from .errors import NonFiniteError


# ---------------------------------------------------------------- small dense helpers
def symmetrize(M: Any) -> Any:
    """(M + Mᵀ)/2: removes round-off asymmetry before a symmetric factorization."""
    return 0.5 * (M + M.T)


def _nonfinite_message(name: str) -> str:
    return f"{name} contains NaN or infinite entries"


def _with_jitter(factorize: Callable[[Any], tuple[Any, Any]], M: Any, name: str) -> Any:
    """``factorize(M + jitter·I)`` for jitter = 1e-10·tr(M)/dim, then ×100 (4 tries), with a
    warning, after ``factorize(M)`` failed because M is not numerically positive definite.

    ``M`` must already be symmetric and finite. Raises :class:`NonFiniteError` naming ``name``
    when even the largest jitter fails. (A failure path: it synchronizes once per try.)
    """
    xp = get_array_module(M)
    scale = float(xp.trace(M)) / M.shape[0] or 1.0
    jitter = 1e-10 * scale
    for _ in range(4):
        out, ok = factorize(M + jitter * xp.eye(M.shape[0], dtype=M.dtype))
        if bool(ok):
            # outside any try: a warning turned into an error must reach the caller
            warnings.warn(f"{name} was not positive definite; added jitter {jitter:.3g}", RuntimeWarning, stacklevel=2)
            return out
        jitter *= 100.0
    raise NonFiniteError(f"{name} is not positive definite even with jitter {jitter / 100:.3g}; increase damping")


def _factorize_all(factorize: Callable[[Any], tuple[Any, Any]], Ms: Sequence[Any], names: Sequence[str]) -> list[Any]:
    """``factorize(symmetrize(M))`` for every M, checked with one device→host transfer.

    Every M must be finite (else :class:`NonFiniteError` naming the first bad one) and is
    factorized; where a factorization fails (not numerically positive definite) it is retried
    with jitter (:func:`_with_jitter`), which warns.
    """
    batch = HostBatch()
    for M, name in zip(Ms, names, strict=True):
        batch.require_finite([M], _nonfinite_message(name))
    sym = [symmetrize(M) for M in Ms]
    outs = []
    for i, S in enumerate(sym):
        out, ok = factorize(S)
        outs.append(out)
        batch.value(f"ok{i}", ok)
    host = batch.fetch()
    return [out if host[f"ok{i}"] else _with_jitter(factorize, S, name)
            for i, (out, S, name) in enumerate(zip(outs, sym, names, strict=True))]


def spd_inverses(Ms: Sequence[Any], names: Sequence[str]) -> list[Any]:
    """[M⁻¹] for symmetric positive-definite matrices (one Cholesky each, one sync for all).

    A matrix that is not numerically positive definite is retried with a small jitter
    (1e-10·tr(M)/dim, then ×100 up to 3 times) and a warning; one with NaN/inf entries raises
    :class:`NonFiniteError` naming it.
    """
    if not Ms:
        return []
    return _factorize_all(linalg_for(*Ms).spd_inverse, Ms, names)


def spd_inverse(M: Any, name: str = "matrix") -> Any:
    """M⁻¹ for symmetric positive-definite M (one Cholesky factorization; jitter as above)."""
    return spd_inverses([M], [name])[0]


def spd_cholesky(M: Any, name: str = "matrix") -> Any:
    """Lower Cholesky factor of a symmetric positive-definite M (checks and jitter as above)."""
    return _factorize_all(linalg_for(M).checked_cholesky, [M], [name])[0]


# ------------------------------------------------------------------ §4.2 block diagonal
@dataclass
class BlockDiagonalInverse:
    """F̆⁻¹ = diag(Ā_{k,k}⁻¹ ⊗ G_{k,k}⁻¹) stored as the inverse factors (§4.2)."""

    A_inv: list[Any]
    G_inv: list[Any]


def block_diagonal_inverse(A_diag: Sequence[Any], G_diag: Sequence[Any]) -> BlockDiagonalInverse:
    """The inverse factors of F̆ from the (damped) diagonal factors Ā_{k,k}, G_{k,k} (§4.2)."""
    A_inv, G_inv = _diagonal_inverses(A_diag, G_diag)
    return BlockDiagonalInverse(A_inv=A_inv, G_inv=G_inv)


def _diagonal_inverses(A_diag: Sequence[Any], G_diag: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """[Ā_{k,k}⁻¹], [G_{k+1,k+1}⁻¹], factorized together (one synchronization on a GPU)."""
    L = len(A_diag)
    names = [f"Ā_{{{k},{k}}}" for k in range(L)] + [f"G_{{{k + 1},{k + 1}}}" for k in range(len(G_diag))]
    inv = spd_inverses(list(A_diag) + list(G_diag), names)
    return inv[:L], inv[L:]


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


def _queue_generalized_eighs(batch: HostBatch, pairs: Sequence[tuple[Any, Any, str]]) -> list[tuple[Any, Any, Any]]:
    """Start (s, K) = eigh(C, A) for each (C, A, name), queueing the finiteness of A and C and
    each factorization's success on ``batch``. Returns (result, C sym, A sym) per pair."""
    out = []
    for i, (C, A, name) in enumerate(pairs):
        batch.require_finite([A], _nonfinite_message(name))
        batch.require_finite([C], _nonfinite_message(f"C paired with {name}"))
        Cs, As = symmetrize(C), symmetrize(A)
        result, ok = linalg_for(A).generalized_eigh(Cs, As)
        batch.value(f"eigh_ok{i}", ok)
        out.append((result, Cs, As))
    return out


def _finish_generalized_eigh(host: dict[str, Any], i: int, started: tuple[Any, Any, Any], name: str) -> tuple[tuple[Any, Any], bool]:
    """(s, K) of a started eigh(C, A), retried with jitter on A where it failed; and whether it was."""
    result, Cs, As = started
    if host[f"eigh_ok{i}"]:
        return result, False
    la = linalg_for(As)
    return _with_jitter(lambda X: la.generalized_eigh(Cs, X), As, name), True


def generalized_eigh(C: Any, A: Any, name: str = "A") -> tuple[Any, Any]:
    """s, K with C K = A K diag(s), Kᵀ A K = I (A SPD, C symmetric) (Appendix B).

    K plays the role of A^{-1/2} E₁ in Appendix B: with A = L Lᵀ, K = L⁻ᵀ E where
    L⁻¹ C L⁻ᵀ = E diag(s) Eᵀ (any square root of A works, as the paper notes).
    """
    batch = HostBatch()
    started = _queue_generalized_eighs(batch, [(C, A, name)])
    return _finish_generalized_eigh(batch.fetch(), 0, started[0], name)[0]


def _kron_sum_factors(e1: tuple[Any, Any], e2: tuple[Any, Any], sign: int) -> tuple[KronSumInverse, Any]:
    """The Appendix-B factors from eigh(C, A) = (s₁, K₁) and eigh(D, B) = (s₂, K₂), and a 0-d
    flag "Σ is singular" (1 − s₂s₁ ≤ round-off somewhere; always False for sign > 0)."""
    (s1, K1), (s2, K2) = e1, e2
    xp = get_array_module(K1)
    if sign < 0:
        s1 = xp.clip(s1, 0.0, 1.0)
        s2 = xp.clip(s2, 0.0, 1.0)
    denom = 1.0 + sign * (s2[:, None] * s1[None, :])
    singular: Any = False
    if sign < 0:
        # s₁, s₂ carry round-off of order √dim·ε even when 1 − s₂s₁ is exactly 0 mathematically
        tiny = 4.0 * xp.finfo(denom.dtype).eps * max(K1.shape[0], K2.shape[0]) ** 0.5
        singular = (denom <= tiny).any()
    return KronSumInverse(K1=K1, K2=K2, denom=denom), singular


SINGULAR_SIGMA = (
    "Σ_{i|i+1} is singular (1 − s₁s₂ = 0 in Appendix B): the factors are exactly dependent; use damping γ > 0"
)


def kron_sum_inverses(blocks: Sequence[tuple[Any, Any, Any, Any]], sign: int = -1) -> list[KronSumInverse]:
    """:func:`kron_sum_inverse` of each (A, B, C, D), with one device→host transfer for all."""
    batch = HostBatch()
    pairs = [p for A, B, C, D in blocks for p in ((C, A, "A (Appendix B)"), (D, B, "B (Appendix B)"))]
    started = _queue_generalized_eighs(batch, pairs)
    first = []
    for j in range(len(blocks)):
        (e1, _, _), (e2, _, _) = started[2 * j], started[2 * j + 1]
        first.append(None if e1 is None or e2 is None else _kron_sum_factors(e1, e2, sign))
        if first[-1] is not None:
            batch.value(f"singular{j}", first[-1][1])
    host = batch.fetch()
    out = []
    for j in range(len(blocks)):
        (e1, redo1), (e2, redo2) = (_finish_generalized_eigh(host, i, started[i], pairs[i][2]) for i in (2 * j, 2 * j + 1))
        if redo1 or redo2 or first[j] is None:
            inv, singular = _kron_sum_factors(e1, e2, sign)
            singular = bool(singular)
        else:
            inv, singular = first[j][0], host[f"singular{j}"]
        if singular:
            raise NonFiniteError(SINGULAR_SIGMA)
        out.append(inv)
    return out


def kron_sum_inverse(A: Any, B: Any, C: Any, D: Any, sign: int = -1) -> KronSumInverse:
    """Factors of (A ⊗ B + sign · C ⊗ D)⁻¹ (Appendix B), A, B SPD, C, D symmetric PSD.

    In the "minus" case the eigenvalues s₁, s₂ are clipped to [0, 1], where mathematics puts
    them for a positive-definite Σ (the authors' code clips too); this keeps 1 − s₂s₁ᵀ ≥ 0.
    """
    return kron_sum_inverses([(A, B, C, D)], sign)[0]


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
    A_inv, G_inv = _diagonal_inverses(A_diag, G_diag)
    pA = [psi_A(A_off[k], A_inv[k + 1]) for k in range(L - 1)]
    pG = [psi_G(G_off[k], G_inv[k + 1]) for k in range(L - 1)]
    # C = Ψ^Ā Ā_{k+1,k+1} Ψ^Āᵀ = Ā_{k,k+1} Ā_{k+1,k+1}⁻¹ Ā_{k,k+1}ᵀ, D likewise (Appendix B).
    sigma_cond = kron_sum_inverses(
        [(A_diag[k], G_diag[k], symmetrize(pA[k] @ A_off[k].T), symmetrize(pG[k] @ G_off[k].T)) for k in range(L - 1)],
        -1,
    )
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
