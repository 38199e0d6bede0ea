"""Cheap approximations of F̃⁻¹ (§4): block-diagonal F̆⁻¹ (§4.2), block-tridiagonal F̂⁻¹ (§4.3),
and Appendix B's inverse of a sum of two Kronecker products; and the interface every curvature
structure implements (:class:`CurvatureInverse`; the table of them is :mod:`kfac_ref.structures`).

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

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from . import dense
from .backend import cast, get_array_module, to_numpy
from .damping import damped_diagonal_factors
from .errors import ConfigError, NonFiniteError
from .host import HostBatch
from .linalg import linalg_for
from .tikhonov import STATE_KEYS as EXACT_TIKHONOV_KEYS
from .tikhonov import ExactTikhonovInverse, exact_tikhonov_inverses
from .tikhonov import state_shapes as exact_tikhonov_shapes

Shapes = dict[str, list[tuple[int, ...]]]


# ------------------------------------------------------------- the interface (§4, §6.3)
class CurvatureInverse:
    """A curvature structure: the damped inverse of one approximation of F (§4) and what it needs.

    A structure is one subclass plus one entry in :data:`kfac_ref.structures.STRUCTURES`. It
    says which statistics it is built from (:attr:`statistics`: fields of
    :class:`kfac_ref.statistics.FactorStats`), builds its damped inverse from them
    (:meth:`from_factors`, §6.3), applies it (:meth:`apply`), converts its dtype
    (:meth:`astype`), saves and loads itself (:meth:`state_dict`, :meth:`from_state_dict`,
    :meth:`state_shapes`) and gives its dense matrix for the comparison tools (:meth:`dense`).

    Damping options (``KFACConfig.pi``, ``KFACConfig.tikhonov``, §6.3): every structure damps
    with the trace-norm π_i and factored Tikhonov damping; :attr:`pi_choices` and
    :attr:`tikhonov_choices` list what else it implements, and only a choice other than those
    defaults is passed on to its :meth:`from_factors` (as ``pi=…``, ``tikhonov=…``).
    """

    name: ClassVar[str]  # the registry key, KFACConfig.structure
    method: ClassVar[str]  # the experiments' --method
    symbol: ClassVar[str]  # the paper's symbol
    label: ClassVar[str]  # for plots and tables
    matrix_name: ClassVar[
        str | None
    ]  # key of its dense matrix in comparisons (kfac_ref.compare); None: none from factors
    statistics: ClassVar[tuple[str, ...]]  # the FactorStats fields it is built from (§5)
    factored: ClassVar[bool] = True  # Kronecker-factored: scales to the paper's networks
    pi_choices: ClassVar[tuple[str, ...]] = ("trace",)  # π_i of the factored damping (§6.3)
    tikhonov_choices: ClassVar[tuple[str, ...]] = ("factored",)  # §6.3; "exact": eqn. 6

    @classmethod
    def check_damping(cls, pi: str = "trace", tikhonov: str = "factored") -> None:
        """:class:`ConfigError` unless this structure implements π_i = ``pi`` and Tikhonov
        damping ``tikhonov`` (§6.3), naming the structures that do."""
        from .structures import STRUCTURES  # the table imports this module

        for option, value, attr in (
            ("pi", pi, "pi_choices"),
            ("tikhonov", tikhonov, "tikhonov_choices"),
        ):
            if value not in getattr(cls, attr):
                able = [name for name, c in STRUCTURES.items() if value in getattr(c, attr)]
                raise ConfigError(
                    f"{option}={value!r} is not implemented for the {cls.label} structure "
                    f"({cls.name}); it is for: {', '.join(able) or 'none'}"
                )

    @classmethod
    def check_network(cls, mlp: Any, dtype: Any) -> None:
        """Refuse (:class:`~kfac_ref.errors.TooLargeError`) a network this structure cannot
        handle; the factored structures handle any."""

    @classmethod
    def from_stats(
        cls,
        stats: Any,
        gamma: float,
        linalg_dtype: Any = None,
        precision: Precision | None = None,
        pi: str = "trace",
        tikhonov: str = "factored",
    ) -> CurvatureInverse:
        """The damped inverse of the statistics with damping γ (§6.3), its factorizations in
        ``linalg_dtype`` (e.g. float64; None: the statistics' dtype), cast back to the
        statistics' dtype; ``precision``: redo untrustworthy ones in float64
        (:class:`Precision`, ``KFACConfig.linalg = "auto"``). ``pi``, ``tikhonov``: the damping
        options (:meth:`check_damping`; the defaults are the trace-norm π_i, factored damping)."""
        cls.check_damping(pi, tikhonov)
        missing = [name for name in cls.statistics if getattr(stats, name) is None]
        if missing:
            raise ConfigError(f"the {cls.label} inverse needs the statistics {', '.join(missing)}")
        options = {
            name: value
            for name, value, default in (("pi", pi, "trace"), ("tikhonov", tikhonov, "factored"))
            if value != default
        }
        dtype = stats.A_diag[0].dtype
        work = linalg_dtype or dtype
        inv = cls.from_factors(
            stats.astype(work) if work != dtype else stats, gamma, precision, **options
        )
        return inv.astype(dtype) if work != dtype else inv

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
        """:meth:`from_stats` for each γ (the candidates of §6.6), an error naming its γ; a
        structure may share work between them (F̆ with exact Tikhonov damping does)."""
        out = []
        for gamma in gammas:
            try:
                out.append(cls.from_stats(stats, gamma, linalg_dtype, precision, pi, tikhonov))
            except NonFiniteError as exc:
                raise NonFiniteError(f"γ = {gamma:.6g}: {exc}") from None
        return out

    @classmethod
    def from_factors(
        cls, stats: Any, gamma: float, precision: Precision | None = None
    ) -> CurvatureInverse:
        """The damped inverse of the statistics, in their dtype (§6.3); ``precision`` as in
        :meth:`from_stats` (structures that factorize nothing ignore it)."""
        raise NotImplementedError

    def apply(self, V: Sequence[Any]) -> list[Any]:
        """The inverse applied to v (list-of-matrices form, :mod:`kfac_ref.vec`)."""
        raise NotImplementedError

    def astype(self, dtype: Any) -> CurvatureInverse:
        raise NotImplementedError

    def state_dict(self) -> dict[str, list[Any]]:
        """Every array, on the host, by name (the checkpoint's ``inverse`` entry)."""
        raise NotImplementedError

    @classmethod
    def from_state_dict(cls, d: dict[str, Any], asarray: Callable[[Any], Any]) -> CurvatureInverse:
        """The inverse saved by :meth:`state_dict`, each array moved with ``asarray``."""
        raise NotImplementedError

    @classmethod
    def state_shapes(cls, sizes: Sequence[int]) -> Shapes:
        """The shape of each array of :meth:`state_dict` for layer widths d_0 … d_ℓ."""
        raise NotImplementedError

    @classmethod
    def dense(cls, factors: Any, gamma: float = 0.0) -> Any:
        """The dense (P, P) matrix this structure approximates F with (:mod:`kfac_ref.dense`)."""
        raise NotImplementedError


def _factor_shapes(sizes: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Shapes of Ā_{i-1,i-1} and G_{i,i} for i = 1..ℓ."""
    L = len(sizes) - 1
    return [(sizes[k] + 1, sizes[k] + 1) for k in range(L)], [
        (sizes[k + 1], sizes[k + 1]) for k in range(L)
    ]


def _host(arrays: Sequence[Any]) -> list[Any]:
    return [to_numpy(a) for a in arrays]


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
            warnings.warn(
                f"{name} was not positive definite; added jitter {jitter:.3g}",
                RuntimeWarning,
                stacklevel=2,
            )
            return out
        jitter *= 100.0
    raise NonFiniteError(
        f"{name} is not positive definite even with jitter {jitter / 100:.3g}; increase damping"
    )


#: A factorization in the training dtype is trusted when κ̂·ε ≤ TRUST (κ̂ a lower bound of the
#: condition number, ε the dtype's machine epsilon): about two correct digits in the worst
#: direction of the inverse and many more in the others (``KFACConfig.linalg = "auto"``).
TRUST = 1e-2


@dataclass
class Precision:
    """``KFACConfig.linalg = "auto"``: Cholesky inverses in ``dtype`` (float64); each Appendix-B
    block in the training dtype, redone in ``dtype`` where it cannot be trusted (it failed, or
    κ̂·ε > :data:`TRUST` · min(1 − s₁s₂); see the config's docstring). ``redone`` collects the
    names of the blocks redone, for the log."""

    dtype: Any
    redone: list[str] = field(default_factory=list)

    def applies_to(self, M: Any) -> bool:
        """Whether M is in a lower precision than the fallback (else nothing is redone)."""
        return get_array_module(M).finfo(M.dtype).eps > get_array_module(M).finfo(self.dtype).eps


def _trusted(ok: Any, kappa: Any, dtype: Any, xp: Any, slack: Any = 1.0) -> Any:
    """ok and κ̂·ε ≤ TRUST·slack (0-d, no synchronization)."""
    return ok & (kappa * float(xp.finfo(dtype).eps) <= TRUST * slack)


def _factorize_all(
    factorize: Callable[..., tuple[Any, ...]],
    Ms: Sequence[Any],
    names: Sequence[str],
    precision: Precision | None = None,
) -> list[Any]:
    """``factorize(symmetrize(M))`` for every M, checked with one device→host transfer.

    Every M must be finite (else :class:`NonFiniteError` naming the first bad one) and is
    factorized; where a factorization fails (not numerically positive definite) it is retried
    with jitter (:func:`_with_jitter`), which warns. With a ``precision`` (``linalg="auto"``)
    the matrices are factorized in ``precision.dtype`` and the results cast back: a Cholesky
    inverse costs about one matrix product, so float64 is cheap here, while float32 would need
    a condition estimate costing a fair part of that (Appendix B is where float32 pays).
    """
    if precision is not None and Ms and precision.applies_to(Ms[0]):
        dtype = Ms[0].dtype
        done = _factorize_all(factorize, [M.astype(precision.dtype) for M in Ms], names)
        return [out.astype(dtype) for out in done]
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
    return [
        out if host[f"ok{i}"] else _with_jitter(factorize, S, name)
        for i, (out, S, name) in enumerate(zip(outs, sym, names, strict=True))
    ]


def spd_inverses(
    Ms: Sequence[Any], names: Sequence[str], precision: Precision | None = None
) -> list[Any]:
    """[M⁻¹] for symmetric positive-definite matrices (one Cholesky each, one sync for all).

    A matrix that is not numerically positive definite is retried with a small jitter
    (1e-10·tr(M)/dim, then ×100 up to 3 times) and a warning; one with NaN/inf entries raises
    :class:`NonFiniteError` naming it. ``precision``: see :func:`_factorize_all`.
    """
    if not Ms:
        return []
    return _factorize_all(linalg_for(*Ms).spd_inverse, Ms, names, precision)


def spd_inverse(M: Any, name: str = "matrix") -> Any:
    """M⁻¹ for symmetric positive-definite M (one Cholesky factorization; jitter as above)."""
    return spd_inverses([M], [name])[0]


def spd_cholesky(M: Any, name: str = "matrix") -> Any:
    """Lower Cholesky factor of a symmetric positive-definite M (checks and jitter as above)."""
    return _factorize_all(linalg_for(M).checked_cholesky, [M], [name])[0]


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


# ----------------------------------------------------------------------- Appendix B
@dataclass
class KronSumInverse:
    """(A ⊗ B ± C ⊗ D)⁻¹ (Appendix B), in one of two equal forms.

    * Full (``A_inv`` None): (K₁ ⊗ K₂)(I ± S₁ ⊗ S₂)⁻¹(K₁ ⊗ K₂)ᵀ with square K, applied to vec(X)
      as vec(K₂ [(K₂ᵀ X K₁) ⊘ denom] K₁ᵀ), ``denom[r, c]`` = 1 ± s₂[r] s₁[c].
    * Low-rank (minus sign only): (1 − x)⁻¹ = 1 + x/(1 − x) and K Kᵀ = A⁻¹ give
      Σ⁻¹ = A⁻¹ ⊗ B⁻¹ + (K̃₁ ⊗ K̃₂)(I − S₁ ⊗ S₂)⁻¹(K̃₁ ⊗ K̃₂)ᵀ with K̃ = K S^{1/2}, applied as
      vec(B⁻¹ X A⁻¹ + K̃₂ [(K̃₂ᵀ X K̃₁) ⊘ denom] K̃₁ᵀ). Eigenvectors with s = 0 drop out of the
      second term, so K̃ needs only rank(C) (rank(D)) columns: see :func:`block_tridiagonal_inverse`.
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
    and the problem is solved on the small side (r × r), see :func:`block_tridiagonal_inverse`:
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
        batch.require_finite([A], _nonfinite_message(name))
        batch.require_finite([C], _nonfinite_message(f"C paired with {name}"))
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
    return _with_jitter(lambda X: la.generalized_eigh(Cs, X), As, name), True


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
class _Block:
    """An Appendix-B block to invert: its two sides, and (A⁻¹, B⁻¹) for the low-rank form."""

    sides: tuple[_Side, _Side]
    base: tuple[Any, Any] | None = None


def kron_sum_inverses(
    blocks: Sequence[tuple[Any, Any, Any, Any] | _Block],
    sign: int = -1,
    precision: Precision | None = None,
    redo: Callable[[int], tuple[Any, Any, Any, Any] | _Block] | None = None,
) -> list[KronSumInverse]:
    """:func:`kron_sum_inverse` of each (A, B, C, D), with one device→host transfer for all.

    With a ``precision``, a block whose generalized eigendecompositions failed or cannot be
    trusted (κ̂ ε > TRUST · min(1 ± s₂s₁), κ̂ the larger of the two sides' κ̂) is redone in
    ``precision.dtype`` from ``redo(j)`` (default: the block cast) and cast back.
    """
    specs = [
        b if isinstance(b, _Block) else _Block((_Side(b[2], b[0]), _Side(b[3], b[1])))
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
                batch.value(f"trusted{j}", _trusted(True, kappa, denom.dtype, xp, denom.min()))
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


def sigma_sides_small(sizes: Sequence[int]) -> list[tuple[bool, bool]]:
    """For each Σ_{i|i+1} (i = 1..ℓ-1) of a net with these layer sizes d_0..d_ℓ, whether each
    side of Appendix B is solved on the small side: C = Ā_{i-1,i} Ā_{i,i}⁻¹ Ā_{i-1,i}ᵀ has rank
    ≤ d_i + 1, less than dim Ā_{i-1,i-1} = d_{i-1} + 1 where the net narrows, and
    D = Ψ^G G_{i+1,i+1} Ψ^Gᵀ has rank ≤ d_{i+1} < d_i likewise (see
    :func:`block_tridiagonal_inverse`). A block with a small side is stored in the low-rank form
    of :class:`KronSumInverse`."""
    return [(sizes[i] < sizes[i - 1], sizes[i + 1] < sizes[i]) for i in range(1, len(sizes) - 1)]


def block_tridiagonal_inverse(
    A_diag: Sequence[Any],
    G_diag: Sequence[Any],
    A_off: Sequence[Any],
    G_off: Sequence[Any],
    precision: Precision | None = None,
) -> BlockTridiagonalInverse:
    """Ψ, Σ_{i|i+1}⁻¹ and Σ_ℓ⁻¹ from the factors (§4.3). Diagonal factors damped, off-diagonal not.

    Appendix B's eigenproblem C K = A K diag(s) (A = Ā_{i-1,i-1}, C = P M Pᵀ with P = Ā_{i-1,i},
    M = Ā_{i,i}⁻¹; likewise G_{i,i} and D = G_{i,i+1} G_{i+1,i+1}⁻¹ G_{i,i+1}ᵀ) is of the size of
    A, but C has rank ≤ dim M. Where M is the smaller (:func:`sigma_sides_small`), the nonzero
    eigenpairs come from the small problem (Pᵀ A⁻¹ P) Y = M⁻¹ Y diag(s), Yᵀ M⁻¹ Y = I: then
    K̃ = A⁻¹ P Y satisfies C K̃ = A K̃ diag(s) and K̃ᵀ A K̃ = diag(s), i.e. K̃ = K diag(s)^{1/2}
    on the s ≠ 0 eigenvectors, which is all the low-rank form of :class:`KronSumInverse` needs.
    The same s and the same Σ⁻¹, at (dim M)³ instead of (dim A)³ for the eigendecomposition.

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
        _sigma_block(k, small[k], A_diag, G_diag, A_off, G_off, A_inv, G_inv, pA, pG)
        for k in range(L - 1)
    ]

    def redo(k: int) -> _Block:
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
        return _sigma_block(k, small[k], A64, G64, Ao, Go, Ai, Gi, pA64, pG64)

    sigma_cond = kron_sum_inverses(blocks, -1, precision, redo)
    return BlockTridiagonalInverse(
        psi_A=pA,
        psi_G=pG,
        sigma_cond=sigma_cond,
        sigma_last=BlockDiagonalInverse(A_inv=[A_inv[-1]], G_inv=[G_inv[-1]]),
    )


def _sigma_block(
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
) -> _Block:
    """Σ_{i|i+1} = A ⊗ B − C ⊗ D (Appendix B, i = k+1) as two eigenproblems: A = Ā_{i-1,i-1},
    C = Ψ^Ā Ā_{i,i} Ψ^Āᵀ = Ā_{i-1,i} Ā_{i,i}⁻¹ Ā_{i-1,i}ᵀ, B = G_{i,i}, D = Ψ^G G_{i+1,i+1} Ψ^Gᵀ;
    a small side (``small``) as (Pᵀ A⁻¹ P, M⁻¹) with lift A⁻¹ P (:func:`block_tridiagonal_inverse`).
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
    return _Block((side1, side2), base)


def chain3(A: Any, B: Any, C: Any) -> Any:
    """A B C, multiplied in the order with fewer flops ((AB)C or A(BC)): the layer widths of
    Ψ^G V Ψ^Āᵀ differ, down to 30 at an autoencoder's code layer."""
    (a0, a1), b1, c1 = A.shape, B.shape[1], C.shape[1]
    if a0 * a1 * b1 + a0 * b1 * c1 <= a1 * b1 * c1 + a0 * a1 * c1:
        return (A @ B) @ C
    return A @ (B @ C)


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
