"""Tests of the matrix figures (paper Figures 2, 3, 5, 6): ``paper_figures/fisher_blocks.py`` and
``paper_figures/inverse_quality.py`` run end to end on a tiny network, and the numbers in their
JSON output are recomputed independently from the saved weights with the dense functions of
:mod:`kfac_ref.fisher` on the **whole** network (not the sub-network shortcut the scripts use).

Tolerances: float64 throughout; recomputed relative errors agree to 1e-8 (relative), which
allows for different summation orders of the same products.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.compare import block_mean_abs, relative_error
from kfac_ref.fisher import approximate_fisher, exact_fisher
from kfac_ref.inverse import spd_inverse
from kfac_ref.mlp import MLP

FIGURES = Path(__file__).resolve().parents[1] / "paper_figures"
sys.path.insert(0, str(FIGURES))  # the scripts import their sibling ``_common``
try:
    import _common as common
    import fisher_blocks
    import inverse_quality
finally:
    sys.path.remove(str(FIGURES))

# Tiny settings: hidden width 6 → 1780 parameters in all, 168 in the middle four layers.
TINY = ["--quick", "--train-cases", "300", "--cases", "120", "--iters", "5", "--hidden", "6", "--seed", "3"]


def load_saved(npz: Path) -> tuple[MLP, list[np.ndarray], np.ndarray, float]:
    with np.load(npz) as z:
        mlp = MLP([int(d) for d in z["layer_sizes"]], "tanh", "softmax")
        weights = [z[f"W_{i + 1}"] for i in range(mlp.n_layers)]
        return mlp, weights, z["X_cases"], float(z["gamma"])


@pytest.fixture(scope="module")
def blocks_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fisher_blocks")
    result = fisher_blocks.main([*TINY, "--trainer", "natgrad", "--out", str(out)])
    return out, result


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory: pytest.TempPathFactory, blocks_run: tuple[Path, dict]) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("inverse_quality")
    weights = blocks_run[0] / "fisher_blocks_weights.npz"
    result = inverse_quality.main([*TINY, "--weights", str(weights), "--out", str(out)])
    return out, result


def assert_nonempty_figure(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    head = path.read_bytes()[:8]
    assert head.startswith(b"\x89PNG") if path.suffix == ".png" else head.startswith(b"%PDF"), path


def test_fisher_blocks_writes_figures_json_and_weights(blocks_run: tuple[Path, dict]) -> None:
    out, result = blocks_run
    for stem in (fisher_blocks.FIG2, fisher_blocks.FIG3):
        for ext in ("png", "pdf"):
            assert_nonempty_figure(out / f"{stem}.{ext}")
    saved = json.loads((out / "fisher_blocks.json").read_text())
    assert saved["figure2"]["relative_error_F_tilde_vs_F"] == pytest.approx(
        result["figure2"]["relative_error_F_tilde_vs_F"], rel=1e-12
    )
    assert saved["trainer"].startswith("natgrad") and saved["train_iterations"] == 5
    assert saved["network"]["layers_shown"] == [2, 3, 4, 5]
    assert not list(out.glob(".*")), "temporary files were left behind"


def test_figure2_error_recomputed_from_saved_weights(blocks_run: tuple[Path, dict]) -> None:
    """‖F̃ − F‖/‖F‖ of the middle layers, from the whole network's dense F and F̃."""
    out, result = blocks_run
    mlp, weights, X, _ = load_saved(out / "fisher_blocks_weights.npz")
    sl = common.middle_slice(mlp)
    F = exact_fisher(mlp, weights, X)[sl, sl]
    F_tilde = approximate_fisher(mlp, weights, X, "full")[sl, sl]
    nums = result["figure2"]
    assert nums["relative_error_F_tilde_vs_F"] == pytest.approx(relative_error(F_tilde, F), rel=1e-8)
    assert 0.0 < nums["relative_error_F_tilde_vs_F"] < 1.5  # not exact, and not unrelated
    shapes = mlp.shapes[common.MIDDLE_FIRST : common.MIDDLE_FIRST + common.MIDDLE_COUNT]
    np.testing.assert_allclose(nums["block_mean_abs_F"], block_mean_abs(F, shapes), rtol=1e-8)


def test_figure3_block_means_recomputed(blocks_run: tuple[Path, dict]) -> None:
    """The 4×4 panel: block means of |F̃(γ)⁻¹|, F̃(γ) sliced from the whole network's damped F̃."""
    out, result = blocks_run
    mlp, weights, X, gamma = load_saved(out / "fisher_blocks_weights.npz")
    assert result["figure3"]["gamma"] == pytest.approx(gamma)
    sl = common.middle_slice(mlp)
    F_tilde = approximate_fisher(mlp, weights, X, "full", gamma)[sl, sl]
    shapes = mlp.shapes[common.MIDDLE_FIRST : common.MIDDLE_FIRST + common.MIDDLE_COUNT]
    means = block_mean_abs(np.linalg.inv(F_tilde), shapes)
    np.testing.assert_allclose(result["figure3"]["block_mean_abs_F_tilde_inverse"], means, rtol=1e-6)
    # the paper's point: the inverse is much closer to block-tridiagonal than F̃ itself
    assert result["figure3"]["tridiagonal_ratio_F_tilde_inverse"] < result["figure3"]["tridiagonal_ratio_F_tilde"]


