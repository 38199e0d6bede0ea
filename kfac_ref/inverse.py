"""Cheap approximations of F̃⁻¹ (§4): the block-diagonal F̆⁻¹ (§4.2), then the block-tridiagonal
F̂⁻¹ = Ξᵀ Λ Ξ (§4.3) with its Ψ^Ā_{i-1,i}, Ψ^G_{i,i+1}, Σ_{i|i+1} and Σ_ℓ.

Both are curvature structures (:class:`~kfac_ref.curvature.CurvatureInverse`; the table of them
is :mod:`kfac_ref.structures`). The inverse of each Σ_{i|i+1}, a difference of two Kronecker
products, is Appendix B's (:mod:`kfac_ref.appendix_b`); the checked SPD inverses of the damped
factors are :func:`kfac_ref.linalg.spd_inverses`.

Index convention (the one of :mod:`kfac_ref.vec`, used by every docstring here and in
:mod:`kfac_ref.factors`, :mod:`kfac_ref.statistics`): symbols carry the **paper's** indices;
Python lists are 0-based by layer, list entry k belonging to layer i = k+1.

=====================  ===============================  ===============================
stored (k = 0-based)   paper symbol (i = k+1)           shape
=====================  ===============================  ===============================
``V[k]``, ``W[k]``     V_i, W_i                         (d_i, d_{i-1}+1)
``A_diag[k]``          Ā_{i-1,i-1}                      (d_{i-1}+1, d_{i-1}+1)
``G_diag[k]``          G_{i,i}                          (d_i, d_i)
``A_off[k]``           Ā_{i-1,i}                        (d_{i-1}+1, d_i+1)
``G_off[k]``           G_{i,i+1}                        (d_i, d_{i+1})
``psi_A[k]``           Ψ^Ā_{i-1,i} = Ā_{i-1,i} Ā_{i,i}⁻¹      (d_{i-1}+1, d_i+1)
``psi_G[k]``           Ψ^G_{i,i+1} = G_{i,i+1} G_{i+1,i+1}⁻¹  (d_i, d_{i+1})
``sigma_cond[k]``      Σ_{i|i+1}⁻¹ (Appendix B)         k = 0..ℓ-2
``sigma_last``         Σ_ℓ⁻¹ = F̃_{ℓ,ℓ}⁻¹                one layer
=====================  ===============================  ===============================

Ψ_{i,i+1} = Ψ^Ā_{i-1,i} ⊗ Ψ^G_{i,i+1} = F̃_{i,i+1} F̃_{i+1,i+1}⁻¹ (§4.3), so Ψ^Ā ties ā_{i-1}, ā_i
while Ψ^G ties g_i, g_{i+1}: the Ā and G subscripts of one layer differ by one.

All functions take the (already damped, §6.3) factors and act on gradient blocks in matrix
form, V_i standing for vec(V_i) (:mod:`kfac_ref.vec`). With (A ⊗ B) vec(X) = vec(B X Aᵀ):

* F̆⁻¹:  U_i = G_{i,i}⁻¹ V_i Ā_{i-1,i-1}⁻¹                                           (§4.2)
* F̂⁻¹ = Ξᵀ Λ Ξ:  u_i = V_i − Ψ^G_{i,i+1} V_{i+1} Ψ^Āᵀ_{i-1,i},  z_i = Σ_{i|i+1}⁻¹ u_i,
  w_i = z_i − Ψ^Gᵀ_{i-1,i} z_{i-1} Ψ^Ā_{i-2,i-1}                                     (§4.3)

with Σ_{i|i+1} = Ā_{i-1,i-1} ⊗ G_{i,i} − (Ψ^Ā Ā_{i,i} Ψ^Āᵀ) ⊗ (Ψ^G G_{i+1,i+1} Ψ^Gᵀ) and
Σ_ℓ = F̃_{ℓ,ℓ}. The dense matrices, for checking all of this, are in :mod:`kfac_ref.dense`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from . import dense
from .appendix_b import (
    KronSumBlock,
    KronSumInverse,
    apply_kron_sum_inverse,
    kron_sum_inverses,
    sigma_block,
    sigma_sides_small,
)
from .backend import cast, to_numpy
from .curvature import CurvatureInverse, Shapes
from .damping import damped_diagonal_factors
from .errors import NonFiniteError
from .linalg import Precision, chain3, spd_inverses
from .tikhonov import STATE_KEYS as EXACT_TIKHONOV_KEYS
from .tikhonov import ExactTikhonovInverse, exact_tikhonov_inverses
from .tikhonov import state_shapes as exact_tikhonov_shapes


def _factor_shapes(sizes: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Shapes of Ā_{i-1,i-1} and G_{i,i} for i = 1..ℓ."""
    L = len(sizes) - 1
    return [(sizes[k] + 1, sizes[k] + 1) for k in range(L)], [
        (sizes[k + 1], sizes[k + 1]) for k in range(L)
    ]


