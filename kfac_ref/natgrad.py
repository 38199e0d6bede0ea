"""One damped block-diagonal natural-gradient step in batch mode (§4.2, §6.3, §7 without μ).

The simplest optimizer the paper's pieces make, with none of Algorithm 2's running statistics
or adaptive λ, γ: on the whole batch (X, Y),

    Δ = −F̆(γ)⁻¹ ∇h,   δ = α Δ,   α = −∇hᵀΔ / (ΔᵀFΔ + (λ + η)‖Δ‖²),   λ + η = γ²,

with F̆(γ) the block-diagonal approximation (§4.2) of the exact Kronecker factors of the batch
(:func:`kfac_ref.factors.kronecker_factors`, ``method="exact"``) with factored Tikhonov damping
γ (§6.3), F the exact Fisher of the batch reached through a Fisher-vector product (§2.2), and α
the minimizer of the quadratic model M along Δ (§7 with μ = 0; λ + η = γ² as in K-FAC's
γ = √(λ + η), §6.6). It is the small fast trainer of ``--trainer natgrad`` in the matrix-figure
scripts (``paper_figures/_networks.py``); ``tests/test_natgrad.py`` checks it against dense
matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .compare import damped_diagonal
from .damping import check_gamma
from .errors import ConfigError, NonFiniteError
from .factors import kronecker_factors
from .fisher import fisher_vector_product
from .inverse import apply_block_diagonal_inverse, block_diagonal_inverse
from .mlp import MLP


def natgrad_step(
    mlp: MLP, weights: Sequence[Any], X: Any, Y: Any, gamma: float, eta: float
) -> tuple[list[Any], dict[str, float]]:
    """θ + αΔ and ``{"loss": h(θ), "alpha": α}`` for Δ = −F̆(γ)⁻¹∇h (the module docstring).

    ``eta`` is the ℓ2 weight cost η in h(θ) (§2.1); the curvature along Δ uses λ + η = γ².
    One synchronization per layer and reduction (host floats for α); meant for small nets.
    At a stationary point (∇h = 0, so Δ = 0) the step is zero: α = 0, θ unchanged. X and Y
    must have the weights' dtype (the run's precision; a float64 batch is not silently mixed
    into float32 weights).
    """
    gamma = check_gamma(gamma)  # before anything is built from it
    for name, A in (("X", X), ("the targets Y", Y)):
        if A.dtype != weights[0].dtype:
            raise ConfigError(
                f"{name} has dtype {A.dtype} but the weights θ are {weights[0].dtype}; cast the "
                "data to the weights' dtype (e.g. Backend.asarray) first"
            )
    h, grads, fwd = mlp.loss_and_grad(weights, X, Y, eta)
    factors = kronecker_factors(mlp, weights, X, method="exact")
    A_d, G_d = damped_diagonal(factors, gamma)
    Delta = [-D for D in apply_block_diagonal_inverse(block_diagonal_inverse(A_d, G_d), grads)]
    F_Delta = fisher_vector_product(mlp, weights, X, Delta, fwd)
    curvature = sum(
        float((D * FD).sum()) + gamma**2 * float((D * D).sum())
        for D, FD in zip(Delta, F_Delta, strict=True)
    )
    slope = sum(float((g * D).sum()) for g, D in zip(grads, Delta, strict=True))
    alpha = step_length(slope, curvature, gamma)
    return [W + alpha * D for W, D in zip(weights, Delta, strict=True)], {
        "loss": float(h),
        "alpha": alpha,
    }


def step_length(slope: float, curvature: float, gamma: float) -> float:
    """α = −∇hᵀΔ / (ΔᵀFΔ + γ²‖Δ‖²), the minimizer of M along Δ (§7 with μ = 0); 0 when Δ = 0
    (both are 0: a stationary point). A zero curvature along a non-zero slope has no minimizer:
    :class:`NonFiniteError` naming γ."""
    if curvature > 0:
        return -slope / curvature
    if slope == 0.0 and curvature == 0.0:
        return 0.0
    raise NonFiniteError(
        f"the quadratic model has curvature {curvature:g} along Δ (slope {slope:g}), so no step "
        f"length minimizes it; with γ = {gamma:g} raise γ"
    )
