"""Every notebook in ``notebooks_src/`` runs top to bottom, and converts to a valid notebook.

The sources are jupytext percent files, i.e. plain Python, so the cheapest faithful run is to
execute each one as a script in a fresh interpreter (a subprocess: no state leaks between
notebooks, and a crash or hang is contained), with matplotlib's non-interactive Agg backend and
a temporary working directory. Notebooks added later are picked up by the glob. The conversion
test needs jupytext and is skipped cleanly without it; executing real kernels is left to
``scripts/build_notebooks.py --execute``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in (ROOT / "notebooks_src").glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 300  # each notebook is meant to take < 1 minute on a 2-core CPU; this catches hangs


def test_there_are_notebooks() -> None:
    assert SOURCES, "no notebook sources found in notebooks_src/"


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs_as_a_script(path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "error::RuntimeWarning"}
    # The notebooks use small matrices, for which a multi-threaded BLAS only adds contention
    # (measured here: notebook 04 in 8 s single-threaded, up to 120 s threaded on a busy 2-core VM).
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s")
    if proc.returncode != 0:
        pytest.fail(f"{path.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_converts_to_valid_ipynb(path: Path) -> None:
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    nb = jupytext.read(path, fmt="py:percent")
    nbformat.validate(nb)
    kinds = {cell.cell_type for cell in nb.cells}
    assert kinds == {"markdown", "code"}, f"{path.name}: expected prose and code cells, got {kinds}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), (
        f"{path.name} should open with a markdown title cell"
    )


def _build_notebooks_module():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return build_notebooks


def test_build_script_converts_every_source(tmp_path: Path) -> None:
    pytest.importorskip("jupytext")
    build_notebooks = _build_notebooks_module()
    written = build_notebooks.build(ROOT / "notebooks_src", tmp_path / "out", run=False, timeout=60)
    assert [p.stem for p in written] == [p.stem for p in SOURCES]
    assert all(p.stat().st_size > 0 for p in written)


def test_build_script_names_the_failing_notebook_and_cell(tmp_path: Path) -> None:
    for module in ("jupytext", "nbclient", "ipykernel"):
        pytest.importorskip(module)
    src = tmp_path / "src"
    src.mkdir()
    (src / "01_broken.py").write_text(
        "# %% [markdown]\n# # Broken\n\n# %%\nx = 1\n\n# %%\ny = x / 0\n"
    )
    build_notebooks = _build_notebooks_module()
    with pytest.raises(
        build_notebooks.BuildError,
        match=r"01_broken\.py: cell 3 of 3 \(`y = x / 0`\).*ZeroDivisionError",
    ):
        build_notebooks.build(src, tmp_path / "out", run=True, timeout=60)
    assert (tmp_path / "out" / "01_broken.ipynb").is_file()  # kept for reading the traceback
