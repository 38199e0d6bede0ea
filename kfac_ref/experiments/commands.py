"""What ``python -m kfac_ref``'s subcommands do, once their options are parsed
(:mod:`~kfac_ref.experiments.cli`): :func:`train` a §13 autoencoder into its run directory,
:func:`compare` F̃, F̆, F̂ with the exact Fisher on a small random net. Orchestration only.

Each returns the exit status of a success; a failure is an exception, which
:func:`~kfac_ref.experiments.exit_status.report_errors` turns into one line and a status.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence

from ..errors import ConfigError, Interrupted
from .run_config import RunConfig


def parse_overrides(items: Sequence[str]) -> dict:
    """``--kfac NAME=VALUE`` items as KFACConfig overrides, each value read as JSON where it
    is JSON (``lam0=100``: the number 100) and as a string otherwise."""
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


def run_config(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` that ``train``'s options name: every field that is an option
    (``--n-train`` sets ``n_train``), ``kfac`` from the ``--kfac`` items; the fields the
    command line does not set keep their defaults."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RunConfig)
        if f.name != "kfac" and hasattr(args, f.name)
    }
    return RunConfig(**given, kfac=parse_overrides(args.kfac))


def train(args: argparse.Namespace) -> int:
    """Train the run the options describe into ``--out`` and print its last training error."""
    from .runner import run_experiment

    cfg = run_config(args)
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


def compare(args: argparse.Namespace) -> int:
    """Print the errors of F̃, F̆, F̂ and their inverses against the exact Fisher of a small
    random net (:func:`kfac_ref.compare.compare_fisher`), its size checked before any case
    is drawn."""
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


#: each subcommand's implementation, by name
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"train": train, "compare": compare}


def resume_command(argv: Sequence[str]) -> str:
    """The command line that resumes the run ``argv`` trained: the same options, without
    ``--overwrite``, with ``--resume``."""
    prog = "kfac-ref" if os.path.basename(sys.argv[0]) == "kfac-ref" else "python -m kfac_ref"
    kept = [a for a in argv if a != "--overwrite"]
    return shlex.join([*prog.split(), *kept, *([] if "--resume" in kept else ["--resume"])])


def resume_hint(argv: Sequence[str]) -> Callable[[Interrupted], str]:
    """What to say after Ctrl-C stopped the command ``argv``: how to resume it from its last
    checkpoint, or how to start it again when none was written."""

    def hint(exc: Interrupted) -> str:
        if exc.checkpoint is not None:
            return f"resume with: {resume_command(argv)}"
        if exc.iteration is None:
            return ""
        return "start again with --overwrite (no checkpoint was written yet)"

    return hint
