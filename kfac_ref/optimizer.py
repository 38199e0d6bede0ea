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

Each piece of the damping and re-scaling can be switched off alone, for the ablations of §6
(``KFACConfig``): ``use_rescaling`` (δ = Δ), ``use_momentum`` (μ = 0), ``tikhonov="exact"``
(F̆ + γ²I inverted exactly), ``pi="one"`` (π_i = 1), ``adapt_gamma`` (γ = √(λ + η), steps 3 and 5
then refresh the inverses whenever λ moved γ) and ``adapt_lambda`` (λ = λ0, ρ still logged).

Iteration k counts from 1, as in Algorithm 2; ``KFACState.k`` is the number of iterations done.
The math lives in the modules named above; :meth:`KFAC.step` is Algorithm 2 as one named call
per step, and checks that what it returns is finite: what the host needs of iteration k is
queued on the device and fetched together (:class:`~kfac_ref.host.IterationHost`), and the log
record is a :class:`~kfac_ref.step_info.StepInfo`. The curvature structure (F̆, F̂, …) is a
class from :mod:`kfac_ref.structures`, chosen by ``KFACConfig.structure``. What is carried between
iterations, and its checkpoint form, is :mod:`kfac_ref.state`. The only randomness is the
generator passed to :meth:`KFAC.step` (subsets and sampled targets), so a run resumed from
:meth:`KFAC.state_dict` repeats exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .backend import Backend
from .config import KFACConfig
from .curvature import CurvatureInverse
from .damping import adjust_lambda, choose_gamma, gammas_to_try, reduction_ratio, tied_gamma
from .errors import ConfigError, NonFiniteError
from .host import IterationHost
from .inputs import check_step_inputs
from .linalg import Precision, lapack_threads
from .mlp import MLP
from .rescale import (
    Rescaling,
    inner,
    quadratic_model_on_span,
    raw_proposal_from_model,
    rescaling_from_model,
)
from .state import KFACState, check_state_scalars, load_state_dict, state_dict
from .statistics import FactorStats, choose_subset, running_statistics, subset_forward
from .step_info import StepInfo
from .structures import configured_structure, get_structure
from .tikhonov import ExactTikhonovInverse


# ------------------------------------------------------------- §8 steps 3 and 4, pure
def curvature_inverse(
    stats: FactorStats,
    gamma: float,
    structure: str | type[CurvatureInverse],
    linalg_dtype: Any = None,
    precision: Precision | None = None,
    pi: str = "trace",
    tikhonov: str = "factored",
) -> CurvatureInverse:
    """The damped inverse (F̆⁻¹ of §4.2, F̂⁻¹ of §4.3, … :mod:`kfac_ref.structures`) of the
    statistics with damping γ (§6.3).

    Factored Tikhonov damping (default): the diagonal factors are damped, (Ā + π_i γI,
    G + γ/π_i I), π_i = ``pi`` (``"trace"`` or ``"one"``); the off-diagonal ones are not
    ([code]). ``tikhonov="exact"``: (F̆ + γ²I)⁻¹ exactly (eqn. 6, :mod:`kfac_ref.tikhonov`).
    ``linalg_dtype`` (e.g. float64) is the precision of the factorizations; the result is cast
    back to the statistics' dtype. ``precision``: factorize in the statistics' dtype and redo
    in float64 what cannot be trusted (:class:`~kfac_ref.linalg.Precision`).
    """
    cls = get_structure(structure) if isinstance(structure, str) else structure
    return cls.from_stats(stats, gamma, linalg_dtype, precision, pi, tikhonov)


def curvature_inverses(
    stats: FactorStats,
    gammas: Sequence[float],
    structure: str | type[CurvatureInverse],
    linalg_dtype: Any = None,
    precision: Precision | None = None,
    pi: str = "trace",
    tikhonov: str = "factored",
) -> list[CurvatureInverse]:
    """:func:`curvature_inverse` for each γ (the candidates of §6.6), sharing what the
    structure can share between them (exact Tikhonov: the factors' eigendecompositions)."""
    cls = get_structure(structure) if isinstance(structure, str) else structure
    return cls.from_stats_gammas(stats, gammas, linalg_dtype, precision, pi, tikhonov)


def natural_gradient_direction(inverse: CurvatureInverse, grads: Sequence[Any]) -> list[Any]:
    """Δ = −F̆⁻¹∇h or −F̂⁻¹∇h (§8 step 4), in list-of-matrices form."""
    return [-v for v in inverse.apply(grads)]


