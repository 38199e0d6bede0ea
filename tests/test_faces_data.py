"""Tests of FACES (§13): the recipe that reconstructs it from the Olivetti faces
(``kfac_ref.experiments.data.olivetti``), its cache, the loader's order of sources and the
statistics by which a FACES set is compared with the original.

No internet: ``olivettifaces.mat`` fixtures are small or random arrays written with
``scipy.io.savemat`` under ``tmp_path`` (their MD5 patched in where the loader must accept
them); downloads come from a local ``http.server`` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from kfac_ref.errors import ConfigError, DataError
from kfac_ref.experiments import data
from kfac_ref.experiments.data import faces, olivetti

SHARED_OLIVETTI = Path(__file__).parents[2] / "shared/data/olivetti-faces/olivettifaces.mat"
LOGGER = "kfac_ref.experiments.data"


# --------------------------------------------------------------------------------------------
# Fixtures: fake Olivetti faces, the authors' file in small, a local server
# --------------------------------------------------------------------------------------------


def random_faces(seed: int = 0) -> np.ndarray:
    """A (4096, 400) uint8 array shaped like the Olivetti faces."""
    return np.random.default_rng(seed).integers(0, 256, size=(4096, 400), dtype=np.uint8)


def md5_of_array(a: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(a).tobytes()).hexdigest()


def mat_bytes(tmp_path: Path, **arrays: np.ndarray) -> bytes:
    scipy.io.savemat(tmp_path / "blob.mat", arrays)
    blob = (tmp_path / "blob.mat").read_bytes()
    (tmp_path / "blob.mat").unlink()
    return blob


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache; no failed download remembered from another test."""
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "default_cache"))
    monkeypatch.setattr(data.download, "_FAILED_DOWNLOADS", set())


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, np.ndarray]:
    """A data directory holding a fake ``olivettifaces.mat`` whose array MD5 is the expected one."""
    F = random_faces(1)
    d = tmp_path / "d"
    d.mkdir()
    scipy.io.savemat(d / "olivettifaces.mat", {"faces": F})
    monkeypatch.setattr(olivetti, "OLIVETTI_FACES_MD5", md5_of_array(F))
    return d, F


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    requests: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append(name)
        blob = self.server.files.get(name)
        if blob is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(blob)))
        self.end_headers()
        self.wfile.write(blob)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, _Server]]:
    """(base URL, server): serves ``server.files`` by name, records requests."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests = {}, []
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = srv.server_address[:2]
        yield f"http://{host}:{port}/", srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access attempted")


# --------------------------------------------------------------------------------------------
# The recipe
# --------------------------------------------------------------------------------------------


def test_upright_is_the_transposed_column() -> None:
    F = random_faces(2)[:, :3]
    up = olivetti.upright_faces(F)
    for i in range(3):
        np.testing.assert_array_equal(up[i], F[:, i].reshape(64, 64).T)


def test_make_faces_shapes_and_determinism() -> None:
    F = random_faces(3)
    X, mu, sigma = olivetti.make_faces(F, seed=5, images_per_face=3, n_people=2)
    assert X.shape == (2 * 10 * 3, 625) and X.dtype == np.float32
    again, _, _ = olivetti.make_faces(F, seed=5, images_per_face=3, n_people=2)
    np.testing.assert_array_equal(X, again)
    other, _, _ = olivetti.make_faces(F, seed=6, images_per_face=3, n_people=2)
    assert np.abs(other - X).max() > 0.1
    assert 100 < mu < 155 and 30 < sigma < 80  # uniform 0..255 pixels, bilinearly mixed


def test_standardized_over_the_whole_set() -> None:
    X, mu, sigma = olivetti.make_faces(random_faces(4), seed=0, images_per_face=2, n_people=3)
    Z = X.astype(np.float64)
    assert abs(Z.mean()) < 1e-6 and abs(Z.var() - 1.0) < 1e-6
    # one scalar mean and deviation: the raw images are X σ + μ, bilinear samples of 0..255
    raw = Z * sigma + mu
    assert raw.min() > -1e-3 and raw.max() < 255 + 1e-3
    assert abs(Z.mean(axis=0)).max() > 1e-3  # not standardized per pixel


def test_person_contiguous_order_and_prefix() -> None:
    """Face i filled with the value i + 1: bilinear samples of a constant face are that constant,
    so every image says which face it came from; fewer people or images give a prefix."""
    F = np.repeat(np.arange(1, 31, dtype=np.uint8)[None, :], 4096, axis=0)  # 3 people
    per = 4
    X, mu, sigma = olivetti.make_faces(F, seed=0, images_per_face=per)
    raw = X.astype(np.float64) * sigma + mu
    face_of_image = np.repeat(np.arange(30), per)
    np.testing.assert_allclose(raw, (face_of_image + 1)[:, None] * np.ones((1, 625)), atol=1e-4)
    person = face_of_image // 10
    assert (np.diff(person) >= 0).all()  # person p's 10 · per images contiguous
    G = random_faces(5)[:, :30]
    full, mu_f, s_f = olivetti.make_faces(G, seed=2, images_per_face=4)
    part, mu_p, s_p = olivetti.make_faces(G, seed=2, images_per_face=4, n_people=1)
    np.testing.assert_allclose(part * s_p + mu_p, full[:40] * s_f + mu_f, atol=1e-3)


def test_linear_ramps_show_the_rotation_and_scale() -> None:
    """Bilinear interpolation is exact on linear images: sampling the column index gives the
    sample's column. θ = 90°, s = 2: one output pixel spans 64 / 50 = 1.28 face pixels, the
    top output row sees the face's right side (column 31.5 + 12 · 1.28), the left column the
    face's top (row 31.5 − 12 · 1.28)."""
    r, c = np.mgrid[0:64, 0:64].astype(np.float64)
    cols = olivetti.transform_face(c, np.array([90.0, 0.0]), np.array([2.0, 1.6]))
    rows = olivetti.transform_face(r, np.array([90.0, 0.0]), np.array([2.0, 1.6]))
    turned_c, turned_r = cols[0].reshape(25, 25), rows[0].reshape(25, 25)
    k = 64 / 50
    offsets = (np.arange(25) - 12) * k
    np.testing.assert_allclose(turned_c, 31.5 - offsets[:, None] * np.ones((1, 25)), atol=1e-12)
    np.testing.assert_allclose(turned_r, 31.5 + offsets[None, :] * np.ones((25, 1)), atol=1e-12)
    upright_c = np.broadcast_to(31.5 + (np.arange(25) - 12) * 64 / 40, (25, 25))  # θ = 0, s = 1.6
    np.testing.assert_allclose(cols[1].reshape(25, 25), upright_c, atol=1e-12)