def _host(arrays: Sequence[Any]) -> list[Any]:
    return [to_numpy(a) for a in arrays]


# ------------------------------------------------------------------ §4.2 block diagonal
@dataclass
class BlockDiagonalInverse(CurvatureInverse):
    """F̆⁻¹ = diag(Ā_{i-1,i-1}⁻¹ ⊗ G_{i,i}⁻¹) stored as the inverse factors (§4.2)."""

    A_inv: list[Any]
    G_inv: list[Any]

    name: ClassVar[str] = "block_diagonal"
    method: ClassVar[str] = "kfac-blockdiag"
    symbol: ClassVar[str] = "F̆"
    label: ClassVar[str] = "block-diagonal F̆"
    matrix_name: ClassVar[str] = "F_breve"
    statistics: ClassVar[tuple[str, ...]] = ("A_diag", "G_diag")
    pi_choices: ClassVar[tuple[str, ...]] = ("trace", "one")
    tikhonov_choices: ClassVar[tuple[str, ...]] = ("factored", "exact")

    @classmethod
    def from_factors(
        cls,
        stats: Any,
        gamma: float,
        precision: Precision | None = None,
        pi: str = "trace",
        tikhonov: str = "factored",
    ) -> BlockDiagonalInverse | ExactTikhonovInverse:
        """F̆⁻¹ of the damped diagonal factors (§4.2, §6.3), π_i = ``pi``; or, with
        ``tikhonov="exact"``, (F̆ + γ² I)⁻¹ (eqn. 6, :mod:`kfac_ref.tikhonov`; its
        eigendecompositions in ``precision.dtype`` where that is more precise)."""
        if tikhonov == "exact":
            return _exact_tikhonov(stats, [gamma], precision)[0]
        A_diag, G_diag = damped_diagonal_factors(stats.A_diag, stats.G_diag, gamma, pi)
        return block_diagonal_inverse(A_diag, G_diag, precision)

    @classmethod
    def from_stats_gammas(
        cls,
        stats: Any,
        gammas: Sequence[float],
        linalg_dtype: Any = None,
        precision: Precision | None = None,
        pi: str = "trace",
        tikhonov: str = "factored",
    ) -> list[CurvatureInverse]:
        """As :meth:`CurvatureInverse.from_stats_gammas`; with ``tikhonov="exact"`` one
        eigendecomposition per factor serves every γ (:mod:`kfac_ref.tikhonov`)."""
        if tikhonov != "exact":
            return super().from_stats_gammas(stats, gammas, linalg_dtype, precision, pi, tikhonov)
        cls.check_damping(pi, tikhonov)
        dtype = stats.A_diag[0].dtype
        work = linalg_dtype or dtype
        try:
            invs = _exact_tikhonov(
                stats.astype(work) if work != dtype else stats, gammas, precision
            )
        except NonFiniteError as exc:
            raise NonFiniteError(f"γ = {', '.join(f'{g:.6g}' for g in gammas)}: {exc}") from None
        return [inv.astype(dtype) for inv in invs] if work != dtype else invs

    def apply(self, V: Sequence[Any]) -> list[Any]:
        return apply_block_diagonal_inverse(self, V)

    def astype(self, dtype: Any) -> BlockDiagonalInverse:
        return BlockDiagonalInverse(A_inv=cast(self.A_inv, dtype), G_inv=cast(self.G_inv, dtype))

    def state_dict(self) -> dict[str, list[Any]]:
        return {"A_inv": _host(self.A_inv), "G_inv": _host(self.G_inv)}

    @classmethod
    def from_state_dict(
        cls, d: dict[str, Any], asarray: Callable[[Any], Any]
    ) -> BlockDiagonalInverse | ExactTikhonovInverse:
        """The saved inverse: the factored form (``A_inv``, ``G_inv``) or the exact-Tikhonov
        one (``Q_A``, ``Q_G``, ``denom``, :class:`~kfac_ref.tikhonov.ExactTikhonovInverse`)."""
        if EXACT_TIKHONOV_KEYS[0] in d:
            return ExactTikhonovInverse.from_state_dict(d, asarray)
        return cls([asarray(a) for a in d["A_inv"]], [asarray(g) for g in d["G_inv"]])

    @classmethod
    def state_shapes(cls, sizes: Sequence[int]) -> Shapes:
        """The factored form's arrays, then the exact-Tikhonov form's (a state holds one)."""
        A, G = _factor_shapes(sizes)
        return {"A_inv": A, "G_inv": G, **exact_tikhonov_shapes(sizes)}

    @classmethod
    def dense(cls, factors: Any, gamma: float = 0.0) -> Any:
        return dense.F_breve(factors, gamma)