def inverse_refresh_due(k: int, have_inverse: bool, first: int, T3: int) -> bool:
    """Recompute the damped inverses at iteration k? At k ≤ ``first`` ([code]
    ``iter <= 3``), every T3 iterations (§8), and whenever there is none yet."""
    return not have_inverse or k <= first or k % T3 == 0


def linalg_mode(linalg: str, factored: bool) -> str:
    """The precision of the damped inverses' factorizations (``KFACConfig.linalg``) for a
    structure: ``"auto"`` stays ``"auto"`` for the Kronecker-factored ones and is
    ``"float64"`` for the dense F̃, F (small nets); ``"float64"``, ``"training"`` as given."""
    return "float64" if linalg == "auto" and not factored else linalg


class KFAC:
    """K-FAC (Algorithm 2) for an :class:`~kfac_ref.mlp.MLP`.

    Args:
        mlp: the network (its output distribution defines the loss and the Fisher).
        config: the meta-parameters (:class:`~kfac_ref.config.KFACConfig`); a new one is set by
            assignment (``opt.config = dataclasses.replace(opt.config, T2=40)``), and its
            structure and factorization precision are looked up then, once.
        backend: where the state lives (NumPy/CuPy and the dtype of the weights).

    Use: ``state = opt.init_state(weights)``, then for each mini-batch
    ``weights, state, info = opt.step(weights, state, X, Y, rng)``.
    """

    def __init__(self, mlp: MLP, config: KFACConfig, backend: Backend) -> None:
        self.mlp = mlp
        self.backend = backend
        self.config = config

    @property
    def config(self) -> KFACConfig:
        return self._config

    @config.setter
    def config(self, config: KFACConfig) -> None:
        structure = configured_structure(config)
        structure.check_network(self.mlp, self.backend.dtype)
        self._config, self.structure = config, structure
        self.linalg = linalg_mode(config.linalg, structure.factored)

    def init_state(self, weights: Sequence[Any]) -> KFACState:
        """The state before iteration 1: λ = λ0, γ = γ0, no statistics, no previous update."""
        self.mlp.check_weights(weights)
        return KFACState(k=0, lam=float(self.config.lam0), gamma=float(self.config.resolved.gamma0))

    # ------------------------------------------------------------------ step
    def step(
        self,
        weights: Sequence[Any],
        state: KFACState,
        X: Any,
        Y: Any,
        rng: Any,
        validate: bool = True,
    ) -> tuple[list[Any], KFACState, dict[str, float]]:
        """Iteration k of Algorithm 2 on the mini-batch S_k = (X, Y); returns (θ + δ, state, info).

        k counts from 1 as in Algorithm 2 (the recompute at k ≤ 3, ε_k = min(1 − 1/k, 0.95),
        the periods T1, T2, T3): ``state.k`` is the number of iterations done, so this one is
        k = ``state.k`` + 1, the state returned has ``k`` = k and ``info["k"]`` is k.

        ``rng`` (a generator on the backend's device with ``random`` and ``standard_normal``:
        NumPy's ``default_rng``, or the run's :class:`kfac_ref.rng.Philox` on CuPy) is the only
        source of randomness: the τ1 and τ2 subsets and the sampled targets. ``info`` holds
        floats (:meth:`kfac_ref.step_info.StepInfo.record`): k, batch_size, loss (h at θ), lam
        and gamma (after this iteration's adjustments), alpha, mu, rho and loss_after (NaN
        except every T1 iterations), model_change (M(δ) − M(0)), the model change for each γ
        candidate (NaN unless searched), stat_decay (ε_k), refreshed, gamma_searched,
        grad_norm, delta_norm, stats_cases, fisher_cases, linalg_redone (how many
        factorizations this step redid in float64, ``KFACConfig.linalg = "auto"``).

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
        cfg, mlp, const = self.config, self.mlp, self.config.resolved  # const: γ0, ω1, ω2, τ2, …
        check_state_scalars(state, ("lam", "gamma"))
        k, n = state.k + 1, X.shape[0]
        # What the host needs (losses, the §7 systems, finiteness flags) is queued on the device
        # and fetched together: one transfer when nothing is refreshed (README, Backends).
        host = IterationHost(k)
        check_step_inputs(mlp, k, weights, X, Y, host, validate)
        # 1. h(θ) and ∇h on the whole mini-batch, real targets, with ηθ (§2.1).
        h, grads, fwd = mlp.loss_and_grad(weights, X, Y, cfg.eta, validate=False)
        host.finite_scalar("h", h, "the loss h(θ)")
        host.finite(grads, "the gradient ∇h")
        # 2. the statistics on a τ1-subset, reusing its rows of the forward pass (§5).
        idx_stats = choose_subset(n, cfg.tau1, rng)
        stats, eps = self._statistics(k, weights, subset_forward(fwd, idx_stats), state, rng)
        host.finite(stats.arrays(), "the factor statistics")
        # 3. the damped inverses: at k ≤ 3 and every T3 (§4, §6.3, §8); three γ every T2 (§6.6).
        search = cfg.adapt_gamma and k % cfg.T2 == 0
        if cfg.adapt_gamma:
            gammas = gammas_to_try(
                state.gamma, search, const.omega2, const.gamma_min, const.gamma_max
            )
        else:  # γ = √(λ + η) (§6.3); a new γ needs new inverses
            gammas = (tied_gamma(state.lam, cfg.eta),)
        refresh = inverse_refresh_due(
            k, state.inverse is not None, cfg.inverse_recompute_first, cfg.T3
        ) or (not cfg.adapt_gamma and gammas[0] != state.gamma)
        inverses, redone = (
            self._inverses(stats, gammas, host) if refresh else ([state.inverse] * len(gammas), 0)
        )
        # 4. Δ = −F⁻¹∇h; α, μ on the quadratic model with the exact Fisher on a τ2-subset (§7).
        idx_fisher = choose_subset(n, const.tau2, rng)
        rescalings = self._rescalings(
            weights, subset_forward(fwd, idx_fisher), grads, inverses, state, host
        )
        #    with several γ, the one whose δ has the lowest M(δ) (§6.6); θ ← θ + δ.
        c = self._choose_gamma(k, gammas, rescalings)
        delta = rescalings[c].delta
        new_weights = [W + d for W, d in zip(weights, delta, strict=True)]
        self._queue_update(grads, delta, new_weights, host)
        # 5. every T1 iterations: ρ on the mini-batch and the Levenberg–Marquardt rule for λ (§6.5).
        lam_due = k % cfg.T1 == 0
        if lam_due:
            h_new = mlp.loss(new_weights, X, Y, cfg.eta, validate=False)
            host.finite_scalar("h_new", h_new, "the loss h(θ + δ)")
        fetched = host.fetch()
        lam, rho = (
            self._lambda(state.lam, fetched, rescalings[c]) if lam_due else (state.lam, math.nan)
        )
        info = StepInfo(
            k=k,
            batch_size=n,
            lam=lam,
            gamma=float(gammas[c]),
            rescalings=rescalings,
            chosen=c,
            searched=search,
            rho=rho,
            host=fetched,
            stat_decay=eps,
            refreshed=refresh,
            stats_subset=idx_stats,
            fisher_subset=idx_fisher,
            linalg_redone=redone,
        )
        new_state = KFACState(k, lam, info.gamma, stats, inverses[c], delta)
        return new_weights, new_state, info.record()

    def _statistics(
        self, k: int, weights: Sequence[Any], fwd_stats: Any, state: KFACState, rng: Any
    ) -> tuple[FactorStats, float]:
        """Step 2: the running statistics of the structure (§5) updated with the τ1-subset's
        forward pass ``fwd_stats`` and targets sampled from the model; (statistics, ε_k)."""
        cfg = self.config
        return running_statistics(
            self.mlp,
            weights,
            fwd_stats,
            state.stats,
            rng,
            k,
            self.structure.statistics,
            cfg.stats_method,
            cfg.max_stat_decay,
        )

    def _inverses(
        self, stats: FactorStats, gammas: Sequence[float], host: IterationHost
    ) -> tuple[list[CurvatureInverse], int]:
        """Step 3: the damped inverse for each γ, its factorizations in the precision of
        ``KFACConfig.linalg`` (:attr:`linalg`), and how many of them were redone in float64.
        What is queued on ``host`` is fetched first: the inverses must not start from
        non-finite statistics."""
        host.fetch()
        f64 = self.backend.xp.float64
        linalg_dtype = f64 if self.linalg == "float64" else None
        precision = Precision(f64) if self.linalg == "auto" else None
        cfg = self.config
        try:
            with lapack_threads(cfg.lapack_threads, self.backend.xp):
                inverses = curvature_inverses(
                    stats, gammas, self.structure, linalg_dtype, precision, cfg.pi, cfg.tikhonov
                )
        except NonFiniteError as exc:
            raise NonFiniteError(f"iteration {host.k}: damped inverse with {exc}") from None
        return inverses, 0 if precision is None else len(precision.redone)

    def _rescalings(
        self,
        weights: Sequence[Any],
        fwd_fisher: Any,
        grads: Sequence[Any],
        inverses: Sequence[CurvatureInverse],
        state: KFACState,
        host: IterationHost,
    ) -> list[Rescaling]:
        """Step 4: for each inverse, Δ = −F⁻¹∇h and the §7 solution δ = αΔ + μδ₀ (or δ = Δ
        without re-scaling, §6.4); the quadratic models of all γ candidates come to the host
        together (one fetch of ``host``)."""
        cfg = self.config
        delta0 = state.delta if cfg.use_momentum and cfg.use_rescaling else None
        Deltas = [natural_gradient_direction(inverse, grads) for inverse in inverses]
        lam_plus_eta = state.lam + cfg.eta  # the (λ + η)I of the quadratic model M (§6, §7)
        # J Δ for every candidate and J δ₀ in one forward-mode pass
        J = self.mlp.jvps(weights, fwd_fisher, Deltas + ([] if delta0 is None else [delta0]))
        J_delta0 = None if delta0 is None else J[-1]
        for c, Delta in enumerate(Deltas):
            Q, r = quadratic_model_on_span(
                self.mlp,
                weights,
                fwd_fisher,
                grads,
                Delta,
                delta0,
                J_delta0,
                lam_plus_eta,
                J_Delta=J[c],
            )
            host.value(f"Q{c}", Q)
            host.value(f"r{c}", r)
        fetched = host.fetch()
        if not cfg.use_rescaling:
            return [
                raw_proposal_from_model(fetched[f"Q{c}"], fetched[f"r{c}"], Delta)
                for c, Delta in enumerate(Deltas)
            ]
        return [
            rescaling_from_model(fetched[f"Q{c}"], fetched[f"r{c}"], Delta, delta0)
            for c, Delta in enumerate(Deltas)
        ]

    @staticmethod
    def _choose_gamma(k: int, gammas: Sequence[float], rescalings: Sequence[Rescaling]) -> int:
        try:
            return choose_gamma(gammas, [r.model_change for r in rescalings])
        except NonFiniteError as exc:
            raise NonFiniteError(f"iteration {k}: {exc}") from None

    @staticmethod
    def _queue_update(
        grads: Sequence[Any], delta: Sequence[Any], new_weights: Sequence[Any], host: IterationHost
    ) -> None:
        """Queue the checks of δ and θ + δ and the norms ‖∇h‖², ‖δ‖² for the log."""
        host.finite(delta, "the update δ")
        host.finite(new_weights, "the new weights θ + δ")
        host.value("grad_sq", inner(grads, grads))
        host.value("delta_sq", inner(delta, delta))

    def _lambda(self, lam: float, fetched: dict[str, Any], best: Rescaling) -> tuple[float, float]:
        """Step 5, every T1 iterations: ρ = (h(θ + δ) − h(θ)) / (M(δ) − M(0)) on the mini-batch
        and λ by the Levenberg–Marquardt rule (§6.5); (λ, ρ). With ``adapt_lambda=False`` λ
        stays and ρ is only logged."""
        cfg, h, h_new = self.config, fetched["h"], fetched["h_new"]
        if cfg.adapt_lambda:
            omega1 = cfg.resolved.omega1
            return adjust_lambda(lam, h_new, h, best.model_change, omega1, cfg.lam_min, cfg.lam_max)
        return lam, reduction_ratio(h_new, h, best.model_change)

    # ----------------------------------------------------------- checkpoints
    def state_dict(self, state: KFACState) -> dict[str, Any]:
        """The state as host NumPy arrays, Python scalars, lists and dicts, for checkpoints
        (:func:`kfac_ref.state.state_dict`)."""
        return state_dict(state, self.config.structure)

    def load_state_dict(self, d: dict[str, Any]) -> KFACState:
        """The :class:`KFACState` of :meth:`state_dict`'s output on this optimizer's backend,
        checked against this network and structure first (:func:`kfac_ref.state.load_state_dict`),
        and its inverse against ``KFACConfig.tikhonov`` (the two forms of F̆'s inverse differ)."""
        state = load_state_dict(d, self.mlp, self.config.structure, self.backend.asarray)
        if state.inverse is not None:
            exact = isinstance(state.inverse, ExactTikhonovInverse)
            if exact != (self.config.tikhonov == "exact"):
                saved = "exact" if exact else "factored"
                raise ConfigError(
                    f"the saved state's inverse has {saved} Tikhonov damping; this optimizer "
                    f"is configured with tikhonov={self.config.tikhonov!r}"
                )
        return state
