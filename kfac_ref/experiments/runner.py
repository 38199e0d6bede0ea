"""The deep-autoencoder experiments of §13 (orchestration edge: data, loop, logs, checkpoints).

One run = one data set × one method. The loop draws mini-batches, calls the optimizer's pure
``step``, keeps the iterate average, evaluates the training-set reconstruction error at a fixed
interval and writes a JSON-lines log and a checkpoint atomically, so a run can stop at any point
and ``resume`` to the same numbers an uninterrupted run gives (on NumPy every random draw of
iteration k comes from a generator seeded by (seed, k); on CuPy from the run's one Philox
generator, whose state the checkpoint keeps: :mod:`kfac_ref.rng`).

Errors plotted in the paper: squared reconstruction error per case (summed over pixels,
averaged over cases) of the training set; reported as the minimum of the averaged and the raw
iterate's error, as in the authors' code (spec §12).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy

from ..backend import KNOWN_BACKENDS, KNOWN_DTYPES, Backend, get_backend, to_numpy
from ..config import CONSTANT_SETS, KFACConfig, SGDConfig
from ..errors import ConfigError, DataError, Interrupted, KFACError, ShapeError
from ..mlp import MLP
from ..optimizer import KFAC
from ..rng import RunGenerator
from ..state import state_shapes
from ..structures import STRUCTURES, methods, structure_of_method
from . import checks, io
from .schedules import iterate_average, minibatch_size
from .sgd import SGDMomentum

log = logging.getLogger(__name__)

#: Architectures of §13 (spec §10): logistic hidden units, linear code layer.
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
        "eta": 5e-6,  # [code] with the ½‖y − s‖² loss (spec §10: the paper's loss was scaled by 2)
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
)
#: KFACConfig fields ``--kfac`` may set (the structure comes from the method, the constants
#: from ``--constants``).
KFAC_OVERRIDABLE = tuple(
    f.name for f in dataclasses.fields(KFACConfig) if f.name not in ("structure", "constants")
)
#: Every file a run writes; a directory holding any of them holds a run.
RUN_FILES = (
    "config.json",
    "log.jsonl",
    "result.json",
    io.CHECKPOINT_NAME,
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

    The defaults are the released code's (spec §12), which produced the published curves:
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
    sgd_batch: int | None = None  # None: 250 (CURVES) / 500 (MNIST, FACES) (spec §12)
    sgd_lr: float = 0.05
    sgd_mu_max: float = 0.99
    average_start: int = 200  # iterate averaging from this iteration ([code])
    average_decay: float = 0.99
    checkpoint_every: int = 50
    data_dir: str | None = None
    kfac: dict[str, Any] = field(default_factory=dict)  # KFACConfig overrides
    constants: str = "code"  # KFACConfig.constants: the released code's τ2 = 1 (spec §12)
    sparse_init_replace: bool = True  # [code]: 15 indices per unit drawn with replacement
    max_seconds: float | None = None  # stop when the optimizer time reaches this

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
        for name in ("sgd_batch", "kfac_batch"):
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
                f"an autoencoder's first and last widths must be equal (its input is its target), got {L!r}"
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
                    f"--kfac structure=… conflicts with --method, which chooses the structure ({pairs}); drop --kfac structure"
                )
            if name == "constants":
                raise ConfigError(
                    "--kfac constants=… conflicts with --constants; use --constants alone"
                )
            if name not in KFAC_OVERRIDABLE:
                close = difflib.get_close_matches(name, KFAC_OVERRIDABLE, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"unknown K-FAC option {name!r} in --kfac; {hint}valid names: {', '.join(KFAC_OVERRIDABLE)}"
                )
        # SGD runs check their overrides against the default method's structure
        structure = (structure_of_method(base) or structure_of_method(RunConfig.method)).name
        eta = AUTOENCODERS[self.dataset]["eta"]  # ℓ2 weight cost η of the data set
        try:
            return KFACConfig(
                **{
                    "eta": eta,
                    "constants": self.constants,
                    **self.kfac,
                    **fixed,
                    "structure": structure,
                }
            )
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
    """The optimizer object of ``cfg.method`` with the experiments' defaults (spec §10, §12)."""
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


