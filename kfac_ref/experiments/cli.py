"""The command line ``python -m kfac_ref`` (or ``kfac-ref``): its parser and :func:`main`.
Orchestration only.

``train``'s options are :class:`~kfac_ref.experiments.run_config.RunConfig`'s fields
(:data:`TRAIN_OPTIONS`): each is named after its field and takes the field's default, and its
choices are the package's lists (data sets, methods, backends, dtypes, constants), so nothing
here can drift from the configuration. What the subcommands do is
:mod:`~kfac_ref.experiments.commands`; how a failure ends (one line and an exit status) is
:mod:`~kfac_ref.experiments.exit_status`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ..activations import ACTIVATIONS
from ..backend import BACKEND_ENV_VAR, KNOWN_BACKENDS, KNOWN_DTYPES
from ..config import CONSTANT_SETS
from ..outputs import OUTPUTS
from . import checks
from .checkpoint import CHECKPOINT_NAME
from .commands import COMMANDS, resume_hint
from .exit_status import EXIT_USAGE, report_errors
from .run_config import AUTOENCODERS, MAY_CHANGE_ON_RESUME, METHODS, RunConfig
from .run_dir import RUN_FILES

#: what ``kfac-ref --help`` says before its subcommands
DESCRIPTION = """\
Command line: ``python -m kfac_ref`` (or ``kfac-ref``). Orchestration only.

Subcommands:
  train    train a §13 autoencoder with K-FAC (block-diagonal / block-tridiagonal) or SGD
  compare  print the errors of F̃, F̆, F̂ (and inverses) vs the exact F for a small random net

A mistake in the options or the inputs, or a file-system failure (a full disk, an I/O error),
ends with one line ``error: …`` on stderr and exit status 2; ``--debug`` shows the traceback
instead. Ctrl-C ends with one line saying where the run stopped and how to resume it, and exit
status 130; a closed standard output (``kfac-ref … | head``) ends quietly with status 141, as a
program killed by SIGPIPE does.
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``error: …`` on stderr, and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see {self.prog} --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help, unless the help already states it; the
    description kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS or action.option_strings == []:
            return text
        if action.default is False or action.default is None:
            return text + (" (default: off)" if action.default is False else "")
        if isinstance(action.default, (list, tuple)):
            return f"{text} (default: {' '.join(map(str, action.default)) or 'none'})"
        return f"{text} (default: {action.default})"


_positive_int = checks.int_arg(1)


def option_name(field: str) -> str:
    """The option of a RunConfig field: ``n_train`` → ``--n-train``."""
    return "--" + field.replace("_", "-")


def _per_dataset(key: str) -> str:
    """``AUTOENCODERS[*][key]`` in words: ``250 for CURVES, 500 for MNIST and FACES``."""
    names: dict[Any, list[str]] = {}
    for dataset, arch in AUTOENCODERS.items():
        names.setdefault(arch[key], []).append(dataset.upper())
    return ", ".join(f"{value} for {' and '.join(n)}" for value, n in names.items())


#: ``train``'s options, in the order ``--help`` lists them: RunConfig field → what argparse
#: needs beyond the option's name and default, which the field gives (:func:`option_name`).
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "dataset": {"choices": sorted(AUTOENCODERS), "help": "data set of §13"},
    "method": {
        "choices": METHODS,
        "help": "optimizer: K-FAC with F̆ (block-diagonal) or F̂ (block-tridiagonal), K-FAC with "
        "F̆ and without momentum (§7 off: δ = αΔ), or SGD with momentum",
    },
    "iters": {"type": _positive_int, "help": "number of iterations"},
    "seed": {
        "type": checks.seed_arg,
        "help": "seed of θ₀, mini-batches and sampled targets (≥ 0)",
    },
    "backend": {
        "choices": KNOWN_BACKENDS,
        "help": f"array backend (default: ${BACKEND_ENV_VAR}, else numpy)",
    },
    "dtype": {"choices": KNOWN_DTYPES, "help": "training precision"},
    "eval_every": {
        "type": _positive_int,
        "help": "evaluate the training error every N iterations",
    },
    "layers": {
        "type": int,
        "nargs": "+",
        "help": "custom widths d_0 … d_ℓ (default: the paper's architecture for --dataset)",
    },
    "n_train": {
        "type": _positive_int,
        "help": "use only the first N training cases, at most the set's size (default: all)",
    },
    "n_test": {
        "type": _positive_int,
        "help": "use only the first N test cases, at most the set's size (default: all)",
    },
    "m1": {"type": _positive_int, "help": "K-FAC's first mini-batch size m₁ (§13)"},
    "k_full": {
        "type": _positive_int,
        "help": "iteration at which K-FAC's mini-batch is the whole training set (§13)",
    },
    "kfac_batch": {
        "type": _positive_int,
        "help": "a fixed K-FAC mini-batch size m instead of the exponential schedule "
        "(the paper's K-FAC without momentum; default: the schedule)",
    },
    "sgd_lr": {"type": float, "help": "SGD learning rate (> 0)"},
    "sgd_batch": {
        "type": _positive_int,
        "help": f"SGD mini-batch size (default: {_per_dataset('sgd_batch')})",
    },
    "constants": {
        "choices": sorted(CONSTANT_SETS),
        "help": "where the paper's text and the authors' released code differ (τ2), whose "
        "values to use: 'code' (τ2 = 1, as the published curves) or 'paper' (τ2 = 1/4)",
    },
    "max_seconds": {
        "type": float,
        "help": "stop once the optimizer time reaches this many seconds (default: no limit)",
    },
    "checkpoint_every": {
        "type": _positive_int,
        "help": f"write {CHECKPOINT_NAME} and log.jsonl every N iterations",
    },
    "diagnose_every": {
        "type": _positive_int,
        "help": "every N iterations, log K-FAC against the exact Fisher on the mini-batch "
        "(kfac_ref.diagnostics: ‖F − F̃‖ per layer pair, the §3.1 error and bound, the inverses' "
        "errors, the cosine with the exact natural-gradient step; small nets only; default: off)",
    },
    "data_dir": {
        "help": f"data directory (default: ${checks.DATA_DIR_ENV_VAR}, else ~/.cache/kfac_ref)",
    },
}
#: RunConfig fields no option sets: the released code's constants ([code]), kept at their
#: defaults on the command line (``--kfac`` sets ``kfac``)
NOT_OPTIONS = ("sgd_mu_max", "average_start", "average_decay", "sparse_init_replace")


