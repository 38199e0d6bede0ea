"""Command line: ``python -m kfac_ref`` (or ``kfac-ref``). Orchestration only.

Subcommands:
  train    train a §13 autoencoder with K-FAC (block-diagonal / block-tridiagonal) or SGD
  compare  print the errors of F̃, F̆, F̂ (and inverses) vs the exact F for a small random net

A mistake in the options or the inputs, or a file-system failure (a full disk, an I/O error),
ends with one line ``error: …`` on stderr and exit status 2; ``--debug`` shows the traceback
instead. Ctrl-C ends with one line saying where the run stopped and how to resume it, and exit
status 130; a closed standard output (``kfac-ref … | head``) ends quietly with status 141, as a
program killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..backend import KNOWN_BACKENDS, KNOWN_DTYPES
from ..errors import ConfigError, Interrupted, KFACError
from . import checks

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a program whose reader went away


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


def report_errors(
    run: Callable[[], Any],
    debug: bool = False,
    resume_hint: Callable[[Interrupted], str] | None = None,
) -> int:
    """``run()``, with its failures turned into one line on stderr and an exit status:

    * a :class:`KFACError`, or an :class:`OSError` the machine caused
      (:func:`~kfac_ref.experiments.checks.is_environment_error`: no such file, permission,
      read-only or full disk, I/O error, name too long): ``error: …``, status 2 (``debug``: raised,
      with its traceback). Other exceptions are bugs and keep their traceback.
    * Ctrl-C (:class:`KeyboardInterrupt`; from a run, :class:`~kfac_ref.errors.Interrupted`
      with where it stopped): ``interrupted …`` and ``resume_hint(exc)``, status 130.
    * a closed standard output: nothing more is written, status 141 (:func:`quiet_broken_pipe`).

    Returns the exit status.
    """
    try:
        return quiet_broken_pipe(run)
    except (KFACError, OSError) as exc:
        if debug or not (isinstance(exc, KFACError) or checks.is_environment_error(exc)):
            raise
        print("error: " + one_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        if debug:
            raise
        line = exc.describe() if isinstance(exc, Interrupted) else "interrupted"
        hint = resume_hint(exc) if resume_hint and isinstance(exc, Interrupted) else ""
        print(line + (f"; {hint}" if hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; an OSError's with its errno's text and the file."""
    if isinstance(exc, OSError) and not isinstance(exc, KFACError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where} (--debug shows the traceback)"
    return " ".join(str(exc).split())


def quiet_broken_pipe(run: Callable[[], Any]) -> int:
    """``run()`` and a flush of stdout; when the reader of stdout has gone (``… | head``),
    stdout is pointed at /dev/null so nothing more fails at exit, and the status is 141 (the
    recipe of the Python documentation's note on SIGPIPE). Returns ``run()``'s status."""
    try:
        result = run()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout replaced by an object without a descriptor
            pass
        finally:
            os.close(devnull)
        return EXIT_BROKEN_PIPE
    return result if isinstance(result, int) else 0


def run_script(main: Callable[[Sequence[str]], Any], argv: Sequence[str] | None = None) -> int:
    """A figure script's ``main(argv)`` under :func:`report_errors` (``--debug`` in argv
    keeps the traceback). Ctrl-C says that the same command continues from the runs'
    checkpoints."""
    args = list(sys.argv[1:] if argv is None else argv)
    return report_errors(
        lambda: main(args),
        "--debug" in args,
        lambda exc: "the same command continues from it" if exc.checkpoint is not None else "",
    )


_positive_int = checks.int_arg(1)


def _add_train(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from .run_config import AUTOENCODERS, METHODS, RunConfig

    # each option's default is its RunConfig field's, so the two cannot drift apart
    default = {f.name: f.default for f in dataclasses.fields(RunConfig)}

    p = sub.add_parser(
        "train",
        help="train a deep autoencoder of §13",
        parents=[common],
        formatter_class=HelpFormatter,
        description="Train a deep autoencoder of §13 and write its run directory (--out).",
    )
    p.add_argument(
        "--dataset",
        choices=sorted(AUTOENCODERS),
        default=default["dataset"],
        help="data set of §13",
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default=default["method"],
        help="optimizer: K-FAC with F̆ (block-diagonal) or F̂ (block-tridiagonal), K-FAC with F̆ "
        "and without momentum (§7 off: δ = αΔ), or SGD with momentum",
    )
    p.add_argument(
        "--iters", type=_positive_int, default=default["iters"], help="number of iterations"
    )
    p.add_argument(
        "--seed",
        type=checks.seed_arg,
        default=default["seed"],
        help="seed of θ₀, mini-batches and sampled targets (≥ 0)",
    )
    p.add_argument(
        "--backend",
        choices=KNOWN_BACKENDS,
        default=default["backend"],
        help="array backend (default: $KFAC_REF_BACKEND, else numpy)",
    )
    p.add_argument(
        "--dtype", choices=KNOWN_DTYPES, default=default["dtype"], help="training precision"
    )
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        default=default["eval_every"],
        help="evaluate the training error every N iterations",
    )
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=default["layers"],
        help="custom widths d_0 … d_ℓ (default: the paper's architecture for --dataset)",
    )
    p.add_argument(
        "--n-train",
        type=_positive_int,
        default=default["n_train"],
        help="use only the first N training cases, at most the set's size (default: all)",
    )
    p.add_argument(
        "--n-test",
        type=_positive_int,
        default=default["n_test"],
        help="use only the first N test cases, at most the set's size (default: all)",
    )
    p.add_argument(
        "--m1",
        type=_positive_int,
        default=default["m1"],
        help="K-FAC's first mini-batch size m₁ (§13)",
    )
    p.add_argument(
        "--k-full",
        type=_positive_int,
        default=default["k_full"],
        help="iteration at which K-FAC's mini-batch is the whole training set (§13)",
    )
    p.add_argument(
        "--kfac-batch",
        type=_positive_int,
        default=default["kfac_batch"],
        help="a fixed K-FAC mini-batch size m instead of the exponential schedule "
        "(the paper's K-FAC without momentum; default: the schedule)",
    )
    p.add_argument(
        "--sgd-lr", type=float, default=default["sgd_lr"], help="SGD learning rate (> 0)"
    )
    p.add_argument(
        "--sgd-batch",
        type=_positive_int,
        default=default["sgd_batch"],
        help="SGD mini-batch size (default: 250 for CURVES, 500 for MNIST and FACES)",
    )
    p.add_argument(
        "--constants",
        choices=["code", "paper"],
        default=default["constants"],
        help="where the paper's text and the authors' released code differ (τ2), whose "
        "values to use: 'code' (τ2 = 1, as the published curves) or 'paper' (τ2 = 1/4)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=default["max_seconds"],
        help="stop once the optimizer time reaches this many seconds (default: no limit)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=default["checkpoint_every"],
        help="write checkpoint.npz and log.jsonl every N iterations",
    )
    p.add_argument(
        "--diagnose-every",
        type=_positive_int,
        default=default["diagnose_every"],
        help="every N iterations, log K-FAC against the exact Fisher on the mini-batch "
        "(kfac_ref.diagnostics: ‖F − F̃‖ per layer pair, the §3.1 error and bound, the inverses' "
        "errors, the cosine with the exact natural-gradient step; small nets only; default: off)",
    )
    p.add_argument(
        "--data-dir",
        default=default["data_dir"],
        help="data directory (default: $KFAC_REF_DATA_DIR, else ~/.cache/kfac_ref)",
    )
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
        help="run directory: config.json, log.jsonl, checkpoint.npz, result.json (required; "
        "no default)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint.npz (an error if there is none, or if "
        "the settings differ other than --iters, --max-seconds, --backend, --data-dir, "
        "--eval-every, --checkpoint-every)",
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


