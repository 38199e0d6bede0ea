"""Tests of the matrix figures (paper Figures 2, 3, 5, 6): ``paper_figures/fisher_blocks.py`` and
``paper_figures/inverse_quality.py`` run end to end on a tiny network, and the numbers in their
JSON output are recomputed independently from the saved weights with the dense functions of
:mod:`kfac_ref.fisher` on the **whole** network (not the sub-network shortcut the scripts use);
block means and their ratios are recomputed here with plain NumPy. The data-source label is
checked for each of the three sources (four MNIST files, the test split alone, none → stand-in)
with tiny IDX files built here.

Tolerances: float64 throughout; recomputed relative errors agree to 1e-8 (relative), which
allows for different summation orders of the same products.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.compare import approximate_fisher, relative_error
from kfac_ref.errors import ConfigError
from kfac_ref.experiments import data
from kfac_ref.fisher import exact_fisher
from kfac_ref.linalg import spd_inverse
from kfac_ref.mlp import MLP

FIGURES = Path(__file__).resolve().parents[1] / "paper_figures"
sys.path.insert(0, str(FIGURES))  # the scripts import their siblings ``_networks``, …
try:
    import _matrices as matrices
    import _networks as networks
    import _options as options
    import _output as output
    import fisher_blocks
    import inverse_quality
finally:
    sys.path.remove(str(FIGURES))

# Tiny settings: hidden width 6 → 1780 parameters in all, 168 in the middle four layers.
TINY = [
    "--quick",
    "--train-cases",
    "300",
    "--cases",
    "120",
    "--iters",
    "5",
    "--hidden",
    "6",
    "--seed",
    "3",
    "--dpi",
    "40",
    "--no-progress",
]


@pytest.fixture(scope="module")
def no_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty data directory: the stand-in data."""
    return tmp_path_factory.mktemp("no_mnist")


