"""The table of curvature structures (§4): name → class.

Every structure implements :class:`kfac_ref.curvature.CurvatureInverse`; the optimizer
(``KFACConfig.structure``), the CLI's ``--method``, the comparison tools and the figure scripts
find it here, and nothing else tests a structure's name or class. A new structure is one
module with its class and one entry below.
"""

from __future__ import annotations

from .config import KFACConfig
from .curvature import CurvatureInverse
from .errors import ConfigError
from .exact import ExactInverse
from .full import FullInverse
from .inverse import BlockDiagonalInverse, BlockTridiagonalInverse

STRUCTURES: dict[str, type[CurvatureInverse]] = {
    cls.name: cls
    for cls in (
        FullInverse,  # F̃, §3 (small nets)
        BlockDiagonalInverse,  # F̆, §4.2
        BlockTridiagonalInverse,  # F̂, §4.3
        ExactInverse,  # F, exact natural gradient (small nets)
    )
}
#: the Kronecker-factored structures, which scale to the paper's networks
FACTORED: dict[str, type[CurvatureInverse]] = {
    name: cls for name, cls in STRUCTURES.items() if cls.factored
}


def get_structure(name: str) -> type[CurvatureInverse]:
    """The structure class of ``name``; :class:`ConfigError` naming the choices otherwise."""
    try:
        return STRUCTURES[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown structure {name!r}; choose one of {', '.join(STRUCTURES)}"
        ) from None


def configured_structure(cfg: KFACConfig) -> type[CurvatureInverse]:
    """The structure class of ``cfg.structure``, checked: :class:`ConfigError` for a name not in
    :data:`STRUCTURES` (naming the choices) or damping options (``cfg.pi``, ``cfg.tikhonov``,
    §6.3) the structure does not implement (naming the structures that do). The optimizer and
    the experiments' configuration look the structure up here."""
    if cfg.structure not in STRUCTURES:
        raise ConfigError(
            f"structure must be one of {', '.join(STRUCTURES)}; got {cfg.structure!r}"
        )
    cls = STRUCTURES[cfg.structure]
    cls.check_damping(cfg.pi, cfg.tikhonov)
    return cls


def structure_of_method(method: str) -> type[CurvatureInverse] | None:
    """The structure an experiments ``--method`` (e.g. ``"kfac-tridiag"``) trains with; None
    for a method that is not K-FAC (``"sgd-momentum"``)."""
    return next((cls for cls in STRUCTURES.values() if cls.method == method), None)


def methods(factored_only: bool = False) -> tuple[str, ...]:
    """The K-FAC methods of the experiments, one per structure (or per factored structure)."""
    return tuple(cls.method for cls in (FACTORED if factored_only else STRUCTURES).values())
