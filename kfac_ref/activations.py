"""Element-wise nonlinearities φ and their derivatives φ' (§2.1).

Each activation maps s_i to a_i = φ_i(s_i). ``derivative`` is written in terms of s and a
(whichever is cheaper), so the backward pass g_i = Da_i ⊙ φ_i'(s_i) never recomputes φ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backend import get_array_module, special_for
from .errors import ConfigError


def _logistic(s: Any) -> Any:
    """σ(s) = 1/(1+e^{−s}), exact to the last bit in both tails (SciPy's / cupyx's ``expit``)."""
    return special_for(s).expit(s)


@dataclass(frozen=True)
class Activation:
    """φ and φ' for one layer. ``derivative(s, a)`` returns φ'(s) given s and a = φ(s)."""

    name: str
    forward: Callable[[Any], Any]
    derivative: Callable[[Any, Any], Any]


ACTIVATIONS: dict[str, Activation] = {
    "logistic": Activation("logistic", _logistic, lambda s, a: a * (1.0 - a)),
    "tanh": Activation("tanh", lambda s: get_array_module(s).tanh(s), lambda s, a: 1.0 - a * a),
    "linear": Activation("linear", lambda s: s, lambda s, a: get_array_module(s).ones_like(s)),
    "relu": Activation(
        "relu",
        lambda s: get_array_module(s).maximum(s, 0.0),
        lambda s, a: (s > 0).astype(s.dtype),
    ),
}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; a :class:`ConfigError` lists the choices otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None
