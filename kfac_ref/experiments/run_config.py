"""What a §13 run is: the autoencoders, the methods and :class:`RunConfig` (everything that
determines a run's numbers, saved beside its log), the optimizer it builds and its mini-batch
sizes. Orchestration edge: no loop, no files.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy

from ..backend import KNOWN_BACKENDS, KNOWN_DTYPES, Backend
from ..config import CONSTANT_SETS, KFACConfig, SGDConfig
from ..errors import ConfigError, DataError
from ..mlp import MLP
from ..optimizer import KFAC
from ..structures import STRUCTURES, configured_structure, methods, structure_of_method
from .schedules import minibatch_size
from .sgd import SGDMomentum

#: Architectures of §13: logistic hidden units, linear code layer.
AUTOENCODERS: dict[str, dict[str, Any]] = {
    "curves": {
        "layers": [784, 400, 200, 100, 50, 25, 6, 25, 50, 100, 200, 400, 784],
        "output": "bernoulli",
        "sgd_batch": 250,
        "eta": 1e-5,  # §13
    },
    "mnist": {
        "layers": [784, 1000, 500, 250, 30, 250, 500, 1000, 784],
        "output": "bernoulli",
        "sgd_batch": 500,
        "eta": 1e-5,  # §13
    },
    "faces": {
        "layers": [625, 2000, 1000, 500, 30, 500, 1000, 2000, 625],
        "output": "gaussian",
        "sgd_batch": 500,
        "eta": 5e-6,  # [code] with the ½‖y − s‖² loss ([code]: the paper's loss was scaled by 2)
    },
}
#: K-FAC methods that are a structure's method with KFACConfig fields fixed. "K-FAC without
#: momentum" of §13 (Figs. 9–11; "no moment., Blk-Diag K-FAC"): δ = αΔ with α from the §6.4
#: model, μ = 0 (§7 switched off), block-diagonal F̆.
METHOD_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "kfac-blockdiag-nomomentum": ("kfac-blockdiag", {"use_momentum": False}),
}
#: one K-FAC method per structure (kfac_ref.structures), the variants, and the SGD baseline
METHODS = (*methods(), *METHOD_VARIANTS, "sgd-momentum")
#: RunConfig fields a resumed run may change: none of them changes its numbers.
MAY_CHANGE_ON_RESUME = (
    "iters",
    "max_seconds",
    "backend",
    "data_dir",
    "eval_every",
    "checkpoint_every",
    "diagnose_every",
)
#: KFACConfig fields ``--kfac`` may set (the structure comes from the method, the constants
#: from ``--constants``).
KFAC_OVERRIDABLE = tuple(
    f.name for f in dataclasses.fields(KFACConfig) if f.name not in ("structure", "constants")
)


def _int_at_least(name: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _number_in(
    name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> None:
    """ConfigError unless ``value`` is a real number in the interval (open ends as flagged)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    ok = (
        ok
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")


def autoencoder(name: str, layers: Sequence[int] | None = None) -> MLP:
    """The §13 autoencoder for data set ``name`` (or custom ``layers`` with the same rules)."""
    if name not in AUTOENCODERS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(AUTOENCODERS)}")
    sizes = list(layers) if layers is not None else AUTOENCODERS[name]["layers"]
    hidden = sizes[1:-1]
    code = hidden.index(min(hidden))
    acts = ["linear" if i == code else "logistic" for i in range(len(hidden))]
    return MLP(sizes, acts, AUTOENCODERS[name]["output"])


