"""Re-scaling and momentum (§7): δ = α Δ + μ δ₀ minimizing the quadratic model M.

M(δ) = ½ δᵀ(F + (λ+η) I)δ + ∇hᵀδ + h(θ) (§6), with F the **exact** Fisher on (a τ2-subset of)
the current mini-batch, reached only through Fisher-vector products
(:func:`kfac_ref.fisher.fisher_vector_product`). Minimizing over the span of Δ = −F̆⁻¹∇h (or
−F̂⁻¹∇h) and the previous update δ₀ is the 2×2 system

    [α]     [ΔᵀFΔ + (λ+η)‖Δ‖²      ΔᵀFδ₀ + (λ+η)Δᵀδ₀ ]⁻¹ [∇hᵀΔ ]
    [μ] = − [δ₀ᵀFΔ + (λ+η)δ₀ᵀΔ    δ₀ᵀFδ₀ + (λ+η)‖δ₀‖²]    [∇hᵀδ₀],

solved with a pseudo-inverse ([code] ``pinv``), so a Δ parallel to δ₀ does not break it. With
no previous update (first iteration, or momentum off) μ = 0 and α = −∇hᵀΔ / (ΔᵀFΔ + (λ+η)‖Δ‖²).
The optimum's model reduction is M(δ) − M(0) = ½ [α μ]·[∇hᵀΔ, ∇hᵀδ₀] ≤ 0, used by the λ rule
(§6.5) and the γ search (§6.6).

F enters only through the quadratic forms v_iᵀ F v_j = (1/n) Σ_x (J v_i)ᵀ F_R (J v_j), computed from
the forward-mode products J v (:meth:`kfac_ref.mlp.MLP.jvp`) and the output Fisher F_R
(:meth:`kfac_ref.outputs.OutputDistribution.fisher_vp`) — the factored product of [code]
``computeGfactV``; it equals vᵢᵀ(F vⱼ) with F vⱼ from :func:`kfac_ref.fisher.fisher_vector_product`
but skips the backward pass, since only the 2×2 matrix is needed, never F v itself.

Vectors are lists of matrices shaped like the weights (:mod:`kfac_ref.vec`). The 2×2 system has
scalar entries; it is solved on the host in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy

from .backend import get_array_module
from .mlp import MLP, Forward


@dataclass
class Rescaling:
    """The §7 solution: δ = α Δ + μ δ₀ and its model reduction M(δ) − M(0)."""

    alpha: float
    mu: float
    model_change: float
    delta: list[Any]


def inner(U: Sequence[Any], V: Sequence[Any]) -> float:
    """uᵀv for two vectors in list-of-matrices form (one BLAS dot per layer, summed on the host)."""
    xp = get_array_module(*U)
    return float(sum(float(xp.vdot(u, v)) for u, v in zip(U, V, strict=True)))


def fisher_gram(mlp: MLP, fwd: Forward, Jv: Sequence[Any]) -> numpy.ndarray:
    """[v_iᵀ F v_j] = (1/n) Σ_x (J v_i)ᵀ F_R (J v_j), from the products ``Jv[i]`` = J v_i (§2.2).

    ``Jv[i]`` has shape (n, d_ℓ), from :meth:`~kfac_ref.mlp.MLP.jvp` on the forward pass ``fwd``
    of the n cases; F is the exact Fisher on those cases. Host float64, symmetric.
    """
    xp = get_array_module(*Jv)
    n = fwd.abar[0].shape[0]
    FJv = [mlp.output.fisher_vp(fwd.output, u) for u in Jv]
    d = len(Jv)
    S = numpy.empty((d, d))
    for i in range(d):
        for j in range(i, d):
            S[i, j] = S[j, i] = 0.5 * (float(xp.vdot(Jv[i], FJv[j])) + float(xp.vdot(Jv[j], FJv[i]))) / n
    return S


def quadratic_model(
    grads: Sequence[Any], directions: Sequence[Sequence[Any]], F_gram: numpy.ndarray, damping: float
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Q_ij = v_iᵀ(F + damping·I)v_j and r_i = ∇hᵀv_i: M(Σ c_i v_i) − M(0) = ½ cᵀQc + rᵀc (§7).

    ``F_gram`` = [v_iᵀ F v_j] (:func:`fisher_gram`), ``damping`` = λ + η. Host float64 arrays.
    """
    d = len(directions)
    Q = numpy.array(F_gram[:d, :d], dtype=numpy.float64)
    for i in range(d):
        for j in range(i, d):
            extra = damping * inner(directions[i], directions[j])
            Q[i, j] += extra
            if j != i:
                Q[j, i] += extra
    r = numpy.array([inner(grads, v) for v in directions])
    return Q, r


def solve_quadratic_model(Q: numpy.ndarray, r: numpy.ndarray, rcond: float) -> tuple[numpy.ndarray, float]:
    """c = −Q⁺ r minimizing ½ cᵀQc + rᵀc, and its value ½ cᵀr = M(δ) − M(0) (§7, [code] ``pinv``).

    ``rcond``: singular values below rcond × the largest are treated as zero. A non-finite Q or
    r gives NaN coefficients and value (the caller reports it).
    """
    if not (numpy.isfinite(Q).all() and numpy.isfinite(r).all()):
        return numpy.full(r.shape, numpy.nan), float("nan")
    c = -numpy.linalg.pinv(Q, rcond=rcond) @ r
    return c, 0.5 * float(c @ r)


def rescale(
    grads: Sequence[Any],
    Delta: Sequence[Any],
    delta0: Sequence[Any] | None,
    F_gram: numpy.ndarray,
    damping: float,
) -> Rescaling:
    """α, μ and δ = α Δ + μ δ₀ minimizing M over span{Δ, δ₀} (§7); ``damping`` = λ + η.

    ``F_gram``: [[ΔᵀFΔ, ΔᵀFδ₀], [δ₀ᵀFΔ, δ₀ᵀFδ₀]] (:func:`fisher_gram`), or [[ΔᵀFΔ]] when
    ``delta0`` is None. ``delta0`` = None (or all zero) means no momentum term: μ = 0 and a
    1×1 solve, as at the first iteration of the paper ([code] drops zero directions).
    """
    xp = get_array_module(*Delta)
    rcond = 2.0 * float(xp.finfo(Delta[0].dtype).eps)  # [code] pinv: max(size) · eps
    F_gram = numpy.asarray(F_gram, dtype=numpy.float64)
    directions = [Delta] if delta0 is None else [Delta, delta0]
    Q, r = quadratic_model(grads, directions, F_gram, damping)
    if delta0 is not None and Q[1, 1] == 0.0:  # δ₀ = 0: drop it
        directions, Q, r = [Delta], Q[:1, :1], r[:1]
    c, change = solve_quadratic_model(Q, r, rcond)
    alpha = float(c[0])
    mu = float(c[1]) if len(directions) == 2 else 0.0
    if len(directions) == 2:
        delta = [alpha * D + mu * d0 for D, d0 in zip(Delta, delta0, strict=True)]
    else:
        delta = [alpha * D for D in Delta]
    return Rescaling(alpha=alpha, mu=mu, model_change=change, delta=delta)