def test_an_asymmetric_face_turns_counter_clockwise() -> None:
    """A bright blob above the centre of the face moves to the left of the centre under θ =
    +90° (counter-clockwise as displayed), to the right under −90°, and closer to the edge
    the larger the scale."""
    r, c = np.mgrid[0:64, 0:64].astype(np.float64)
    face = np.exp(-((r - 21.5) ** 2 + (c - 31.5) ** 2) / 8.0)  # 10 px above the centre

    def centroid(theta: float, scale: float) -> tuple[float, float]:
        img = olivetti.transform_face(face, np.array([theta]), np.array([scale])).reshape(25, 25)
        rr, cc = np.mgrid[0:25, 0:25]
        return float((img * rr).sum() / img.sum()), float((img * cc).sum() / img.sum())

    up = centroid(0.0, 2.0)
    assert up[0] == pytest.approx(12 - 10 / 1.28, abs=0.05) and up[1] == pytest.approx(12, abs=1e-6)
    left = centroid(90.0, 2.0)
    assert left[0] == pytest.approx(12, abs=1e-6) and left[1] == pytest.approx(
        12 - 10 / 1.28, abs=0.05
    )
    right = centroid(-90.0, 2.0)
    assert right[1] == pytest.approx(12 + 10 / 1.28, abs=0.05)
    assert centroid(0.0, 1.4)[0] == pytest.approx(12 - 10 * 1.4 / 2.56, abs=0.05)


def test_every_sample_lies_inside_the_face() -> None:
    """For s ≥ 1.4 every sample point is inside the 64 × 64 face at any angle (so the fill value
    never matters); a smaller scale would leave it at 45°."""
    theta = np.linspace(-90, 90, 181)
    coords = olivetti.sample_coordinates(theta, np.full(theta.size, 1.4))
    assert coords.min() >= 0.0 and coords.max() <= 63.0
    assert np.abs(coords - 31.5).max() == pytest.approx(12 * np.sqrt(2) * 64 / (25 * 1.4))
    wide = olivetti.sample_coordinates(np.array([45.0]), np.array([1.3]))
    assert wide.min() < 0.0 and wide.max() > 63.0


