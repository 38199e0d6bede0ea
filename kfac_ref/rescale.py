"""Re-scaling and momentum (§7): δ = α Δ + μ δ₀ minimizing the quadratic model M.

M(δ) = ½ δᵀ(F + (λ + η) I)δ + ∇hᵀδ + h(θ) (§6), with F the **exact** Fisher on (a τ2-subset of)
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

Vectors are lists of matrices shaped like the weights (:mod:`kfac_ref.vec`). The entries of the
2×2 system are computed on the device in float64 and come to the host together (one
synchronization, shared with the optimizer's other checks); it is solved there in float64.
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


def inner(U: Sequence[Any], V: Sequence[Any]) -> Any:
    """uᵀv for two vectors in list-of-matrices form, as a 0-d float64 array on their device.

    One BLAS dot per layer, summed in float64 on the device: no synchronization (``float()``
    of the result is one).
    """
    xp = get_array_module(*U)
    total: Any = 0.0
    for u, v in zip(U, V, strict=True):
        total = total + xp.vdot(u, v).astype(xp.float64)
    return total


def fisher_gram(mlp: MLP, fwd: Forward, Jv: Sequence[Any]) -> Any:
    """[v_iᵀ F v_j] = (1/n) Σ_x (J v_i)ᵀ F_R (J v_j), from the products ``Jv[i]`` = J v_i (§2.2).

    ``Jv[i]`` has shape (n, d_ℓ), from :meth:`~kfac_ref.mlp.MLP.jvp` on the forward pass ``fwd``
    of the n cases; F is the exact Fisher on those cases. Symmetric, float64, on the device of
    ``Jv`` (no synchronization).
    """
    xp = get_array_module(*Jv)
    n = fwd.abar[0].shape[0]
    FJv = [mlp.output.fisher_vp(fwd.output, u) for u in Jv]
    d = len(Jv)
    f64 = xp.float64
    upper = {
        (i, j): 0.5 * (xp.vdot(Jv[i], FJv[j]).astype(f64) + xp.vdot(Jv[j], FJv[i]).astype(f64)) / n
        for i in range(d)
        for j in range(i, d)
    }
    return xp.stack([upper[min(i, j), max(i, j)] for i in range(d) for j in range(d)]).reshape(d, d)


def quadratic_model(
    grads: Sequence[Any], directions: Sequence[Sequence[Any]], F_gram: Any, lam_plus_eta: float
) -> tuple[Any, Any]:
    """Q_ij = v_iᵀ(F + (λ + η)I)v_j and r_i = ∇hᵀv_i: M(Σ c_i v_i) − M(0) = ½ cᵀQc + rᵀc (§7).

    ``F_gram`` = [v_iᵀ F v_j] (:func:`fisher_gram`); ``lam_plus_eta`` = λ + η, the λ of the
    Levenberg–Marquardt rule (§6.5) plus the ℓ2 weight cost η (§2.1) — not the γ of the factored
    Tikhonov damping (:mod:`kfac_ref.damping`). float64 arrays on the vectors' device (no
    synchronization).
    """
    xp = get_array_module(*directions[0])
    d = len(directions)
    extra = {
        (i, j): lam_plus_eta * inner(directions[i], directions[j])
        for i in range(d)
        for j in range(i, d)
    }
    Q = xp.stack(
        [F_gram[i, j] + extra[min(i, j), max(i, j)] for i in range(d) for j in range(d)]
    ).reshape(d, d)
    r = xp.stack([inner(grads, v) for v in directions])
    return Q, r


def solve_quadratic_model(
    Q: numpy.ndarray, r: numpy.ndarray, rcond: float
) -> tuple[numpy.ndarray, float]:
    """c = −Q⁺ r minimizing ½ cᵀQc + rᵀc, and its value ½ cᵀr = M(δ) − M(0) (§7, [code] ``pinv``).

    Host float64 arrays. ``rcond``: singular values below rcond × the largest are treated as
    zero. A non-finite Q or r gives NaN coefficients and value (the caller reports it).
    """
    if not (numpy.isfinite(Q).all() and numpy.isfinite(r).all()):
        return numpy.full(r.shape, numpy.nan), float("nan")
    c = -numpy.linalg.pinv(Q, rcond=rcond) @ r
    return c, 0.5 * float(c @ r)


def pinv_rcond(Delta: Sequence[Any]) -> float:
    """[code] ``pinv``'s cut-off max(size)·eps for the 2×2 system, in the dtype of Δ."""
    return 2.0 * float(get_array_module(*Delta).finfo(Delta[0].dtype).eps)