def reconstruction_error(mlp: MLP, weights: Sequence[Any], X: Any, chunk: int = 5000) -> float:
    """Mean over cases of the squared error ‖x − x̂‖² summed over pixels (the paper's plots)."""
    total = 0.0
    for start in range(0, X.shape[0], chunk):
        Xc = X[start : start + chunk]
        pred = mlp.output.predict(mlp.forward(weights, Xc).output)
        total += float(((pred - Xc) ** 2).sum())
    return total / X.shape[0]


def _checkpoint_budget(mlp: MLP, opt: Any) -> int:
    """Bytes a checkpoint of this run's network may declare for its arrays: twice what the
    weights, their average and the optimizer state hold in float64, plus 1 MiB."""
    shapes = [*mlp.shapes, *mlp.shapes]  # θ and its average
    if isinstance(opt, KFAC):
        shapes += [sh for v in state_shapes(mlp, opt.config.structure).values() for sh in v]
    else:
        shapes += mlp.shapes  # SGD's velocity
    return 2 * 8 * sum(math.prod(sh) for sh in shapes) + 2**20


def _iteration_seed(seed: int, k: int) -> int:
    return (seed * 1_000_003 + k) % (2**63)


@dataclass
class RunState:
    k: int
    weights: list[Any]
    average: list[Any]
    opt_state: Any
    elapsed: float
    records: list[dict[str, Any]]


def _checkpoint_payload(
    cfg: RunConfig, opt: Any, st: RunState, gen: RunGenerator, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "rng": gen.state_dict(),  # a small JSON-ready dict: the device generator's key and counter
        "config": cfg.to_json(),
        "data": data,  # data_fingerprint: a resume onto other data is refused
        "k": st.k,
        "weights": [to_numpy(W) for W in st.weights],
        "average": [to_numpy(W) for W in st.average],
        "opt_state": opt.state_dict(st.opt_state),
        "elapsed": st.elapsed,
        "records": st.records,
    }


def _check_arrays(name: str, arrays: Any, shapes: Sequence[tuple[int, int]], where: Path) -> None:
    if not isinstance(arrays, list) or len(arrays) != len(shapes):
        raise DataError(f"checkpoint {where}: {name} should be {len(shapes)} matrices")
    for i, (W, shape) in enumerate(zip(arrays, shapes, strict=True), start=1):
        if not isinstance(W, numpy.ndarray) or W.shape != shape or W.dtype.kind != "f":
            got = (W.dtype, W.shape) if isinstance(W, numpy.ndarray) else type(W).__name__
            raise DataError(
                f"checkpoint {where}: {name}[{i}] is {got}; this network needs float {shape}"
            )
        if not numpy.isfinite(W).all():
            raise DataError(f"checkpoint {where}: {name}[{i}] holds NaN or infinite values")


def _saved_number(
    where: Path, what: str, value: Any, low: float, integer: bool = False, positive: bool = False
) -> None:
    """DataError naming the checkpoint unless ``value`` is a finite number ≥ ``low`` (> ``low``
    if ``positive``; an int if ``integer``): a checkpoint's scalars are checked when loaded."""
    kinds = int if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value > low if positive else value >= low)):
        kind = "an integer" if integer else "a finite number"
        raise DataError(
            f"checkpoint {where}: {what} is {value!r}, not {kind} {'>' if positive else '≥'} {low:g}"
        )


def _check_saved_state(d: Any, where: Path) -> None:
    """The saved optimizer state's scalars: k an integer ≥ 0; λ (§6.5) and γ (§6.6), where the
    optimizer has them, finite numbers > 0. Its arrays were checked finite when loaded."""
    if not isinstance(d, dict):
        raise DataError(f"checkpoint {where}: the optimizer state is not a mapping (damaged?)")
    _saved_number(where, "the optimizer state's iteration count", d.get("k"), 0, integer=True)
    for name, symbol in (("lam", "λ"), ("gamma", "γ")):
        if name in d:
            _saved_number(
                where, f"{symbol} ({name}) of the optimizer state", d[name], 0.0, positive=True
            )


