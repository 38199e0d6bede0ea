"""Options of the matrix figures (paper Figures 2, 3, 5 and 6): the network's and the run's
constants, the command line shared by ``fisher_blocks.py`` and ``inverse_quality.py``, and the
checks made before any work (memory, files already in ``--out``).

The figures, the network and the data are described in ``_networks.py`` and ``_matrices.py``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfac_ref.backend import KNOWN_BACKENDS
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import checks
from kfac_ref.experiments.cli import ArgumentParser

PAPER_WIDTHS = (256, 20, 20, 20, 20, 20, 10)  # the example network of Figures 2–3 (§3)
MIDDLE_FIRST, MIDDLE_COUNT = 1, 4  # 0-based layer index of W_2, and four layers W_2..W_5
SIDE_IN, SIDE_OUT = 28, 16  # MNIST / CURVES images are 28×28, down-scaled to 16×16
N_CLASSES = 10
DEFAULT_OUT = "figures_out"
# λ0 of the K-FAC trainer. The autoencoders' λ0 = 150 (§6.5) starts γ = √λ0 at its clamp of 1 and
# this small classifier barely moves in a few dozen batch iterations; with λ0 = 0.01 (γ0 = 0.1)
# it reaches 3.3 % training error in 20 iterations on the 10,000 real test-split digits (the
# paper: 5 % after 7 iterations, 0 % after 22).
KFAC_LAM0 = 1e-2
FISHER_CHUNK = 250  # cases per exact-Fisher chunk (one progress-bar step)
#: Memory checked before any work (:func:`check_memory`). P×P float64 arrays of the middle
#: layers held at the peak: 32 measured (tracemalloc) for inverse_quality.py at --hidden 16
#: and 24, 17 for fisher_blocks.py; and bytes per training case (images, 16×16 rows, one-hot
#: targets, the batch-mode trainer's activations).
MATRIX_COPIES = 34
CASE_BYTES = 8 * (3 * SIDE_IN**2 + 6 * SIDE_OUT**2)


# ----------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Settings:
    """Resolved options of one figure run (``--quick`` changes the defaults, not the method)."""

    out: Path
    quick: bool
    seed: int
    backend: str
    train_cases: int
    cases: int
    iters: int
    hidden: int
    gamma: float | None
    trainer: str
    weights: Path | None
    vmax_quantile: float
    data_dir: Path | None = None
    scale: str = "linear"
    decades: float = 4.0
    dpi: int = 150
    formats: tuple[str, ...] = ("png", "pdf")
    overwrite: bool = False
    progress: bool = True
    init: str = "gaussian"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def widths(self) -> tuple[int, ...]:
        """(d_0, …, d_ℓ): the paper's 256-20-20-20-20-20-10 unless ``--hidden`` changes 20."""
        return (PAPER_WIDTHS[0],) + (self.hidden,) * 5 + (PAPER_WIDTHS[-1],)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (``--quick``-dependent defaults are in the text),
    the description kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        if isinstance(action.default, (list, tuple)):
            return f"{action.help} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


def description_of(doc: str | None) -> str:
    """The first paragraph of a script's docstring: the whole sentence(s), for ``--help``."""
    return (doc or "").strip().split("\n\n")[0]