def block_means(M: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Mean |entry| of each block, written here without kfac_ref."""
    edges = np.concatenate([[0], np.cumsum(sizes)])
    L = len(sizes)
    return np.array(
        [
            [np.abs(M[edges[k] : edges[k + 1], edges[l] : edges[l + 1]]).mean() for l in range(L)]
            for k in range(L)
        ]
    )


def middle_sizes(mlp: MLP) -> list[int]:
    return [
        o * i
        for o, i in mlp.shapes[options.MIDDLE_FIRST : options.MIDDLE_FIRST + options.MIDDLE_COUNT]
    ]


def load_saved(npz: Path) -> tuple[MLP, list[np.ndarray], np.ndarray, float]:
    with np.load(npz) as z:
        mlp = MLP([int(d) for d in z["layer_sizes"]], "tanh", "softmax")
        weights = [z[f"W_{i + 1}"] for i in range(mlp.n_layers)]
        return mlp, weights, z["X_cases"], float(z["gamma"])


@pytest.fixture(scope="module")
def blocks_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fisher_blocks")
    result = fisher_blocks.main(
        [
            *TINY,
            "--trainer",
            "kfac",
            "--further-iters",
            "3",
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path_factory.mktemp("empty")),
        ]
    )
    return out, result


@pytest.fixture(scope="module")
def quality_run(
    tmp_path_factory: pytest.TempPathFactory, blocks_run: tuple[Path, dict]
) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("inverse_quality")
    weights = blocks_run[0] / "fisher_blocks_weights.npz"
    result = inverse_quality.main(
        [
            *TINY,
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--data-dir",
            str(tmp_path_factory.mktemp("empty")),
        ]
    )
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
    assert saved["trainer"].startswith("kfac_ref.optimizer.KFAC") and saved["train_iterations"] == 5
    assert saved["network"]["layers_shown"] == [2, 3, 4, 5]
    assert saved["data"]["origin"] == "stand-in" and "300 cases" in saved["data"]["label"]
    assert saved["data"]["fisher_cases"] == 120 and saved["further_training"]["iterations"] == 8
    assert not list(out.glob(".*")), "temporary files were left behind"


def test_figure2_error_recomputed_from_saved_weights(blocks_run: tuple[Path, dict]) -> None:
    """‖F̃ − F‖/‖F‖ of the middle layers, from the whole network's dense F and F̃."""
    out, result = blocks_run
    mlp, weights, X, _ = load_saved(out / "fisher_blocks_weights.npz")
    sl = matrices.middle_slice(mlp)
    F = exact_fisher(mlp, weights, X)[sl, sl]
    F_tilde = approximate_fisher(mlp, weights, X, "full")[sl, sl]
    nums = result["figure2"]
    assert nums["relative_error_F_tilde_vs_F"] == pytest.approx(
        relative_error(F_tilde, F), rel=1e-8
    )
    assert 0.0 < nums["relative_error_F_tilde_vs_F"] < 1.5  # not exact, and not unrelated
    shapes = mlp.shapes[options.MIDDLE_FIRST : options.MIDDLE_FIRST + options.MIDDLE_COUNT]
    np.testing.assert_allclose(
        nums["block_mean_abs_F"], block_means(F, middle_sizes(mlp)), rtol=1e-8
    )
    assert len(shapes) == 4


def expected_ratios(means: np.ndarray) -> tuple[float, float]:
    """(mean first off-diagonal block / mean farther block, mean diagonal / mean first
    off-diagonal)."""
    first = np.mean([means[k, k + 1] for k in range(3)] + [means[k + 1, k] for k in range(3)])
    far = np.mean([means[k, l] for k in range(4) for l in range(4) if abs(k - l) >= 2])
    return first / far, np.mean(np.diag(means)) / first


def test_figure3_block_means_recomputed(blocks_run: tuple[Path, dict]) -> None:
    """The 4×4 panel: block means of |F̃(γ)⁻¹|, F̃(γ) sliced from the whole network's damped F̃,
    and the ratios quoted in the title, the JSON and the README."""
    out, result = blocks_run
    mlp, weights, X, gamma = load_saved(out / "fisher_blocks_weights.npz")
    fig3 = result["figure3"]
    assert fig3["gamma"] == pytest.approx(gamma)
    sl = matrices.middle_slice(mlp)
    F_tilde = approximate_fisher(mlp, weights, X, "full", gamma)[sl, sl]
    means = block_means(np.linalg.inv(F_tilde), middle_sizes(mlp))
    np.testing.assert_allclose(fig3["block_mean_abs_F_tilde_inverse"], means, rtol=1e-6)
    first, diag = expected_ratios(means)
    ratios = fig3["band_ratios_F_tilde_inverse"]
    assert ratios["first_off_over_farther"] == pytest.approx(first, rel=1e-6)
    assert ratios["diagonal_over_first_off"] == pytest.approx(diag, rel=1e-6)
    undamped = block_means(approximate_fisher(mlp, weights, X, "full")[sl, sl], middle_sizes(mlp))
    assert fig3["band_ratios_F_tilde"]["first_off_over_farther"] == pytest.approx(
        expected_ratios(undamped)[0], rel=1e-8
    )
    assert fig3["settings"][0]["gamma"] == fig3["gamma"]
    assert fig3["seen"] == fig3["settings"][0]["seen"] and isinstance(
        fig3["close_to_block_tridiagonal"], bool
    )


def test_figure3_other_settings_recomputed(blocks_run: tuple[Path, dict]) -> None:
    """Smallest damping keeping F̃ invertible, and the network trained further (saved weights)."""
    out, result = blocks_run
    settings = result["figure3"]["settings"]
    assert [e["iterations"] for e in settings] == [5, 5, 8, 8]
    for entry, npz in zip(
        settings[1:],
        [
            "fisher_blocks_weights.npz",
            "fisher_blocks_further_weights.npz",
            "fisher_blocks_further_weights.npz",
        ],
        strict=True,
    ):
        mlp, weights, X, trained_gamma = load_saved(out / npz)
        g = entry["gamma"] if entry is not settings[2] else trained_gamma
        assert entry["gamma"] == pytest.approx(g)
        sl = matrices.middle_slice(mlp)
        F_tilde = approximate_fisher(mlp, weights, X, "full", g)[sl, sl]
        eig = np.linalg.eigvalsh(F_tilde)
        assert eig[0] > 0 and eig[-1] / eig[0] <= fisher_blocks.COND_MAX
        assert entry["condition_F_tilde"] == pytest.approx(eig[-1] / eig[0], rel=1e-5)
        if "smallest" in entry["setting"] and g > 0:  # the next smaller γ of the grid is not enough
            smaller = fisher_blocks.GAMMA_GRID[fisher_blocks.GAMMA_GRID.index(g) - 1]
            e2 = np.linalg.eigvalsh(approximate_fisher(mlp, weights, X, "full", smaller)[sl, sl])
            assert e2[0] <= 0 or e2[-1] / e2[0] > fisher_blocks.COND_MAX
        means = block_means(np.linalg.inv(F_tilde), middle_sizes(mlp))
        np.testing.assert_allclose(entry["block_mean_abs_F_tilde_inverse"], means, rtol=1e-5)
        assert entry["band_ratios_F_tilde_inverse"]["first_off_over_farther"] == pytest.approx(
            expected_ratios(means)[0], rel=1e-5
        )
    assert settings[2]["train_error"] == pytest.approx(result["further_training"]["train_error"])


def test_section_3_1_numbers_recomputed(blocks_run: tuple[Path, dict]) -> None:
    """Σ|F − F̃| over the ordered pairs of the middle layers' weights, from the whole network's
    dense F and F̃ (means over the cases), for the figures' network and the one trained further;
    the cumulant bound is above it and the paper's numbers are quoted."""
    out, result = blocks_run
    saved = json.loads((out / "fisher_blocks.json").read_text())
    for nums, npz in (
        (result["figure2"]["section_3_1"], "fisher_blocks_weights.npz"),
        (result["further_training"]["section_3_1"], "fisher_blocks_further_weights.npz"),
    ):
        mlp, weights, X, _ = load_saved(out / npz)
        sl = matrices.middle_slice(mlp)
        F = exact_fisher(mlp, weights, X)[sl, sl]
        F_tilde = approximate_fisher(mlp, weights, X, "full")[sl, sl]
        err = np.abs(F - F_tilde)
        assert nums["total_error"] == pytest.approx(err.sum(), rel=1e-9)
        upper = np.triu(np.ones_like(err, dtype=bool))
        assert nums["total_error_unordered_pairs"] == pytest.approx(err[upper].sum(), rel=1e-9)
        assert nums["bound"] >= nums["total_error"] > 0
        assert nums["n_params"] == F.shape[0] and nums["n_cases"] == X.shape[0]
    assert saved["figure2"]["section_3_1"]["paper"] == {"total_error": 2894.4, "bound": 4134.6}


def test_figure3_exact_F_inverse_recomputed(blocks_run: tuple[Path, dict]) -> None:
    """The exact-F row of Figure 3: block means of |(F + D_γ)⁻¹|, D_γ = F̃(γ) − F̃(0) (the same
    factored Tikhonov term as F̃'s), sliced from the whole network's dense matrices."""
    out, result = blocks_run
    mlp, weights, X, gamma = load_saved(out / "fisher_blocks_weights.npz")
    fig3 = result["figure3"]
    sl = matrices.middle_slice(mlp)
    F = exact_fisher(mlp, weights, X)[sl, sl]
    D = (
        approximate_fisher(mlp, weights, X, "full", gamma)[sl, sl]
        - approximate_fisher(mlp, weights, X, "full")[sl, sl]
    )
    means = block_means(np.linalg.inv(F + D), middle_sizes(mlp))
    np.testing.assert_allclose(fig3["block_mean_abs_F_inverse"], means, rtol=1e-6)
    first, diag = expected_ratios(means)
    assert fig3["band_ratios_F_inverse"]["first_off_over_farther"] == pytest.approx(first, rel=1e-6)
    assert fig3["band_ratios_F_inverse"]["diagonal_over_first_off"] == pytest.approx(diag, rel=1e-6)
    np.testing.assert_allclose(
        fig3["block_mean_abs_F"], block_means(F, middle_sizes(mlp)), rtol=1e-8
    )
    close = bool(first >= fisher_blocks.TRIDIAGONAL_MIN_RATIO)
    assert fig3["F_inverse_close_to_block_tridiagonal"] is close
    assert f"F⁻¹ {first:.2f}" in fig3["is_F_tilde_the_reason"]


def test_is_F_tilde_the_reason_covers_each_case() -> None:
    def entry(tilde: float, exact: float) -> dict:
        return {
            "gamma": 0.1,
            "band_ratios_F_tilde_inverse": {"first_off_over_farther": tilde},
            "band_ratios_F_inverse": {"first_off_over_farther": exact},
            "close_to_block_tridiagonal": tilde >= 5,
            "F_inverse_close_to_block_tridiagonal": exact >= 5,
        }

    reason = fisher_blocks.is_F_tilde_the_reason
    assert reason(entry(1.5, 1.2)).startswith("neither")
    assert "removes the band" in reason(entry(1.5, 9.0))
    assert reason(entry(9.0, 9.0)).startswith("both")
    assert reason({"gamma": 0.0}).startswith("F(γ) is not invertible")


def test_band_ratios_and_verdict_on_known_matrices() -> None:
    tri = np.array([[4.0, 1, 0.1, 0.1], [1, 4, 1, 0.1], [0.1, 1, 4, 1], [0.1, 0.1, 1, 4]])
    r = matrices.band_ratios(tri)
    assert r["first_off_over_farther"] == pytest.approx(10.0) and r[
        "diagonal_over_first_off"
    ] == pytest.approx(4.0)
    assert fisher_blocks.what_is_seen(r)[1] is True
    diag = np.full((4, 4), 0.05) + np.diag([1.0] * 4)
    phrase, ok = fisher_blocks.what_is_seen(matrices.band_ratios(diag))
    assert not ok and phrase.startswith("is close to block-diagonal")


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
    sl = matrices.middle_slice(mlp)
    dense = {
        name: approximate_fisher(mlp, weights, X, structure, gamma)[sl, sl]
        for name, structure in (
            ("F_tilde", "full"),
            ("F_breve", "block_diagonal"),
            ("F_hat", "block_tridiagonal"),
        )
    }
    inv = {name: spd_inverse(M, name) for name, M in dense.items()}
    for name in ("F_breve", "F_hat"):
        expected = relative_error(inv[name], inv["F_tilde"])
        assert result["figure6"][name]["vs_F_tilde"] == pytest.approx(expected, rel=1e-6)


def test_subnetwork_fisher_equals_slice_of_whole_network() -> None:
    """The shortcut of ``_matrices.middle_matrices``: F of W_2..W_5 from the sub-network a_1 → …"""
    mlp = MLP((12, 5, 5, 5, 5, 5, 3), "tanh", "softmax")
    weights = mlp.init_gaussian(1)
    X = np.random.default_rng(0).random((40, 12))
    net = networks.TrainedNet(mlp, weights, X, None, X, "test", 0.1)
    M = matrices.middle_matrices(net, 0.1)
    sl = matrices.middle_slice(mlp)
    np.testing.assert_allclose(
        M.undamped["F"], exact_fisher(mlp, weights, X)[sl, sl], rtol=0, atol=1e-13
    )
    for name, structure in (
        ("F_tilde", "full"),
        ("F_breve", "block_diagonal"),
        ("F_hat", "block_tridiagonal"),
    ):
        whole = approximate_fisher(mlp, weights, X, structure, 0.1)[sl, sl]
        np.testing.assert_allclose(M.damped[name], whole, rtol=0, atol=1e-10)


def test_natgrad_trainer_and_resume(no_mnist: Path) -> None:
    args = [*TINY, "--iters", "2", "--trainer", "natgrad", "--data-dir", str(no_mnist)]
    s = options.resolve(options.base_parser("t").parse_args(args))
    net = networks.partially_trained_network(s)
    assert net.trainer.startswith("natgrad") and net.gamma == 0.01
    more = net.resume(2)
    assert [h["iteration"] for h in more.history] == [1, 2, 3, 4]
    assert more.history[-1]["train_error"] == pytest.approx(more.train_error())
    assert not np.allclose(more.weights[0], net.weights[0])  # trained on from where it stopped


def test_fallback_labels_are_deterministic_and_use_all_classes(no_mnist: Path) -> None:
    a, b = networks.load_images(200, 5, no_mnist), networks.load_images(200, 5, no_mnist)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.X.shape == (200, 256) and len(np.unique(a.labels)) == options.N_CLASSES


def test_bad_options_are_refused() -> None:
    from kfac_ref.errors import ConfigError

    parser = options.base_parser("t")
    with pytest.raises(ConfigError):
        options.resolve(parser.parse_args(["--cases", "500", "--train-cases", "100"]))
    with pytest.raises(ConfigError):
        options.resolve(parser.parse_args(["--vmax-quantile", "0"]))


# ------------------------------------------------------------------------ data-source labels
def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def mnist_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Tiny MNIST directories: all four files (60 + 20 cases), and the test split alone (20)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (60, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 60),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 20),
    }
    blobs = {n: idx_gz(a) for n, a in arrays.items()}
    monkeypatch.setattr(
        data.mnist, "MNIST_MD5", {n: hashlib.md5(b).hexdigest() for n, b in blobs.items()}
    )
    full, test_only = tmp_path / "full", tmp_path / "t10k"
    for d, names in ((full, blobs), (test_only, data.MNIST_TEST_FILES)):
        d.mkdir()
        for n in names:
            (d / n).write_bytes(blobs[n])
    return {"full": full, "t10k": test_only, "none": tmp_path / "none", "arrays": arrays}  # type: ignore[dict-item]