def _restore(
    payload: dict[str, Any], cfg: RunConfig, mlp: MLP, opt: Any, backend: Backend, where: Path
) -> RunState:
    """The state a checkpoint holds, after checking it fits ``cfg`` and ``mlp`` (the config
    first: a checkpoint of another run is named as such, not as damaged)."""
    missing = [
        k
        for k in ("config", "k", "weights", "average", "opt_state", "elapsed", "records")
        if k not in payload
    ]
    if missing:
        raise DataError(f"checkpoint {where} lacks {', '.join(missing)}")
    diff = RunConfig.from_json(payload["config"], f"checkpoint {where}").differences(cfg)
    if diff:
        raise ConfigError(
            f"cannot resume {where.parent}: this run differs from its checkpoint's settings in {'; '.join(diff)}; "
            f"only {', '.join(MAY_CHANGE_ON_RESUME)} may change on --resume. Use the original options, "
            "or --overwrite to start afresh"
        )
    k, elapsed, records = payload["k"], payload["elapsed"], payload["records"]
    _saved_number(where, "the iteration count k", k, 0, integer=True)
    if not (
        isinstance(records, list)
        and len(records) == k
        and all(isinstance(r, dict) for r in records)
    ):
        raise DataError(f"checkpoint {where}: iteration count and log do not agree (damaged?)")
    _saved_number(where, "the elapsed time", elapsed, 0.0)
    _check_arrays("weights", payload["weights"], mlp.shapes, where)
    _check_arrays("average", payload["average"], mlp.shapes, where)
    _check_saved_state(payload["opt_state"], where)
    try:
        opt_state = opt.load_state_dict(payload["opt_state"])
    except (ConfigError, ShapeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(
            f"checkpoint {where}: the optimizer state does not fit this run: {exc}"
        ) from None
    if opt_state.k != k:
        raise DataError(
            f"checkpoint {where}: optimizer state at iteration {opt_state.k}, run at {k} (damaged?)"
        )
    return RunState(
        k=k,
        weights=[backend.asarray(W) for W in payload["weights"]],
        average=[backend.asarray(W) for W in payload["average"]],
        opt_state=opt_state,
        elapsed=float(elapsed),
        records=list(records),
    )


def _evaluate(
    cfg: RunConfig, mlp: MLP, st: RunState, X_train: Any, X_test: Any
) -> dict[str, float]:
    raw = reconstruction_error(mlp, st.weights, X_train)
    avg = reconstruction_error(mlp, st.average, X_train)
    use_avg = avg <= raw
    best = st.average if use_avg else st.weights
    out = {"train_error": min(raw, avg), "train_error_raw": raw, "train_error_avg": avg}
    if X_test is not None and X_test.shape[0]:
        out["test_error"] = reconstruction_error(mlp, best, X_test)
    return out


def describe_data(label: str, origin: str, n_train: int, n_total: int) -> dict[str, Any]:
    """What a run trained on, for its log and figure: the data set's label and origin, and the
    number of training cases used (with "first N of M" when it is a subset of the set)."""
    used = (
        f"{label}; first {n_train:,} of {n_total:,} training cases" if n_train < n_total else label
    )
    return {"data": used, "data_origin": origin, "n_train_used": n_train}


def _first_rows(X: Any, n: int | None, option: str, what: str, label: str) -> Any:
    """The first ``n`` rows of X (all when None); ConfigError when X has fewer."""
    if n is None:
        return X
    if n > X.shape[0]:
        raise ConfigError(
            f"{option} {n} asks for more than the {X.shape[0]:,} {what} of {label}; use at most {X.shape[0]}"
        )
    return X[:n]


def _subsets(cfg: RunConfig) -> tuple[Any, Any, dict[str, Any]]:
    from .data import load_dataset

    checks.data_dir(cfg.data_dir)  # a file, an unknown ~user, …: one line before any work
    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir)
    label = ds.label or ds.name.upper()
    name = f"{ds.name.upper()} ({ds.origin})"
    X_train = _first_rows(ds.X_train, cfg.n_train, "--n-train", "training cases", name)
    X_test = _first_rows(ds.X_test, cfg.n_test, "--n-test", "test cases", name)
    return X_train, X_test, describe_data(label, ds.origin, X_train.shape[0], ds.X_train.shape[0])


def run_data_info(cfg: RunConfig) -> dict[str, Any]:
    """:func:`describe_data` of what ``cfg`` would train on (loads the data set, no training)."""
    return _subsets(cfg)[2]


def load_run_data(cfg: RunConfig, backend: Backend) -> tuple[Any, Any, dict[str, Any]]:
    """Training and test inputs of ``cfg.dataset`` on the backend (first n_train / n_test rows),
    and :func:`describe_data` of them. Asking for more rows than the set has is a ConfigError."""
    X_train, X_test, info = _subsets(cfg)
    return backend.asarray(X_train), backend.asarray(X_test), info


