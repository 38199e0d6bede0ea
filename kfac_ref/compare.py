"""Side-by-side dense comparison of F with F̃, F̆, F̂ and of their inverses, for small nets.

The dense approximations come first: F̃ (§3), F̆ (§4.2) and F̂ (§4.3) built from the Kronecker
factors through the structure table (:func:`approximate_fisher`), so that the exact Fisher of
§2.2 (:mod:`kfac_ref.fisher`) needs nothing from §3–§4.

User-facing: :func:`compare_fisher` returns plain data (NumPy arrays and floats) that a user can
print, tabulate or plot; nothing here trains or draws. Errors are relative Frobenius norms,
‖X − Y‖_F / ‖Y‖_F, per layer-pair block (k, l) of the θ ordering (:mod:`kfac_ref.vec`) and over
the whole matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from . import dense
from .backend import get_array_module, to_numpy
from .damping import check_gamma, damped_diagonal_factors
from .errors import ConfigError, NonFiniteError
from .factors import KroneckerFactors, kronecker_factors
from .fisher import check_dense_inputs, exact_fisher
from .full import FullInverse
from .linalg import spd_inverse
from .memory import check_dense_size, per_case_entries
from .mlp import MLP
from .structures import STRUCTURES, get_structure
from .vec import layer_offsets

DENSE_F_TILDE = FullInverse.name  # F̃ itself (§3)
#: the structures whose dense matrix approximate_fisher builds from the factors
DENSE_STRUCTURES = tuple(name for name, cls in STRUCTURES.items() if cls.matrix_name)

#: key of each compared matrix → the structure name :func:`approximate_fisher` builds it from
APPROXIMATIONS = {cls.matrix_name: name for name, cls in STRUCTURES.items() if cls.matrix_name}
#: P×P arrays :func:`compare_fisher` holds at its peak: the 4 matrices and 4 inverses it returns,
#: the undamped F̃, F + Δ and the factorization's work arrays (tracemalloc: 12.0–12.6)
COMPARE_COPIES = 13


# ------------------------------------------------ F̃, F̆, F̂ dense, from the Kronecker factors
def damped_diagonal(factors: KroneckerFactors, gamma: float) -> tuple[list[Any], list[Any]]:
    """The diagonal factors with factored Tikhonov damping γ (§6.3) applied (γ = 0: unchanged)."""
    return damped_diagonal_factors(*factors.diagonal(), gamma)


def dense_F_tilde(factors: KroneckerFactors, gamma: float = 0.0, structure: str = "full") -> Any:
    """Dense F̃ (all blocks Ā_{k,l} ⊗ G_{k+1,l+1}, §3) or F̆ (its diagonal blocks only, §4.2):
    :func:`kfac_ref.dense.F_tilde`, :func:`kfac_ref.dense.F_breve`.

    With γ > 0 the diagonal blocks are the damped (Ā + πγI) ⊗ (G + γ/π I) (§6.3).
    """
    builders = {"full": dense.F_tilde, "block_diagonal": dense.F_breve}
    if structure not in builders:
        raise ConfigError(f"dense_F_tilde builds 'full' or 'block_diagonal', not {structure!r}")
    return builders[structure](factors, gamma)


def dense_F_hat(factors: KroneckerFactors, gamma: float = 0.0) -> Any:
    """Dense F̂ = Ξ⁻¹ Λ⁻¹ Ξ⁻ᵀ (§4.3): :func:`kfac_ref.dense.F_hat` (dense Ψ, no Appendix B)."""
    return dense.F_hat(factors, gamma)


def dense_approximation(structure: str) -> Any:
    """``build(factors, γ)`` of the dense matrix of ``structure`` (a name of
    :data:`DENSE_STRUCTURES`):
    the registered structure's :meth:`~kfac_ref.curvature.CurvatureInverse.dense`."""
    return get_structure(structure).dense