def test_draws_cover_the_published_ranges() -> None:
    theta, scale = olivetti.draw_transforms(np.random.default_rng(0), 20000)
    assert -90 <= theta.min() < -89.5 and 89.5 < theta.max() <= 90
    assert 1.4 <= scale.min() < 1.401 and 1.999 < scale.max() <= 2.0
    assert abs(theta.mean()) < 2.0 and scale.mean() == pytest.approx(1.7, abs=0.01)
    few = olivetti.draw_transforms(np.random.default_rng(0), 5)
    np.testing.assert_array_equal(few[0], theta[:5])  # a prefix of the longer draw


def test_make_faces_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="images_per_face"):
        olivetti.make_faces(random_faces(), images_per_face=0)


# --------------------------------------------------------------------------------------------
# Reading and checking olivettifaces.mat
# --------------------------------------------------------------------------------------------


def test_wrong_faces_array_is_rejected_by_its_md5(tmp_path: Path) -> None:
    F = random_faces(7)
    scipy.io.savemat(tmp_path / "olivettifaces.mat", {"faces": F})
    with pytest.raises(DataError) as info:
        olivetti.read_olivetti(tmp_path / "olivettifaces.mat")
    message = str(info.value)
    assert md5_of_array(F) in message and olivetti.OLIVETTI_FACES_MD5 in message
    with pytest.raises(DataError) as info:  # and so is the loader
        data.load_faces(data_dir=tmp_path, download=False)
    assert md5_of_array(F) in str(info.value)


def test_wrong_shape_or_variable(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "a.mat", {"faces": np.zeros((4096, 40), np.uint8)})
    with pytest.raises(DataError, match=r"shape \(4096, 40\)"):
        olivetti.read_olivetti(tmp_path / "a.mat")
    scipy.io.savemat(tmp_path / "b.mat", {"images": np.zeros((4096, 400), np.uint8)})
    with pytest.raises(DataError, match="'faces' not found"):
        olivetti.read_olivetti(tmp_path / "b.mat")


@pytest.mark.skipif(
    not SHARED_OLIVETTI.is_file(),
    reason=f"{SHARED_OLIVETTI} (the real Olivetti faces, shared read-only) is not on this machine",
)
def test_real_olivetti_faces_from_shared() -> None:
    """The real file: its array has the published MD5 and the known range and mean; a small
    reconstruction from it is finite and standardized (nothing is written next to it)."""
    F = olivetti.read_olivetti(SHARED_OLIVETTI)
    assert md5_of_array(F) == "9a493646b4750151c213ee02908147da" == olivetti.OLIVETTI_FACES_MD5
    assert F.shape == (4096, 400) and F.min() == 0 and F.max() == 242
    assert F.mean() == pytest.approx(132.38, abs=0.01)
    X, _, _ = olivetti.make_faces(F, seed=0, images_per_face=2, n_people=2)
    assert X.shape == (40, 625) and np.isfinite(X).all()


@pytest.mark.skipif(
    not SHARED_OLIVETTI.is_file(),
    reason=f"{SHARED_OLIVETTI} (the real Olivetti faces, shared read-only) is not on this machine",
)
def test_real_reconstruction_is_as_hard_for_pca_as_the_original() -> None:
    """10 images per face (4,000): the 30-component PCA test error lies within 10 % of the 135
    Hinton & Salakhutdinov report for the original set (the full set: 133.65)."""
    ds = faces.build_faces(olivetti.read_olivetti(SHARED_OLIVETTI), seed=0, images_per_face=10)
    stats = faces.faces_statistics(ds.X_train, ds.X_test)
    target = faces.FACES_ORIGINAL_STATISTICS["pca_test_error"]
    assert 0.9 * target <= stats["pca_test_error"] <= 1.1 * target
    assert stats["pca_training_error"] < stats["pca_test_error"]  # new people are harder
    assert 400 < stats["mean_image_training_error"] < 625  # 625: all the variance of the set


# --------------------------------------------------------------------------------------------
# The loader: order of sources, labels, cache
# --------------------------------------------------------------------------------------------


def test_reconstruction_from_olivettifaces_in_the_data_dir(fake: tuple[Path, np.ndarray]) -> None:
    d, F = fake
    ds = data.load_faces(data_dir=d, images_per_face=1)
    assert ds.name == "faces" and ds.origin == "reconstruction"
    assert ds.X_train.shape == (250, 625) and ds.X_test.shape == (100, 625)
    assert ds.X_train.dtype == np.float64 and ds.y_train is None
    assert ds.label == (
        "FACES reconstructed from the Olivetti faces (v1, seed 0, 1 per face), 250 training cases"
    )
    X, _, _ = olivetti.make_faces(F, seed=0, images_per_face=1)
    np.testing.assert_array_equal(ds.X_train, X[:250])  # training: the first 25 people
    np.testing.assert_array_equal(ds.X_test, X[300:])  # test: the last 10
    again = data.load_dataset("faces", data_dir=d, images_per_face=1)
    np.testing.assert_array_equal(again.X_test, ds.X_test)