#: what of a run's data must not change on --resume (its label and origin may: files move)
FINGERPRINT_KEYS = ("n_train", "n_test", "train_sha256", "test_sha256")


def data_fingerprint(X_train: Any, X_test: Any, info: dict[str, Any]) -> dict[str, Any]:
    """What a run trains on, for its checkpoint: the data's label and origin, the numbers of
    training and test cases and a SHA-256 of each array (host copies, as loaded)."""
    test = to_numpy(X_test) if X_test is not None else numpy.zeros((0, 0))
    return {
        "data": info["data"],
        "data_origin": info["data_origin"],
        "n_train": int(X_train.shape[0]),
        "n_test": int(test.shape[0]),
        "train_sha256": io.array_digest(to_numpy(X_train)),
        "test_sha256": io.array_digest(test),
    }


def check_same_data(saved: Any, now: dict[str, Any], where: Path, allow_other: bool) -> bool:
    """True when ``now`` is the data the checkpoint ``where`` was trained on (``saved``).
    Otherwise a :class:`ConfigError` naming both, or, with ``allow_other``, False."""
    if (
        not isinstance(saved, dict)
        or not all(k in saved for k in FINGERPRINT_KEYS)
        or not all(type(saved[k]) is type(now[k]) for k in FINGERPRINT_KEYS)
    ):
        raise DataError(f"checkpoint {where} does not record its training data (damaged?)")
    if all(saved[k] == now[k] for k in FINGERPRINT_KEYS):
        return True
    if allow_other:
        return False

    def name(d: dict[str, Any]) -> str:
        return (
            f"{d.get('data')!r} ({d['n_train']:,} training / {d['n_test']:,} test cases, "
            f"SHA-256 {str(d['train_sha256'])[:12]}… / {str(d['test_sha256'])[:12]}…)"
        )

    raise ConfigError(
        f"cannot resume {where.parent}: it was trained on {name(saved)}, but the data now are "
        f"{name(now)}; point --data-dir at the original files, or pass --resume-other-data to "
        "continue on these data anyway"
    )


