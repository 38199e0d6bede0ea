"""Exact natural gradient: (F + D_γ)⁻¹ with F the exact Fisher (§2.2), dense, for small nets.

Not an approximation of the paper, but what its approximations approximate: the same
optimizer (§5 running statistics, §6 damping and its λ, γ rules, §7 re-scaling), with F̃⁻¹
replaced by the inverse of the exact Fisher of the τ1-subsets, averaged like the factors
(``F`` of :class:`~kfac_ref.statistics.FactorStats`, the expectation over the model's targets
computed exactly). The damping is the one K-FAC's γ adds to F̃: D_γ = F̆(γ) − F̆(0), block-diagonal,
(Ā + πγI) ⊗ (G + γ/π I) − Ā ⊗ G for each layer (§6.3), which is also how
:func:`kfac_ref.compare.compare_fisher` damps F. The network's P×P matrix must fit
(:func:`kfac_ref.memory.check_dense_size`, else :class:`~kfac_ref.errors.TooLargeError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .backend import get_array_module
from .damping import damped_diagonal_factors
from .dense_structures import DenseInverse
from .linalg import spd_inverse
from .vec import layer_offsets


def factored_damping(A_diag: Sequence[Any], G_diag: Sequence[Any], gamma: float) -> Any:
    """D_γ = diag((Ā + πγI) ⊗ (G + γ/π I) − Ā ⊗ G) over the layers (§6.3), dense (P, P)."""
    A_d, G_d = damped_diagonal_factors(A_diag, G_diag, gamma)
    xp = get_array_module(*A_diag)
    off = layer_offsets([(G.shape[0], A.shape[0]) for A, G in zip(A_diag, G_diag, strict=True)])
    D = xp.zeros((off[-1], off[-1]), dtype=A_diag[0].dtype)
    for k in range(len(A_diag)):
        D[off[k] : off[k + 1], off[k] : off[k + 1]] = xp.kron(A_d[k], G_d[k]) - xp.kron(
            A_diag[k], G_diag[k]
        )
    return D


@dataclass
class ExactInverse(DenseInverse):
    """(F + D_γ)⁻¹ as a dense (P, P) matrix (§2.2, §6.3)."""

    name: ClassVar[str] = "exact"
    method: ClassVar[str] = "natural-gradient"
    symbol: ClassVar[str] = "F"
    label: ClassVar[str] = "exact F"
    matrix_name: ClassVar[str | None] = None  # F is not made of the factors
    statistics: ClassVar[tuple[str, ...]] = ("A_diag", "G_diag", "F")

    #: P×P arrays a step holds at its peak (measured with tracemalloc, tests/test_errors.py):
    #: F + D_γ built and factorized in float64 (5 float64 arrays at the peak, the float64 copy
    #: of F among them) and 6 in the training dtype (F's running average, the new batch F and
    #: their mix, the inverse the state holds, the new one, and one for the rest)
    COPIES: ClassVar[int] = 6
    FLOAT64_COPIES: ClassVar[int] = 5

    @classmethod
    def from_factors(cls, stats: Any, gamma: float, precision: Any = None) -> ExactInverse:
        """The dense damped inverse (§6.3). ``precision`` is ignored: under
        ``KFACConfig.linalg = "auto"`` the optimizer factorizes dense structures in float64."""
        return cls(
            spd_inverse(stats.F[0] + factored_damping(stats.A_diag, stats.G_diag, gamma), "F + D_γ")
        )
