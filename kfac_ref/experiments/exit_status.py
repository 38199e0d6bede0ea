"""How a command ends: each failure as one line on stderr and an exit status (orchestration
edge; no math). Used by ``python -m kfac_ref`` (:mod:`~kfac_ref.experiments.cli`) and, through
:func:`run_script`, by the figure scripts and benchmarks.

A mistake in the options or the inputs, or a file-system failure (a full disk, an I/O error),
ends with one line ``error: …`` on stderr and exit status 2; ``--debug`` shows the traceback
instead. Ctrl-C ends with one line saying where the run stopped and how to resume it, and exit
status 130; a closed standard output (``kfac-ref … | head``) ends quietly with status 141, as a
program killed by SIGPIPE does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import Interrupted, KFACError
from . import checks

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a program whose reader went away


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
