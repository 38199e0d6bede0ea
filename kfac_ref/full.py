"""F̃⁻¹ itself (§3): every block Ā_{i-1,j-1} ⊗ G_{i,j} of the Kronecker-factored F̃, damped
(§6.3) and inverted as one dense matrix. For small networks: what F̆ (§4.2) and F̂ (§4.3)
approximate, so a run with it measures what their structure costs.

Built from the running statistics of every factor pair (``A_upper``, ``G_upper`` of
:class:`~kfac_ref.statistics.FactorStats`, the lower blocks by symmetry); the diagonal blocks
are damped as in F̆ and F̂, (Ā + πγI) ⊗ (G + γ/π I), the others not. The network's P×P matrix
must fit (:func:`kfac_ref.memory.check_dense_size`, else :class:`~kfac_ref.errors.TooLargeError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from . import dense
from .backend import get_array_module
from .damping import damped_diagonal_factors
from .dense_structures import DenseInverse
from .linalg import spd_inverse
from .statistics import upper_pairs
from .vec import layer_offsets


@dataclass
class FullInverse(DenseInverse):
    """F̃(γ)⁻¹ as a dense (P, P) matrix (§3, §6.3)."""

    name: ClassVar[str] = "full"
    method: ClassVar[str] = "kfac-full"
    symbol: ClassVar[str] = "F̃"
    label: ClassVar[str] = "full F̃"
    matrix_name: ClassVar[str | None] = "F_tilde"
    statistics: ClassVar[tuple[str, ...]] = ("A_diag", "G_diag", "A_upper", "G_upper")

    #: P×P arrays a step holds at its peak (measured with tracemalloc, tests/test_errors.py):
    #: F̃ assembled and factorized in float64 (4 float64 arrays at the peak of
    #: :func:`~kfac_ref.linalg.spd_inverse`) and 4 in the training dtype (the inverse the
    #: state holds, the new one, its cast, and one for the statistics and vectors)
    COPIES: ClassVar[int] = 4
    FLOAT64_COPIES: ClassVar[int] = 4

    @classmethod
    def from_factors(cls, stats: Any, gamma: float, precision: Any = None) -> FullInverse:
        """The dense damped inverse (§6.3). ``precision`` is ignored: under
        ``KFACConfig.linalg = "auto"`` the optimizer factorizes dense structures in float64."""
        A_diag, G_diag = damped_diagonal_factors(stats.A_diag, stats.G_diag, gamma)
        xp = get_array_module(*A_diag)
        L = len(A_diag)
        off = layer_offsets([(G.shape[0], A.shape[0]) for A, G in zip(A_diag, G_diag, strict=True)])
        sl = [slice(off[k], off[k + 1]) for k in range(L)]
        F = xp.zeros((off[-1], off[-1]), dtype=A_diag[0].dtype)
        for k in range(L):
            F[sl[k], sl[k]] = xp.kron(A_diag[k], G_diag[k])
        for (k, l), A, G in zip(upper_pairs(L), stats.A_upper, stats.G_upper, strict=True):
            F[sl[k], sl[l]] = xp.kron(A, G)
            F[sl[l], sl[k]] = F[sl[k], sl[l]].T
        return cls(spd_inverse(F, "F̃ (damped)"))

    @classmethod
    def dense(cls, factors: Any, gamma: float = 0.0) -> Any:
        return dense.F_tilde(factors, gamma)