@dataclass
class RunConfig:
    """Everything that determines a run; saved beside its log as ``config.json``.

    The defaults are the released code's ([code]), which produced the published curves:
    ``constants="code"`` (τ2 = 1: exact-Fisher products on the whole mini-batch) and the sparse
    initialization drawing its 15 indices with replacement. ``constants="paper"`` selects the
    paper text's τ2 = 1/4; ``sparse_init_replace=False`` draws 15 distinct indices.
    ``max_seconds`` stops a run once its optimizer time reaches it (the figures give SGD the
    same wall time as the slowest K-FAC run); ``iters`` stays an upper bound.
    """

    dataset: str = "curves"
    method: str = "kfac-tridiag"
    iters: int = 1000
    seed: int = 0
    backend: str | None = None
    dtype: str = "float32"
    eval_every: int = 25
    n_train: int | None = None  # first n_train training cases (None: all)
    n_test: int | None = None
    layers: list[int] | None = None  # None: the paper's architecture
    m1: int = 1000  # first mini-batch size of K-FAC's exponential schedule (§13 [code])
    k_full: int = 500  # iteration at which the mini-batch is the whole training set
    kfac_batch: int | None = None  # a fixed K-FAC mini-batch size instead of the schedule
    sgd_batch: int | None = None  # None: 250 (CURVES) / 500 (MNIST, FACES) (§13)
    sgd_lr: float = 0.05
    sgd_mu_max: float = 0.99
    average_start: int = 200  # iterate averaging from this iteration ([code])
    average_decay: float = 0.99
    checkpoint_every: int = 50
    data_dir: str | None = None
    kfac: dict[str, Any] = field(default_factory=dict)  # KFACConfig overrides
    constants: str = "code"  # KFACConfig.constants: the released code's τ2 = 1 ([code] ratio_BV)
    sparse_init_replace: bool = True  # [code]: 15 indices per unit drawn with replacement
    max_seconds: float | None = None  # stop when the optimizer time reaches this
    #: every N iterations log the exact-vs-approximate diagnostics on the mini-batch
    #: (kfac_ref.diagnostics; small nets only, refused before training otherwise)
    diagnose_every: int | None = None

    def __post_init__(self) -> None:
        self._normalize()
        if self.dataset not in AUTOENCODERS:
            raise ConfigError(
                f"unknown data set {self.dataset!r}; choose one of {', '.join(AUTOENCODERS)}"
            )
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("iters", "eval_every", "m1", "k_full", "checkpoint_every"):
            _int_at_least(name, getattr(self, name), 1)
        _int_at_least("seed", self.seed, 0)
        _int_at_least("average_start", self.average_start, 0)
        if self.n_train is not None:
            _int_at_least("n_train", self.n_train, 1)
        if self.n_test is not None:
            _int_at_least("n_test", self.n_test, 0)  # 0: no test set
        if self.diagnose_every is not None and self.method == "sgd-momentum":
            raise ConfigError(
                "diagnose_every needs a K-FAC method: SGD has no curvature to diagnose"
            )
        for name in ("sgd_batch", "kfac_batch", "diagnose_every"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not self.data_dir):
            raise ConfigError(f"data_dir must be a non-empty path, got {self.data_dir!r}")
        if self.backend is not None and self.backend not in KNOWN_BACKENDS:
            raise ConfigError(
                f"unknown backend {self.backend!r}; choose one of {', '.join(KNOWN_BACKENDS)}"
            )
        if self.dtype not in KNOWN_DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(KNOWN_DTYPES)}, got {self.dtype!r}")
        if self.constants not in CONSTANT_SETS:
            raise ConfigError(
                f"constants must be one of {', '.join(CONSTANT_SETS)}, got {self.constants!r}"
            )
        _number_in("sgd_lr", self.sgd_lr, 0.0, math.inf, low_open=True)
        _number_in("sgd_mu_max", self.sgd_mu_max, 0.0, 1.0, high_open=True)
        _number_in("average_decay", self.average_decay, 0.0, 1.0, high_open=True)
        if self.max_seconds is not None:
            _number_in("max_seconds", self.max_seconds, 0.0, math.inf, low_open=True)
        if not isinstance(self.sparse_init_replace, bool):
            raise ConfigError(
                f"sparse_init_replace must be true or false, got {self.sparse_init_replace!r}"
            )
        if self.layers is not None:
            self._check_layers()
        if not isinstance(self.kfac, dict):
            raise ConfigError(f"kfac must be a mapping of KFACConfig fields, got {self.kfac!r}")
        self.kfac_config()  # every override's name and value checked now (SGD does not use them)

    def _normalize(self) -> None:
        """NumPy scalars (from a parameter sweep) as Python numbers, a path-like ``data_dir``
        as a string and a tuple of widths as a list, so that the saved configuration is JSON
        and compares equal to the one it was made from."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, numpy.generic) and v.dtype.kind in "iuf":
                setattr(self, f.name, v.item())
        if isinstance(self.data_dir, os.PathLike):
            self.data_dir = os.fspath(self.data_dir)
        if isinstance(self.layers, (tuple, numpy.ndarray)):
            self.layers = list(self.layers)
        if isinstance(self.layers, list):
            self.layers = [d.item() if isinstance(d, numpy.integer) else d for d in self.layers]

    def _check_layers(self) -> None:
        L = self.layers
        if (
            not isinstance(L, list)
            or len(L) < 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in L)
        ):
            raise ConfigError(
                f"layers must list at least three positive widths d_0 … d_ℓ, got {L!r}"
            )
        if L[0] != L[-1]:
            raise ConfigError(
                "an autoencoder's first and last widths must be equal (its input is its target), "
                f"got {L!r}"
            )

    def kfac_config(self) -> KFACConfig:
        """The :class:`KFACConfig` of a kfac-* method: the data set's η, ``constants``, the
        ``kfac`` overrides and the structure ``method`` names. Errors name a wrong override
        and suggest the closest valid name."""
        base, fixed = METHOD_VARIANTS.get(self.method, (self.method, {}))
        for name in self.kfac:
            if name in fixed:
                raise ConfigError(
                    f"--kfac {name}=… conflicts with --method {self.method}, which sets "
                    f"{name}={fixed[name]!r}; drop --kfac {name}"
                )
            if name == "structure":
                pairs = ", ".join(f"{cls.method}: {cls.name}" for cls in STRUCTURES.values())
                raise ConfigError(
                    "--kfac structure=… conflicts with --method, which chooses the structure "
                    f"({pairs}); drop --kfac structure"
                )
            if name == "constants":
                raise ConfigError(
                    "--kfac constants=… conflicts with --constants; use --constants alone"
                )
            if name not in KFAC_OVERRIDABLE:
                close = difflib.get_close_matches(name, KFAC_OVERRIDABLE, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"unknown K-FAC option {name!r} in --kfac; {hint}valid names: "
                    f"{', '.join(KFAC_OVERRIDABLE)}"
                )
        # SGD runs check their overrides against the default method's structure
        structure = (structure_of_method(base) or structure_of_method(RunConfig.method)).name
        eta = AUTOENCODERS[self.dataset]["eta"]  # ℓ2 weight cost η of the data set
        try:
            kcfg = KFACConfig(
                **{
                    "eta": eta,
                    "constants": self.constants,
                    **self.kfac,
                    **fixed,
                    "structure": structure,
                }
            )
            configured_structure(kcfg)  # the damping options the structure implements
            return kcfg
        except TypeError as exc:  # a wrongly typed value the checks did not anticipate
            raise ConfigError(f"invalid --kfac value: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Any, where: str) -> RunConfig:
        """The RunConfig saved in ``where`` (a checkpoint, ``config.json``, ``result.json``);
        :class:`DataError` if it is not one."""
        if not isinstance(d, dict):
            raise DataError(f"{where}: the saved configuration is not a mapping")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise DataError(
                f"{where}: the saved configuration has unknown fields {', '.join(unknown)}"
            )
        try:
            return cls(**d)
        except (ConfigError, TypeError, ValueError) as exc:  # a value of the wrong type
            raise DataError(f"{where}: the saved configuration is invalid: {exc}") from None

    def differences(self, other: RunConfig) -> list[str]:
        """The fields in which ``other`` differs from this run, as ``name: this → other``,
        leaving out :data:`MAY_CHANGE_ON_RESUME` (none of which changes a run's numbers)."""
        a, b = self.to_json(), other.to_json()
        return [
            f"{k}: {a[k]!r} → {b[k]!r}" for k in a if k not in MAY_CHANGE_ON_RESUME and a[k] != b[k]
        ]

    def same_run_as(self, other: RunConfig) -> bool:
        """True when ``other`` continues this run: everything equal but the length (``iters``,
        ``max_seconds``), where it runs (``backend``, ``data_dir``) and how often it is evaluated
        and checkpointed, none of which changes its numbers."""
        return not self.differences(other)

    def is_done(self, iterations: int, seconds: float) -> bool:
        """True when a run at ``iterations`` after ``seconds`` of optimizer time has finished."""
        return iterations >= self.iters or (
            self.max_seconds is not None and seconds >= self.max_seconds
        )


def make_optimizer(cfg: RunConfig, mlp: MLP, backend: Backend) -> KFAC | SGDMomentum:
    """The optimizer object of ``cfg.method`` with the experiments' defaults (§13, [code])."""
    if cfg.method == "sgd-momentum":
        eta = AUTOENCODERS[cfg.dataset]["eta"]  # ℓ2 weight cost η of the data set
        return SGDMomentum(mlp, SGDConfig(lr=cfg.sgd_lr, mu_max=cfg.sgd_mu_max, eta=eta), backend)
    return KFAC(mlp, cfg.kfac_config(), backend)


def batch_size(cfg: RunConfig, k: int, n_total: int) -> int:
    """K-FAC: exponentially growing m_k (§13), or ``kfac_batch`` when fixed; SGD: a fixed size
    (250 for CURVES, 500 for MNIST and FACES, §13)."""
    if cfg.method == "sgd-momentum":
        size = cfg.sgd_batch or AUTOENCODERS[cfg.dataset]["sgd_batch"]
        return min(size, n_total)
    if cfg.kfac_batch is not None:
        return min(cfg.kfac_batch, n_total)
    return minibatch_size(k, min(cfg.m1, n_total), n_total, cfg.k_full)