def test_inverse_quality_writes_figures(quality_run: tuple[Path, dict]) -> None:
    out, result = quality_run
    for stem in (inverse_quality.FIG5, inverse_quality.FIG6):
        for ext in ("png", "pdf"):
            assert_nonempty_figure(out / f"{stem}.{ext}")
    saved = json.loads((out / "inverse_quality.json").read_text())
    assert saved["trainer"].startswith("loaded from")
    assert set(saved["figure6"]) >= {"F_breve", "F_hat", "F_tilde", "white_level"}


def test_tridiagonal_inverse_beats_block_diagonal(quality_run: tuple[Path, dict]) -> None:
    """The paper's claim of Figure 6: F̂⁻¹ is closer to F̃⁻¹ than F̆⁻¹ is (and F̂ closer to F̃)."""
    _, result = quality_run
    f5, f6 = result["figure5"], result["figure6"]
    assert f6["F_hat"]["vs_F_tilde"] < f6["F_breve"]["vs_F_tilde"]
    assert f5["F_hat"]["vs_F_tilde"] < f5["F_breve"]["vs_F_tilde"]
    # F̂ equals F̃ on the tridiagonal blocks (§4.3), F̆ on the diagonal ones (§4.2)
    blocks_hat = np.array(f5["F_hat"]["block_errors_vs_F_tilde"])
    blocks_breve = np.array(f5["F_breve"]["block_errors_vs_F_tilde"])
    k, l = np.indices(blocks_hat.shape)
    assert np.all(blocks_hat[np.abs(k - l) <= 1] < 1e-8)
    assert np.all(np.diag(blocks_breve) < 1e-12)


def test_inverse_errors_recomputed_from_saved_weights(quality_run: tuple[Path, dict]) -> None:
    """‖F̆⁻¹ − F̃⁻¹‖/‖F̃⁻¹‖ and ‖F̂⁻¹ − F̃⁻¹‖/‖F̃⁻¹‖ from the whole network's damped dense matrices."""
    out, result = quality_run
    mlp, weights, X, gamma = load_saved(out / "inverse_quality_weights.npz")
    sl = common.middle_slice(mlp)
    dense = {
        name: approximate_fisher(mlp, weights, X, structure, gamma)[sl, sl]
        for name, structure in (("F_tilde", "full"), ("F_breve", "block_diagonal"), ("F_hat", "block_tridiagonal"))
    }
    inv = {name: spd_inverse(M, name) for name, M in dense.items()}
    for name in ("F_breve", "F_hat"):
        expected = relative_error(inv[name], inv["F_tilde"])
        assert result["figure6"][name]["vs_F_tilde"] == pytest.approx(expected, rel=1e-6)


def test_subnetwork_fisher_equals_slice_of_whole_network() -> None:
    """The shortcut of ``_common.middle_matrices``: F of W_2..W_5 from the sub-network a_1 → …"""
    mlp = MLP((12, 5, 5, 5, 5, 5, 3), "tanh", "softmax")
    weights = mlp.init_gaussian(1)
    X = np.random.default_rng(0).random((40, 12))
    net = common.TrainedNet(mlp, weights, X, None, X, "test", 0.1)
    M = common.middle_matrices(net, 0.1)
    sl = common.middle_slice(mlp)
    np.testing.assert_allclose(M.undamped["F"], exact_fisher(mlp, weights, X)[sl, sl], rtol=0, atol=1e-13)
    for name, structure in (("F_tilde", "full"), ("F_breve", "block_diagonal"), ("F_hat", "block_tridiagonal")):
        whole = approximate_fisher(mlp, weights, X, structure, 0.1)[sl, sl]
        np.testing.assert_allclose(M.damped[name], whole, rtol=0, atol=1e-10)


def test_kfac_trainer_is_used_when_available(tmp_path: Path) -> None:
    pytest.importorskip("kfac_ref.optimizer")
    s = common.resolve(common.base_parser("t").parse_args([*TINY, "--iters", "3", "--trainer", "kfac"]))
    net = common.partially_trained_network(s)
    assert net.trainer.startswith("kfac_ref.optimizer.KFAC")
    assert len(net.history) == 3 and np.isfinite(net.gamma) and net.gamma > 0


def test_fallback_labels_are_deterministic_and_use_all_classes() -> None:
    a, b = common.load_images(200, 5), common.load_images(200, 5)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.X.shape == (200, 256) and len(np.unique(a.labels)) == common.N_CLASSES


def test_bad_options_are_refused() -> None:
    from kfac_ref.errors import ConfigError

    parser = common.base_parser("t")
    with pytest.raises(ConfigError):
        common.resolve(parser.parse_args(["--cases", "500", "--train-cases", "100"]))
    with pytest.raises(ConfigError):
        common.resolve(parser.parse_args(["--vmax-quantile", "0"]))
