"""Side-by-side dense comparison of F with F̃, F̆, F̂ and of their inverses, for small nets.

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
from .backend import to_numpy
from .damping import check_gamma
from .errors import NonFiniteError
from .factors import kronecker_factors
from .fisher import DENSE_F_TILDE, approximate_fisher, exact_fisher
from .inverse import spd_inverse
from .mlp import MLP
from .structures import STRUCTURES
from .vec import layer_offsets

#: key of each compared matrix → the structure name :func:`approximate_fisher` builds it from
APPROXIMATIONS = {cls.matrix_name: name for name, cls in STRUCTURES.items() if cls.matrix_name}
#: P×P arrays :func:`compare_fisher` holds at its peak: the 4 matrices and 4 inverses it returns,
#: the undamped F̃, F + Δ and the factorization's work arrays (tracemalloc: 12.0–12.6)
COMPARE_COPIES = 13


def check_compare_size(
    mlp: MLP, n_cases: int, itemsize: int, max_bytes: int | None = None, advice: str | None = None
) -> None:
    """Refuse (:class:`~kfac_ref.errors.TooLargeError`) a :func:`compare_fisher` of ``n_cases``
    cases that would not fit in ``max_bytes`` (default 2 GiB), before anything is allocated:
    its P×P matrices (:data:`COMPARE_COPIES`) and the exact Fisher's per-case gradients
    (:func:`kfac_ref.dense.per_case_entries`). ``advice`` ends the message."""
    dense.check_dense_size(
        mlp.n_params,
        itemsize,
        max_bytes,
        copies=COMPARE_COPIES,
        n_cases=n_cases,
        per_case=dense.per_case_entries(mlp.layer_sizes),
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