def _exact_tikhonov(
    stats: Any, gammas: Sequence[float], precision: Precision | None
) -> list[ExactTikhonovInverse]:
    """(F̆ + γ² I)⁻¹ for each γ (eqn. 6), the eigendecompositions in ``precision.dtype`` where
    that is more precise than the statistics' dtype."""
    A0 = stats.A_diag[0]
    high = precision.dtype if precision is not None and precision.applies_to(A0) else None
    return exact_tikhonov_inverses(stats.A_diag, stats.G_diag, [g * g for g in gammas], high)


def block_diagonal_inverse(
    A_diag: Sequence[Any], G_diag: Sequence[Any], precision: Precision | None = None
) -> BlockDiagonalInverse:
    """The inverse factors of F̆ from the (damped) diagonal factors Ā_{i-1,i-1}, G_{i,i} (§4.2)."""
    A_inv, G_inv = _diagonal_inverses(A_diag, G_diag, precision)
    return BlockDiagonalInverse(A_inv=A_inv, G_inv=G_inv)


def _diagonal_inverses(
    A_diag: Sequence[Any],
    G_diag: Sequence[Any],
    precision: Precision | None = None,
    first: int = 0,
) -> tuple[list[Any], list[Any]]:
    """[Ā_{i-1,i-1}⁻¹], [G_{i,i}⁻¹] for i = first+1..ℓ (None before), factorized together (one
    synchronization on a GPU)."""
    L = len(A_diag)
    layers = range(first, L)
    names = [f"Ā_{{{k},{k}}}" for k in layers] + [f"G_{{{k + 1},{k + 1}}}" for k in layers]
    inv = spd_inverses([A_diag[k] for k in layers] + [G_diag[k] for k in layers], names, precision)
    pad = [None] * first
    return pad + inv[: L - first], pad + inv[L - first :]


