"""Exact Tikhonov damping of F̆ (§6.3, the paper's eqn. 6): (F̆ + c I)⁻¹ from the
eigendecompositions of the Kronecker factors, the alternative that factored damping replaces.

Per layer i, with Ā_{i-1,i-1} = Q_A diag(a) Q_Aᵀ and G_{i,i} = Q_G diag(g) Q_Gᵀ,

    (Ā ⊗ G + c I)⁻¹ = (Q_A ⊗ Q_G) (diag(a) ⊗ diag(g) + c I)⁻¹ (Q_A ⊗ Q_G)ᵀ,

applied to a gradient block V_i without forming any Kronecker product: with
(A ⊗ B) vec(X) = vec(B X Aᵀ) (:mod:`kfac_ref.vec`),

    U_i = Q_G [(Q_Gᵀ V_i Q_A) ⊘ (g aᵀ + c)] Q_Aᵀ,

``denom = g aᵀ + c`` of shape (d_i, d_{i-1}+1). The eigenvalues are clipped at 0, where they are
for the positive semi-definite factors, so denom ≥ c > 0.

c and γ. Expanding the factored damping of §6.3,
(Ā + πγI) ⊗ (G + γ/π I) = Ā ⊗ G + γ(π I ⊗ G + π⁻¹ Ā ⊗ I) + γ² I: its Tikhonov part is γ² I.
So the exact version is given c = γ² (``KFACConfig.tikhonov = "exact"``), and both are plotted
against the same γ. With γ tied to λ, γ = √(λ + η) (§6.3, ``adapt_gamma = False``), c = λ + η:
eqn. 6 exactly. The γ search of §6.6 then searches c over {ω2² c, c, c/ω2²}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy

from .backend import cast, get_array_module, to_numpy
from .errors import NonFiniteError
from .host import HostBatch
from .linalg import linalg_for


@dataclass
class ExactTikhonovInverse:
    """(F̆ + c I)⁻¹ = diag((Ā_{i-1,i-1} ⊗ G_{i,i} + c I)⁻¹) (§6.3, eqn. 6), per layer the
    eigenvectors Q_A: (d_{i-1}+1, d_{i-1}+1), Q_G: (d_i, d_i) and
    denom = g aᵀ + c: (d_i, d_{i-1}+1).

    Applied, cast and saved like the block-diagonal structure's inverse
    (:class:`kfac_ref.inverse.BlockDiagonalInverse`, which loads either form).
    """

    Q_A: list[Any]
    Q_G: list[Any]
    denom: list[Any]

    def apply(self, V: Sequence[Any]) -> list[Any]:
        """(F̆ + c I)⁻¹ v, layer by layer: Q_G [(Q_Gᵀ V_i Q_A) ⊘ denom] Q_Aᵀ."""
        return [
            Q_G @ ((Q_G.T @ V_k @ Q_A) / d) @ Q_A.T
            for Q_A, Q_G, d, V_k in zip(self.Q_A, self.Q_G, self.denom, V, strict=True)
        ]

    def astype(self, dtype: Any) -> ExactTikhonovInverse:
        return ExactTikhonovInverse(
            cast(self.Q_A, dtype), cast(self.Q_G, dtype), cast(self.denom, dtype)
        )

    def state_dict(self) -> dict[str, list[Any]]:
        return {name: [to_numpy(a) for a in getattr(self, name)] for name in STATE_KEYS}

    @classmethod
    def from_state_dict(
        cls, d: dict[str, Any], asarray: Callable[[Any], Any]
    ) -> ExactTikhonovInverse:
        return cls(*([asarray(a) for a in d[name]] for name in STATE_KEYS))


#: the arrays of :meth:`ExactTikhonovInverse.state_dict`, in its field order
STATE_KEYS = ("Q_A", "Q_G", "denom")


def state_shapes(sizes: Sequence[int]) -> dict[str, list[tuple[int, int]]]:
    """The shapes of :meth:`ExactTikhonovInverse.state_dict` for layer widths d_0 … d_ℓ."""
    L = len(sizes) - 1
    return {
        "Q_A": [(sizes[k] + 1, sizes[k] + 1) for k in range(L)],
        "Q_G": [(sizes[k + 1], sizes[k + 1]) for k in range(L)],
        "denom": [(sizes[k + 1], sizes[k] + 1) for k in range(L)],
    }


@dataclass
class FactorEigen:
    """The eigendecompositions Ā_{i-1,i-1} = Q_A diag(a) Q_Aᵀ, G_{i,i} = Q_G diag(g) Q_Gᵀ of every
    layer (eigenvalues clipped at 0): all that (F̆ + c I)⁻¹ needs besides c, so one
    decomposition serves every c (the γ candidates of §6.6, a γ grid)."""

    a: list[Any]
    Q_A: list[Any]
    g: list[Any]
    Q_G: list[Any]


def factor_eigen(A_diag: Sequence[Any], G_diag: Sequence[Any], dtype: Any = None) -> FactorEigen:
    """:class:`FactorEigen` of the undamped Ā_{i-1,i-1}, G_{i,i} (in ``dtype`` when given, e.g.
    float64). Their finiteness is checked first, with one device→host transfer; raises
    :class:`NonFiniteError` naming a non-finite factor or a failed eigendecomposition."""
    batch = HostBatch()
    for k, (A, G) in enumerate(zip(A_diag, G_diag, strict=True)):
        batch.require_finite([A], f"Ā_{{{k},{k}}} contains NaN or infinite entries")
        batch.require_finite([G], f"G_{{{k + 1},{k + 1}}} contains NaN or infinite entries")
    batch.fetch()
    work = dtype or A_diag[0].dtype
    parts = [_eigh(M.astype(work) if M.dtype != work else M) for M in (*A_diag, *G_diag)]
    L = len(A_diag)
    return FactorEigen(
        a=[w for w, _ in parts[:L]],
        Q_A=[Q for _, Q in parts[:L]],
        g=[w for w, _ in parts[L:]],
        Q_G=[Q for _, Q in parts[L:]],
    )


def exact_tikhonov_from_eigen(
    eig: FactorEigen, c: float, dtype: Any = None
) -> ExactTikhonovInverse:
    """(F̆ + c I)⁻¹ from the factors' :class:`FactorEigen` (§6.3, eqn. 6): denom = g aᵀ + c,
    c > 0; cast to ``dtype`` when given."""
    if not c > 0:
        raise NonFiniteError(f"exact Tikhonov damping needs c = γ² > 0, got c = {c!r}")
    inv = ExactTikhonovInverse(
        Q_A=list(eig.Q_A),
        Q_G=list(eig.Q_G),
        denom=[g[:, None] * a[None, :] + c for a, g in zip(eig.a, eig.g, strict=True)],
    )
    return inv.astype(dtype) if dtype is not None and dtype != eig.a[0].dtype else inv


def exact_tikhonov_inverses(
    A_diag: Sequence[Any], G_diag: Sequence[Any], cs: Sequence[float], dtype: Any = None
) -> list[ExactTikhonovInverse]:
    """(F̆ + c I)⁻¹ for each c of ``cs`` from the undamped Ā_{i-1,i-1}, G_{i,i} (§6.3, eqn. 6),
    with one eigendecomposition per factor for all of them (:func:`factor_eigen`, in ``dtype``
    when given), in the factors' dtype."""
    for c in cs:
        if not c > 0:
            raise NonFiniteError(f"exact Tikhonov damping needs c = γ² > 0, got c = {c!r}")
    eig = factor_eigen(A_diag, G_diag, dtype)
    return [exact_tikhonov_from_eigen(eig, c, A_diag[0].dtype) for c in cs]


def exact_tikhonov_inverse(
    A_diag: Sequence[Any], G_diag: Sequence[Any], c: float, dtype: Any = None
) -> ExactTikhonovInverse:
    """(F̆ + c I)⁻¹ for one c > 0 (:func:`exact_tikhonov_inverses`)."""
    return exact_tikhonov_inverses(A_diag, G_diag, [c], dtype)[0]


def _eigh(M: Any) -> tuple[Any, Any]:
    """(eigenvalues clipped at 0, eigenvectors) of the symmetric part of M."""
    xp = get_array_module(M)
    try:
        w, Q = linalg_for(M).eigh(0.5 * (M + M.T))
    except numpy.linalg.LinAlgError as exc:
        raise NonFiniteError(
            f"the eigendecomposition of a Kronecker factor failed: {exc}"
        ) from None
    return xp.maximum(w, 0.0), Q
