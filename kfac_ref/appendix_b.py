"""Appendix B: the inverse of a sum of two Kronecker products, A ⊗ B ± C ⊗ D, by two
generalized symmetric eigendecompositions; and §4.3's Σ_{i|i+1} posed as such a sum.

With C K₁ = A K₁ diag(s₁), K₁ᵀ A K₁ = I and D K₂ = B K₂ diag(s₂), K₂ᵀ B K₂ = I (A, B symmetric
positive definite; C, D symmetric), A ⊗ B ± C ⊗ D = (K₁ ⊗ K₂)⁻ᵀ (I ± S₁ ⊗ S₂) (K₁ ⊗ K₂)⁻¹, so

    (A ⊗ B ± C ⊗ D)⁻¹ vec(X) = vec(K₂ [(K₂ᵀ X K₁) ⊘ (1 ± s₂ s₁ᵀ)] K₁ᵀ)

(:class:`KronSumInverse`, :func:`kron_sum_inverse`, :func:`apply_kron_sum_inverse`). K plays
the role of A^{-1/2} E₁ in the appendix; any square root of A serves (:func:`generalized_eigh`).

§4.3 needs the minus case for Σ_{i|i+1} = Ā_{i-1,i-1} ⊗ G_{i,i} − C ⊗ D with
C = Ψ^Ā Ā_{i,i} Ψ^Āᵀ = P M Pᵀ (P = Ā_{i-1,i}, M = Ā_{i,i}⁻¹) and D = Ψ^G G_{i+1,i+1} Ψ^Gᵀ
(:func:`sigma_block`; the inverse F̂⁻¹ that uses it is :mod:`kfac_ref.inverse`).

Σ_{i|i+1} on the small side. The eigenproblem C K = A K diag(s) (A = Ā_{i-1,i-1}, C = P M Pᵀ;
likewise G_{i,i} and D = G_{i,i+1} G_{i+1,i+1}⁻¹ G_{i,i+1}ᵀ) is of the size of A, but C has rank
≤ dim M. Where M is the smaller (:func:`sigma_sides_small`), the nonzero eigenpairs come from
the small problem (Pᵀ A⁻¹ P) Y = M⁻¹ Y diag(s), Yᵀ M⁻¹ Y = I: then K̃ = A⁻¹ P Y satisfies
C K̃ = A K̃ diag(s) and K̃ᵀ A K̃ = diag(s), i.e. K̃ = K diag(s)^{1/2} on the s ≠ 0 eigenvectors,
which is all the low-rank form of :class:`KronSumInverse` needs. The same s and the same Σ⁻¹,
at (dim M)³ instead of (dim A)³ for the eigendecomposition.

Precision (``KFACConfig.linalg = "auto"``, :class:`~kfac_ref.linalg.Precision`): each block is
factorized in the training dtype and redone in the fallback dtype where its eigendecompositions
failed or cannot be trusted (:func:`kron_sum_inverses`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .backend import cast, get_array_module
from .errors import NonFiniteError
from .host import HostBatch
from .linalg import (
    Precision,
    chain3,
    linalg_for,
    nonfinite_message,
    symmetrize,
    trusted,
    with_jitter,
)


@dataclass
class KronSumInverse:
    """(A ⊗ B ± C ⊗ D)⁻¹ (Appendix B), in one of two equal forms.

    * Full (``A_inv`` None): (K₁ ⊗ K₂)(I ± S₁ ⊗ S₂)⁻¹(K₁ ⊗ K₂)ᵀ with square K, applied to vec(X)
      as vec(K₂ [(K₂ᵀ X K₁) ⊘ denom] K₁ᵀ), ``denom[r, c]`` = 1 ± s₂[r] s₁[c].
    * Low-rank (minus sign only): (1 − x)⁻¹ = 1 + x/(1 − x) and K Kᵀ = A⁻¹ give
      Σ⁻¹ = A⁻¹ ⊗ B⁻¹ + (K̃₁ ⊗ K̃₂)(I − S₁ ⊗ S₂)⁻¹(K̃₁ ⊗ K̃₂)ᵀ with K̃ = K S^{1/2}, applied as
      vec(B⁻¹ X A⁻¹ + K̃₂ [(K̃₂ᵀ X K̃₁) ⊘ denom] K̃₁ᵀ). Eigenvectors with s = 0 drop out of the
      second term, so K̃ needs only rank(C) (rank(D)) columns: "Σ_{i|i+1} on the small side" in
      the module docstring.
    """

    K1: Any
    K2: Any
    denom: Any
    A_inv: Any = None
    B_inv: Any = None

    @property
    def low_rank(self) -> bool:
        return self.A_inv is not None

    def arrays(self) -> list[Any]:
        return [self.K1, self.K2, self.denom] + ([self.A_inv, self.B_inv] if self.low_rank else [])


@dataclass
class _Side:
    """One side of an Appendix-B block: (s, K) = eigh(C, A), and how K̃ follows from K.

    ``lift`` None: the paper's problem, C K = A K diag(s) with A = Ā_{i-1,i-1} (or G_{i,i}), and
    K̃ = K diag(s)^{1/2} in the low-rank form. ``lift`` = A⁻¹ P: C = P M Pᵀ has rank ≤ r < dim A,
    and the problem is solved on the small side (r × r), see the module docstring:
    here ``C`` is Pᵀ A⁻¹ P, ``A`` is M⁻¹, and K̃ = lift · K.
    """

    C: Any
    A: Any
    lift: Any = None


def _queue_generalized_eighs(
    batch: HostBatch, pairs: Sequence[tuple[Any, Any, str]], condition: bool = False
) -> list[tuple[Any, Any, Any, Any]]:
    """Start (s, K) = eigh(C, A) for each (C, A, name), queueing the finiteness of A and C and
    each factorization's success on ``batch``. Returns (result, C sym, A sym, κ̂ or None) per
    pair (κ̂ of A, :meth:`~kfac_ref.linalg.Linalg.generalized_eigh`, with ``condition``)."""
    out = []
    for i, (C, A, name) in enumerate(pairs):
        batch.require_finite([A], nonfinite_message(name))
        batch.require_finite([C], nonfinite_message(f"C paired with {name}"))
        Cs, As = symmetrize(C), symmetrize(A)
        if condition:
            result, ok, kappa = linalg_for(A).generalized_eigh(Cs, As, condition=True)
        else:
            (result, ok), kappa = linalg_for(A).generalized_eigh(Cs, As), None
        batch.value(f"eigh_ok{i}", ok)
        out.append((result, Cs, As, kappa))
    return out


def _finish_generalized_eigh(
    host: dict[str, Any], i: int, started: tuple[Any, Any, Any, Any], name: str
) -> tuple[tuple[Any, Any], bool]:
    """(s, K) of a started eigh(C, A), retried with jitter on A where it failed; and whether it
    was."""
    result, Cs, As, _ = started
    if host[f"eigh_ok{i}"]:
        return result, False
    la = linalg_for(As)
    return with_jitter(lambda X: la.generalized_eigh(Cs, X), As, name), True


def generalized_eigh(C: Any, A: Any, name: str = "A") -> tuple[Any, Any]:
    """s, K with C K = A K diag(s), Kᵀ A K = I (A SPD, C symmetric) (Appendix B).

    K plays the role of A^{-1/2} E₁ in Appendix B: with A = L Lᵀ, K = L⁻ᵀ E where
    L⁻¹ C L⁻ᵀ = E diag(s) Eᵀ (any square root of A works, as the paper notes).
    """
    batch = HostBatch()
    started = _queue_generalized_eighs(batch, [(C, A, name)])
    return _finish_generalized_eigh(batch.fetch(), 0, started[0], name)[0]


def _kron_sum_factors(
    e1: tuple[Any, Any],
    e2: tuple[Any, Any],
    sign: int,
    sides: tuple[_Side, _Side] | None = None,
    base: tuple[Any, Any] | None = None,
) -> tuple[KronSumInverse, Any]:
    """The Appendix-B factors from eigh on each side, (s₁, K₁) and (s₂, K₂), and a 0-d flag
    "Σ is singular" (1 − s₂s₁ ≤ round-off somewhere; always False for sign > 0). With ``base``
    = (A⁻¹, B⁻¹) the low-rank form of :class:`KronSumInverse`, K̃ from ``sides``."""
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
    if base is None:
        return KronSumInverse(K1=K1, K2=K2, denom=denom), singular
    assert sign < 0 and sides is not None
    K1, K2 = (
        K * xp.sqrt(s)[None, :] if side.lift is None else side.lift @ K
        for side, s, K in zip(sides, (s1, s2), (K1, K2), strict=True)
    )
    return KronSumInverse(K1=K1, K2=K2, denom=denom, A_inv=base[0], B_inv=base[1]), singular


SINGULAR_SIGMA = (
    "Σ_{i|i+1} is singular (1 − s₁s₂ = 0 in Appendix B): the factors are exactly dependent; "
    "use damping γ > 0"
)


@dataclass
class KronSumBlock:
    """An Appendix-B block to invert: its two sides, and (A⁻¹, B⁻¹) for the low-rank form."""

    sides: tuple[_Side, _Side]
    base: tuple[Any, Any] | None = None


def kron_sum_inverses(
    blocks: Sequence[tuple[Any, Any, Any, Any] | KronSumBlock],
    sign: int = -1,
    precision: Precision | None = None,
    redo: Callable[[int], tuple[Any, Any, Any, Any] | KronSumBlock] | None = None,
) -> list[KronSumInverse]:
    """:func:`kron_sum_inverse` of each (A, B, C, D), with one device→host transfer for all.

    With a ``precision``, a block whose generalized eigendecompositions failed or cannot be
    trusted (κ̂ ε > TRUST · min(1 ± s₂s₁), κ̂ the larger of the two sides' κ̂) is redone in
    ``precision.dtype`` from ``redo(j)`` (default: the block cast) and cast back.
    """
    specs = [
        b if isinstance(b, KronSumBlock) else KronSumBlock((_Side(b[2], b[0]), _Side(b[3], b[1])))
        for b in blocks
    ]
    batch = HostBatch()
    pairs = [
        (side.C, side.A, name)
        for b in specs
        for side, name in zip(b.sides, ("A (Appendix B)", "B (Appendix B)"), strict=True)
    ]
    check = precision is not None and bool(specs) and precision.applies_to(specs[0].sides[0].A)
    started = _queue_generalized_eighs(batch, pairs, condition=check)
    first = []
    for j, b in enumerate(specs):
        (e1, _, _, k1), (e2, _, _, k2) = started[2 * j], started[2 * j + 1]
        ready = e1 is not None and e2 is not None
        first.append(_kron_sum_factors(e1, e2, sign, b.sides, b.base) if ready else None)
        if first[-1] is not None:
            batch.value(f"singular{j}", first[-1][1])
            if check:
                denom = first[-1][0].denom
                xp = get_array_module(denom)
                kappa = xp.maximum(k1, k2)
                batch.value(f"trusted{j}", trusted(True, kappa, denom.dtype, xp, denom.min()))
    host = batch.fetch()
    out = []
    for j, b in enumerate(specs):
        if check and not (
            host[f"eigh_ok{2 * j}"]
            and host[f"eigh_ok{2 * j + 1}"]
            and first[j] is not None
            and host[f"trusted{j}"]
        ):
            precision.redone.append(f"Σ_{{{j + 1}|{j + 2}}}")
            block = redo(j) if redo else tuple(M.astype(precision.dtype) for M in blocks[j])
            (exact,) = kron_sum_inverses([block], sign)
            dtype = b.sides[0].A.dtype
            out.append(KronSumInverse(*cast(exact.arrays(), dtype)))
            continue
        (e1, redo1), (e2, redo2) = (
            _finish_generalized_eigh(host, i, started[i], pairs[i][2]) for i in (2 * j, 2 * j + 1)
        )
        if redo1 or redo2 or first[j] is None:
            inv, singular = _kron_sum_factors(e1, e2, sign, b.sides, b.base)
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
    """Y = K₂ [(K₂ᵀ X K₁) ⊘ denom] K₁ᵀ (+ B⁻¹ X A⁻¹ in the low-rank form), i.e.
    (A ⊗ B ± C ⊗ D)⁻¹ vec(X) (Appendix B)."""
    Y = chain3(inv.K2, chain3(inv.K2.T, X, inv.K1) / inv.denom, inv.K1.T)
    if inv.low_rank:
        Y += chain3(inv.B_inv, X, inv.A_inv)
    return Y


# ------------------------------------------------ §4.3's Σ_{i|i+1} as an Appendix-B block
def sigma_sides_small(sizes: Sequence[int]) -> list[tuple[bool, bool]]:
    """For each Σ_{i|i+1} (i = 1..ℓ-1) of a net with these layer sizes d_0..d_ℓ, whether each
    side of Appendix B is solved on the small side: C = Ā_{i-1,i} Ā_{i,i}⁻¹ Ā_{i-1,i}ᵀ has rank
    ≤ d_i + 1, less than dim Ā_{i-1,i-1} = d_{i-1} + 1 where the net narrows, and
    D = Ψ^G G_{i+1,i+1} Ψ^Gᵀ has rank ≤ d_{i+1} < d_i likewise (see the module docstring). A
    block with a small side is stored in the low-rank form of :class:`KronSumInverse`."""
    return [(sizes[i] < sizes[i - 1], sizes[i + 1] < sizes[i]) for i in range(1, len(sizes) - 1)]


def sigma_block(
    k: int,
    small: tuple[bool, bool],
    A_diag: Any,
    G_diag: Any,
    A_off: Any,
    G_off: Any,
    A_inv: Any,
    G_inv: Any,
    pA: Any,
    pG: Any,
) -> KronSumBlock:
    """Σ_{i|i+1} = A ⊗ B − C ⊗ D (Appendix B, i = k+1) as two eigenproblems: A = Ā_{i-1,i-1},
    C = Ψ^Ā Ā_{i,i} Ψ^Āᵀ = Ā_{i-1,i} Ā_{i,i}⁻¹ Ā_{i-1,i}ᵀ, B = G_{i,i}, D = Ψ^G G_{i+1,i+1} Ψ^Gᵀ;
    a small side (``small``) as (Pᵀ A⁻¹ P, M⁻¹) with lift A⁻¹ P (the module docstring).
    The arguments are indexable by layer (lists, or dicts holding k and k+1)."""
    if small[0]:
        lift = A_inv[k] @ A_off[k]
        side1 = _Side(A_off[k].T @ lift, A_diag[k + 1], lift)
    else:
        side1 = _Side(pA[k] @ A_off[k].T, A_diag[k])
    if small[1]:
        lift = G_inv[k] @ G_off[k]
        side2 = _Side(G_off[k].T @ lift, G_diag[k + 1], lift)
    else:
        side2 = _Side(pG[k] @ G_off[k].T, G_diag[k])
    base = (A_inv[k], G_inv[k]) if any(small) else None
    return KronSumBlock((side1, side2), base)