def approximate_fisher(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    structure: str = "full",
    gamma: float = 0.0,
    factors: KroneckerFactors | None = None,
    max_bytes: int | None = None,
) -> Any:
    """The dense matrix of a structure of :data:`kfac_ref.structures.STRUCTURES` built from
    the factors: F̃ (``"full"``, §3), F̆ (``"block_diagonal"``, §4.2), F̂
    (``"block_tridiagonal"``, §4.3).

    The factors are exact expectations over the model's predictive distribution unless
    ``factors`` is given; ``gamma`` > 0 applies factored Tikhonov damping (§6.3) to the diagonal
    factors (the off-diagonal ones are never damped).
    """
    if structure not in DENSE_STRUCTURES:
        raise ConfigError(
            f"unknown structure {structure!r}; choose one of {', '.join(DENSE_STRUCTURES)}"
        )
    gamma = check_gamma(gamma)
    check_dense_inputs(mlp, weights, X, max_bytes)
    if factors is None:
        factors = kronecker_factors(mlp, weights, X, method="exact")
    build = dense_approximation(structure)
    xp = get_array_module(factors.G[0][0])
    try:
        F = build(factors, gamma)
        if not bool(xp.isfinite(F).all()):
            raise NonFiniteError("a damped diagonal block F̃_{i,i} is singular")
    except (NonFiniteError, numpy.linalg.LinAlgError, xp.linalg.LinAlgError) as exc:
        raise NonFiniteError(
            f"{get_structure(structure).symbol} with γ = {gamma:g} needs invertible damped "
            f"factors: {exc} (raise γ)"
        ) from None
    return F


# ----------------------------------------------------------- F against F̃, F̆, F̂, side by side
def check_compare_size(
    mlp: MLP, n_cases: int, itemsize: int, max_bytes: int | None = None, advice: str | None = None
) -> None:
    """Refuse (:class:`~kfac_ref.errors.TooLargeError`) a :func:`compare_fisher` of ``n_cases``
    cases that would not fit in ``max_bytes`` (default 2 GiB), before anything is allocated:
    its P×P matrices (:data:`COMPARE_COPIES`) and the exact Fisher's per-case gradients
    (:func:`kfac_ref.memory.per_case_entries`). ``advice`` ends the message."""
    check_dense_size(
        mlp.n_params,
        itemsize,
        max_bytes,
        copies=COMPARE_COPIES,
        n_cases=n_cases,
        per_case=per_case_entries(mlp.layer_sizes),
        advice=advice,
    )


def relative_error(X: Any, Y: Any) -> float:
    """‖X − Y‖_F / ‖Y‖_F (inf when Y = 0 and X ≠ 0, 0 when both are 0)."""
    num = float(numpy.linalg.norm(to_numpy(X) - to_numpy(Y)))
    den = float(numpy.linalg.norm(to_numpy(Y)))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def block_relative_errors(X: Any, Y: Any, shapes: Sequence[tuple[int, int]]) -> numpy.ndarray:
    """ℓ×ℓ array of relative Frobenius errors of block (k, l) of X against the same block of Y."""
    X, Y = to_numpy(X), to_numpy(Y)
    off = layer_offsets(shapes)
    L = len(shapes)
    out = numpy.zeros((L, L))
    for k in range(L):
        for l in range(L):
            sk, sl = slice(off[k], off[k + 1]), slice(off[l], off[l + 1])
            out[k, l] = relative_error(X[sk, sl], Y[sk, sl])
    return out


def block_mean_abs(X: Any, shapes: Sequence[tuple[int, int]]) -> numpy.ndarray:
    """ℓ×ℓ array of the mean absolute entry of each block (the small panel of Figure 3)."""
    X = numpy.abs(to_numpy(X))
    off = layer_offsets(shapes)
    L = len(shapes)
    return numpy.array(
        [[X[off[k] : off[k + 1], off[l] : off[l + 1]].mean() for l in range(L)] for k in range(L)]
    )