def test_label_wording() -> None:
    assert faces._reconstruction_label(0, 414, 103500) == (
        "FACES reconstructed from the Olivetti faces (v1, seed 0), 103,500 training cases"
    )
    assert faces._reconstruction_label(3, 2, 500).startswith(
        "FACES reconstructed from the Olivetti faces (v1, seed 3, 2 per face)"
    )


def test_the_authors_file_is_preferred(fake: tuple[Path, np.ndarray]) -> None:
    d, _ = fake
    A = np.tile(np.arange(80, dtype=np.float32), (625, 1))
    scipy.io.savemat(d / "newfaces_rot_single.mat", {"newfaces_single": A})
    ds = data.load_faces(data_dir=d, images_per_face=1)
    assert ds.origin == "subset"  # 80 cases, not 165,600: the authors' file in part
    assert ds.label == "FACES (partial newfaces_rot_single.mat), 50 training cases"
    assert ds.X_train.shape == (50, 625)
    assert not list(d.glob("faces_olivetti_*"))  # nothing reconstructed


def test_neither_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.download, "_http_fetch", no_network)
    with pytest.raises(DataError) as info:
        data.load_dataset("faces", data_dir=tmp_path / "nowhere")  # $KFAC_REF_OFFLINE is set
    message = str(info.value)
    for fragment in (
        "newfaces_rot_single.mat",
        "olivettifaces.mat",
        data.FACES_URL,
        olivetti.OLIVETTI_URL,
        str(tmp_path / "nowhere"),
        "downloads are off",
    ):
        assert fragment in message
    assert message.count("downloads are off") == 1