def _parse_overrides(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ConfigError(f"--kfac expects NAME=VALUE (e.g. --kfac lam0=100), got {item!r}")
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _run_train(args: argparse.Namespace) -> int:
    from .run_config import RunConfig
    from .runner import run_experiment

    cfg = RunConfig(
        dataset=args.dataset,
        method=args.method,
        iters=args.iters,
        seed=args.seed,
        backend=args.backend,
        dtype=args.dtype,
        eval_every=args.eval_every,
        layers=args.layers,
        n_train=args.n_train,
        n_test=args.n_test,
        m1=args.m1,
        k_full=args.k_full,
        kfac_batch=args.kfac_batch,
        sgd_lr=args.sgd_lr,
        sgd_batch=args.sgd_batch,
        checkpoint_every=args.checkpoint_every,
        data_dir=args.data_dir,
        kfac=_parse_overrides(args.kfac),
        constants=args.constants,
        max_seconds=args.max_seconds,
        diagnose_every=args.diagnose_every,
    )
    if args.resume_other_data and not args.resume:
        raise ConfigError("--resume-other-data only applies with --resume")
    records = run_experiment(
        cfg,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        allow_other_data=args.resume_other_data,
    )
    final = next(r for r in reversed(records) if "train_error" in r)
    print(
        f"{cfg.dataset} {cfg.method}: iteration {final['iteration']}, "
        f"training error {final['train_error']:.4f}, {records[-1]['time']:.1f} s"
    )
    return 0


def _add_compare(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from ..activations import ACTIVATIONS

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
        choices=["bernoulli", "gaussian", "softmax"],
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


def _run_compare(args: argparse.Namespace) -> int:
    import numpy

    from ..compare import check_compare_size, compare_fisher
    from ..mlp import MLP

    if not (math.isfinite(args.max_memory) and args.max_memory > 0):
        raise ConfigError(f"--max-memory must be a number of GiB > 0, got {args.max_memory:g}")
    max_bytes = int(args.max_memory * 2**30)
    mlp = MLP(args.layers, args.activation, args.output)
    check_compare_size(  # before X is drawn
        mlp,
        args.cases,
        8,
        max_bytes,
        advice=f"use fewer --cases than {args.cases}, smaller --layers or a larger --max-memory",
    )
    weights = mlp.init_gaussian(args.seed)
    X = numpy.random.default_rng(args.seed).standard_normal((args.cases, args.layers[0]))
    result = compare_fisher(mlp, weights, X, gamma=args.gamma, max_bytes=max_bytes)
    print(f"{mlp}, {args.cases} cases, γ = {args.gamma}")
    print(result.table())
    return 0


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
        prog="kfac-ref", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes the run ``argv`` trained: the same options, without
    ``--overwrite``, with ``--resume``."""
    prog = "kfac-ref" if os.path.basename(sys.argv[0]) == "kfac-ref" else "python -m kfac_ref"
    kept = [a for a in argv if a != "--overwrite"]
    return shlex.join([*prog.split(), *kept, *([] if "--resume" in kept else ["--resume"])])


def _resume_hint(argv: Sequence[str]) -> Callable[[Interrupted], str]:
    def hint(exc: Interrupted) -> str:
        if exc.checkpoint is not None:
            return f"resume with: {resume_command(argv)}"
        if exc.iteration is None:
            return ""
        return "start again with --overwrite (no checkpoint was written yet)"

    return hint


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    run = {"train": _run_train, "compare": _run_compare}[args.command]
    return report_errors(lambda: run(args), args.debug, _resume_hint(argv))


if __name__ == "__main__":
    sys.exit(main())