def _add_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        help="train a deep autoencoder of §13",
        parents=[common],
        formatter_class=HelpFormatter,
        description="Train a deep autoencoder of §13 and write its run directory (--out).",
    )
    default = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    for field, spec in TRAIN_OPTIONS.items():
        p.add_argument(option_name(field), default=default[field], **spec)
    p.add_argument(
        "--kfac",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a KFACConfig field, e.g. --kfac lam0=100 --kfac T3=10 (repeatable; "
        "the structure comes from --method; default: none)",
    )
    p.add_argument(
        "--out",
        required=True,
        help=f"run directory: {', '.join(RUN_FILES)} (required; no default)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run in --out from its {CHECKPOINT_NAME} (an error if there is none, "
        "or if the settings differ other than "
        f"{', '.join(map(option_name, MAY_CHANGE_ON_RESUME))})",
    )
    p.add_argument(
        "--resume-other-data",
        action="store_true",
        help="with --resume: continue even if the training data differ from the checkpoint's "
        "(without it, such a resume is refused naming both)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run --out holds (without it, a directory holding any run file is "
        "refused)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_compare(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "compare",
        help="errors of F̃, F̆, F̂ vs the exact Fisher on a small random net",
        parents=[common],
        formatter_class=HelpFormatter,
        description="Errors of F̃, F̆, F̂ and their inverses vs the exact Fisher on a small random "
        "net.",
    )
    p.add_argument(
        "--layers", type=_positive_int, nargs="+", default=[8, 6, 6, 6, 4], help="widths d_0 … d_ℓ"
    )
    p.add_argument(
        "--activation", default="tanh", choices=sorted(ACTIVATIONS), help="hidden units' φ"
    )
    p.add_argument(
        "--output",
        default="softmax",
        choices=sorted(OUTPUTS),
        help="predictive distribution of the output layer",
    )
    p.add_argument("--cases", type=_positive_int, default=200, help="number of random input cases")
    p.add_argument(
        "--gamma", type=float, default=1e-3, help="factored Tikhonov damping γ ≥ 0 (§6.3)"
    )
    p.add_argument(
        "--seed", type=checks.seed_arg, default=0, help="seed of the weights and inputs (≥ 0)"
    )
    p.add_argument(
        "--max-memory",
        type=float,
        default=checks.DEFAULT_MAX_BYTES / 2**30,
        metavar="GIB",
        help="refuse, before any work, a comparison whose dense matrices and per-case gradients "
        "would need more than this many GiB",
    )


def build_parser() -> ArgumentParser:
    """The parser of ``kfac-ref`` with its subcommands."""
    common = ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log what the run does (resuming, data loading; default: off)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on an error, show the full traceback instead of one line (default: off)",
    )
    parser = ArgumentParser(
        prog="kfac-ref",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what the run does (default: off)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback (default: off)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    _add_train(sub, common)
    _add_compare(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    run = COMMANDS[args.command]
    return report_errors(lambda: run(args), args.debug, resume_hint(argv))


if __name__ == "__main__":
    sys.exit(main())
