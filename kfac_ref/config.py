"""Configuration of the optimizers: :class:`KFACConfig` (§5–§8) and :class:`SGDConfig` (§13).

Every default names its source: a section of the paper (arXiv:1503.05671, "§"), or the
authors' released MATLAB code ("[code]": ``nnet_train_2.m``, ``KFAC_train_3``). Options left
at ``None`` are derived from the others: ``cfg.resolved`` is the
:class:`ResolvedConstants` Algorithm 2 runs with (γ0, ω1, ω2, τ2 and the γ clamps, each ``None``
replaced by its paper or code value, the rules listed there in one place). It is recomputed on
every access, so ``dataclasses.replace(cfg, T1=10).resolved.omega1`` is the matching ω1; the
options themselves (and the saved config JSON) keep their ``None``.

Where the paper and the released code differ (see :class:`KFACConfig`), the default is the paper's
and ``constants="code"`` selects the code's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigError

CONSTANT_SETS = ("paper", "code")
STATS_METHODS = ("sample", "exact")
LINALG_MODES = ("auto", "float64", "training")
MOMENTUM_SCHEDULES = ("sutskever", "constant")
TIKHONOV_CHOICES = ("factored", "exact")  # §6.3; "exact" is the paper's eqn. 6

#: the choices of π_i (§6.3): the trace norm, or 1 (:func:`kfac_ref.damping.layer_pi`)
PI_CHOICES = ("trace", "one")
LM_BASE = 19.0 / 20.0  # §6.5 and [code] ``drop = 19/20``
TAU2_PAPER = 1.0 / 4.0  # §8: τ2 = 1/4 of the mini-batch for the exact-Fisher products
TAU2_CODE = 1.0  # [code] ``ratio_BV = 1`` ("a value below 1 is dangerous")


def omega1(T1: int, base: float = LM_BASE) -> float:
    """ω1 = (19/20)^{T1} (§6.5): the per-adjustment λ factor, compensating for adjusting only
    every T1 iterations ([code] ``drop^lambda_adj_interval``)."""
    return base**T1


def omega2(T2: int, base: float = LM_BASE) -> float:
    """ω2 = (√(19/20))^{T2} (§6.6; [code] ``sqrt(drop)^gamma_adj_interval``): γ ~ √λ in scale."""
    return math.sqrt(base) ** T2


def _real(name: str, value: object) -> None:
    """ConfigError unless ``value`` is a real number (not a bool, a string or None)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ConfigError(f"{name} must be a fraction in (0, 1], got {value!r}")


