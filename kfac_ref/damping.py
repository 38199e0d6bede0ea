"""Damping (§6): factored Tikhonov damping of the Kronecker factors (§6.3), the
Levenberg–Marquardt rule for λ (§6.5) and the γ candidates (§6.6).

The damped diagonal block is (Ā_{i-1,i-1} + π_i γ I) ⊗ (G_{i,i} + (γ/π_i) I), with the
trace-norm choice π_i = √[(tr(Ā_{i-1,i-1}) / (d_{i-1}+1)) / (tr(G_{i,i}) / d_i)] (``pi="trace"``,
the paper's recommendation) or π_i = 1 (``pi="one"``, "simple and can sometimes work well").
The exact Tikhonov damping it approximates, F̆ + c I inverted exactly (the paper's eqn. 6), is
:mod:`kfac_ref.tikhonov`.

λ is the Tikhonov strength of the quadratic model M(δ) = ½ δᵀ(F + (λ+η) I)δ + ∇hᵀδ + h(θ); every
T1 iterations it follows the reduction ratio ρ = (h(θ+δ) − h(θ)) / (M(δ) − M(0)): λ ← ω1 λ if
ρ > 3/4, λ ← λ/ω1 if ρ < 1/4, with ω1 = (19/20)^{T1}. Every T2 iterations γ moves to whichever of
{ω2 γ, γ, γ/ω2}, ω2 = (√(19/20))^{T2}, gives the update with the lowest M(δ).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .backend import get_array_module
from .config import LM_BASE as LM_BASE  # ω1, ω2 and the π_i choices are defined with the
from .config import PI_CHOICES as PI_CHOICES  # configuration they resolve (a leaf of the
from .config import omega1 as omega1  # imports) and named here, with the damping they set
from .config import omega2 as omega2
from .errors import ConfigError, NonFiniteError
from .inputs import is_finite_nonnegative


def check_gamma(gamma: Any) -> float:
    """γ as a float; :class:`ConfigError` naming γ unless it is a finite number ≥ 0 (§6.3:
    the damped factors Ā + πγI, G + (γ/π)I need γ ≥ 0; γ = 0 is no damping)."""
    if not is_finite_nonnegative(gamma):
        raise ConfigError(
            "γ (gamma, the factored Tikhonov damping of §6.3) must be a finite number ≥ 0, "
            f"got {gamma!r}"
        )
    return float(gamma)


def pi_trace_norm(A_ii: Any, G_ii: Any) -> Any:
    """π_i = √[(tr(Ā)/dim Ā) / (tr(G)/dim G)] (§6.3, trace-norm choice); a 0-d array.

    Guarded so an all-zero G (e.g. saturated units) gives a large finite π, not inf/NaN.
    """
    xp = get_array_module(A_ii, G_ii)
    tiny = xp.finfo(A_ii.dtype).tiny
    num = xp.trace(A_ii) / A_ii.shape[0]
    den = xp.trace(G_ii) / G_ii.shape[0]
    return xp.sqrt(xp.maximum(num, tiny) / xp.maximum(den, tiny))


def layer_pi(A_ii: Any, G_ii: Any, pi: str = "trace") -> Any:
    """π_i of one layer (§6.3): :func:`pi_trace_norm` for ``"trace"``, 1.0 for ``"one"``."""
    if pi == "trace":
        return pi_trace_norm(A_ii, G_ii)
    if pi == "one":
        return 1.0
    raise ConfigError(f"pi (the π_i of §6.3) must be one of {', '.join(PI_CHOICES)}; got {pi!r}")


def add_diag(M: Any, c: Any) -> Any:
    """M + c I (a new array)."""
    xp = get_array_module(M)
    return M + c * xp.eye(M.shape[0], dtype=M.dtype)


def damped_factors(A_ii: Any, G_ii: Any, gamma: float, pi: Any = None) -> tuple[Any, Any]:
    """(Ā + π γ I, G + (γ/π) I), the factored Tikhonov damping of one layer (§6.3).

    ``pi`` defaults to :func:`pi_trace_norm`; γ = 0 returns the undamped factors.
    """
    if not gamma:
        return A_ii, G_ii
    if pi is None:
        pi = pi_trace_norm(A_ii, G_ii)
    return add_diag(A_ii, pi * gamma), add_diag(G_ii, gamma / pi)


def damped_diagonal_factors(
    A_diag: Sequence[Any], G_diag: Sequence[Any], gamma: float, pi: str = "trace"
) -> tuple[list[Any], list[Any]]:
    """[Ā_{k,k} + π_k γ I], [G_{k+1,k+1} + (γ/π_k) I] for every layer (§6.3; γ = 0: unchanged);
    π_k from :func:`layer_pi` (``pi`` = ``"trace"`` or ``"one"``)."""
    pairs = [
        damped_factors(A, G, gamma, None if pi == "trace" else layer_pi(A, G, pi))
        for A, G in zip(A_diag, G_diag, strict=True)
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# ----------------------------------------------------------- §6.5 Levenberg–Marquardt rule
RHO_LOW = 0.25  # §6.5: ρ < 1/4 → raise λ
RHO_HIGH = 0.75  # §6.5: ρ > 3/4 → lower λ


def reduction_ratio(h_new: float, h_old: float, model_change: float) -> float:
    """ρ = (h(θ+δ) − h(θ)) / (M(δ) − M(0)) (§6.5), both on the current mini-batch.

    ``model_change`` = M(δ) − M(0), ≤ 0 for the re-scaled update of
    :func:`kfac_ref.rescale.rescaling_from_model`. When it is not negative (no predicted
    decrease: a zero gradient, or a raw proposal δ = Δ that the model says goes uphill,
    ``KFACConfig.use_rescaling = False``) ρ is NaN, which :func:`update_lambda` treats as a
    failed step, as [code] does for 0: a ratio of two increases says nothing about the model.
    """
    if model_change >= 0.0 or not math.isfinite(model_change):
        return math.nan
    return (h_new - h_old) / model_change


def update_lambda(
    lam: float, rho: float, omega1: float, lam_min: float = 0.0, lam_max: float = math.inf
) -> float:
    """The Levenberg–Marquardt rule (§6.5): ρ > 3/4 → ω1 λ; ρ < 1/4 (or NaN, [code]) → λ/ω1.

    The result is clamped to [lam_min, lam_max] ([code] ``lambda_min = 0``, ``lambda_max = Inf``).
    """
    if math.isnan(rho) or rho < RHO_LOW:
        lam = lam / omega1
    elif rho > RHO_HIGH:
        lam = lam * omega1
    return min(max(lam, lam_min), lam_max)


def adjust_lambda(
    lam: float,
    h_new: float,
    h_old: float,
    model_change: float,
    omega1: float,
    lam_min: float = 0.0,
    lam_max: float = math.inf,
) -> tuple[float, float]:
    """(λ, ρ) after the Levenberg–Marquardt step of §6.5: ρ = :func:`reduction_ratio`, then
    :func:`update_lambda`."""
    rho = reduction_ratio(h_new, h_old, model_change)
    return update_lambda(lam, rho, omega1, lam_min, lam_max), rho


# ------------------------------------------------------------------ §6.6 γ candidates
def tied_gamma(lam: float, eta: float) -> float:
    """γ = √(λ + η) (§6.3): the factored damping whose Tikhonov part γ² I is the (λ + η) I of
    the quadratic model; the start of the γ search (§6.6), and every γ when it is off
    (``KFACConfig.adapt_gamma = False``)."""
    return math.sqrt(lam + eta)


def gamma_candidates(
    gamma: float, omega2: float, gamma_min: float | None = None, gamma_max: float | None = None
) -> tuple[float, float, float]:
    """(ω2 γ, γ, γ/ω2), the three γ tried every T2 iterations (§6.6).

    As in [code], the outer two are clamped: max(ω2 γ, gamma_min) and min(γ/ω2, gamma_max)
    (``None`` = no bound); γ itself is kept as it is.
    """
    lo = omega2 * gamma
    hi = gamma / omega2
    if gamma_min is not None:
        lo = max(lo, gamma_min)
    if gamma_max is not None:
        hi = min(hi, gamma_max)
    return (lo, gamma, hi)


def gammas_to_try(
    gamma: float,
    search: bool,
    omega2: float,
    gamma_min: float | None = None,
    gamma_max: float | None = None,
) -> tuple[float, ...]:
    """The γ values of this iteration (§6.6): the three :func:`gamma_candidates` when it
    searches, else (γ,)."""
    return gamma_candidates(gamma, omega2, gamma_min, gamma_max) if search else (gamma,)


def choose_gamma(gammas: Sequence[float], model_changes: Sequence[float]) -> int:
    """The γ search of §6.6: the index of the γ whose update has the lowest M(δ) − M(0)
    (the first of equals), among those where the model is finite.

    Raises :class:`NonFiniteError` when M(δ) is finite for no γ.
    """
    finite = [c for c in range(len(gammas)) if math.isfinite(model_changes[c])]
    if not finite:
        raise NonFiniteError(f"the quadratic model M(δ) is not finite for any γ in {tuple(gammas)}")
    return min(finite, key=lambda c: model_changes[c])