def test_olivetti_download_is_checked_by_its_array(
    server: tuple[str, _Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authors' file is not served; the Olivetti copy is, with another header (so another
    file MD5) around the expected array: kept, its file MD5 recorded; a wrong array is refused."""
    url, srv = server
    F, wrong = random_faces(8), random_faces(9)
    monkeypatch.setattr(olivetti, "OLIVETTI_FACES_MD5", md5_of_array(F))
    srv.files["good.mat"] = mat_bytes(tmp_path, faces=F, extra=np.zeros(3))
    srv.files["wrong.mat"] = mat_bytes(tmp_path, faces=wrong)
    d = tmp_path / "d"
    kwargs = {"data_dir": d, "download": True, "images_per_face": 1, "url": url + "none.mat"}
    with pytest.raises(DataError, match=rf"{url}wrong.mat failed.*MD5 of its 'faces' array"):
        data.load_faces(olivetti_url=url + "wrong.mat", **kwargs)
    assert not (d / "olivettifaces.mat").exists() and not list(d.glob("*.part"))
    ds = data.load_faces(olivetti_url=url + "good.mat", **kwargs)
    assert ds.origin == "reconstruction" and ds.X_train.shape == (250, 625)
    record = (d / "olivettifaces.mat.md5").read_text().split()
    assert record[0] == hashlib.md5(srv.files["good.mat"]).hexdigest()
    assert srv.requests.count("none.mat") == 1  # the authors' URL is not tried again


def test_failed_authors_download_falls_back_with_a_warning(
    server: tuple[str, _Server],
    fake: tuple[Path, np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, srv = server
    d, _ = fake
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = data.load_faces(data_dir=d, download=True, url=url + "x.mat", images_per_face=1)
    assert ds.origin == "reconstruction" and srv.requests == ["x.mat"]
    assert "newfaces_rot_single.mat" in caplog.text and "reconstructed" in caplog.text


def test_cache_round_trip(fake: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = fake
    fresh = data.load_faces(data_dir=d, images_per_face=2, seed=4)
    cache = d / "faces_olivetti_v1_seed4_x2.npz"
    assert cache.is_file() and not list(d.glob("*.part"))
    with np.load(cache) as z:
        assert int(z["version"]) == 1 and int(z["seed"]) == 4 and int(z["images_per_face"]) == 2
        assert str(z["source_md5"]) == olivetti.OLIVETTI_FACES_MD5
    monkeypatch.setattr(olivetti, "make_faces", no_network)  # must not rebuild
    (d / "olivettifaces.mat").unlink()  # the cache alone suffices
    again = data.load_faces(data_dir=d, images_per_face=2, seed=4)
    np.testing.assert_array_equal(again.X_train, fresh.X_train)
    np.testing.assert_array_equal(again.X_test, fresh.X_test)
    assert again.label == fresh.label and again.source == str(cache)


def _rewrite(cache: Path, **changes: np.ndarray) -> None:
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(cache, **arrays)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda c: c.write_bytes(b"garbage"), "unreadable"),
        (lambda c: _rewrite(c, version=np.array(0)), "version 0"),
        (lambda c: _rewrite(c, seed=np.array(1)), "seed"),
        (lambda c: _rewrite(c, source_md5=np.array("0" * 32)), "source_md5"),
        (lambda c: _rewrite(c, X_test=np.zeros((3, 625), np.float32)), "shapes"),
    ],
    ids=["garbage", "version", "seed", "source", "shape"],
)
def test_damaged_or_mismatched_cache_is_rebuilt(
    fake: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture, damage, fragment: str
) -> None:
    d, _ = fake
    fresh = data.load_faces(data_dir=d, images_per_face=1)
    cache = d / "faces_olivetti_v1_seed0_x1.npz"
    damage(cache)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = data.load_faces(data_dir=d, images_per_face=1)
    assert "rebuilding" in caplog.text and fragment in caplog.text
    np.testing.assert_array_equal(again.X_train, fresh.X_train)
    with np.load(cache) as z:
        assert int(z["version"]) == 1 and z["X_test"].shape == (100, 625)


def test_unwritable_data_dir_builds_in_memory_with_a_warning(
    fake: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    d, _ = fake
    d.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            ds = data.load_faces(data_dir=d, images_per_face=1)
    finally:
        d.chmod(0o755)
    assert ds.origin == "reconstruction" and ds.X_train.shape == (250, 625)
    assert "could not cache" in caplog.text and str(d) in caplog.text
    assert not any(r.exc_info for r in caplog.records)
    assert not list(d.glob("faces_olivetti_*")) and not list(d.glob("*.part"))


def test_nothing_is_downloaded_into_a_read_only_data_dir(
    server: tuple[str, _Server], tmp_path: Path
) -> None:
    url, srv = server
    d = tmp_path / "ro"
    d.mkdir(mode=0o555)
    try:
        with pytest.raises(DataError, match="read-only"):
            data.load_faces(
                data_dir=d, download=True, url=url + "a.mat", olivetti_url=url + "b.mat"
            )
    finally:
        d.chmod(0o755)
    assert srv.requests == [] and list(d.iterdir()) == []


def test_a_cache_that_cannot_be_replaced_is_a_warning(
    fake: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    d, _ = fake
    (d / "faces_olivetti_v1_seed0_x1.npz").mkdir()  # os.replace onto a directory fails
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ds = data.load_faces(data_dir=d, images_per_face=1)
    assert ds.origin == "reconstruction" and "could not cache" in caplog.text
    assert not list(d.glob("*.part"))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def test_faces_statistics_against_an_svd() -> None:
    """PCA by the SVD of the centred training matrix (an independent route to V)."""
    rng = np.random.default_rng(10)
    mix = rng.standard_normal((12, 40))
    X_train = rng.standard_normal((300, 12)) @ mix + 0.1 * rng.standard_normal((300, 40))
    X_test = rng.standard_normal((50, 12)) @ mix + 0.1 * rng.standard_normal((50, 40)) + 0.3
    k = 5
    m = X_train.mean(axis=0)
    _, _, Vt = np.linalg.svd(X_train - m, full_matrices=False)
    P = Vt[:k].T @ Vt[:k]
    expected_test = (((X_test - m) - (X_test - m) @ P) ** 2).sum(axis=1).mean()
    expected_train = (((X_train - m) - (X_train - m) @ P) ** 2).sum(axis=1).mean()
    got = faces.faces_statistics(X_train, X_test, n_components=k)
    assert got["pca_test_error"] == pytest.approx(expected_test, rel=1e-10)
    assert got["pca_training_error"] == pytest.approx(expected_train, rel=1e-10)
    assert got["mean_image_training_error"] == pytest.approx(
        ((X_train - m) ** 2).sum(axis=1).mean(), rel=1e-12
    )
    all_components = faces.faces_statistics(X_train, X_test, n_components=40)
    assert all_components["pca_training_error"] == pytest.approx(0.0, abs=1e-12)
