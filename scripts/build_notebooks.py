"""Build Jupyter notebooks from the jupytext sources in ``notebooks_src/`` (and run them).

The notebooks are kept as plain ``.py`` files in jupytext's percent format (``# %%`` code cells,
``# %% [markdown]`` prose) so they diff, lint and test like code. This script turns every
``notebooks_src/*.py`` into ``notebooks/<name>.ipynb`` (git-ignored) and, with ``--execute``,
runs each one top to bottom in a fresh ``python3`` kernel so the saved notebook has its outputs.

    python scripts/build_notebooks.py                   # convert only
    python scripts/build_notebooks.py --execute         # convert and execute
    python scripts/build_notebooks.py --execute --only 02 03 --timeout 300

Needs the ``notebooks`` extra: ``pip install -e '.[notebooks]'`` (jupytext, nbclient,
ipykernel). A failing cell stops the build with a message naming the notebook, the cell number
and the first line of the cell; the partly executed notebook is still written, so the traceback
can be read in it. Exit status: 0 on success, 1 if a notebook failed, 2 on a setup problem.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = ROOT / "notebooks_src"
DEFAULT_OUT = ROOT / "notebooks"
KERNEL = "python3"


class BuildError(RuntimeError):
    """A notebook could not be converted or executed; the message says which and where."""


class SetupError(RuntimeError):
    """A tool the build needs (jupytext, nbclient, ipykernel, the kernel) is missing."""


def _require(module: str) -> object:
    try:
        return __import__(module)
    except ImportError as exc:
        raise SetupError(
            f"{module} is not installed; install the notebook tools with `pip install -e "
            "'.[notebooks]'`"
        ) from exc


def sources(src: Path, only: Sequence[str] = ()) -> list[Path]:
    """The jupytext sources ``src/*.py`` in name order, filtered to names containing any of
    ``only``."""
    files = sorted(p for p in src.glob("*.py") if not p.name.startswith("_"))
    if only:
        files = [p for p in files if any(key in p.stem for key in only)]
    return files


def ensure_kernel(name: str = KERNEL) -> None:
    """Make sure the ``python3`` kernel exists and runs this interpreter (ipykernel installed)."""
    _require("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(kernel_name=name, prefix=sys.prefix)


def convert(path: Path) -> object:
    """The notebook (nbformat node) of the jupytext percent file ``path``, validated."""
    jupytext = _require("jupytext")
    import nbformat

    try:
        nb = jupytext.read(path, fmt="py:percent")
    except Exception as exc:  # jupytext raises several kinds for malformed files
        raise BuildError(f"{path.name}: jupytext could not read it: {exc}") from exc
    nb.metadata.setdefault(
        "kernelspec", {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    )
    nbformat.validate(nb)
    return nb


def _first_line(source: str) -> str:
    lines = [ln for ln in source.splitlines() if ln.strip()]
    return lines[0][:80] if lines else "<empty cell>"


def execute(nb: object, name: str, workdir: Path, timeout: int) -> None:
    """Run every cell of ``nb`` in a fresh kernel with ``workdir`` as the current directory.

    Raises:
        BuildError: naming the notebook, the failing cell (1-based, counting all cells) and its
            first line, with the exception type and message.
    """
    _require("nbclient")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(workdir)}}
    )
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        index, cell = _failed_cell(nb)
        where = (
            f"cell {index + 1} of {len(nb.cells)} (`{_first_line(cell.source)}`)"
            if cell
            else "a cell"
        )
        if isinstance(exc, CellExecutionError):
            what = f"{exc.ename}: {exc.evalue}"
        else:
            what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise BuildError(f"{name}: {where} failed with {what}") from exc
    except RuntimeError as exc:  # the kernel did not start or died outside a cell
        raise BuildError(f"{name}: could not run the {KERNEL} kernel: {exc}") from exc


def _failed_cell(nb: object) -> tuple[int, object | None]:
    """The first code cell with an error output, else the last cell that started running."""
    started = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index, cell
        if cell.get("execution_count") is not None:
            started = (index, cell)
    return started or (-1, None)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write(nb: object, path: Path) -> Path:
    """Write the notebook to ``path`` atomically."""
    import nbformat

    with _atomic(path) as tmp:
        nbformat.write(nb, str(tmp))
    return path


def build(src: Path, out: Path, run: bool, timeout: int, only: Sequence[str] = ()) -> list[Path]:
    """Convert (and with ``run`` execute) every source; stop at the first failing notebook."""
    files = sources(src, only)
    if not files:
        raise SetupError(
            f"no notebook sources (*.py) found in {src}"
            + (f" matching {list(only)}" if only else "")
        )
    out.mkdir(parents=True, exist_ok=True)  # also the kernels' working directory
    if run:
        ensure_kernel()
    written = []
    for path in files:
        nb = convert(path)
        target = out / f"{path.stem}.ipynb"
        try:
            if run:
                execute(nb, path.name, out, timeout)
        finally:
            written.append(write(nb, target))
        print(f"{'executed' if run else 'converted'} {path.name} → {target}")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--src", type=Path, default=DEFAULT_SRC, help=f"jupytext sources (default {DEFAULT_SRC})"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--execute", action="store_true", help="run each notebook in a fresh python3 kernel"
    )
    p.add_argument(
        "--timeout", type=int, default=600, help="seconds allowed per cell (default 600)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="KEY",
        help="only the sources whose name contains one of these strings, e.g. 01 03",
    )
    args = p.parse_args(argv)
    try:
        build(args.src, args.out, args.execute, args.timeout, args.only)
    except SetupError as exc:
        print(f"build_notebooks: {exc}", file=sys.stderr)
        return 2
    except BuildError as exc:
        print(f"build_notebooks: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
