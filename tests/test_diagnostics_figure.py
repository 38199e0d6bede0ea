"""``paper_figures/approximation_diagnostics.py`` end to end with tiny settings: files written,
every plotted number in the JSON, the diagnosed layers and iterations as asked, and one-line
errors for bad options and for a network too large for the dense matrices. The numbers
themselves are :func:`kfac_ref.diagnostics.diagnose`'s, tested in ``test_diagnostics.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[1] / "paper_figures"
sys.path.insert(0, str(FIGURES))  # the script imports its siblings ``_networks``, …
try:
    import approximation_diagnostics as script
finally:
    sys.path.remove(str(FIGURES))

from kfac_ref.experiments.exit_status import run_script  # noqa: E402

TINY = [
    "--ae-side",
    "4",
    "--ae-layers",
    "16",
    "4",
    "3",
    "4",
    "16",
    "--ae-cases",
    "60",
    "--ae-iters",
    "4",
    "--ae-every",
    "2",
    "--clf-train-cases",
    "80",
    "--clf-cases",
    "40",
    "--clf-iters",
    "3",
    "--clf-every",
    "2",
    "--clf-hidden",
    "4",
    "--dpi",
    "40",
    "--formats",
    "png",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("diagnostics")
    empty = tmp_path_factory.mktemp("no_mnist")
    return out, script.main([*TINY, "--out", str(out), "--data-dir", str(empty)])


def test_files_and_json(run: tuple[Path, dict]) -> None:
    out, result = run
    png = out / f"{script.STEM}.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    saved = json.loads((out / f"{script.STEM}.json").read_text())
    assert set(saved["problems"]) == {"autoencoder", "classifier"}
    ae, clf = saved["problems"]["autoencoder"], saved["problems"]["classifier"]
    assert [r["iteration"] for r in ae["records"]] == [2, 4]
    assert [r["iteration"] for r in clf["records"]] == [2, 3]  # every 2, and the last
    assert ae["layers_diagnosed"] == [1, 2, 3, 4] and clf["layers_diagnosed"] == [2, 3, 4, 5]
    assert clf["layer_sizes"] == [256, 4, 4, 4, 4, 4, 10] and clf["diagnosed_cases"] == 40
    rec = clf["records"][-1]
    assert "F_tilde_vs_F_block_2_5" in rec and "F_tilde_vs_F_block_1_1" not in rec
    assert rec["n_params"] == 4 * 4 * 5
    for name, problem in saved["problems"].items():
        for r, r_run in zip(problem["records"], result["problems"][name]["records"], strict=True):
            assert r == pytest.approx(r_run, rel=1e-12)
            assert r["bound"] >= r["total_error"] > 0
            assert -1.0 <= r["cosine_delta_vs_natural_gradient"] <= 1.0
            assert 0.0 <= r["model_change_ratio"] <= 1.0 + 1e-12
            assert r["F_breve_inv_vs_F_tilde_inv"] > 0 and r["gamma"] > 0


def test_bad_options_and_too_large_nets_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    base = [*TINY, "--out", str(tmp_path), "--data-dir", str(tmp_path / "none")]
    assert run_script(script.main, [*base, "--ae-side", "5"]) == 2
    assert "--ae-side" in capsys.readouterr().err
    assert run_script(script.main, [*base, "--ae-lam0", "0"]) == 2
    assert "--ae-lam0" in capsys.readouterr().err
    assert run_script(script.main, [*base, "--problems", "classifier", "--clf-hidden", "200"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "160800 parameters" in err and err.count("\n") == 1
    assert not list(tmp_path.glob(f"{script.STEM}.*"))  # refused before anything was written


def test_earlier_results_are_not_overwritten(run: tuple[Path, dict]) -> None:
    out, _ = run
    assert run_script(script.main, [*TINY, "--out", str(out)]) == 2