def apply_block_diagonal_inverse(inv: BlockDiagonalInverse, V: Sequence[Any]) -> list[Any]:
    """(F̆⁻¹ v)_i = vec(G_{i,i}⁻¹ V_i Ā_{i-1,i-1}⁻¹) (§4.2)."""
    return [G_inv @ V_k @ A_inv for A_inv, G_inv, V_k in zip(inv.A_inv, inv.G_inv, V, strict=True)]


# ---------------------------------------------------------------- §4.3 block tridiagonal
def psi_A(A_off: Any, A_next_inv: Any) -> Any:
    """Ψ^Ā_{i-1,i} = Ā_{i-1,i} Ā_{i,i}⁻¹ (§4.3)."""
    return A_off @ A_next_inv


def psi_G(G_off: Any, G_next_inv: Any) -> Any:
    """Ψ^G_{i,i+1} = G_{i,i+1} G_{i+1,i+1}⁻¹ (§4.3)."""
    return G_off @ G_next_inv


@dataclass
class BlockTridiagonalInverse(CurvatureInverse):
    """F̂⁻¹ = Ξᵀ Λ Ξ (§4.3): Ψ^Ā_{i-1,i}, Ψ^G_{i,i+1}, Σ_{i|i+1}⁻¹ (Appendix B) for i = 1..ℓ-1,
    and Σ_ℓ⁻¹ (stored as in the table above)."""

    psi_A: list[Any]
    psi_G: list[Any]
    sigma_cond: list[KronSumInverse]
    sigma_last: BlockDiagonalInverse

    name: ClassVar[str] = "block_tridiagonal"
    method: ClassVar[str] = "kfac-tridiag"
    symbol: ClassVar[str] = "F̂"
    label: ClassVar[str] = "block-tridiagonal F̂"
    matrix_name: ClassVar[str] = "F_hat"
    statistics: ClassVar[tuple[str, ...]] = ("A_diag", "G_diag", "A_off", "G_off")
    # F̂ + cI has no cheap exact inverse: F̂⁻¹ = Ξᵀ Λ Ξ (§4.3) does not survive adding cI
    pi_choices: ClassVar[tuple[str, ...]] = ("trace", "one")

    @classmethod
    def from_factors(
        cls, stats: Any, gamma: float, precision: Precision | None = None, pi: str = "trace"
    ) -> BlockTridiagonalInverse:
        """F̂⁻¹ of the damped diagonal and the undamped off-diagonal factors (§4.3, §6.3, [code]),
        π_i = ``pi``."""
        A_diag, G_diag = damped_diagonal_factors(stats.A_diag, stats.G_diag, gamma, pi)
        return block_tridiagonal_inverse(A_diag, G_diag, stats.A_off, stats.G_off, precision)

    def apply(self, V: Sequence[Any]) -> list[Any]:
        return apply_block_tridiagonal_inverse(self, V)

    def astype(self, dtype: Any) -> BlockTridiagonalInverse:
        return BlockTridiagonalInverse(
            psi_A=cast(self.psi_A, dtype),
            psi_G=cast(self.psi_G, dtype),
            sigma_cond=[KronSumInverse(*cast(s.arrays(), dtype)) for s in self.sigma_cond],
            sigma_last=self.sigma_last.astype(dtype),
        )

    def state_dict(self) -> dict[str, list[Any]]:
        low = [s for s in self.sigma_cond if s.low_rank]
        return {
            "psi_A": _host(self.psi_A),
            "psi_G": _host(self.psi_G),
            "K1": _host([s.K1 for s in self.sigma_cond]),
            "K2": _host([s.K2 for s in self.sigma_cond]),
            "denom": _host([s.denom for s in self.sigma_cond]),
            "A_inv_sigma": _host([s.A_inv for s in low]),
            "G_inv_sigma": _host([s.B_inv for s in low]),
            "A_inv_last": _host(self.sigma_last.A_inv),
            "G_inv_last": _host(self.sigma_last.G_inv),
        }

    @classmethod
    def from_state_dict(
        cls, d: dict[str, Any], asarray: Callable[[Any], Any]
    ) -> BlockTridiagonalInverse:
        def dev(name: str) -> list[Any]:
            return [asarray(a) for a in d[name]]

        # a block is in the low-rank form where its K₁ or K₂ is not square
        bases = iter(zip(dev("A_inv_sigma"), dev("G_inv_sigma"), strict=True))
        sigma_cond = [
            KronSumInverse(
                K1,
                K2,
                denom,
                *(
                    next(bases)
                    if K1.shape[0] != K1.shape[1] or K2.shape[0] != K2.shape[1]
                    else (None, None)
                ),
            )
            for K1, K2, denom in zip(dev("K1"), dev("K2"), dev("denom"), strict=True)
        ]
        return cls(
            psi_A=dev("psi_A"),
            psi_G=dev("psi_G"),
            sigma_cond=sigma_cond,
            sigma_last=BlockDiagonalInverse(dev("A_inv_last"), dev("G_inv_last")),
        )

    @classmethod
    def state_shapes(cls, sizes: Sequence[int]) -> Shapes:
        A, G = _factor_shapes(sizes)
        L = len(A)
        A_off = [(sizes[k] + 1, sizes[k + 1] + 1) for k in range(L - 1)]
        G_off = [(sizes[k + 1], sizes[k + 2]) for k in range(L - 1)]
        small = sigma_sides_small(sizes)
        K1 = [(A[k][0], A[k + 1][0] if s[0] else A[k][0]) for k, s in enumerate(small)]
        K2 = [(G[k][0], G[k + 1][0] if s[1] else G[k][0]) for k, s in enumerate(small)]
        low = [k for k, s in enumerate(small) if any(s)]
        return {
            "psi_A": A_off,
            "psi_G": G_off,
            "K1": K1,
            "K2": K2,
            "denom": [(k2[1], k1[1]) for k1, k2 in zip(K1, K2, strict=True)],
            "A_inv_sigma": [A[k] for k in low],
            "G_inv_sigma": [G[k] for k in low],
            "A_inv_last": A[-1:],
            "G_inv_last": G[-1:],
        }

    @classmethod
    def dense(cls, factors: Any, gamma: float = 0.0) -> Any:
        return dense.F_hat(factors, gamma)


