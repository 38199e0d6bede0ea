"""The state K-FAC carries between iterations of Algorithm 2 (§8) and its checkpoint form.

:class:`KFACState` is what :meth:`kfac_ref.optimizer.KFAC.step` takes and returns: the iteration
count k, λ (§6.5), γ (§6.6), the running statistics (§5), the damped inverse last recomputed
(§8 step 3) and the previous update δ₀ (§7). :func:`state_dict` turns it into host NumPy arrays,
Python scalars, lists and dicts (format :data:`STATE_FORMAT`); :func:`load_state_dict` checks
such a dict against the network and the curvature structure and puts it back on a device.
``KFAC.state_dict`` / ``KFAC.load_state_dict`` delegate here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .backend import to_numpy
from .curvature import CurvatureInverse
from .errors import ConfigError, ShapeError
from .mlp import MLP
from .statistics import FactorStats, stats_shapes
from .structures import get_structure

#: Σ_{i|i+1}⁻¹ of F̂ is saved in the low-rank form where the net narrows
#: (:class:`~kfac_ref.appendix_b.KronSumInverse`); other formats are refused (CHANGELOG.md)
STATE_FORMAT = "kfac_ref.KFACState/3"
BASE_STATS = ("A_diag", "G_diag", "A_off", "G_off")  # always saved, None or not


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


def check_state_scalars(state: Any, names: Sequence[str]) -> None:
    """:class:`ConfigError` unless ``state.k`` is an integer ≥ 0 and each named scalar of the
    state (λ, γ) is a finite number > 0 (Python floats: no GPU synchronization)."""
    if not isinstance(state.k, int) or state.k < 0:
        raise ConfigError(
            f"the optimizer state's iteration count must be an integer ≥ 0, got {state.k!r}"
        )
    for name in names:
        v = getattr(state, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            symbol = {"lam": "λ", "gamma": "γ"}.get(name, name)
            raise ConfigError(
                f"{symbol} ({name}) of the optimizer state must be a finite number > 0, got {v!r}"
            )


def _host(arrays: Sequence[Any] | None) -> list[Any] | None:
    return None if arrays is None else [to_numpy(a) for a in arrays]


def state_dict(state: KFACState, structure: str) -> dict[str, Any]:
    """The state as host NumPy arrays, Python scalars, lists and dicts (for checkpoints).

    ``structure`` is the name of the curvature structure (``KFACConfig.structure``); it is saved
    so that a state is only loaded into an optimizer of the same structure.
    """
    d: dict[str, Any] = {
        "format": STATE_FORMAT,
        "structure": structure,
        "k": int(state.k),
        "lam": float(state.lam),
        "gamma": float(state.gamma),
        "stats": None,
        "inverse": None,
        "delta": _host(state.delta),
    }
    if state.stats is not None:
        # the four statistics of F̆, F̂ always, the others where the structure keeps them
        d["stats"] = {
            k: _host(v) for k, v in state.stats.fields().items() if v is not None or k in BASE_STATS
        }
    if state.inverse is not None:
        d["inverse"] = state.inverse.state_dict()
    return d


def state_shapes(mlp: MLP, structure: str) -> dict[str, list[tuple[int, ...]]]:
    """The shape of every array of a :func:`state_dict` for this network and structure, by
    dotted key (``"delta"``, ``"stats.A_diag"``, ``"inverse.…"``)."""
    cls = get_structure(structure)
    sizes = mlp.layer_sizes
    out = {"delta": mlp.shapes}
    out.update(
        {f"stats.{key}": shapes for key, shapes in stats_shapes(sizes, cls.statistics).items()}
    )
    out.update({f"inverse.{key}": shapes for key, shapes in cls.state_shapes(sizes).items()})
    return out


def check_state_dict(d: Any, mlp: MLP, structure: str) -> None:
    """:class:`ConfigError` unless ``d`` is a :func:`state_dict` of ``structure``;
    :class:`ShapeError` unless each of its arrays has this network's shape."""
    if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise ConfigError(f"not a K-FAC state (format {got!r}, expected {STATE_FORMAT!r})")
    if d.get("structure") != structure:
        raise ConfigError(
            f"the saved state is for {d.get('structure')!r}, this optimizer is {structure!r}"
        )
    for key, shapes in state_shapes(mlp, structure).items():
        node: Any = d
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue  # before the first step, or the other structure's off-diagonals
        got = [tuple(a.shape) for a in node] if isinstance(node, list) else node
        if got != list(shapes):
            raise ShapeError(
                f"the saved state's {key} has shapes {got}; this network needs {list(shapes)}"
            )


def load_state_dict(
    d: dict[str, Any], mlp: MLP, structure: str, asarray: Callable[[Any], Any]
) -> KFACState:
    """The :class:`KFACState` of :func:`state_dict`'s output, its arrays put on a device with
    ``asarray`` (e.g. ``Backend.asarray``); format, structure and every array's shape are
    checked first (:func:`check_state_dict`)."""
    check_state_dict(d, mlp, structure)

    def dev(arrays: Sequence[Any] | None) -> list[Any] | None:
        return None if arrays is None else [asarray(a) for a in arrays]

    stats = None
    if d["stats"] is not None:
        s = d["stats"]
        stats = FactorStats(**{k: dev(s.get(k)) for k in FactorStats.names()})
    inverse = (
        None
        if d["inverse"] is None
        else get_structure(structure).from_state_dict(d["inverse"], asarray)
    )
    return KFACState(
        k=int(d["k"]),
        lam=float(d["lam"]),
        gamma=float(d["gamma"]),
        stats=stats,
        inverse=inverse,
        delta=dev(d["delta"]),
    )
