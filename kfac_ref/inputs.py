"""Input checks of the §2.1 network: weights, inputs X, targets Y and the ℓ2 weight cost η.

Every public entry point checks what it is given and raises a clear error naming the problem
(:mod:`kfac_ref.errors`): :class:`ShapeError` for shapes, :class:`ConfigError` for dtypes and
options, :class:`NonFiniteError` for NaN/inf, :class:`TargetError` for targets the output
distribution cannot have. :class:`InputChecks` holds the checks of one network (the methods of
:class:`kfac_ref.mlp.MLP`); :func:`check_step_inputs` is what an optimizer step receives.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy

from .backend import KNOWN_DTYPES, get_array_module
from .errors import ConfigError, NonFiniteError, ShapeError, TargetError

if TYPE_CHECKING:
    from .host import HostBatch
    from .mlp import MLP
    from .outputs import OutputDistribution


def is_finite_nonnegative(value: Any) -> bool:
    """True when ``value`` is a real number (not a bool), finite and ≥ 0."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def check_eta(eta: Any) -> None:
    """:class:`ConfigError` unless the ℓ2 weight cost η (§2.1) is a finite number ≥ 0."""
    if not is_finite_nonnegative(eta):
        raise ConfigError(f"η (eta, the ℓ2 weight cost) must be a finite number ≥ 0, got {eta!r}")


class InputChecks:
    """The checks of a network's inputs, one method each (mixed into :class:`kfac_ref.mlp.MLP`).

    Reads the network's ``layer_sizes`` (d_0, …, d_ℓ), ``n_layers`` (ℓ), ``shapes`` and
    ``output`` (the predictive distribution, which checks its targets).
    """

    layer_sizes: tuple[int, ...]
    n_layers: int
    shapes: list[tuple[int, int]]
    output: OutputDistribution

    def check_weights(self, weights: Sequence[Any]) -> None:
        """Raise :class:`ShapeError` unless ``weights`` has this network's shapes."""
        if len(weights) != self.n_layers:
            raise ShapeError(f"expected {self.n_layers} weight matrices, got {len(weights)}")
        for i, (W, shape) in enumerate(zip(weights, self.shapes, strict=True), start=1):
            if tuple(W.shape) != shape:
                raise ShapeError(
                    f"W_{i} has shape {tuple(W.shape)}; expected {shape} = (d_{i}, d_{i - 1}+1)"
                )

    def check_input_shape(self, X: Any) -> None:
        """Raise :class:`ShapeError` unless X is (n, d_0), :class:`ConfigError` unless float32/64.

        Checks shapes and dtype only (no pass over the data, no GPU synchronization).
        """
        if X.ndim != 2 or X.shape[1] != self.layer_sizes[0]:
            raise ShapeError(
                f"X has shape {tuple(X.shape)}; expected (n_examples, {self.layer_sizes[0]})"
            )
        if numpy.dtype(X.dtype).name not in KNOWN_DTYPES:
            raise ConfigError(
                f"X has dtype {numpy.dtype(X.dtype).name}; expected one of "
                f"{', '.join(KNOWN_DTYPES)}"
            )

    def check_finite_weights(self, weights: Sequence[Any]) -> None:
        """:meth:`check_weights`, then :class:`NonFiniteError` naming W_i if it holds NaN or inf."""
        self.check_weights(weights)
        for i, W in enumerate(weights, start=1):
            if numpy.dtype(W.dtype).name not in KNOWN_DTYPES:
                raise ConfigError(
                    f"W_{i} has dtype {numpy.dtype(W.dtype).name}; expected one of "
                    f"{', '.join(KNOWN_DTYPES)}"
                )
            if not bool(get_array_module(W).isfinite(W).all()):
                raise NonFiniteError(f"W_{i} contains NaN or infinite values")

    def check_target_shape(self, X: Any, Y: Any) -> None:
        """Shapes and dtype of the targets only (no pass over the data, no GPU synchronization)."""
        if Y.ndim != 2 or Y.shape != (X.shape[0], self.layer_sizes[-1]):
            raise ShapeError(
                f"targets have shape {tuple(Y.shape)}; expected ({X.shape[0]}, "
                f"{self.layer_sizes[-1]})"
            )
        if numpy.dtype(Y.dtype).name not in KNOWN_DTYPES:
            raise ConfigError(
                f"targets have dtype {numpy.dtype(Y.dtype).name}; expected one of "
                f"{', '.join(KNOWN_DTYPES)}"
            )

    def check_inputs(self, X: Any, Y: Any | None = None) -> None:
        """Raise for malformed X (and targets Y): :class:`ShapeError` (shape, no rows),
        :class:`ConfigError` (dtype), :class:`NonFiniteError` (NaN/inf), :class:`TargetError`
        (targets the output distribution cannot have, e.g. Bernoulli targets outside [0, 1])."""
        xp = get_array_module(X)
        self.check_input_shape(X)
        if X.shape[0] == 0:
            raise ShapeError("X has no rows (an empty batch has no mean loss)")
        if not bool(xp.isfinite(X).all()):
            raise NonFiniteError("X contains NaN or infinite values")
        if Y is not None:
            self.check_target_shape(X, Y)
            self._check_target_values(Y)

    def _check_target_values(self, Y: Any) -> None:
        if not bool(get_array_module(Y).isfinite(Y).all()):
            raise NonFiniteError("targets contain NaN or infinite values")
        self.output.check_targets(Y)

    def validate(
        self, weights: Sequence[Any], X: Any, Y: Any | None = None, eta: float = 0.0
    ) -> None:
        """Everything a public entry checks: weights (shapes, dtype, finite), X and Y
        (:meth:`check_inputs`; Y's shape against the network's output) and η (finite, ≥ 0)."""
        self.check_finite_weights(weights)
        self.check_inputs(X)
        if Y is not None:
            out_shape = (X.shape[0], self.layer_sizes[-1])
            if tuple(Y.shape) != out_shape:
                raise ShapeError(
                    f"targets have shape {tuple(Y.shape)} but outputs have shape {out_shape}"
                )
            self.check_target_shape(X, Y)
            self._check_target_values(Y)
        check_eta(eta)


def check_step_inputs(
    mlp: MLP,
    k: int,
    weights: Sequence[Any],
    X: Any,
    Y: Any,
    batch: HostBatch,
    validate: bool = True,
) -> None:
    """What a step receives; errors name iteration k. Shapes and dtypes are checked at once; the
    weights' finiteness is queued on ``batch`` (no synchronization of its own). ``validate=True``
    also checks X and Y (finite, targets valid for the output distribution) at once, which costs
    a pass over the batch and, on a GPU, a few synchronizations; ``validate=False`` is for loops
    whose data were checked once when loaded (:func:`kfac_ref.experiments.run_experiment`)."""
    mlp.check_weights(weights)
    mlp.check_input_shape(X)
    mlp.check_target_shape(X, Y)
    for name, A in (("X", X), ("the targets Y", Y)):
        if A.dtype != weights[0].dtype:  # else NumPy would silently run the step in float64
            raise ConfigError(
                f"iteration {k}: {name} has dtype {A.dtype} but the weights θ are "
                f"{weights[0].dtype}; cast the data to the run's dtype (Backend.asarray) first"
            )
    batch.require_finite(weights, f"iteration {k}: the weights θ is not finite")
    if validate:
        try:
            mlp.check_inputs(X, Y)
        except (NonFiniteError, TargetError) as exc:
            raise type(exc)(f"iteration {k}: {exc}") from None