def block_tridiagonal_inverse(
    A_diag: Sequence[Any],
    G_diag: Sequence[Any],
    A_off: Sequence[Any],
    G_off: Sequence[Any],
    precision: Precision | None = None,
) -> BlockTridiagonalInverse:
    """Ψ, Σ_{i|i+1}⁻¹ and Σ_ℓ⁻¹ from the factors (§4.3). Diagonal factors damped, off-diagonal not.

    Σ_{i|i+1} is solved by Appendix B (:func:`~kfac_ref.appendix_b.kron_sum_inverses`), each
    side on the smaller of its two eigenproblems where the net narrows
    (:func:`~kfac_ref.appendix_b.sigma_sides_small`, "Σ_{i|i+1} on the small side" in
    :mod:`kfac_ref.appendix_b`).

    Args:
        A_diag, G_diag: Ā_{i-1,i-1}, G_{i,i} for i = 1..ℓ (damped, §6.3).
        A_off, G_off: Ā_{i-1,i}, G_{i,i+1} for i = 1..ℓ-1.
        precision: redo untrustworthy factorizations in float64 (:class:`Precision`); an
            Appendix-B block is then rebuilt from the float64 factors.
    """
    L = len(A_diag)
    small = sigma_sides_small([A_diag[0].shape[0] - 1] + [G.shape[0] for G in G_diag])
    # Ψ uses Ā_{i,i}⁻¹, G_{i+1,i+1}⁻¹ (i ≥ 1); the low-rank form of Σ_{1|2} also
    # Ā_{0,0}⁻¹, G_{1,1}⁻¹
    first = 0 if L > 1 and any(small[0]) else 1
    A_inv, G_inv = _diagonal_inverses(A_diag, G_diag, precision, first=first)
    pA = [psi_A(A_off[k], A_inv[k + 1]) for k in range(L - 1)]
    pG = [psi_G(G_off[k], G_inv[k + 1]) for k in range(L - 1)]
    blocks = [
        sigma_block(k, small[k], A_diag, G_diag, A_off, G_off, A_inv, G_inv, pA, pG)
        for k in range(L - 1)
    ]

    def redo(k: int) -> KronSumBlock:
        """Block k from the factors in float64 (the inverses it uses recomputed in float64)."""
        f64 = precision.dtype
        A64 = {j: A_diag[j].astype(f64) for j in (k, k + 1)}
        G64 = {j: G_diag[j].astype(f64) for j in (k, k + 1)}
        need = [k + 1] + ([k] if any(small[k]) else [])
        inv = spd_inverses(
            [A64[j] for j in need] + [G64[j] for j in need],
            [f"Ā_{{{j},{j}}}" for j in need] + [f"G_{{{j + 1},{j + 1}}}" for j in need],
        )
        Ai = dict(zip(need, inv[: len(need)], strict=True))
        Gi = dict(zip(need, inv[len(need) :], strict=True))
        Ao, Go = {k: A_off[k].astype(f64)}, {k: G_off[k].astype(f64)}
        pA64, pG64 = {k: psi_A(Ao[k], Ai[k + 1])}, {k: psi_G(Go[k], Gi[k + 1])}
        return sigma_block(k, small[k], A64, G64, Ao, Go, Ai, Gi, pA64, pG64)

    sigma_cond = kron_sum_inverses(blocks, -1, precision, redo)
    return BlockTridiagonalInverse(
        psi_A=pA,
        psi_G=pG,
        sigma_cond=sigma_cond,
        sigma_last=BlockDiagonalInverse(A_inv=[A_inv[-1]], G_inv=[G_inv[-1]]),
    )


