"""kfac_ref: a from-scratch NumPy/CuPy reference implementation of K-FAC.

J. Martens and R. Grosse, "Optimizing Neural Networks with Kronecker-factored Approximate
Curvature", ICML 2015 (arXiv:1503.05671). Module map (paper section → module):

* §2.1 network, backward pass: :mod:`kfac_ref.mlp`, :mod:`kfac_ref.activations`,
  :mod:`kfac_ref.outputs`; vec/θ convention: :mod:`kfac_ref.vec`
* §2.2 exact Fisher, Fisher-vector products: :mod:`kfac_ref.fisher`
* §3 Kronecker factors Ā, G and F̃: :mod:`kfac_ref.factors`; dense F̃, F̆, F̂: :mod:`kfac_ref.dense`,
  the size check of dense P×P matrices: :mod:`kfac_ref.memory`
* §4 the interface of a curvature structure: :mod:`kfac_ref.curvature`, the table of structures
  :mod:`kfac_ref.structures`; §4.2 F̆⁻¹ then §4.3 F̂⁻¹ (Ψ, Σ): :mod:`kfac_ref.inverse`;
  Appendix B, (A ⊗ B ± C ⊗ D)⁻¹ for Σ_{i|i+1}: :mod:`kfac_ref.appendix_b`
* §5 statistics: :mod:`kfac_ref.statistics`
* §6 damping (π_i, γ, λ, ρ): :mod:`kfac_ref.damping`
* §7 re-scaling and momentum (α, μ): :mod:`kfac_ref.rescale`
* §8 the optimizer: :mod:`kfac_ref.optimizer`, its state and checkpoints :mod:`kfac_ref.state`,
  the log record of a step :mod:`kfac_ref.step_info`, options :mod:`kfac_ref.config`
* §10 invariance to affine re-parametrization: :mod:`kfac_ref.reparam`
* dense comparisons for small nets: :mod:`kfac_ref.compare`; a batch-mode damped natural-gradient
  step (§4.2, §6.3, §7): :mod:`kfac_ref.natgrad`; backends: :mod:`kfac_ref.backend`, their
  linear algebra and the checked SPD inverses :mod:`kfac_ref.linalg`, batched host transfers
  :mod:`kfac_ref.host`; the run's random generator: :mod:`kfac_ref.rng`

Beside the paper, in the subpackage :mod:`kfac_ref.experiments` (which the modules above never
import): §13 experiments :mod:`~kfac_ref.experiments.runner`,
:mod:`~kfac_ref.experiments.schedules`, the SGD baseline :mod:`~kfac_ref.experiments.sgd`, data
:mod:`~kfac_ref.experiments.data`; edge I/O :mod:`~kfac_ref.experiments.io`,
:mod:`~kfac_ref.experiments.checkpoint`, :mod:`~kfac_ref.experiments.run_lock`; the command
line :mod:`~kfac_ref.experiments.cli`, :mod:`~kfac_ref.experiments.commands`,
:mod:`~kfac_ref.experiments.exit_status`.
"""

from typing import TYPE_CHECKING

from .errors import (
    BackendError,
    ConfigError,
    DataError,
    KFACError,
    NonFiniteError,
    ShapeError,
    TargetError,
    TooLargeError,
)

if TYPE_CHECKING:
    from .backend import Backend, get_array_module, get_backend, to_numpy
    from .mlp import MLP, Forward

# The network and the backends are loaded on first use, so that importing a leaf module (the
# options, kfac_ref.config; the errors) loads nothing else of the package.
_LAZY = {
    "Backend": "backend",
    "get_array_module": "backend",
    "get_backend": "backend",
    "to_numpy": "backend",
    "MLP": "mlp",
    "Forward": "mlp",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.2.0"

__all__ = [
    "MLP",
    "Backend",
    "BackendError",
    "ConfigError",
    "DataError",
    "Forward",
    "KFACError",
    "NonFiniteError",
    "ShapeError",
    "TargetError",
    "TooLargeError",
    "get_array_module",
    "get_backend",
    "to_numpy",
]
