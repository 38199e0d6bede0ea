"""How far K-FAC's approximations are from the exact quantities on a small network (§3–§7).

:func:`diagnose` computes, on given cases (a mini-batch or a fixed evaluation set), with the
exact Fisher F of those cases (§2.2) and its exact Kronecker factors (§3):

* per layer pair (i, j): ‖F_{i,j} − F̃_{i,j}‖_F / ‖F_{i,j}‖_F (§3), and over the whole matrix;
* the §3.1 total error Σ_{p,q} |F − F̃|_pq and its cumulant bound (:mod:`kfac_ref.cumulants`);
* ‖F̆⁻¹ − F̃⁻¹‖_F / ‖F̃⁻¹‖_F and ‖F̂⁻¹ − F̃⁻¹‖_F / ‖F̃⁻¹‖_F, all three damped by factored
  Tikhonov damping with the run's γ (§4.2, §4.3, §6.3; dense builders of :mod:`kfac_ref.dense`);
* the cosine between K-FAC's proposal Δ and the exact natural-gradient step
  Δ_F = −(F + (λ+η)I)⁻¹ ∇h (§6: the minimizer of the quadratic model);
* the quadratic model M(δ) − M(0) = ½ δᵀ(F + (λ+η)I)δ + ∇hᵀδ (§6) of both steps, each re-scaled
  by its own optimal α = −∇hᵀΔ / Δᵀ(F + (λ+η)I)Δ (§7 without momentum), which gives
  M(αΔ) − M(0) = −½ (∇hᵀΔ)² / Δᵀ(F + (λ+η)I)Δ; the exact step has α = 1.

Everything is computed in float64 (inputs in float32 are cast), with dense P×P matrices, so it
is for small networks: :func:`check_diagnose_size` refuses a network too large before anything
is computed. ``layers`` restricts every quantity to the parameters of consecutive layers (the
others held fixed): F, F̃ and F̆ are then principal sub-matrices of the whole network's, F̂ is
the chain of those layers (the marginal of §4.3's Gaussian chain over consecutive layers), and
∇h, Δ, the natural-gradient step and M are those of a step that moves these layers only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from . import dense
from .backend import cast, get_array_module, to_numpy
from .compare import block_relative_errors, relative_error
from .cumulants import check_layers, check_size, kronecker_cumulants
from .damping import check_gamma
from .errors import ConfigError, ShapeError
from .inputs import check_eta
from .linalg import lapack_threads, spd_inverse
from .mlp import MLP
from .vec import vec

#: dense P×P matrices :func:`diagnose` holds at its peak (F, F̃, the cumulant terms, the damped
#: F̃, F̆, F̂ and their inverses, F + (λ+η)I)
DIAGNOSE_COPIES = 12
FLOAT64_BYTES = 8


def check_diagnose_size(
    mlp: MLP, n_cases: int, layers: Sequence[int] | None = None, max_bytes: int | None = None
) -> int:
    """Bytes :func:`diagnose` needs on ``n_cases`` cases; :class:`~kfac_ref.errors.ConfigError`
    (a :class:`~kfac_ref.cumulants.DenseSizeError`) naming the parameter count and the limit
    when over ``max_bytes`` (default :data:`kfac_ref.memory.DEFAULT_MAX_BYTES`, 2 GiB).

    Counts :data:`DIAGNOSE_COPIES` float64 P×P matrices, the forward pass of all cases and the
    per-chunk case work (:func:`kfac_ref.cumulants.work_bytes`; the per-case quantities are
    contracted chunk by chunk, never held as an n × P Jacobian). Call it once when a run starts.
    """
    if not isinstance(n_cases, numbers.Integral) or n_cases < 1:
        raise ConfigError(f"n_cases must be an integer ≥ 1, got {n_cases!r}")
    layers = _consecutive(mlp, layers)
    return check_size(
        mlp, layers, int(n_cases), FLOAT64_BYTES, DIAGNOSE_COPIES, max_bytes, "the diagnostics"
    )


def _consecutive(mlp: MLP, layers: Sequence[int] | None) -> tuple[int, ...]:
    out = check_layers(mlp, layers)
    if out != tuple(range(out[0], out[-1] + 1)):
        raise ConfigError(f"the diagnostics need consecutive layers (for F̂), got {list(out)}")
    return out


def _check_lam_plus_eta(value: Any) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0:
        raise ConfigError(f"λ + η must be a finite number > 0, got {value!r}")
    return float(value)


def flat(V: Sequence[Any], layers: Sequence[int]) -> Any:
    """[vec(V_k) for k in layers] stacked: the θ entries of those layers (:mod:`kfac_ref.vec`)."""
    xp = get_array_module(*V)
    return xp.concatenate([vec(V[k]) for k in layers])


def rescaled_model_change(K: Any, d: Any, grad: Any) -> tuple[float, float]:
    """(α, M(αd) − M(0)) with α = −∇hᵀd / dᵀKd minimizing M along d, K = F + (λ+η)I (§6, §7)."""
    q, b = float(d @ (K @ d)), float(grad @ d)
    if not q > 0:
        return math.nan, math.nan
    return -b / q, -0.5 * b * b / q


def _cosine(u: Any, v: Any) -> float:
    xp = get_array_module(u, v)
    den = float(xp.linalg.norm(u) * xp.linalg.norm(v))
    return float(u @ v) / den if den > 0 else math.nan


def approximation_errors(cum: Any, gamma: float) -> dict[str, float]:
    """‖F_{i,j} − F̃_{i,j}‖/‖F_{i,j}‖ per pair (paper's layer numbers), over all of F, and the
    damped inverses' errors against F̃(γ)⁻¹ (§3, §4.2, §4.3, §6.3)."""
    out: dict[str, float] = {"F_tilde_vs_F": relative_error(cum.F_tilde, cum.F)}
    blocks = block_relative_errors(cum.F_tilde, cum.F, cum.shapes)
    for a, i in enumerate(cum.layers):
        for b, j in enumerate(cum.layers):
            out[f"F_tilde_vs_F_block_{i + 1}_{j + 1}"] = float(blocks[a, b])
    F_tilde_inv = spd_inverse(dense.F_tilde(cum.factors, gamma), "F̃(γ)")
    F_breve_inv = spd_inverse(dense.F_breve(cum.factors, gamma), "F̆(γ)")
    out["F_breve_inv_vs_F_tilde_inv"] = relative_error(F_breve_inv, F_tilde_inv)
    out["F_hat_inv_vs_F_tilde_inv"] = relative_error(
        dense.F_hat_inverse(cum.factors, gamma), F_tilde_inv
    )
    return out


def step_quality(F: Any, lam_plus_eta: float, grad: Any, delta: Any) -> dict[str, float]:
    """Cosine of Δ with Δ_F = −(F + (λ+η)I)⁻¹∇h and both steps' optimally re-scaled M (§6, §7)."""
    xp = get_array_module(F)
    K = F + lam_plus_eta * xp.eye(F.shape[0], dtype=F.dtype)
    delta_F = -xp.linalg.solve(K, grad)
    alpha, model = rescaled_model_change(K, delta, grad)
    alpha_F, model_F = rescaled_model_change(K, delta_F, grad)
    return {
        "cosine_delta_vs_natural_gradient": _cosine(delta, delta_F),
        "alpha_kfac": alpha,
        "model_change_kfac": model,
        "alpha_natural_gradient": alpha_F,
        "model_change_natural_gradient": model_F,
        "model_change_ratio": model / model_F if model_F else math.nan,
    }


def diagnose(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    Y: Any,
    gamma: float,
    lam_plus_eta: float,
    delta: Sequence[Any] | None = None,
    grads: Sequence[Any] | None = None,
    eta: float = 0.0,
    layers: Sequence[int] | None = None,
    max_bytes: int | None = None,
) -> dict[str, float]:
    """Exact vs K-FAC's approximations at θ = ``weights`` on the cases (X, Y), as flat floats.

    Args:
        gamma: γ of the factored Tikhonov damping of F̃, F̆, F̂ (§6.3; the run's current γ).
        lam_plus_eta: λ + η of the quadratic model's (λ+η)I (§6; > 0).
        delta: K-FAC's proposal Δ (list shaped like ``weights``); default −F̆(γ)⁻¹∇h from the
            exact factors of these cases (§4.2).
        grads: ∇h (list shaped like ``weights``); default h's gradient on (X, Y) with ``eta``.
        eta: the ℓ2 weight cost η in h when ``grads`` is computed here (§2.1).
        layers: consecutive 0-based layers (k is W_{k+1}) every quantity is restricted to;
            default all.

    Returns keys (paper's 1-based layer numbers i, j): ``F_tilde_vs_F_block_{i}_{j}``,
    ``F_tilde_vs_F``, ``total_error``, ``bound`` (and the other §3.1 sums of
    :meth:`kfac_ref.cumulants.KroneckerCumulants.summary`), ``F_breve_inv_vs_F_tilde_inv``,
    ``F_hat_inv_vs_F_tilde_inv``, ``cosine_delta_vs_natural_gradient``, ``alpha_kfac``,
    ``model_change_kfac``, ``alpha_natural_gradient``, ``model_change_natural_gradient``,
    ``model_change_ratio`` (K-FAC's share of the exact step's decrease), ``gamma``,
    ``lam_plus_eta``.

    Raises ConfigError (before computing anything) for a network too large for dense matrices
    (:func:`check_diagnose_size`), bad γ, λ + η, η or layers; ShapeError for mismatched arrays.
    """
    gamma, lam_plus_eta = check_gamma(gamma), _check_lam_plus_eta(lam_plus_eta)
    check_eta(eta)
    layers = _consecutive(mlp, layers)
    mlp.validate(weights, X, Y, eta)
    for name, V in (("delta", delta), ("grads", grads)):
        if V is not None and [tuple(v.shape) for v in V] != mlp.shapes:
            raise ShapeError(f"{name} must have one matrix per layer, shaped like the weights")
    check_diagnose_size(mlp, X.shape[0], layers, max_bytes)
    xp = get_array_module(X)
    f64 = xp.float64
    weights, (X, Y) = cast(weights, f64), cast([X, Y], f64)
    if grads is None:
        grads = mlp.loss_and_grad(weights, X, Y, eta, validate=False)[1]
    cum = kronecker_cumulants(mlp, weights, X, layers, max_bytes)
    out = dict(cum.summary())
    cum.kappa4 = cum.kappa3_term_1 = cum.kappa3_term_2 = None  # no longer needed
    with lapack_threads(1, xp):  # SciPy's LAPACK pool must not busy-wait on NumPy's cores
        out.update(approximation_errors(cum, gamma))
    grad = flat(cast(grads, f64), layers)
    if delta is None:
        d = -spd_inverse(dense.F_breve(cum.factors, gamma), "F̆(γ)") @ grad
    else:
        d = flat(cast(delta, f64), layers)
    out.update(step_quality(cum.F, lam_plus_eta, grad, d))
    out.update(gamma=gamma, lam_plus_eta=lam_plus_eta)
    return {k: float(to_numpy(v)) for k, v in out.items()}


def diagnose_kfac(
    opt: Any,
    weights: Sequence[Any],
    state: Any,
    X: Any,
    Y: Any,
    layers: Sequence[int] | None = None,
    max_bytes: int | None = None,
) -> dict[str, float]:
    """:func:`diagnose` with a :class:`~kfac_ref.optimizer.KFAC` run's current values, between
    two steps: γ = ``state.gamma``, λ + η = ``state.lam + opt.config.eta``, and Δ = −(the
    optimizer's current damped inverse)∇h at ``weights`` (§8 step 4), ∇h on (X, Y) with η.

    ``state`` is the :class:`~kfac_ref.state.KFACState` returned by the last ``opt.step``
    (:class:`ConfigError` before the first step, which has no inverse yet).
    """
    if getattr(state, "inverse", None) is None:
        raise ConfigError("the diagnostics need a K-FAC state after at least one step")
    eta = float(opt.config.eta)
    mlp = opt.mlp
    mlp.validate(weights, X, Y, eta)
    check_diagnose_size(mlp, X.shape[0], layers, max_bytes)
    grads = mlp.loss_and_grad(weights, X, Y, eta, validate=False)[1]
    delta = [-v for v in state.inverse.apply(grads)]
    return diagnose(
        mlp,
        weights,
        X,
        Y,
        state.gamma,
        state.lam + eta,
        delta=delta,
        eta=eta,
        layers=layers,
        max_bytes=max_bytes,
    )