def apply_xi(inv: BlockTridiagonalInverse, V: Sequence[Any]) -> list[Any]:
    """u = Ξ v: u_i = V_i − Ψ^G_{i,i+1} V_{i+1} Ψ^Āᵀ_{i-1,i}, u_ℓ = V_ℓ (§4.3)."""
    L = len(V)
    return [V[k] - chain3(inv.psi_G[k], V[k + 1], inv.psi_A[k].T) for k in range(L - 1)] + [V[-1]]


def apply_lambda(inv: BlockTridiagonalInverse, U: Sequence[Any]) -> list[Any]:
    """z = Λ u: z_i = Σ_{i|i+1}⁻¹ u_i (Appendix B), z_ℓ = Σ_ℓ⁻¹ u_ℓ (§4.3)."""
    Z = [apply_kron_sum_inverse(S, U_k) for S, U_k in zip(inv.sigma_cond, U[:-1], strict=True)]
    return Z + apply_block_diagonal_inverse(inv.sigma_last, [U[-1]])


def apply_xi_transpose(inv: BlockTridiagonalInverse, Z: Sequence[Any]) -> list[Any]:
    """w = Ξᵀ z: w_1 = z_1, w_i = z_i − Ψ^Gᵀ_{i-1,i} z_{i-1} Ψ^Ā_{i-2,i-1} (§4.3)."""
    return [Z[0]] + [
        Z[k] - chain3(inv.psi_G[k - 1].T, Z[k - 1], inv.psi_A[k - 1]) for k in range(1, len(Z))
    ]


def apply_block_tridiagonal_inverse(inv: BlockTridiagonalInverse, V: Sequence[Any]) -> list[Any]:
    """F̂⁻¹ v = Ξᵀ Λ Ξ v (§4.3)."""
    return apply_xi_transpose(inv, apply_lambda(inv, apply_xi(inv, V)))