def _choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _nonnegative(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a finite number ≥ 0, got {value!r}")


@dataclass
class KFACConfig:
    """Meta-parameters of K-FAC (§5–§8, Algorithm 2) with the paper's names.

    Paper vs released code. The two agree on ω1 = (19/20)^T1 (code: ``drop^lambda_adj_interval``),
    ω2 = (√(19/20))^T2 (code: ``sqrt(drop)^gamma_adj_interval``), λ0 = 150, γ0 = √(λ0+η),
    ε_k = min(1 − 1/k, 0.95), τ1 = 1/8, T1 = 5, T2 = T3 = 20 and the recompute at k ≤ 3. They
    differ in:

    * τ2, the share of the mini-batch for the exact-Fisher products of §6–§7: the paper's 1/4
      (§8, default) vs the code's 1 (``constants="code"``, or set ``tau2``).
    * γ bounds: the paper states none; the code clamps the two outer γ candidates to
      [√η, 1] (the upper bound "completely arbitrary"). The paper is silent, so the code's
      bounds are the default; ``gamma_min=0`` / ``gamma_max=None`` switch them off.
    * π_i: the code uses the trace-norm choice of §6.3 (as here); a commented-out alternative in
      it, from the norms of the factors' eigenvalue vectors (Frobenius norms), is marked "used in
      paper". The trace norm (default) and π_i = 1 (``pi="one"``) are implemented.
    * Subsets: the code takes the first ⌈τ m⌉ cases of the (random) mini-batch; here a random
      subset is drawn with the step's generator — the same distribution.
    * Resuming: the code restarts ε_k's counter and recomputes the inverses at the first
      iteration after a resume; here k is the iteration number and the inverses are part of
      the saved state, so a resumed run repeats the uninterrupted one exactly.

    Attributes:
        structure: a name of :data:`kfac_ref.structures.STRUCTURES`: ``"block_diagonal"``
            (F̆, §4.2) or ``"block_tridiagonal"`` (F̂, §4.3). The name, and the damping options
            it implements, are checked where the structure is looked up
            (:func:`kfac_ref.structures.configured_structure`: :class:`~kfac_ref.optimizer.KFAC`,
            the experiments' configuration), so that this module imports no structure.
        eta: ℓ2 weight cost η in h(θ) (§13: 1e-5 for all three autoencoders).
        lam0: initial λ (§6.5, [code] ``initlambda = 150`` for the autoencoders).
        gamma0: initial γ; ``None`` → √(λ0 + η) (§6.6, [code] ``initgamma``).
        T1: iterations between λ adjustments (§6.5, [code] ``lambda_adj_interval = 5``).
        T2: iterations between γ searches (§6.6, [code] ``gamma_adj_interval = 20``).
        T3: iterations between inverse recomputations (§8, [code]
            ``refreshInvApprox_interval = 20``); T2 must be a multiple of T3 (§8, [code]).
        omega1: λ factor; ``None`` → (19/20)^T1 (§6.5).
        omega2: γ factor; ``None`` → (√(19/20))^T2 (§6.6).
        constants: ``"paper"`` or ``"code"``: which source sets options left at ``None`` where
            the two differ (only τ2 at present).
        tau1: share of the mini-batch for the factor statistics (§5, [code] ``ratio_sample``).
        tau2: share for the exact-Fisher products of §6–§7; ``None`` → 1/4 (paper) or 1 (code).
        max_stat_decay: cap of the statistics' decay ε_k (§5, [code] ``maxfade_stats = 0.95``).
        gamma_min: lower clamp of the γ candidates; ``None`` → √η ([code] ``gamma_min``);
            0 disables it.
        gamma_max: upper clamp of the γ candidates ([code] ``gamma_max = 1``, "completely
            arbitrary"); ``None`` disables it.
        lam_min, lam_max: bounds of λ ([code] ``lambda_min = 0``, ``lambda_max = Inf``).
        use_momentum: re-scale with the previous update δ₀ (§7, [code] ``useMomentum = 1``);
            False gives μ = 0 always.
        use_rescaling: re-scale the proposal by the exact-Fisher quadratic model (§6.4, §7):
            True (default) takes α (and μ) minimizing M(αΔ + μδ₀). False takes the raw proposal
            δ = Δ, i.e. α = 1 and μ = 0 (momentum needs the same model solve, so
            ``use_momentum`` has no effect); M(δ) − M(0) = ½ΔᵀFΔ + ½(λ+η)‖Δ‖² + ∇hᵀΔ is then
            evaluated at δ = Δ, and it is what ρ (§6.5) and the γ search (§6.6) use. A raw
            proposal may go uphill in the model (M(Δ) > M(0)); ρ is then NaN and λ rises, as
            for a failed step (:func:`kfac_ref.damping.reduction_ratio`).
        tikhonov: ``"factored"`` (default): factored Tikhonov damping of the diagonal factors,
            (Ā + π_i γ I) ⊗ (G + γ/π_i I) (§6.3). ``"exact"``: (F̆ + γ² I)⁻¹ computed exactly
            per diagonal block from the eigendecompositions of Ā_{i-1,i-1} and G_{i,i}
            (the paper's eqn. 6, :mod:`kfac_ref.tikhonov`). γ² is the Tikhonov part of the
            factored damping, so the two are compared on one γ axis; the γ search (§6.6) then
            chooses c = γ² among {ω2² c, c, c/ω2²}, and with ``adapt_gamma=False``
            c = λ + η, eqn. 6 exactly. Only the block-diagonal structure: F̂ + cI (§4.3) has no
            cheap inverse, and the dense structures (``"full"``, ``"exact"``) damp as F̆ does.
            ``pi`` has no effect with exact damping and must be left at ``"trace"``.
        pi: π_i of the factored damping (§6.3): ``"trace"`` (default), the trace-norm choice
            √[(tr Ā/(d_{i-1}+1)) / (tr G/d_i)]; ``"one"``: π_i = 1, i.e. (Ā + γI) ⊗ (G + γI).
            The block-diagonal and block-tridiagonal structures.
        adapt_gamma: the γ search of §6.6 every T2 iterations (default). False: γ = √(λ + η) at
            every iteration, following λ (§6.3, before §6.6 separates the two), unclamped
            (``gamma_min``/``gamma_max`` bound the search's candidates only) and ``gamma0``
            must be left unset. The inverses are recomputed whenever that γ differs from the
            one they were computed with (an iteration after λ changed, at most every T1), as
            well as at k ≤ ``inverse_recompute_first`` and every T3: the damping then always
            follows λ, at the cost of up to T3/T1 more refreshes.
        adapt_lambda: the Levenberg–Marquardt rule for λ every T1 iterations (§6.5, default).
            False: λ stays at λ0; ρ is still computed every T1 iterations and logged.
        inverse_recompute_first: recompute the inverses at every k ≤ this ([code]
            ``iter <= 3``).
        linalg: the precision of the damped inverses' factorizations (Cholesky, Appendix-B
            generalized eigendecompositions) when training in float32; no effect in float64.
            ``"auto"`` (default): the Appendix-B generalized eigendecompositions of F̂ (most of
            its refresh) in the training dtype, as the authors' code does (``eig(single(mat))``,
            Appendix B), each block redone in float64 when its float32 result cannot be
            trusted: the factorization failed, or κ̂ ε₃₂ / min(1 − s₁s₂) > 10⁻²
            (``kfac_ref.linalg.TRUST``), with κ̂ = λ̂_max(A) λ̂_max(A⁻¹) from 3 block power
            iterations (O(n²) beside the O(n³) eigendecomposition): nearly dependent layers,
            or factors whose spectra span more decades than the damping πγ, γ/π can cover. The
            Cholesky inverses (F̆, Ψ, Σ_ℓ) stay in float64: they cost about one matrix product,
            and float32 saves little there. ``"float64"``: every
            factorization in float64 (cast back).
            ``"training"``: the training dtype throughout, no fallback.
        lapack_threads: threads of SciPy's LAPACK while the damped inverses are computed, where
            SciPy's BLAS is not NumPy's (the PyPI wheels each bundle OpenBLAS): 1 (default)
            stops its idle threads busy-waiting on the cores NumPy's products need between
            factorizations, which made F̂'s γ-search iteration about 1.5× slower on 2 cores
            (:func:`kfac_ref.linalg.scipy_lapack_pool`); the count is restored
            after each refresh. None leaves the thread pools alone. No effect on CuPy or where
            NumPy and SciPy share one BLAS library.
        stats_method: ``"sample"`` (one target per case drawn from the model, §5, the paper) or
            ``"exact"`` (the expectation over the model's targets computed exactly with d_ℓ
            backward passes; a test hook for comparing with dense matrices).
    """

    structure: str = "block_diagonal"  # §4.2; "block_tridiagonal" is §4.3
    eta: float = 1e-5  # §13
    lam0: float = 150.0  # §6.5, [code] initlambda
    gamma0: float | None = None  # §6.6: √(λ0 + η)
    T1: int = 5  # §6.5
    T2: int = 20  # §6.6
    T3: int = 20  # §8
    omega1: float | None = None  # §6.5: (19/20)^T1
    omega2: float | None = None  # §6.6: (√(19/20))^T2
    constants: str = "paper"  # where paper and code differ, whose values fill the Nones
    tau1: float = 1.0 / 8.0  # §5, [code] ratio_sample
    tau2: float | None = None  # §8: 1/4 (paper); [code] ratio_BV = 1
    max_stat_decay: float = 0.95  # §5, [code] maxfade_stats
    gamma_min: float | None = None  # [code] gamma_min = √η
    gamma_max: float | None = 1.0  # [code] gamma_max = 1 ("completely arbitrary")
    lam_min: float = 0.0  # [code] lambda_min
    lam_max: float = math.inf  # [code] lambda_max
    use_momentum: bool = True  # §7, [code] useMomentum
    use_rescaling: bool = True  # §6.4, §7: α (and μ) from the exact-Fisher model
    tikhonov: str = "factored"  # §6.3; "exact" is the paper's eqn. 6
    pi: str = "trace"  # §6.3, trace-norm π_i ([code]); "one": π_i = 1
    adapt_gamma: bool = True  # §6.6; False: γ = √(λ + η) (§6.3)
    adapt_lambda: bool = True  # §6.5
    inverse_recompute_first: int = 3  # [code] iter <= 3
    linalg: str = "auto"  # see the docstring; [code] eig(single(mat))
    lapack_threads: int | None = 1  # SciPy's own OpenBLAS during refreshes
    stats_method: str = "sample"  # §5; "exact" is a test hook

    def __post_init__(self) -> None:
        if not isinstance(self.structure, str):  # the name is checked against the table
            raise ConfigError(f"structure must be a name, got {self.structure!r}")
        _choice("constants", self.constants, CONSTANT_SETS)
        _choice("stats_method", self.stats_method, STATS_METHODS)
        for name in ("eta", "lam0", "tau1", "max_stat_decay", "lam_min", "lam_max"):
            _real(name, getattr(self, name))
        for name in ("gamma0", "tau2", "omega1", "omega2", "gamma_min", "gamma_max"):
            if getattr(self, name) is not None:
                _real(name, getattr(self, name))
        for name in ("use_momentum", "use_rescaling", "adapt_gamma", "adapt_lambda"):
            _flag(name, getattr(self, name))
        self._check_damping()
        _choice("linalg", self.linalg, LINALG_MODES)
        if self.lapack_threads is not None:
            _positive_int("lapack_threads", self.lapack_threads)
        _nonnegative("eta", self.eta)
        if not (isinstance(self.lam0, (int, float)) and math.isfinite(self.lam0) and self.lam0 > 0):
            raise ConfigError(f"lam0 must be a finite number > 0, got {self.lam0!r}")
        for name in ("T1", "T2", "T3"):
            _positive_int(name, getattr(self, name))
        if self.T2 % self.T3 != 0:
            raise ConfigError(
                "T2 must be a multiple of T3 (the γ search needs fresh inverses), "
                f"got T2={self.T2}, T3={self.T3}"
            )
        _fraction("tau1", self.tau1)
        if self.tau2 is not None:
            _fraction("tau2", self.tau2)
        for name in ("omega1", "omega2"):
            w = getattr(self, name)
            if w is not None and not (isinstance(w, (int, float)) and 0.0 < w < 1.0):
                raise ConfigError(f"{name} must be in (0, 1), got {w!r}")
        if not (isinstance(self.max_stat_decay, (int, float)) and 0.0 <= self.max_stat_decay < 1.0):
            raise ConfigError(f"max_stat_decay must be in [0, 1), got {self.max_stat_decay!r}")
        if self.gamma0 is not None and not (math.isfinite(self.gamma0) and self.gamma0 > 0):
            raise ConfigError(f"gamma0 must be a finite number > 0, got {self.gamma0!r}")
        if self.gamma_min is not None:
            _nonnegative("gamma_min", self.gamma_min)
        if self.gamma_max is not None and not (self.gamma_max > 0):
            raise ConfigError(f"gamma_max must be > 0 or None, got {self.gamma_max!r}")
        _nonnegative("lam_min", self.lam_min)
        if not self.lam_max > self.lam_min:
            raise ConfigError(
                f"lam_max must exceed lam_min, got {self.lam_max!r} ≤ {self.lam_min!r}"
            )
        if (
            not isinstance(self.inverse_recompute_first, int)
            or isinstance(self.inverse_recompute_first, bool)
            or self.inverse_recompute_first < 0
        ):
            raise ConfigError(
                "inverse_recompute_first must be an integer ≥ 0, "
                f"got {self.inverse_recompute_first!r}"
            )

    def _check_damping(self) -> None:
        """The damping options (§6.3, §6.6): known values and no option that would be silently
        ignored. Whether the structure implements them is checked where the structure is
        looked up (:func:`kfac_ref.structures.configured_structure`)."""
        _choice("tikhonov", self.tikhonov, TIKHONOV_CHOICES)
        _choice("pi", self.pi, PI_CHOICES)
        if self.tikhonov == "exact" and self.pi != "trace":
            raise ConfigError(
                f"pi={self.pi!r} has no effect with tikhonov='exact' (no factored damping); "
                "leave pi at 'trace'"
            )
        if not self.adapt_gamma and self.gamma0 is not None:
            raise ConfigError(
                f"gamma0={self.gamma0!r} is ignored with adapt_gamma=False (γ = √(λ + η)); "
                "leave gamma0 unset"
            )

    @property
    def resolved(self) -> ResolvedConstants:
        """The constants Algorithm 2 runs with, each ``None`` option filled in
        (:class:`ResolvedConstants`); recomputed on every access."""
        return ResolvedConstants.of(self)


@dataclass(frozen=True)
class ResolvedConstants:
    """The constants of Algorithm 2 after every option of :class:`KFACConfig` left at ``None``
    is replaced by its value (``cfg.resolved``). The rules, in one place:

    * ``gamma0``: γ0 = √(λ0 + η) (§6.6, [code] ``initgamma``).
    * ``omega1``: ω1 = (19/20)^T1 (§6.5, [code] ``drop^lambda_adj_interval``).
    * ``omega2``: ω2 = (√(19/20))^T2 (§6.6, [code] ``sqrt(drop)^gamma_adj_interval``).
    * ``tau2``: 1/4 with ``constants="paper"`` (§8) or 1 with ``constants="code"``
      ([code] ``ratio_BV = 1``).
    * ``gamma_min``: √η ([code] ``gamma_min``; the paper states no bound); 0 disables it.
    * ``gamma_max``: ``inf``, no upper clamp (the option's default is the [code] bound 1,
      "completely arbitrary"; the paper states none).

    A value given explicitly is used as it is.
    """

    gamma0: float  # initial γ (§6.6)
    omega1: float  # λ factor of the Levenberg–Marquardt rule (§6.5)
    omega2: float  # γ factor of the γ search (§6.6)
    tau2: float  # share of the mini-batch for the exact-Fisher products of §6–§7
    gamma_min: float  # lower clamp of the γ candidates (§6.6, [code])
    gamma_max: float  # upper clamp of the γ candidates (§6.6, [code]); inf when disabled

    @classmethod
    def of(cls, cfg: KFACConfig) -> ResolvedConstants:
        """The resolved constants of ``cfg`` (the table above)."""
        return cls(
            gamma0=cfg.gamma0 if cfg.gamma0 is not None else math.sqrt(cfg.lam0 + cfg.eta),
            omega1=cfg.omega1 if cfg.omega1 is not None else omega1(cfg.T1),
            omega2=cfg.omega2 if cfg.omega2 is not None else omega2(cfg.T2),
            tau2=(
                cfg.tau2
                if cfg.tau2 is not None
                else (TAU2_PAPER if cfg.constants == "paper" else TAU2_CODE)
            ),
            gamma_min=cfg.gamma_min if cfg.gamma_min is not None else math.sqrt(cfg.eta),
            gamma_max=cfg.gamma_max if cfg.gamma_max is not None else math.inf,
        )


@dataclass
class SGDConfig:
    """SGD with Nesterov momentum, the paper's baseline (§13).

    Attributes:
        lr: the fixed learning rate ε (tuned per problem in the paper).
        mu_max: cap of the momentum schedule (Sutskever et al. 2013 use up to 0.999).
        eta: ℓ2 weight cost η (§13).
        nesterov: Nesterov's accelerated gradient (§13) or classical momentum.
        momentum_schedule: ``"sutskever"``: μ_t = min(1 − 2^{−1−log2(⌊t/250⌋+1)}, μ_max)
            (§13, Sutskever et al. 2013); ``"constant"``: μ_t = μ_max.
    """

    lr: float = 0.01
    mu_max: float = 0.99
    eta: float = 1e-5  # §13
    nesterov: bool = True  # §13
    momentum_schedule: str = "sutskever"  # §13 (Sutskever et al. 2013)

    def __post_init__(self) -> None:
        for name in ("lr", "mu_max", "eta"):
            _real(name, getattr(self, name))
        _flag("nesterov", self.nesterov)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.mu_max, (int, float)) and 0.0 <= self.mu_max < 1.0):
            raise ConfigError(f"mu_max must be in [0, 1), got {self.mu_max!r}")
        _nonnegative("eta", self.eta)
        _choice("momentum_schedule", self.momentum_schedule, MOMENTUM_SCHEDULES)