@dataclass
class FisherComparison:
    """Dense F and its approximations, their inverses, and the errors (all on the host).

    ``matrices`` maps "F", "F_tilde", "F_breve", "F_hat" to (P, P) arrays; ``inverses`` the same
    keys to their inverses (with γ > 0, of the damped matrices, see :func:`compare_fisher`).
    ``errors[name]`` is the whole-matrix relative error vs F, ``block_errors[name]`` the ℓ×ℓ
    per-layer-pair errors; ``inverse_errors`` / ``inverse_block_errors`` compare the inverses
    with F̃⁻¹ (key "vs_F_tilde") and with F⁻¹ (key "vs_F").
    """

    matrices: dict[str, numpy.ndarray]
    inverses: dict[str, numpy.ndarray]
    errors: dict[str, float]
    block_errors: dict[str, numpy.ndarray]
    inverse_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    inverse_block_errors: dict[str, dict[str, numpy.ndarray]] = field(default_factory=dict)
    gamma: float = 0.0

    def table(self) -> str:
        """A plain-text table of the whole-matrix relative errors."""
        rows = [f"{'matrix':<8} {'‖·−F‖/‖F‖':>12} {'‖inv−F̃⁻¹‖/‖F̃⁻¹‖':>18} {'‖inv−F⁻¹‖/‖F⁻¹‖':>17}"]
        for name in APPROXIMATIONS:
            ie = self.inverse_errors.get(name, {})
            rows.append(
                f"{name:<8} {self.errors[name]:>12.4g} {ie.get('vs_F_tilde', float('nan')):>18.4g}"
                f" {ie.get('vs_F', float('nan')):>17.4g}"
            )
        return "\n".join(rows)


def _inverse(M: numpy.ndarray, name: str, gamma: float) -> numpy.ndarray:
    """M⁻¹; a singular M is reported as too little damping γ."""
    try:
        return spd_inverse(M, name)
    except NonFiniteError as exc:
        raise NonFiniteError(
            f"{name} with γ = {gamma:g} cannot be inverted: {exc} (raise γ)"
        ) from None


def compare_fisher(
    mlp: MLP, weights: Sequence[Any], X: Any, gamma: float = 0.0, max_bytes: int | None = None
) -> FisherComparison:
    """Exact F vs F̃ (§3), F̆ (§4.2), F̂ (§4.3), and their inverses, with relative errors.

    With γ > 0 every approximation uses the factored Tikhonov damping of §6.3, which adds the
    block-diagonal matrix Δ = F̆(γ) − F̆(0) to F̃. Errors of the matrices are against the undamped
    F; the inverse of F is taken of F + Δ, so inverses of equally damped matrices are compared.
    """
    gamma = check_gamma(gamma)
    mlp.check_finite_weights(weights)
    mlp.check_inputs(X)
    check_compare_size(mlp, X.shape[0], X.dtype.itemsize, max_bytes)
    shapes = mlp.shapes
    factors = kronecker_factors(mlp, weights, X, method="exact")
    F = to_numpy(exact_fisher(mlp, weights, X, max_bytes=max_bytes))
    mats = {"F": F}
    for name, structure in APPROXIMATIONS.items():
        mats[name] = to_numpy(
            approximate_fisher(mlp, weights, X, structure, gamma, factors, max_bytes)
        )
    undamped = to_numpy(approximate_fisher(mlp, weights, X, DENSE_F_TILDE, 0.0, factors, max_bytes))
    F_damped = F + (mats["F_tilde"] - undamped)  # the damping lives on the diagonal blocks (§6.3)
    invs = {
        name: _inverse(M, name, gamma)
        for name, M in [("F", F_damped), *((n, mats[n]) for n in APPROXIMATIONS)]
    }
    errors = {name: relative_error(mats[name], F) for name in APPROXIMATIONS}
    block_errors = {name: block_relative_errors(mats[name], F, shapes) for name in APPROXIMATIONS}
    inv_err = {
        name: {
            "vs_F_tilde": relative_error(invs[name], invs["F_tilde"]),
            "vs_F": relative_error(invs[name], invs["F"]),
        }
        for name in APPROXIMATIONS
    }
    inv_block = {
        name: {
            "vs_F_tilde": block_relative_errors(invs[name], invs["F_tilde"], shapes),
            "vs_F": block_relative_errors(invs[name], invs["F"], shapes),
        }
        for name in APPROXIMATIONS
    }
    return FisherComparison(mats, invs, errors, block_errors, inv_err, inv_block, gamma)