def rescaling_from_model(
    Q: numpy.ndarray, r: numpy.ndarray, Delta: Sequence[Any], delta0: Sequence[Any] | None
) -> Rescaling:
    """α, μ and δ = α Δ + μ δ₀ from the host quadratic model (Q, r) over span{Δ, δ₀} (§7).

    ``delta0`` = None means μ = 0 and a 1×1 solve; so does a zero δ₀ (Q₁₁ = 0: [code] drops
    zero directions).
    """
    Q, r = (
        numpy.asarray(Q, dtype=numpy.float64).reshape(len(r), len(r)),
        numpy.asarray(r, dtype=numpy.float64),
    )
    two = delta0 is not None
    if two and Q[1, 1] == 0.0:  # δ₀ = 0: drop it
        two, Q, r = False, Q[:1, :1], r[:1]
    c, change = solve_quadratic_model(Q, r, pinv_rcond(Delta))
    alpha = float(c[0])
    mu = float(c[1]) if two else 0.0
    if two:
        delta = [alpha * D + mu * d0 for D, d0 in zip(Delta, delta0, strict=True)]
    else:
        delta = [alpha * D for D in Delta]
    return Rescaling(alpha=alpha, mu=mu, model_change=change, delta=delta)


def raw_proposal_from_model(Q: numpy.ndarray, r: numpy.ndarray, Delta: Sequence[Any]) -> Rescaling:
    """δ = Δ, the proposal without re-scaling (§6.4; ``KFACConfig.use_rescaling = False``):
    α = 1, μ = 0, and M(Δ) − M(0) = ½ ΔᵀQΔ + ∇hᵀΔ = ½ Q₁₁ + r₁ from the host model (Q, r) over
    span{Δ}. Not clipped at 0: a raw proposal may go uphill in the model. NaN where Q or r
    is not finite (the caller reports it)."""
    q = float(numpy.asarray(Q, dtype=numpy.float64).reshape(-1)[0])
    g = float(numpy.asarray(r, dtype=numpy.float64).reshape(-1)[0])
    change = 0.5 * q + g if numpy.isfinite(q) and numpy.isfinite(g) else float("nan")
    return Rescaling(alpha=1.0, mu=0.0, model_change=change, delta=list(Delta))


def quadratic_model_on_span(
    mlp: MLP,
    weights: Sequence[Any],
    fwd: Forward,
    grads: Sequence[Any],
    Delta: Sequence[Any],
    delta0: Sequence[Any] | None,
    J_delta0: Any,
    lam_plus_eta: float,
    J_Delta: Any = None,
) -> tuple[Any, Any]:
    """(Q, r) of M over span{Δ, δ₀} (or span{Δ} when ``delta0`` is None) with the exact Fisher
    on the cases of ``fwd`` and the term (λ + η)I, ``lam_plus_eta`` = λ + η (§7):
    :func:`quadratic_model` of :func:`fisher_gram` of J Δ (``J_Delta``, computed here when
    None) and ``J_delta0`` = J δ₀. Device arrays (no synchronization)."""
    if J_Delta is None:
        J_Delta = mlp.jvp(weights, fwd, Delta)
    Jv = [J_Delta] + ([] if J_delta0 is None else [J_delta0])
    dirs = [Delta] if delta0 is None else [Delta, delta0]
    return quadratic_model(grads, dirs, fisher_gram(mlp, fwd, Jv), lam_plus_eta)
