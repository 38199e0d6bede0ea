"""``paper_figures/structures_compare.py``: the comparison of notebook 06 drawn to PNG, PDF and
JSON — files written, numbers in the JSON consistent with the runs, no silent overwrite, and
its mistakes end with one error line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.experiments.exit_status import run_script
from kfac_ref.structures import STRUCTURES

FOLDER = Path(__file__).resolve().parent.parent / "paper_figures"
TINY = [
    "--iters",
    "4",
    "--cases",
    "120",
    "--seeds",
    "0",
    "1",
    "--lam0",
    "0.01",
    "--eval-every",
    "2",
]


def _script():
    sys.path.insert(0, str(FOLDER))
    try:
        spec = importlib.util.spec_from_file_location(
            "paper_figures_structures_compare", FOLDER / "structures_compare.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(FOLDER))
    return module


def test_structures_figure_writes_png_pdf_and_consistent_json(tmp_path, capsys):
    fig = _script()
    out = tmp_path / "fig"
    assert fig.main([*TINY, "--out", str(out)]) == 0
    assert (out / "structures_compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "structures_compare.pdf").read_bytes()[:5] == b"%PDF-"
    d = json.loads((out / "structures_compare.json").read_text())
    assert d["iterations"] == [0, 2, 4] and d["n_params"] == 339
    assert set(d["seconds_per_iteration"]) == set(STRUCTURES)
    for name in STRUCTURES:
        errors = np.array([d["runs"]["0.01"][s][name]["errors"] for s in ("0", "1")])
        assert errors.shape == (2, 3) and np.all(np.isfinite(errors))
        assert np.allclose(d["curves"]["0.01"][name]["median"], np.median(errors, axis=0))
        steps = np.array([d["runs"]["0.01"][s][name]["step_seconds"] for s in ("0", "1")])
        assert np.isclose(d["seconds_per_iteration"][name], steps.min(axis=0).mean())
    # the same seed gives every structure the same starting point
    assert len({d["runs"]["0.01"]["0"][n]["errors"][0] for n in STRUCTURES}) == 1
    assert "wrote" in capsys.readouterr().out


def test_structures_figure_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    fig = _script()
    out = tmp_path / "fig"
    argv = [
        "--iters",
        "1",
        "--cases",
        "100",
        "--seeds",
        "0",
        "--lam0",
        "1",
        "--structures",
        "block_diagonal",
        "--formats",
        "png",
        "--out",
        str(out),
    ]
    assert run_script(fig.main, argv) == 0
    before = (out / "structures_compare.json").read_text()
    assert run_script(fig.main, argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "structures_compare.json").read_text() == before
    assert run_script(fig.main, [*argv, "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--iters", "0"], "--iters must be an integer ≥ 1"),
        (["--cases", "50"], "--cases must be ≥ 100"),
        (["--lam0", "-1"], "every --lam0 must be a number > 0"),
        (["--structures", "diagonal"], "invalid choice"),
    ],
)
def test_structures_figure_mistakes_end_with_one_error_line(tmp_path, capsys, argv, fragment):
    try:
        status = run_script(_script().main, [*argv, "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ") and fragment in err
    assert not (tmp_path / "out" / "structures_compare.json").exists()


def test_structures_figure_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        _script().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--overwrite",
        "--quick",
        "--iters",
        "--cases",
        "--seeds",
        "--lam0",
        "--structures",
        "--eval-every",
        "--dpi",
        "--formats",
        "--debug",
    ):
        assert option in text
    assert "exact natural gradient" in text