def check_run_dir(out: Path, resume: bool, overwrite: bool) -> list[str]:
    """Refuse to write into a directory holding an earlier run unless told to: ``resume``
    needs its checkpoint, ``overwrite`` replaces it; the directory must take files. Returns the
    earlier run's files (to delete when overwriting)."""
    if resume and overwrite:
        raise ConfigError(
            "--resume continues a run and --overwrite replaces it; pass only one of them"
        )
    existing = [n for n in RUN_FILES if (out / n).exists()]
    if resume and not (out / io.CHECKPOINT_NAME).is_file():
        held = f"it holds {', '.join(existing)} but" if existing else "it"
        raise ConfigError(
            f"cannot resume {out}: {held} has no {io.CHECKPOINT_NAME} (none written yet, or not a run "
            "directory); run without --resume to start the run"
        )
    if existing and not (resume or overwrite):
        raise ConfigError(
            f"{out} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    io.require_writable_dir(out, "run directory")
    return existing if overwrite else []


def run_experiment(
    cfg: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    data: tuple[Any, Any] | None = None,
    init_weights: Sequence[Any] | None = None,
    data_label: str = "data passed by the caller",
    allow_other_data: bool = False,
) -> list[dict[str, Any]]:
    """Train ``cfg.method`` on ``cfg.dataset``; write ``config.json``, ``log.jsonl``,
    ``checkpoint.npz`` and, when finished, ``result.json`` under ``out_dir``. Returns the log.

    A directory holding any of :data:`RUN_FILES` is never written into unless ``resume`` or
    ``overwrite`` says so; the directory must take files before anything is loaded or trained.
    One process at a time writes a run directory (:class:`io.RunLock`, held until this returns
    or raises); temporary files of a killed earlier writer are removed once the lock is held.
    Everything that can fail (settings, data, initial weights, the configuration's JSON) is
    checked before an earlier run's files are deleted.

    Args:
        resume: continue from ``out_dir/checkpoint.npz``, which must exist, with the same
            configuration but for :data:`MAY_CHANGE_ON_RESUME` (differences are named), on the
            same data (:func:`data_fingerprint`; differences are named).
        overwrite: start afresh even if ``out_dir`` holds a run (its files are deleted once the
            new run has its data and initial weights).
        data: (X_train, X_test) host or backend arrays, instead of loading ``cfg.dataset``.
        init_weights: θ₀ (e.g. a fixture's), instead of the sparse initialization from the seed.
        data_label: how the log names ``data`` when it is given.
        allow_other_data: let ``resume`` continue on data other than the checkpoint's (the
            log's next record says so).
    """
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ConfigError(f"the run directory must be a non-empty path, got {out_dir!r}")
    out = checks.run_dir(out_dir)
    if resume and overwrite:
        check_run_dir(out, resume, overwrite)  # the usage error, before anything is created
    io.require_writable_dir(out, "run directory")
    lock = io.RunLock(out).acquire()
    try:
        if lock.took_over:
            log.warning(
                "%s: taking over the lock left by %s (no longer running)", out, lock.took_over
            )
        io.remove_stale_temporaries(out, (*RUN_FILES, "config.json"))
        return _run_locked(
            cfg, out, resume, overwrite, progress, data, init_weights, data_label, allow_other_data
        )
    except KeyboardInterrupt as exc:  # Ctrl-C before the loop: the directory is as it was
        if isinstance(exc, Interrupted):
            raise
        raise Interrupted(str(out), None, None) from None
    finally:
        lock.release()


def _run_locked(
    cfg: RunConfig,
    out: Path,
    resume: bool,
    overwrite: bool,
    progress: bool,
    data: tuple[Any, Any] | None,
    init_weights: Sequence[Any] | None,
    data_label: str,
    allow_other_data: bool,
) -> list[dict[str, Any]]:
    """:func:`run_experiment` once its directory's lock is held."""
    from tqdm.auto import tqdm

    ckpt_path, log_path = out / io.CHECKPOINT_NAME, out / "log.jsonl"
    earlier = check_run_dir(out, resume, overwrite)
    config_text = json.dumps(cfg.to_json(), indent=2)  # fails now, not after a deletion
    backend = get_backend(cfg.backend, cfg.dtype)
    mlp = autoencoder(cfg.dataset, cfg.layers)
    if data is None:
        X_train, X_test, data_info = _subsets(cfg)
    else:
        X_train, X_test = data
        data_info = describe_data(data_label, "given", X_train.shape[0], X_train.shape[0])
    fingerprint = data_fingerprint(X_train, X_test, data_info)
    X_train, X_test = (backend.asarray(d) if d is not None else None for d in (X_train, X_test))
    # The data are checked once here (finite, and valid targets: the autoencoder reconstructs
    # its input), so the loop's steps skip the per-batch checks (no GPU synchronization).
    mlp.check_inputs(X_train, X_train)
    if X_test is not None and X_test.shape[0]:
        mlp.check_inputs(X_test, X_test)
    opt = make_optimizer(cfg, mlp, backend)
    gen = RunGenerator(backend.xp, cfg.seed, _iteration_seed)

    same_data = True
    if resume:
        payload = io.load_checkpoint(ckpt_path, max_bytes=_checkpoint_budget(mlp, opt))
        st = _restore(payload, cfg, mlp, opt, backend, ckpt_path)
        same_data = check_same_data(payload.get("data"), fingerprint, ckpt_path, allow_other_data)
        try:
            gen.load_state_dict(payload.get("rng"))
        except ConfigError:  # a NumPy run's checkpoint on CuPy: said as such
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"checkpoint {ckpt_path}: its generator state is damaged ({exc})"
            ) from None
        log.info("resuming %s at iteration %d", out, st.k)
        if not same_data:
            log.warning("%s: resuming on other data than the checkpoint's, as asked", out)
    else:
        if init_weights is None:
            weights = mlp.init_sparse(cfg.seed, backend, replace=cfg.sparse_init_replace)
        else:
            mlp.check_weights([backend.asarray(W) for W in init_weights])
            weights = [backend.asarray(W) for W in init_weights]
        st = RunState(0, weights, [W.copy() for W in weights], opt.init_state(weights), 0.0, [])
        for name in earlier:  # --overwrite: the earlier run goes only once this one can start
            (out / name).unlink()
    io.write_text_atomic(out / "config.json", config_text)

    n = X_train.shape[0]
    saved = st.k if resume else None  # iteration of the last checkpoint on disk
    # A run with a time budget (the figures' SGD runs) counts optimizer seconds, not iterations.
    by_time = cfg.max_seconds is not None
    desc = f"{cfg.dataset}/{cfg.method}"
    if by_time:
        bar = tqdm(
            total=round(cfg.max_seconds, 1),
            initial=round(min(st.elapsed, cfg.max_seconds), 1),
            unit="s",
            disable=not progress,
            desc=desc,
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s{postfix}",
        )
    else:
        bar = tqdm(total=cfg.iters, initial=st.k, disable=not progress, desc=desc)
    try:
        while not cfg.is_done(st.k, st.elapsed):
            k = st.k + 1
            m = batch_size(cfg, k, n)
            idx = numpy.random.default_rng([cfg.seed, k]).choice(n, size=m, replace=False)
            Xb = X_train[backend.xp.asarray(idx)]
            rng = gen.for_iteration(k)
            t0 = time.perf_counter()
            weights, opt_state, info = opt.step(
                st.weights, st.opt_state, Xb, Xb, rng, validate=False
            )
            average = iterate_average(st.average, weights, k, cfg.average_start, cfg.average_decay)
            backend.synchronize()
            elapsed = st.elapsed + time.perf_counter() - t0
            st = RunState(k, weights, average, opt_state, elapsed, st.records)
            record = {
                "iteration": k,
                "time": elapsed,
                **{key: _scalar(v) for key, v in info.items()},
            }
            record["iteration"], record["batch_size"] = k, m
            if k == 1 or not same_data:
                record.update(data_info)
                if not same_data:
                    record["resumed_on_other_data"] = fingerprint
                    same_data = True
            done = cfg.is_done(k, elapsed)
            if k % cfg.eval_every == 0 or done or k == 1:
                record.update(_evaluate(cfg, mlp, st, X_train, X_test))
                bar.set_postfix(k=k, train_error=f"{record['train_error']:.4g}")
            st.records.append(record)
            if by_time:
                bar.update(round(min(elapsed, cfg.max_seconds) - bar.n, 3))
            else:
                bar.update(1)
            if k % cfg.checkpoint_every == 0 or done:
                io.save_checkpoint(ckpt_path, _checkpoint_payload(cfg, opt, st, gen, fingerprint))
                io.write_jsonl_atomic(log_path, st.records)
                saved = k
        bar.close()
        io.write_jsonl_atomic(log_path, st.records)
        _write_result(out, cfg, st, data_info)
    except KFACError:
        io.write_jsonl_atomic(log_path, st.records)
        raise
    except KeyboardInterrupt:  # checkpoint and log stay the consistent pair of iteration `saved`
        under_way = st.k if cfg.is_done(st.k, st.elapsed) else st.k + 1
        raise Interrupted(str(out), under_way, saved) from None
    finally:
        bar.close()
    return st.records


