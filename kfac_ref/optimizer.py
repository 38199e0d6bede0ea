"""The K-FAC optimizer (§8, Algorithm 2 of the paper).

Iteration k on the mini-batch S_k = (X, Y):

1. forward pass; h(θ) and ∇h on S_k with the real targets, plus the ℓ2 term ηθ (§2.1);
2. on a random τ1-subset: one backward pass from targets sampled from the model, and the running
   statistics Ā, G (and their off-diagonal blocks for F̂) (§5, :mod:`kfac_ref.statistics`);
3. when k ≤ 3 or k ≡ 0 (mod T3): the damped inverse F̆⁻¹ or F̂⁻¹ (§4, §6.3), for each of the three
   γ candidates when k ≡ 0 (mod T2) (§6.6);
4. Δ = −F̆⁻¹∇h (or −F̂⁻¹∇h); α, μ from the exact-Fisher quadratic model on a τ2-subset (§7,
   :mod:`kfac_ref.rescale`; the subset's rows of the gradient's forward pass are reused); with
   several γ, keep the one whose δ has the lowest M(δ);
   θ ← θ + δ;
5. when k ≡ 0 (mod T1): ρ from h(θ + δ) on S_k and the Levenberg–Marquardt rule for λ (§6.5).

The math lives in the modules named above; :class:`KFAC` only orchestrates them and checks that
what it returns is finite. The only randomness is the generator passed to :meth:`KFAC.step`
(subsets and sampled targets), so a run resumed from :meth:`KFAC.state_dict` repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backend import Backend, HostBatch, to_numpy
from .config import KFACConfig
from .damping import damped_factors, gamma_candidates, reduction_ratio, update_lambda
from .errors import ConfigError, NonFiniteError, ShapeError, TargetError
from .inverse import (
    BlockDiagonalInverse,
    BlockTridiagonalInverse,
    KronSumInverse,
    apply_block_diagonal_inverse,
    apply_block_tridiagonal_inverse,
    block_diagonal_inverse,
    block_tridiagonal_inverse,
)
from .mlp import MLP
from .rescale import Rescaling, fisher_gram, inner, quadratic_model, rescaling_from_model
from .statistics import (
    FactorStats,
    batch_factor_stats,
    choose_subset,
    stat_decay,
    subset_forward,
    update_stats,
)

CurvatureInverse = BlockDiagonalInverse | BlockTridiagonalInverse
STATE_FORMAT = "kfac_ref.KFACState/1"


# ------------------------------------------------------------- §8 step 3 and 4, pure
def _cast(arrays: Sequence[Any], dtype: Any) -> list[Any]:
    return [a if a.dtype == dtype else a.astype(dtype) for a in arrays]


def _cast_inverse(inv: CurvatureInverse, dtype: Any) -> CurvatureInverse:
    if isinstance(inv, BlockDiagonalInverse):
        return BlockDiagonalInverse(A_inv=_cast(inv.A_inv, dtype), G_inv=_cast(inv.G_inv, dtype))
    return BlockTridiagonalInverse(
        psi_A=_cast(inv.psi_A, dtype),
        psi_G=_cast(inv.psi_G, dtype),
        sigma_cond=[KronSumInverse(*_cast([s.K1, s.K2, s.denom], dtype)) for s in inv.sigma_cond],
        sigma_last=_cast_inverse(inv.sigma_last, dtype),
    )


def curvature_inverse(
    stats: FactorStats, gamma: float, structure: str, linalg_dtype: Any = None
) -> CurvatureInverse:
    """F̆⁻¹ (§4.2) or F̂⁻¹ (§4.3) of the statistics with factored Tikhonov damping γ (§6.3).

    The diagonal factors are damped, (Ā + πγI, G + γ/π I); the off-diagonal ones are not
    ([code]). ``linalg_dtype`` (e.g. float64) is the precision of the factorizations; the
    result is cast back to the statistics' dtype.
    """
    dtype = stats.A_diag[0].dtype
    work = linalg_dtype or dtype
    pairs = [damped_factors(A, G, gamma) for A, G in zip(_cast(stats.A_diag, work), _cast(stats.G_diag, work), strict=True)]
    A_diag, G_diag = [p[0] for p in pairs], [p[1] for p in pairs]
    if structure == "block_diagonal":
        inv = block_diagonal_inverse(A_diag, G_diag)
    elif structure == "block_tridiagonal":
        if stats.A_off is None or stats.G_off is None:
            raise ConfigError("the block-tridiagonal inverse needs the off-diagonal statistics Ā_{k,k+1}, G_{k,k+1}")
        inv = block_tridiagonal_inverse(A_diag, G_diag, _cast(stats.A_off, work), _cast(stats.G_off, work))
    else:
        raise ConfigError(f"unknown structure {structure!r}; choose 'block_diagonal' or 'block_tridiagonal'")
    return _cast_inverse(inv, dtype) if work != dtype else inv


def natural_gradient_direction(inverse: CurvatureInverse, grads: Sequence[Any]) -> list[Any]:
    """Δ = −F̆⁻¹∇h or −F̂⁻¹∇h (§8 step 4), in list-of-matrices form."""
    if isinstance(inverse, BlockDiagonalInverse):
        V = apply_block_diagonal_inverse(inverse, grads)
    else:
        V = apply_block_tridiagonal_inverse(inverse, grads)
    return [-v for v in V]


# ------------------------------------------------------------------------ state
@dataclass
class KFACState:
    """Everything K-FAC carries between iterations.

    Attributes:
        k: iterations done (the next step is iteration k + 1).
        lam: λ of the quadratic model (§6.5).
        gamma: γ of the factored damping (§6.6).
        stats: the running factor statistics (§5); None before the first step.
        inverse: the damped inverse last recomputed (§8 step 3); None before the first step.
        delta: the previous update δ₀ (§7); None before the first step.
    """

    k: int
    lam: float
    gamma: float
    stats: FactorStats | None = None
    inverse: CurvatureInverse | None = None
    delta: list[Any] | None = None


def check_step_inputs(
    mlp: MLP, k: int, weights: Sequence[Any], X: Any, Y: Any, batch: HostBatch, validate: bool = True
) -> None:
    """What a step receives; errors name iteration k. Shapes and dtypes are checked at once; the
    weights' finiteness is queued on ``batch`` (no synchronization of its own). ``validate=True``
    also checks X and Y (finite, targets valid for the output distribution) at once, which costs
    a pass over the batch and, on a GPU, a few synchronizations; ``validate=False`` is for loops
    whose data were checked once when loaded (:func:`kfac_ref.experiments.run_experiment`)."""
    mlp.check_weights(weights)
    mlp.check_input_shape(X)
    mlp.check_target_shape(X, Y)
    batch.require_finite(weights, f"iteration {k}: the weights θ is not finite")
    if validate:
        try:
            mlp.check_inputs(X, Y)
        except (NonFiniteError, TargetError) as exc:
            raise type(exc)(f"iteration {k}: {exc}") from None


def check_state_scalars(state: Any, names: Sequence[str]) -> None:
    """:class:`ConfigError` unless ``state.k`` is an integer ≥ 0 and each named scalar of the
    state (λ, γ) is a finite number > 0 (Python floats: no GPU synchronization)."""
    if not isinstance(state.k, int) or state.k < 0:
        raise ConfigError(f"the optimizer state's iteration count must be an integer ≥ 0, got {state.k!r}")
    for name in names:
        v = getattr(state, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            symbol = {"lam": "λ", "gamma": "γ"}.get(name, name)
            raise ConfigError(f"{symbol} ({name}) of the optimizer state must be a finite number > 0, got {v!r}")


class KFAC:
    """K-FAC (Algorithm 2) for an :class:`~kfac_ref.mlp.MLP`.

    Args:
        mlp: the network (its output distribution defines the loss and the Fisher).
        config: the meta-parameters (:class:`~kfac_ref.config.KFACConfig`).
        backend: where the state lives (NumPy/CuPy and the dtype of the weights).

    Use: ``state = opt.init_state(weights)``, then for each mini-batch
    ``weights, state, info = opt.step(weights, state, X, Y, rng)``.
    """

    def __init__(self, mlp: MLP, config: KFACConfig, backend: Backend) -> None:
        self.mlp = mlp
        self.config = config
        self.backend = backend

    @property
    def tridiagonal(self) -> bool:
        return self.config.structure == "block_tridiagonal"

    def init_state(self, weights: Sequence[Any]) -> KFACState:
        """The state before iteration 1: λ = λ0, γ = γ0, no statistics, no previous update."""
        self.mlp.check_weights(weights)
        return KFACState(k=0, lam=float(self.config.lam0), gamma=float(self.config.gamma0_value))

    def _inverse(self, k: int, stats: FactorStats, gamma: float) -> CurvatureInverse:
        linalg_dtype = self.backend.xp.float64 if self.config.linalg_float64 else None
        try:
            return curvature_inverse(stats, gamma, self.config.structure, linalg_dtype)
        except NonFiniteError as exc:
            raise NonFiniteError(f"iteration {k}: damped inverse with γ = {gamma:.6g}: {exc}") from None

    # ------------------------------------------------------------------ step
    def step(
        self, weights: Sequence[Any], state: KFACState, X: Any, Y: Any, rng: Any, validate: bool = True
    ) -> tuple[list[Any], KFACState, dict[str, float]]:
        """One iteration of Algorithm 2 on the mini-batch (X, Y); returns (θ + δ, state, info).

        ``rng`` (a generator on the backend's device with ``random`` and ``standard_normal``:
        NumPy's ``default_rng``, or the run's :class:`kfac_ref.rng.Philox` on CuPy) is the only
        source of randomness: the τ1 and τ2 subsets and the sampled targets. ``info`` holds floats: k, batch_size, loss (h at θ),
        lam and gamma (after this iteration's adjustments), alpha, mu, rho and loss_after
        (NaN except every T1 iterations), model_change (M(δ) − M(0)), the model change for each
        γ candidate (NaN unless searched), stat_decay (ε_k), refreshed, gamma_searched,
        grad_norm, delta_norm, stats_cases, fisher_cases.

        ``validate=False`` skips the checks of the data's values (shapes are still checked, and
        the weights' finiteness, queued on the device): for a loop that checked its data once
        (:func:`kfac_ref.experiments.run_experiment`); it is the path the sync budget (README,
        Backends) is counted on. The new weights are checked at the end of every step either way.

        Raises:
            NonFiniteError: a non-finite input, loss, gradient, statistic or update, naming the
                iteration; the weights passed in are never modified.
            TargetError: targets the output distribution cannot have (Bernoulli outside [0, 1]).
            ShapeError, ConfigError: arrays of the wrong shape or dtype; λ, γ not finite and > 0.
        """
        cfg = self.config
        check_state_scalars(state, ("lam", "gamma"))
        k = state.k + 1
        # What the host needs (the loss, the §7 systems, finiteness flags) is queued on the device
        # and fetched together: one transfer when nothing is refreshed (README, Backends).
        batch = HostBatch()
        check_step_inputs(self.mlp, k, weights, X, Y, batch, validate)
        n = X.shape[0]

        # 1. h(θ) and ∇h on the whole mini-batch, real targets, with ηθ.
        h, grads, fwd = self.mlp.loss_and_grad(weights, X, Y, cfg.eta, validate=False)
        batch.scalar("h", h, f"iteration {k}: the loss h(θ) is not finite")
        batch.require_finite(grads, f"iteration {k}: the gradient ∇h is not finite")

        # 2. statistics on a τ1-subset, reusing its rows of the forward pass (§5).
        idx_stats = choose_subset(n, cfg.tau1, rng)
        batch_stats = batch_factor_stats(
            self.mlp, weights, subset_forward(fwd, idx_stats), rng, self.tridiagonal, cfg.stats_method
        )
        eps = stat_decay(k, cfg.max_stat_decay)
        stats = update_stats(state.stats, batch_stats, eps)
        batch.require_finite(stats.arrays(), f"iteration {k}: the factor statistics is not finite")

        # 3. which inverses: recompute at k ≤ 3 and every T3; three γ every T2 (§6.6, §8).
        refresh = state.inverse is None or k <= cfg.inverse_recompute_first or k % cfg.T3 == 0
        search = k % cfg.T2 == 0
        if search:
            gammas = gamma_candidates(state.gamma, cfg.omega2_value, cfg.gamma_min_value, cfg.gamma_max_value)
        else:
            gammas = (state.gamma,)
        if refresh:
            batch.fetch()  # the inverses must not start from non-finite statistics

        # 4. Δ, then α, μ on the quadratic model with the exact Fisher on a τ2-subset (§7); the
        # models of all γ candidates come to the host together.
        idx_fisher = choose_subset(n, cfg.tau2_value, rng)
        fwd_fisher = subset_forward(fwd, idx_fisher)
        delta0 = state.delta if cfg.use_momentum else None
        J_delta0 = None if delta0 is None else self.mlp.jvp(weights, fwd_fisher, delta0)
        damping = state.lam + cfg.eta
        directions = []
        for c, gamma in enumerate(gammas):
            inverse = self._inverse(k, stats, gamma) if refresh else state.inverse
            Delta = natural_gradient_direction(inverse, grads)
            Jv = [self.mlp.jvp(weights, fwd_fisher, Delta)] + ([] if J_delta0 is None else [J_delta0])
            dirs = [Delta] if delta0 is None else [Delta, delta0]
            Q, r = quadratic_model(grads, dirs, fisher_gram(self.mlp, fwd_fisher, Jv), damping)
            batch.value(f"Q{c}", Q)
            batch.value(f"r{c}", r)
            directions.append((gamma, inverse, Delta))
        host = batch.fetch()
        h = host["h"]
        candidates: list[tuple[float, CurvatureInverse, Rescaling]] = [
            (gamma, inverse, rescaling_from_model(host[f"Q{c}"], host[f"r{c}"], Delta, delta0))
            for c, (gamma, inverse, Delta) in enumerate(directions)
        ]
        finite = [c for c in candidates if math.isfinite(c[2].model_change)]
        if not finite:
            raise NonFiniteError(f"iteration {k}: the quadratic model M(δ) is not finite for any γ in {gammas}")
        gamma, inverse, best = min(finite, key=lambda c: c[2].model_change)  # first of equals
        new_weights = [W + d for W, d in zip(weights, best.delta, strict=True)]
        batch.require_finite(best.delta, f"iteration {k}: the update δ is not finite")
        batch.require_finite(new_weights, f"iteration {k}: the new weights θ + δ is not finite")
        batch.value("grad_sq", inner(grads, grads))
        batch.value("delta_sq", inner(best.delta, best.delta))

        # 5. every T1 iterations: ρ on the mini-batch and the Levenberg–Marquardt rule (§6.5).
        lam, rho, h_new = state.lam, math.nan, math.nan
        if k % cfg.T1 == 0:
            batch.scalar("h_new", self.mlp.loss(new_weights, X, Y, cfg.eta, validate=False),
                         f"iteration {k}: the loss h(θ + δ) is not finite")
        host = batch.fetch()
        if k % cfg.T1 == 0:
            h_new = host["h_new"]
            rho = reduction_ratio(h_new, h, best.model_change)
            lam = update_lambda(lam, rho, cfg.omega1_value, cfg.lam_min, cfg.lam_max)

        new_state = KFACState(k=k, lam=lam, gamma=float(gamma), stats=stats, inverse=inverse, delta=best.delta)
        changes = [c[2].model_change for c in candidates] if search else [math.nan] * 3
        info = {
            "k": k,
            "batch_size": n,
            "loss": h,
            "lam": lam,
            "gamma": float(gamma),
            "alpha": best.alpha,
            "mu": best.mu,
            "rho": rho,
            "loss_after": h_new,
            "model_change": best.model_change,
            "model_change_gamma_down": changes[0],
            "model_change_gamma_same": changes[1],
            "model_change_gamma_up": changes[2],
            "stat_decay": eps,
            "refreshed": int(refresh),
            "gamma_searched": int(search),
            "grad_norm": math.sqrt(host["grad_sq"]),
            "delta_norm": math.sqrt(host["delta_sq"]),
            "stats_cases": n if idx_stats is None else int(idx_stats.shape[0]),
            "fisher_cases": n if idx_fisher is None else int(idx_fisher.shape[0]),
        }
        return new_weights, new_state, info

    # ----------------------------------------------------------- checkpoints
    def state_dict(self, state: KFACState) -> dict[str, Any]:
        """The state as host NumPy arrays, Python scalars, lists and dicts (for checkpoints)."""

        def host(arrays: Sequence[Any] | None) -> list[Any] | None:
            return None if arrays is None else [to_numpy(a) for a in arrays]

        d: dict[str, Any] = {
            "format": STATE_FORMAT,
            "structure": self.config.structure,
            "k": int(state.k),
            "lam": float(state.lam),
            "gamma": float(state.gamma),
            "stats": None,
            "inverse": None,
            "delta": host(state.delta),
        }
        if state.stats is not None:
            s = state.stats
            d["stats"] = {"A_diag": host(s.A_diag), "G_diag": host(s.G_diag), "A_off": host(s.A_off), "G_off": host(s.G_off)}
        inv = state.inverse
        if isinstance(inv, BlockDiagonalInverse):
            d["inverse"] = {"A_inv": host(inv.A_inv), "G_inv": host(inv.G_inv)}
        elif isinstance(inv, BlockTridiagonalInverse):
            d["inverse"] = {
                "psi_A": host(inv.psi_A),
                "psi_G": host(inv.psi_G),
                "K1": host([s.K1 for s in inv.sigma_cond]),
                "K2": host([s.K2 for s in inv.sigma_cond]),
                "denom": host([s.denom for s in inv.sigma_cond]),
                "A_inv_last": host(inv.sigma_last.A_inv),
                "G_inv_last": host(inv.sigma_last.G_inv),
            }
        return d

    def _state_shapes(self, d: dict[str, Any]) -> dict[str, list[tuple[int, ...]]]:
        """The shape of every array of a :meth:`state_dict` for this network, by key."""
        sizes = self.mlp.layer_sizes
        L = self.mlp.n_layers
        A = [(sizes[k] + 1, sizes[k] + 1) for k in range(L)]
        G = [(sizes[k + 1], sizes[k + 1]) for k in range(L)]
        A_off = [(sizes[k] + 1, sizes[k + 1] + 1) for k in range(L - 1)]
        G_off = [(sizes[k + 1], sizes[k + 2]) for k in range(L - 1)]
        out = {"delta": self.mlp.shapes, "stats.A_diag": A, "stats.G_diag": G}
        if self.tridiagonal:
            out.update({"stats.A_off": A_off, "stats.G_off": G_off, "inverse.psi_A": A_off, "inverse.psi_G": G_off,
                        "inverse.K1": A[:-1], "inverse.K2": G[:-1],
                        "inverse.denom": [(g[0], a[0]) for a, g in zip(A[:-1], G[:-1], strict=True)],
                        "inverse.A_inv_last": A[-1:], "inverse.G_inv_last": G[-1:]})
        else:
            out.update({"inverse.A_inv": A, "inverse.G_inv": G})
        return out

    def _check_state_dict(self, d: dict[str, Any]) -> None:
        """:class:`ShapeError` unless each array of ``d`` has this network's shape."""
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"not a K-FAC state (format {got!r}, expected {STATE_FORMAT!r})")
        if d.get("structure") != self.config.structure:
            raise ConfigError(f"the saved state is for {d.get('structure')!r}, this optimizer is {self.config.structure!r}")
        for key, shapes in self._state_shapes(d).items():
            node: Any = d
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                continue  # before the first step, or the other structure's off-diagonals
            got = [tuple(a.shape) for a in node] if isinstance(node, list) else node
            if got != list(shapes):
                raise ShapeError(f"the saved state's {key} has shapes {got}; this network needs {list(shapes)}")

    def load_state_dict(self, d: dict[str, Any]) -> KFACState:
        """The :class:`KFACState` of :meth:`state_dict`'s output, on this optimizer's backend
        (formats, structure and every array's shape checked first)."""
        self._check_state_dict(d)

        def dev(arrays: Sequence[Any] | None) -> list[Any] | None:
            return None if arrays is None else [self.backend.asarray(a) for a in arrays]

        stats = None
        if d["stats"] is not None:
            s = d["stats"]
            stats = FactorStats(dev(s["A_diag"]), dev(s["G_diag"]), dev(s["A_off"]), dev(s["G_off"]))
        inverse: CurvatureInverse | None = None
        i = d["inverse"]
        if i is not None and "A_inv" in i:
            inverse = BlockDiagonalInverse(dev(i["A_inv"]), dev(i["G_inv"]))
        elif i is not None:
            inverse = BlockTridiagonalInverse(
                psi_A=dev(i["psi_A"]),
                psi_G=dev(i["psi_G"]),
                sigma_cond=[KronSumInverse(*t) for t in zip(dev(i["K1"]), dev(i["K2"]), dev(i["denom"]), strict=True)],
                sigma_last=BlockDiagonalInverse(dev(i["A_inv_last"]), dev(i["G_inv_last"])),
            )
        return KFACState(
            k=int(d["k"]), lam=float(d["lam"]), gamma=float(d["gamma"]), stats=stats, inverse=inverse, delta=dev(d["delta"])
        )