def test_data_source_label_for_each_source(mnist_dirs: dict, capsys: pytest.CaptureFixture) -> None:
    arrays = mnist_dirs["arrays"]
    full = networks.load_images(50, 0, mnist_dirs["full"])
    assert full.origin == "original"
    assert full.label == "MNIST (original), 60 training cases, first 50 used, down-scaled to 16×16"
    expected = data.downscale_images(
        arrays["train-images-idx3-ubyte.gz"][:50].reshape(50, -1) / 255.0, 28, 16
    )
    np.testing.assert_allclose(full.X, expected)
    np.testing.assert_array_equal(full.labels, arrays["train-labels-idx1-ubyte.gz"][:50])

    sub = networks.load_images(20, 0, mnist_dirs["t10k"])
    assert (
        sub.origin == "subset"
        and sub.label == "MNIST test split only, 20 cases, down-scaled to 16×16"
    )
    np.testing.assert_array_equal(sub.labels, arrays["t10k-labels-idx1-ubyte.gz"])
    with pytest.raises(ConfigError, match="exceeds the 20 cases"):
        networks.load_images(21, 0, mnist_dirs["t10k"])

    capsys.readouterr()
    none = networks.load_images(30, 0, mnist_dirs["none"])
    assert (
        none.origin == "stand-in" and none.label.startswith("stand-in") and "30 cases" in none.label
    )
    assert "no MNIST file" in capsys.readouterr().out