def _write_result(out: Path, cfg: RunConfig, st: RunState, data_info: dict[str, Any]) -> None:
    """``result.json``: the configuration, the iterations, the time and the final errors."""
    final = next(r for r in reversed(st.records) if "train_error" in r)
    io.write_text_atomic(
        out / "result.json",
        json.dumps(
            {
                "config": cfg.to_json(),
                "iterations": st.k,
                "time": st.elapsed,
                **data_info,
                **{
                    k: final[k]
                    for k in ("train_error", "train_error_raw", "train_error_avg", "test_error")
                    if k in final
                },
            },
            indent=2,
        ),
    )


def _scalar(v: Any) -> Any:
    if isinstance(v, (int, str)) or v is None:
        return v
    f = float(to_numpy(v))
    return f if math.isfinite(f) else float("nan")


def finished_log(cfg: RunConfig, out_dir: str | Path) -> list[dict[str, Any]] | None:
    """The log of a finished run of ``cfg`` in ``out_dir``, or None (absent, unfinished, other config)."""
    out = Path(out_dir)
    try:
        result = json.loads(io.read_text(out / "result.json", "result file"))
        saved = RunConfig.from_json(result["config"], str(out / "result.json"))
        if not saved.same_run_as(cfg) or not cfg.is_done(result["iterations"], result["time"]):
            return None
        records = io.read_jsonl(out / "log.jsonl")
    except (OSError, ValueError, KeyError, TypeError, KFACError):
        return None
    if not records:
        return None
    if cfg.max_seconds is not None:
        over = [r["iteration"] for r in records if r["time"] >= cfg.max_seconds]
        last = min(over) if over else records[-1]["iteration"]
        return [r for r in records if r["iteration"] <= min(last, cfg.iters)]
    return [r for r in records if r["iteration"] <= cfg.iters]