def base_parser(description: str, default_scale: str = "linear") -> argparse.ArgumentParser:
    """The options both matrix-figure scripts share (each script may add its own)."""
    p = ArgumentParser(description=description, formatter_class=HelpFormatter)
    p.add_argument(
        "--out", default=DEFAULT_OUT, help="output directory (PNG, PDF, JSON and NPZ go here)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files of an earlier run in --out (otherwise refused)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="directory with the MNIST files (all four originals, or only the two t10k-* "
        "files of the test split); default: $KFAC_REF_DATA_DIR, else "
        "~/.cache/kfac_ref. Without any MNIST file a labelled stand-in is used",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer cases and iterations (about half a minute on 2 cores)",
    )
    p.add_argument(
        "--seed", type=checks.seed_arg, default=0, help="seed of data, initialization and training"
    )
    p.add_argument(
        "--backend",
        choices=KNOWN_BACKENDS,
        default=None,
        help="array backend (default: $KFAC_REF_BACKEND, else numpy); float64 throughout",
    )
    p.add_argument(
        "--train-cases",
        type=checks.int_arg(2),
        default=None,
        help="training cases (default 10000, quick 2000)",
    )
    p.add_argument(
        "--cases",
        type=checks.int_arg(2),
        default=None,
        help="cases on which F, F̃, F̆ and F̂ are computed, the first of the training "
        "cases (default 2000, quick 500)",
    )
    p.add_argument(
        "--iters",
        type=checks.int_arg(0),
        default=None,
        help="training iterations (default 20, which ends with K-FAC's first γ search; quick 10)",
    )
    p.add_argument(
        "--hidden",
        type=checks.int_arg(1),
        default=PAPER_WIDTHS[1],
        help="width of the five hidden layers (20 is the paper's; smaller for tests)",
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="factored Tikhonov damping γ of the inverses (§6.3; default: the trainer's "
        "final γ, as in the paper)",
    )
    p.add_argument(
        "--trainer",
        choices=["auto", "kfac", "natgrad"],
        default="auto",
        help="kfac: kfac_ref.optimizer.KFAC in batch mode; natgrad: damped F̆⁻¹ steps "
        "with fixed γ (a small trainer for tests); auto: kfac",
    )
    p.add_argument(
        "--init",
        choices=["gaussian", "sparse"],
        default="gaussian",
        help="initial weights: dense N(0, 1/fan_in), or the sparse initialization of the "
        "authors' code (15 nonzero N(0, 1) inputs per unit, §13)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="use the weights saved in this .npz (by either script) instead of training",
    )
    p.add_argument(
        "--scale",
        choices=["linear", "log"],
        default=default_scale,
        help="grey scale of the matrix panels: linear in |entry| up to the white level "
        "(the paper's), or log10 |entry| over --decades below it",
    )
    p.add_argument(
        "--decades",
        type=float,
        default=4.0,
        help="with --scale log: powers of ten shown below the white level (smaller is black)",
    )
    p.add_argument(
        "--vmax-quantile",
        type=float,
        default=0.995,
        help="white level = this quantile of |reference matrix| (1 = its maximum)",
    )
    p.add_argument("--dpi", type=int, default=150, help="resolution of the PNG files")
    p.add_argument(
        "--formats",
        nargs="+",
        choices=["png", "pdf"],
        default=["png", "pdf"],
        help="figure file formats to write",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (the one-line stage messages are still printed)",
    )
    p.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    return p


def resolve(args: argparse.Namespace, extra: Sequence[str] = ()) -> Settings:
    """Fill the defaults that depend on ``--quick`` and check the values.

    ``extra`` names script-specific options copied into ``Settings.extra`` unchanged.
    """
    quick = bool(args.quick)
    s = Settings(
        out=checks.expand_path(args.out, "--out"),
        quick=quick,
        seed=checks.seed(args.seed),
        backend=args.backend or os.environ.get("KFAC_REF_BACKEND") or "numpy",
        train_cases=_given(args.train_cases, 2000 if quick else 10000),
        cases=_given(args.cases, 500 if quick else 2000),
        iters=_given(args.iters, 10 if quick else 20),
        hidden=int(args.hidden),
        gamma=args.gamma,
        trainer=args.trainer,
        weights=None if args.weights is None else checks.input_file(args.weights, "--weights"),
        vmax_quantile=float(args.vmax_quantile),
        data_dir=None if args.data_dir is None else checks.data_dir(args.data_dir),
        scale=args.scale,
        decades=float(args.decades),
        dpi=int(args.dpi),
        formats=tuple(dict.fromkeys(args.formats)),
        overwrite=bool(args.overwrite),
        progress=not args.no_progress,
        init=args.init,
        extra={name: getattr(args, name) for name in extra},
    )
    if s.cases < 2 or s.train_cases < s.cases or s.iters < 0 or s.hidden < 1:
        raise ConfigError(
            "need 2 ≤ --cases ≤ --train-cases, --iters ≥ 0 and --hidden ≥ 1; got --cases "
            f"{s.cases}, "
            f"--train-cases {s.train_cases}, --iters {s.iters}, --hidden {s.hidden}"
        )
    if not 0.0 < s.vmax_quantile <= 1.0:
        raise ConfigError(f"--vmax-quantile must be in (0, 1], got {s.vmax_quantile}")
    if s.gamma is not None and not (math.isfinite(s.gamma) and s.gamma >= 0):
        raise ConfigError(f"--gamma must be a finite number ≥ 0, got {s.gamma}")
    if not (math.isfinite(s.decades) and s.decades > 0):
        raise ConfigError(f"--decades must be a finite number > 0, got {s.decades}")
    if not 20 <= s.dpi <= 1200:
        raise ConfigError(f"--dpi must be in [20, 1200], got {s.dpi}")
    if s.data_dir is None:
        checks.data_dir()  # $KFAC_REF_DATA_DIR or the cache directory
    check_memory(s)
    return s


def _given(value: Any, default: Any) -> Any:
    """An option's value, or its default when it was not given (None): 0 is a value."""
    return default if value is None else value


def check_memory(s: Settings) -> None:
    """:class:`kfac_ref.errors.TooLargeError` before any work when the figure would not fit in
    this machine's memory: the middle layers' P×P matrices (:data:`MATRIX_COPIES`) and the
    training cases (:data:`CASE_BYTES` each)."""
    P = sum(s.hidden * (s.hidden + 1) for _ in range(MIDDLE_COUNT))
    need = MATRIX_COPIES * 8 * P * P + CASE_BYTES * s.train_cases
    checks.memory(
        need,
        f"--hidden {s.hidden} ({P:,} parameters in the middle layers) with --train-cases "
        f"{s.train_cases:,}",
        "use a smaller --hidden or fewer --train-cases",
        checks.physical_memory(),
    )


def refuse_overwrite(s: Settings, names: Sequence[str]) -> None:
    """Stop before any work if ``--out`` already holds one of ``names`` and ``--overwrite`` is
    off."""
    if s.overwrite:
        return
    existing = [n for n in names if (s.out / n).exists()]
    if existing:
        raise ConfigError(
            f"{s.out} already holds {', '.join(existing)} from an earlier run; pass --overwrite to "
            "replace them or choose another --out"
        )
