"""The baseline of the experiments: SGD with Nesterov momentum (§13).

Sutskever et al. (2013)'s form of Nesterov's accelerated gradient, with a fixed learning rate ε
and the momentum schedule μ_k of :func:`kfac_ref.experiments.schedules.sutskever_momentum`:

    v_k = μ_k v_{k−1} − ε ∇h(θ_{k−1} + μ_k v_{k−1}),    θ_k = θ_{k−1} + v_k

(classical momentum evaluates the gradient at θ_{k−1} instead). h includes (η/2)‖θ‖². The
interface matches :class:`kfac_ref.optimizer.KFAC` so the experiment runner treats both alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..backend import Backend, to_numpy
from ..config import SGDConfig
from ..errors import ConfigError, ShapeError
from ..host import HostBatch
from ..inputs import check_step_inputs
from ..mlp import MLP
from ..rescale import inner
from .schedules import sutskever_momentum

STATE_FORMAT = "kfac_ref.SGDState/1"


@dataclass
class SGDState:
    """Iterations done and the velocity v (shaped like the weights; None before the first step)."""

    k: int
    velocity: list[Any] | None = None


def momentum(k: int, config: SGDConfig) -> float:
    """μ_k for iteration k: the Sutskever et al. schedule at t = k, or μ_max when constant."""
    if config.momentum_schedule == "constant":
        return config.mu_max
    return sutskever_momentum(k, config.mu_max)


class SGDMomentum:
    """SGD with (Nesterov) momentum, same interface as :class:`~kfac_ref.optimizer.KFAC`."""

    def __init__(self, mlp: MLP, config: SGDConfig, backend: Backend) -> None:
        self.mlp = mlp
        self.config = config
        self.backend = backend

    def init_state(self, weights: Sequence[Any]) -> SGDState:
        """k = 0 and zero velocity."""
        self.mlp.check_weights(weights)
        return SGDState(k=0, velocity=[self.backend.xp.zeros_like(W) for W in weights])

    def step(
        self,
        weights: Sequence[Any],
        state: SGDState,
        X: Any,
        Y: Any,
        rng: Any = None,
        validate: bool = True,
    ) -> tuple[list[Any], SGDState, dict[str, float]]:
        """One momentum step on (X, Y); ``rng`` is unused (SGD is deterministic given the batch).
        ``validate`` as in :meth:`kfac_ref.optimizer.KFAC.step`.

        ``info``: k, batch_size, loss (h where the gradient was taken: θ + μ v for Nesterov),
        lr, mu, grad_norm, delta_norm.
        """
        cfg = self.config
        k = state.k + 1
        if not isinstance(state.k, int) or state.k < 0:
            raise ConfigError(
                f"the optimizer state's iteration count must be an integer ≥ 0, got {state.k!r}"
            )
        batch = HostBatch()  # checks and numbers for the host, fetched once (README, Backends)
        check_step_inputs(self.mlp, k, weights, X, Y, batch, validate)
        mu = momentum(k, cfg)
        v = (
            state.velocity
            if state.velocity is not None
            else [self.backend.xp.zeros_like(W) for W in weights]
        )
        at = (
            [W + mu * u for W, u in zip(weights, v, strict=True)] if cfg.nesterov else list(weights)
        )
        h, grads, _ = self.mlp.loss_and_grad(at, X, Y, cfg.eta, validate=False)
        batch.scalar("h", h, f"iteration {k}: the loss h(θ) is not finite")
        batch.require_finite(grads, f"iteration {k}: the gradient ∇h is not finite")
        v_new = [mu * u - cfg.lr * g for u, g in zip(v, grads, strict=True)]
        new_weights = [W + u for W, u in zip(weights, v_new, strict=True)]
        batch.require_finite(new_weights, f"iteration {k}: the new weights is not finite")
        batch.value("grad_sq", inner(grads, grads))
        batch.value("delta_sq", inner(v_new, v_new))
        host = batch.fetch()
        info = {
            "k": k,
            "batch_size": X.shape[0],
            "loss": host["h"],
            "lr": cfg.lr,
            "mu": mu,
            "grad_norm": math.sqrt(host["grad_sq"]),
            "delta_norm": math.sqrt(host["delta_sq"]),
        }
        return new_weights, SGDState(k=k, velocity=v_new), info

    def state_dict(self, state: SGDState) -> dict[str, Any]:
        """Host NumPy arrays and Python scalars (for checkpoints)."""
        vel = None if state.velocity is None else [to_numpy(u) for u in state.velocity]
        return {"format": STATE_FORMAT, "k": int(state.k), "velocity": vel}

    def load_state_dict(self, d: dict[str, Any]) -> SGDState:
        """The :class:`SGDState` of :meth:`state_dict`'s output, on this optimizer's backend."""
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"not an SGD state (format {got!r}, expected {STATE_FORMAT!r})")
        if d["velocity"] is not None:
            got = [tuple(u.shape) for u in d["velocity"]]
            if got != self.mlp.shapes:
                raise ShapeError(
                    f"the saved velocity has shapes {got}; this network needs {self.mlp.shapes}"
                )
        vel = None if d["velocity"] is None else [self.backend.asarray(u) for u in d["velocity"]]
        return SGDState(k=int(d["k"]), velocity=vel)
