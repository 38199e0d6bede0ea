"""The log record of one iteration of Algorithm 2 (§8): :class:`StepInfo`.

:meth:`kfac_ref.optimizer.KFAC.step` gathers what the iteration decided (λ, γ, the chosen δ, ρ,
whether the inverses were refreshed and γ searched) in one :class:`StepInfo`;
:meth:`StepInfo.record` is the dict of floats the step returns and the experiments log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .rescale import Rescaling


@dataclass(frozen=True)
class StepInfo:
    """What iteration k of Algorithm 2 did, as the step's log needs it."""

    k: int  # the iteration of Algorithm 2 (1 at the first step)
    batch_size: int  # |S_k|, the mini-batch's cases
    lam: float  # λ after this iteration's Levenberg–Marquardt step (§6.5)
    gamma: float  # the γ chosen (§6.6)
    rescalings: Sequence[Rescaling]  # δ (with α, μ, M(δ) − M(0)) for each γ candidate (§7)
    chosen: int  # the index of the γ chosen among the candidates
    searched: bool  # whether the three γ candidates were tried (every T2, §6.6)
    rho: float  # ρ (§6.5); NaN except every T1 iterations
    host: Mapping[str, float]  # the fetched h, ‖∇h‖², ‖δ‖², and h(θ + δ) every T1 iterations
    stat_decay: float  # ε_k of the running statistics (§5)
    refreshed: bool  # whether the damped inverses were recomputed (§8)
    stats_subset: Any  # the τ1-subset's indices (§5); None for the whole mini-batch
    fisher_subset: Any  # the τ2-subset's indices (§7); None for the whole mini-batch
    linalg_redone: int = 0  # factorizations redone in float64 (KFACConfig.linalg = "auto")

    def record(self) -> dict[str, float]:
        """The log record (the keys :meth:`kfac_ref.optimizer.KFAC.step` documents, in order)."""
        best = self.rescalings[self.chosen]
        changes = [r.model_change for r in self.rescalings] if self.searched else [math.nan] * 3
        return {
            "k": self.k,
            "batch_size": self.batch_size,
            "loss": self.host["h"],
            "lam": self.lam,
            "gamma": self.gamma,
            "alpha": best.alpha,
            "mu": best.mu,
            "rho": self.rho,
            "loss_after": self.host.get("h_new", math.nan),
            "model_change": best.model_change,
            "model_change_gamma_down": changes[0],
            "model_change_gamma_same": changes[1],
            "model_change_gamma_up": changes[2],
            "stat_decay": self.stat_decay,
            "refreshed": int(self.refreshed),
            "gamma_searched": int(self.searched),
            "grad_norm": math.sqrt(self.host["grad_sq"]),
            "delta_norm": math.sqrt(self.host["delta_sq"]),
            "stats_cases": _cases(self.stats_subset, self.batch_size),
            "fisher_cases": _cases(self.fisher_subset, self.batch_size),
            "linalg_redone": self.linalg_redone,
        }


def _cases(subset: Any, n: int) -> int:
    """The cases of a subset of the mini-batch of n (None: all of it)."""
    return n if subset is None else int(subset.shape[0])