def test_damaged_mnist_is_an_error_not_a_stand_in(mnist_dirs: dict) -> None:
    damaged = mnist_dirs["t10k"] / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(data.DataError, match="damaged"):
        networks.load_images(10, 0, mnist_dirs["t10k"])


def test_figures_and_json_name_the_data(mnist_dirs: dict, tmp_path: Path) -> None:
    """End to end on the test split alone: the footer of each figure and the JSON say so."""
    import matplotlib.pyplot as plt

    args = [
        "--train-cases",
        "20",
        "--cases",
        "20",
        "--iters",
        "2",
        "--hidden",
        "4",
        "--no-progress",
        "--data-dir",
        str(mnist_dirs["t10k"]),
    ]
    s = options.resolve(options.base_parser("t").parse_args(args))
    net = networks.partially_trained_network(s)
    M = matrices.middle_matrices(net, net.gamma, names=("F_tilde",))
    fig = fisher_blocks.draw_figure2(M, fisher_blocks.figure2_numbers(M, 0.99), s, net)
    footer = fig.get_supxlabel()
    plt.close(fig)
    assert "MNIST test split only, 20 cases" in footer and "trained on 20 cases" in footer
    assert "2 iterations" in footer and f"{net.train_error():.1%}" in footer
    summary = output.run_summary(s, net, net.gamma)
    assert summary["data"]["label"] == net.data_label and summary["data"]["origin"] == "subset"


# ---------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize(
    "script", [fisher_blocks, inverse_quality], ids=["fisher_blocks", "inverse_quality"]
)
def test_help_is_complete(script, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    description = text.split("options:")[0]
    assert description.rstrip().endswith(".") and "Figure" in description
    for option in (
        "--data-dir",
        "--out",
        "--overwrite",
        "--iters",
        "--scale",
        "--formats",
        "--gamma",
    ):
        assert option in text
    assert "(default: 0.995)" in text and "(default: figures_out)" in text
    assert "default: None" not in text and "default: False" not in text


def test_earlier_results_are_not_overwritten(blocks_run: tuple[Path, dict]) -> None:
    out, _ = blocks_run
    before = (out / "fisher_blocks.json").read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):
        fisher_blocks.main([*TINY, "--out", str(out)])
    assert (out / "fisher_blocks.json").read_bytes() == before
