"""Tests of the data package: downloads, checksums, IDX and .mat parsing, CURVES.

No internet: MNIST downloads are served from tiny IDX files by a local ``http.server`` thread on
127.0.0.1; ``.mat`` fixtures are written with ``scipy.io.savemat`` under ``tmp_path``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.interpolate import CubicSpline

from kfac_ref.errors import ConfigError, DataError
from kfac_ref.experiments import data

# --------------------------------------------------------------------------------------------
# Fixtures: tiny IDX files and a local HTTP server with Range support
# --------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX ubyte file (magic 0x0000 08 ndim, big-endian int32 dims, data), gzipped."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def md5_of(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


@dataclass
class TinyMnist:
    """Four small IDX files: 7 training and 3 test images of 28×28, with their labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def md5(self) -> dict[str, str]:
        return {name: md5_of(blob) for name, blob in self.files.items()}


@pytest.fixture
def tiny_mnist(monkeypatch: pytest.MonkeyPatch) -> TinyMnist:
    """Tiny IDX files whose MD5s replace the module's checksum table."""
    rng = np.random.default_rng(0)
    t = TinyMnist(
        train_images=rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 10, size=7, dtype=np.uint8),
        test_images=rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        test_labels=rng.integers(0, 10, size=3, dtype=np.uint8),
    )
    t.files = {
        "train-images-idx3-ubyte.gz": idx_bytes(t.train_images),
        "train-labels-idx1-ubyte.gz": idx_bytes(t.train_labels),
        "t10k-images-idx3-ubyte.gz": idx_bytes(t.test_images),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(t.test_labels),
    }
    monkeypatch.setattr(data.mnist, "MNIST_MD5", t.md5)
    return t


def assert_is_tiny_mnist(ds: data.Dataset, t: TinyMnist) -> None:
    np.testing.assert_array_equal(ds.X_train, t.train_images.reshape(7, 784) / 255.0)
    np.testing.assert_array_equal(ds.X_test, t.test_images.reshape(3, 784) / 255.0)
    np.testing.assert_array_equal(ds.y_train, t.train_labels.astype(np.int64))
    np.testing.assert_array_equal(ds.y_test, t.test_labels.astype(np.int64))
    assert ds.X_train.dtype == np.float64 and ds.y_train.dtype == np.int64


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    honor_range: bool
    log: list[tuple[str, str | None, int, int]]  # (path, Range header, status, bytes sent)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        name = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/good/") or name not in self.server.files:
            self.server.log.append((self.path, self.headers.get("Range"), 404, 0))
            self.send_error(404)
            return
        blob = self.server.files[name]
        rng_header = self.headers.get("Range")
        start = 0
        if rng_header and self.server.honor_range:
            start = int(rng_header.removeprefix("bytes=").split("-")[0])
        body = blob[start:]
        status = 206 if start else 200
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
        self.send_header("Content-Length", str(len(body)))
        self.server.log.append(
            (self.path, rng_header, status, len(body))
        )  # before the client can finish
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@dataclass
class LocalServer:
    server: _Server

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def good(self) -> str:
        return self.base + "/good/"

    @property
    def missing(self) -> str:
        return self.base + "/missing/"

    @property
    def log(self) -> list[tuple[str, str | None, int, int]]:
        return self.server.log


@pytest.fixture
def server(tiny_mnist: TinyMnist) -> Iterator[LocalServer]:
    """An HTTP server on 127.0.0.1 (free port) serving the tiny files under /good/."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files = dict(tiny_mnist.files)
    srv.honor_range = True
    srv.log = []
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield LocalServer(srv)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's cache or configured mirrors."""
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "default_cache"))
    monkeypatch.delenv(data.MIRRORS_ENV_VAR, raising=False)


def no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("network access attempted")


# --------------------------------------------------------------------------------------------
# Cache directory
# --------------------------------------------------------------------------------------------


def test_default_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("KFAC_REF_DATA_DIR")
    assert data.default_data_dir() == tmp_path / "xdg" / "kfac_ref"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_data_dir() == tmp_path / "home" / ".cache" / "kfac_ref"


def test_mirror_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert data._mnist_mirrors(None) == data.MNIST_MIRRORS
    monkeypatch.setenv(data.MIRRORS_ENV_VAR, "http://a/, http://b/")
    assert data._mnist_mirrors(None) == ("http://a/", "http://b/")
    assert data._mnist_mirrors(["http://c/"]) == ("http://c/",)


def test_published_mnist_checksums() -> None:
    assert data.MNIST_MD5 == {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


# --------------------------------------------------------------------------------------------
# MNIST downloads
# --------------------------------------------------------------------------------------------


def test_download_parse_and_checksum(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ds = data.load_mnist(data_dir=cache, mirrors=[server.missing, server.good])
    assert_is_tiny_mnist(ds, tiny_mnist)
    assert sorted(p.name for p in cache.iterdir()) == sorted(tiny_mnist.files)
    for name, blob in tiny_mnist.files.items():
        assert (cache / name).read_bytes() == blob
    # each file: a 404 from the first mirror, then a full 200 from the second
    assert [status for _, _, status, _ in server.log] == [404, 200] * 4


def test_mirrors_from_environment(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.MIRRORS_ENV_VAR, f"{server.missing},{server.good}")
    monkeypatch.delenv(data.OFFLINE_ENV_VAR)  # the offline switch overrides these mirrors
    ds = data.load_mnist(data_dir=tmp_path / "cache")
    assert_is_tiny_mnist(ds, tiny_mnist)


def test_checksum_failure_raises_and_leaves_nothing(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "train-images-idx3-ubyte.gz"
    expected = "0123456789abcdef0123456789abcdef"
    monkeypatch.setitem(data.mnist.MNIST_MD5, name, expected)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        data.load_mnist(data_dir=cache, mirrors=[server.good])
    message = str(info.value)
    assert name in message and expected in message
    assert md5_of(tiny_mnist.files[name]) in message  # the actual checksum
    assert server.good in message and str(cache) in message
    assert not (cache / name).exists()
    assert not (cache / (name + ".part")).exists()


def test_resume_partial_download_with_range(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "train-images-idx3-ubyte.gz"
    blob = tiny_mnist.files[name]
    half = len(blob) // 2
    (cache / (name + ".part")).write_bytes(blob[:half])
    ds = data.load_mnist(data_dir=cache, mirrors=[server.good])
    assert_is_tiny_mnist(ds, tiny_mnist)
    entry = next(e for e in server.log if e[0].endswith(name))
    assert entry == (f"/good/{name}", f"bytes={half}-", 206, len(blob) - half)
    assert (cache / name).read_bytes() == blob
    assert not (cache / (name + ".part")).exists()


def test_resume_falls_back_when_range_is_ignored(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path
) -> None:
    server.server.honor_range = False
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "t10k-images-idx3-ubyte.gz"
    blob = tiny_mnist.files[name]
    (cache / (name + ".part")).write_bytes(blob[:100])
    ds = data.load_mnist(data_dir=cache, mirrors=[server.good])
    assert_is_tiny_mnist(ds, tiny_mnist)
    entry = next(e for e in server.log if e[0].endswith(name))
    assert entry[1:] == ("bytes=100-", 200, len(blob))  # full body, written from the start
    assert (cache / name).read_bytes() == blob


def test_corrupt_partial_file_is_redownloaded_in_full(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    name = "train-labels-idx1-ubyte.gz"
    (cache / (name + ".part")).write_bytes(b"\xff" * 10)  # wrong bytes: resumed MD5 fails
    ds = data.load_mnist(data_dir=cache, mirrors=[server.good])
    assert_is_tiny_mnist(ds, tiny_mnist)
    statuses = [(rng, status) for path, rng, status, _ in server.log if path.endswith(name)]
    assert statuses == [("bytes=10-", 206), (None, 200)]


def test_offline_use_of_cached_files(
    tiny_mnist: TinyMnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, blob in tiny_mnist.files.items():
        (cache / name).write_bytes(blob)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    ds = data.load_mnist(data_dir=cache, mirrors=["http://127.0.0.1:9/unreachable/"])
    assert_is_tiny_mnist(ds, tiny_mnist)


def test_missing_without_download_names_file_and_directory(
    tiny_mnist: TinyMnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as info:
        data.load_mnist(data_dir=tmp_path / "empty", download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert str(tmp_path / "empty") in str(info.value)


def test_unreachable_mirrors_raise_data_error(tiny_mnist: TinyMnist, tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9/"  # discard port: connection refused
    with pytest.raises(DataError) as info:
        data.load_mnist(data_dir=tmp_path / "cache", mirrors=[dead])
    assert "download failed" in str(info.value) and dead in str(info.value)


# --------------------------------------------------------------------------------------------
# IDX parsing and mnist_all.mat
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "fragment"),
    [
        (
            gzip.compress(bytes([0, 0, 0x0D, 3]) + struct.pack(">3i", 1, 28, 28) + bytes(784)),
            "magic number 00000d03",
        ),
        (
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3i", 2, 28, 28) + bytes(784)),
            "need 1568 data bytes, file has 784",
        ),
        (
            gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3i", 1, 27, 28) + bytes(756)),
            "expected (28, 28)",
        ),
        (b"\x1f\x8b" + b"not really gzip", "corrupt gzip"),
    ],
)
def test_malformed_idx_raises(
    blob: bytes,
    fragment: str,
    tiny_mnist: TinyMnist,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    files = dict(tiny_mnist.files, **{"train-images-idx3-ubyte.gz": blob})
    for name, content in files.items():
        (cache / name).write_bytes(content)
    monkeypatch.setattr(data.mnist, "MNIST_MD5", {n: md5_of(b) for n, b in files.items()})
    with pytest.raises(DataError) as info:
        data.load_mnist(data_dir=cache, download=False)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert fragment in str(info.value)


def test_read_idx_plain_and_gzip(tmp_path: Path) -> None:
    A = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(idx_bytes(A))
    (tmp_path / "a").write_bytes(gzip.decompress(idx_bytes(A)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a.gz", 3), A)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "a", 3), A)
    with pytest.raises(DataError, match="2 dimensions"):
        data.read_idx(tmp_path / "a", 2)


def write_mnist_all(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    arrays = {f"train{d}": rng.integers(0, 256, (2, 784), dtype=np.uint8) for d in range(10)}
    arrays |= {f"test{d}": rng.integers(0, 256, (1, 784), dtype=np.uint8) for d in range(10)}
    scipy.io.savemat(path, arrays)
    return arrays


def test_mnist_all_mat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_mnist_all(tmp_path / "mnist_all.mat")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    for ds in (
        data.load_mnist(path=tmp_path / "mnist_all.mat"),
        data.load_mnist(data_dir=tmp_path),
    ):  # found in the data directory
        assert ds.X_train.shape == (20, 784) and ds.X_test.shape == (10, 784)
        np.testing.assert_array_equal(ds.y_train, np.repeat(np.arange(10), 2))
        np.testing.assert_array_equal(ds.y_test, np.arange(10))
        np.testing.assert_array_equal(ds.X_train[2:4], arrays["train1"] / 255.0)
        np.testing.assert_array_equal(ds.X_test[9], arrays["test9"][0] / 255.0)


def test_mnist_all_mat_missing_variable(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "bad.mat", {"train0": np.zeros((1, 784), np.uint8)})
    with pytest.raises(DataError, match="'train1' not found"):
        data.load_mnist(path=tmp_path / "bad.mat")


# --------------------------------------------------------------------------------------------
# CURVES
# --------------------------------------------------------------------------------------------


def test_spline_matches_scipy_natural_cubic_spline() -> None:
    """Dense oracle: scipy's natural CubicSpline on the same chord-length knots."""
    P = data._draw_control_points(6, np.random.default_rng(5), data.curves_style(2))
    S = data.natural_spline_3pts(P, 17)
    for k in range(len(P)):
        h = np.linalg.norm(np.diff(P[k], axis=0), axis=1)
        t = np.concatenate([np.linspace(0, h[0], 17), np.linspace(h[0], h.sum(), 17)])
        oracle = CubicSpline([0.0, h[0], h.sum()], P[k], bc_type="natural")(t)
        np.testing.assert_allclose(S[k], oracle, rtol=0, atol=1e-10)
    np.testing.assert_allclose(S[:, [0, 16, 33]], P, atol=1e-12)  # passes through P₀, P₁, P₂


@pytest.mark.parametrize("version", sorted(data.CURVES_STYLES))
def test_control_points_constraints(version: int) -> None:
    style = data.curves_style(version)
    P = data._draw_control_points(2000, np.random.default_rng(6), style)
    assert P.min() >= style.margin and P.max() <= 27 - style.margin
    D = np.diff(P, axis=1)
    gaps = np.linalg.norm(D, axis=2)
    assert gaps.min() >= style.min_separation
    cos = (D[:, 0] * D[:, 1]).sum(axis=1) / gaps.prod(axis=1)
    assert cos.min() >= style.max_turn_cos


def _straight_line() -> np.ndarray:
    x = np.arange(-50, 321) / 10.0  # samples every 0.1 px, hitting every pixel centre
    return np.stack([x, np.full(x.size, 14.0)], axis=1)[None]


def test_render_profile_of_a_straight_line_v1() -> None:
    """Version 1: a horizontal line along row 14 has intensity (1 − d²/R²)³ of the row distance."""
    img = data.render_curves(_straight_line(), version=1).reshape(28, 28)
    R = 2.5
    for d in range(5):
        expected = max(0.0, 1 - d**2 / R**2) ** 3
        np.testing.assert_allclose(img[14 + d], expected, atol=1e-6)
        np.testing.assert_allclose(img[14 - d], expected, atol=1e-6)
    assert img[17:].max() == 0.0 and img[:12].max() == 0.0


def test_render_profile_of_a_straight_line_v2() -> None:
    """Version 2: peak · exp(−d²/(2w²)) with peak 0.795 and w = 0.84 px, written out here."""
    img = data.render_curves(_straight_line(), version=2).reshape(28, 28)
    for d in range(6):
        expected = 0.795 * np.exp(-(d**2) / (2 * 0.84**2))
        np.testing.assert_allclose(img[14 + d], expected, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(img[14 - d], expected, rtol=1e-5, atol=1e-9)


def test_unknown_version_and_profile() -> None:
    with pytest.raises(ConfigError, match="unknown CURVES generator version 9"):
        data.make_curves(2, np.random.default_rng(0), version=9)
    bad = data.CurvesStyle(2.0, 5.0, -0.5, "box", 1.0, 1.0)
    with pytest.raises(ConfigError, match="profile 'box'"):
        data.stroke_profile(np.zeros(3, np.float32), bad)


@pytest.mark.parametrize("version", sorted(data.CURVES_STYLES))
def test_make_curves_shape_range_determinism(version: int) -> None:
    peak = data.curves_style(version).peak
    A = data.make_curves(40, np.random.default_rng(1), version)
    B = data.make_curves(40, np.random.default_rng(1), version)
    C = data.make_curves(40, np.random.default_rng(2), version)
    assert A.shape == (40, 784) and A.dtype == np.float64
    np.testing.assert_array_equal(A, B)
    assert np.abs(A - C).max() > 0.5 * peak
    assert A.min() >= 0.0 and A.max() <= peak + 1e-6
    assert A.max(axis=1).min() > 0.85 * peak  # every curve has a core at (nearly) full intensity
    ink = (A > 0.05).sum(axis=1)
    assert ink.min() >= 20 and ink.max() <= 400  # a stroke, not a blob or an empty image
    assert data.make_curves(0, np.random.default_rng(0), version).shape == (0, 784)


def test_curves_statistics_against_hand_computed_values() -> None:
    """Two 2-pixel cases: the three statistics written out with math.log."""
    import math

    X = np.array([[0.0, 0.5], [1.0, 0.25]])
    m = [0.5, 0.375]
    h = lambda p: 0.0 if p in (0.0, 1.0) else -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    ce = lambda x, q: -(x * math.log(q) + (1 - x) * math.log(1 - q))  # noqa: E731
    stats = data.curves_statistics(X)
    assert stats["mean_image_squared_error"] == pytest.approx(
        (0.25 + 0.125**2 + 0.25 + 0.125**2) / 2
    )
    assert stats["mean_image_cross_entropy"] == pytest.approx(
        (ce(0, m[0]) + ce(0.5, m[1]) + ce(1, m[0]) + ce(0.25, m[1])) / 2
    )
    assert stats["bernoulli_entropy"] == pytest.approx((h(0.5) + h(0.25)) / 2)


def test_stand_in_matches_the_original_within_5_percent() -> None:
    """Version 2 against the three known statistics of digs3pts_1.mat (issue: within 5 %);
    version 1 was far off (kept as a check that the test can fail)."""
    X = data.make_curves(5000, np.random.default_rng(11))
    for key, target in data.CURVES_ORIGINAL_STATISTICS.items():
        assert data.curves_statistics(X)[key] == pytest.approx(target, rel=0.05), key
    v1 = data.curves_statistics(data.make_curves(2000, np.random.default_rng(11), version=1))
    assert (
        v1["mean_image_squared_error"]
        > 1.5 * data.CURVES_ORIGINAL_STATISTICS["mean_image_squared_error"]
    )


def test_version_1_still_reproduces_the_fidelity_fixture() -> None:
    """The frozen fixture holds the first 2000 training images of v1, seed 0 (20,000 drawn)."""
    fixture = Path(__file__).parent / "data" / "fidelity_curves2000" / "data.npz"
    ss_train, _ = np.random.SeedSequence(0).spawn(2)
    X = data.make_curves(20000, np.random.default_rng(ss_train), version=1)[:2000].astype(
        np.float32
    )
    with np.load(fixture) as z:
        np.testing.assert_allclose(X, z["X_train"], rtol=0, atol=2e-7)  # float32 rounding only


def test_load_curves_builds_then_uses_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = data.load_curves(data_dir=tmp_path, seed=3, n_train=30, n_test=12)
    assert ds.name == "curves" and ds.y_train is None
    assert ds.X_train.shape == (30, 784) and ds.X_test.shape == (12, 784)
    assert ds.X_train.dtype == np.float64
    assert (
        ds.origin == "stand-in" and ds.label == "CURVES stand-in (generated, v2), 30 training cases"
    )
    cache = tmp_path / f"curves_v{data.CURVES_VERSION}_seed3_train30_test12.npz"
    assert cache.is_file()
    assert not list(tmp_path.glob("*.part"))

    def fail(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("regenerated instead of loading the cache")

    monkeypatch.setattr(data.curves, "make_curves", fail)
    again = data.load_curves(data_dir=tmp_path, seed=3, n_train=30, n_test=12)
    np.testing.assert_array_equal(again.X_train, ds.X_train)
    np.testing.assert_array_equal(again.X_test, ds.X_test)
    assert again.source == str(cache) and again.label == ds.label and again.origin == "stand-in"
    with pytest.raises(AssertionError, match="regenerated"):
        data.load_curves(data_dir=tmp_path, seed=4, n_train=30, n_test=12)  # a new key
    with pytest.raises(AssertionError, match="regenerated"):
        data.load_curves(
            data_dir=tmp_path, seed=3, n_train=30, n_test=12, version=1
        )  # another version


def test_load_curves_seeds_and_independent_test_set(tmp_path: Path) -> None:
    a = data.load_curves(data_dir=tmp_path, seed=0, n_train=10, n_test=5)
    b = data.load_curves(data_dir=tmp_path, seed=1, n_train=10, n_test=5)
    c = data.load_curves(data_dir=tmp_path, seed=0, n_train=20, n_test=5)
    assert not np.array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.X_test, c.X_test)  # test set does not depend on n_train


def test_corrupt_curves_cache_is_rebuilt(tmp_path: Path) -> None:
    ds = data.load_curves(data_dir=tmp_path, seed=0, n_train=4, n_test=2)
    cache = tmp_path / f"curves_v{data.CURVES_VERSION}_seed0_train4_test2.npz"
    cache.write_bytes(b"garbage")
    again = data.load_curves(data_dir=tmp_path, seed=0, n_train=4, n_test=2)
    np.testing.assert_array_equal(again.X_train, ds.X_train)
    assert cache.stat().st_size > 100


def test_digs3pts_mat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    bdata, bdatatest = rng.random((6, 784)), rng.random((3, 784))
    scipy.io.savemat(tmp_path / "digs3pts_1.mat", {"bdata": bdata, "bdatatest": bdatatest})
    monkeypatch.setattr(data.curves, "make_curves", no_network)  # must not generate
    for ds in (
        data.load_curves(path=tmp_path / "digs3pts_1.mat"),
        data.load_curves(data_dir=tmp_path),
    ):
        np.testing.assert_array_equal(ds.X_train, bdata)
        np.testing.assert_array_equal(ds.X_test, bdatatest)
        assert ds.source.endswith("digs3pts_1.mat")
        assert (
            ds.origin == "original"
            and ds.label == "CURVES (original digs3pts_1.mat), 6 training cases"
        )


def test_digs3pts_wrong_shape(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "c.mat", {"bdata": np.zeros((784, 5)), "bdatatest": np.zeros(3)})
    with pytest.raises(DataError, match=r"'bdata' has shape \(784, 5\)"):
        data.load_curves(path=tmp_path / "c.mat")


def test_digs3pts_values_outside_unit_interval(tmp_path: Path) -> None:
    scipy.io.savemat(
        tmp_path / "c.mat", {"bdata": np.full((2, 784), 255.0), "bdatatest": np.zeros((1, 784))}
    )
    with pytest.raises(DataError, match=r"'bdata' has values outside \[0, 1\]"):
        data.load_curves(path=tmp_path / "c.mat")


def _mat_bytes(tmp_path: Path, name: str, **arrays: np.ndarray) -> bytes:
    scipy.io.savemat(tmp_path / name, arrays)
    blob = (tmp_path / name).read_bytes()
    (tmp_path / name).unlink()
    return blob


@pytest.fixture
def small_curves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A small digs3pts_1.mat (the strict shapes patched to 6 + 3 cases) and its arrays."""
    rng = np.random.default_rng(8)
    bdata, bdatatest = rng.random((6, 784)), rng.random((3, 784))
    monkeypatch.setattr(
        data.curves, "CURVES_MAT_SHAPES", {"bdata": (6, 784), "bdatatest": (3, 784)}
    )
    monkeypatch.setattr(data.download, "_FAILED_DOWNLOADS", set())
    return _mat_bytes(tmp_path, "src.mat", bdata=bdata, bdatatest=bdatatest), bdata, bdatatest


def test_curves_download_validates_records_md5_and_reuses(
    server: LocalServer,
    small_curves: tuple[bytes, np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blob, bdata, bdatatest = small_curves
    server.server.files["digs3pts_1.mat"] = blob
    cache = tmp_path / "cache"
    ds = data.load_curves(data_dir=cache, download=True, url=server.good + "digs3pts_1.mat")
    np.testing.assert_array_equal(ds.X_train, bdata)
    np.testing.assert_array_equal(ds.X_test, bdatatest)
    assert ds.origin == "original"
    record = (cache / "digs3pts_1.mat.md5").read_text().split()
    assert record[0] == md5_of(blob) and record[1] == "digs3pts_1.mat"
    assert md5_of(blob) in capsys.readouterr().out  # printed on first download
    assert not list(cache.glob("*.part"))
    # the kept copy is used from now on
    monkeypatch.setattr(data.download, "_http_fetch", no_network)
    again = data.load_curves(data_dir=cache, download=True, url=server.good + "digs3pts_1.mat")
    np.testing.assert_array_equal(again.X_train, bdata)


def test_damaged_curves_download_is_fetched_again(
    server: LocalServer, small_curves: tuple[bytes, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    blob, bdata, _ = small_curves
    server.server.files["digs3pts_1.mat"] = blob
    cache = tmp_path / "cache"
    url = server.good + "digs3pts_1.mat"
    data.load_curves(data_dir=cache, download=True, url=url)
    damaged = bytearray(blob)
    damaged[-10] ^= 0xFF
    (cache / "digs3pts_1.mat").write_bytes(bytes(damaged))
    ds = data.load_curves(data_dir=cache, download=True, url=url)
    np.testing.assert_array_equal(ds.X_train, bdata)
    assert (cache / "digs3pts_1.mat").read_bytes() == blob
    assert [e[0] for e in server.log].count("/good/digs3pts_1.mat") == 2


def test_curves_download_resumes_a_partial_file(
    server: LocalServer, small_curves: tuple[bytes, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    blob, bdata, _ = small_curves
    server.server.files["digs3pts_1.mat"] = blob
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "digs3pts_1.mat.part").write_bytes(blob[:1000])
    ds = data.load_curves(data_dir=cache, download=True, url=server.good + "digs3pts_1.mat")
    np.testing.assert_array_equal(ds.X_train, bdata)
    assert server.log[-1][1] == "bytes=1000-" and server.log[-1][2] == 206


def test_wrong_curves_download_is_refused_and_the_stand_in_used(
    server: LocalServer,
    small_curves: tuple[bytes, np.ndarray, np.ndarray],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.server.files["digs3pts_1.mat"] = b"<html>captive portal</html>"
    cache = tmp_path / "cache"
    with caplog.at_level("WARNING", logger="kfac_ref.experiments.data"):
        ds = data.load_curves(
            data_dir=cache, n_train=5, n_test=2, download=True, url=server.good + "digs3pts_1.mat"
        )
    assert ds.origin == "stand-in" and ds.X_train.shape == (5, 784)
    assert "could not download the original CURVES" in caplog.text and "stand-in" in caplog.text
    assert not (cache / "digs3pts_1.mat").exists() and not list(cache.glob("*.part"))


def test_offline_curves_never_touch_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data.download, "_http_fetch", no_network)
    monkeypatch.setenv(data.OFFLINE_ENV_VAR, "1")
    assert data.load_curves(data_dir=tmp_path, n_train=3, n_test=1).origin == "stand-in"
    monkeypatch.delenv(data.OFFLINE_ENV_VAR)
    assert (
        data.load_curves(data_dir=tmp_path, n_train=3, n_test=1, download=False).origin
        == "stand-in"
    )
    with pytest.raises(AssertionError, match="network"):
        data.load_curves(data_dir=tmp_path, n_train=3, n_test=1, download=True)


# --------------------------------------------------------------------------------------------
# FACES
# --------------------------------------------------------------------------------------------


def test_faces_split_of_the_authors_file() -> None:
    train, test = data.faces_split(165600)
    assert (train.start, train.stop) == (0, 103500)
    assert (test.start, test.stop) == (124200, 165600)


def test_load_faces_variable_orientation_and_split(tmp_path: Path) -> None:
    n = 80  # 40 · 2: train = first 50 cases, test = last 20
    A = np.tile(np.arange(n, dtype=np.float32), (625, 1))  # column j is case j, filled with j
    A[1] += 0.5  # pixel 1 differs from pixel 0
    scipy.io.savemat(tmp_path / "newfaces_rot_single.mat", {"newfaces_single": A})
    for ds in (
        data.load_faces(path=tmp_path / "newfaces_rot_single.mat"),
        data.load_faces(data_dir=tmp_path),
    ):
        assert ds.name == "faces" and ds.X_train.dtype == np.float64
        assert ds.X_train.shape == (50, 625) and ds.X_test.shape == (20, 625)
        np.testing.assert_array_equal(ds.X_train[:, 0], np.arange(50))
        np.testing.assert_array_equal(ds.X_test[:, 0], np.arange(60, 80))
        np.testing.assert_array_equal(ds.X_train[:, 1], np.arange(50) + 0.5)
        assert ds.y_train is None and ds.y_test is None


def test_faces_wrong_variable(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "f.mat", {"faces": np.zeros((625, 40))})
    with pytest.raises(DataError, match=r"'newfaces_single' not found.*\['faces'\]"):
        data.load_faces(path=tmp_path / "f.mat")


def test_missing_faces_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        data.load_faces(data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    for fragment in (
        "newfaces_rot_single.mat",
        "25×25",
        "165600",
        "jmartens",
        "downloads are off",
        str(tmp_path / "nowhere"),
    ):
        assert fragment in message


def test_faces_download_validates_by_shape(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data.faces, "FACES_CASES", 80)
    monkeypatch.setattr(data.download, "_FAILED_DOWNLOADS", set())
    # after a failed download the loader turns to the Olivetti faces: keep that off the network
    monkeypatch.setattr(data.olivetti, "OLIVETTI_URL", server.missing + "olivettifaces.mat")
    A = np.tile(np.arange(80, dtype=np.float32), (625, 1))
    server.server.files["newfaces_rot_single.mat"] = _mat_bytes(
        tmp_path, "f.mat", newfaces_single=A
    )
    server.server.files["wrong.mat"] = _mat_bytes(tmp_path, "w.mat", newfaces_single=A[:, :40])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"shape \(625, 40\); expected \(625, 80\)"):
        data.load_faces(data_dir=cache, download=True, url=server.good + "wrong.mat")
    assert not list(cache.glob("newfaces*"))
    ds = data.load_faces(data_dir=cache, download=True, url=server.good + "newfaces_rot_single.mat")
    assert ds.X_train.shape == (50, 625) and ds.origin == "original"
    assert (cache / "newfaces_rot_single.mat.md5").is_file()
    with pytest.raises(DataError, match="the download from .* failed"):
        data.load_faces(data_dir=tmp_path / "other", download=True, url=server.missing + "x.mat")


# --------------------------------------------------------------------------------------------
# Dispatch and downscaling
# --------------------------------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path: Path) -> None:
    ds = data.load_dataset("CURVES", data_dir=tmp_path, n_train=3, n_test=2)
    assert ds.name == "curves" and ds.X_train.shape == (3, 784)
    with pytest.raises(ConfigError) as info:
        data.load_dataset("cifar10")
    for choice in ("mnist", "curves", "faces", "cifar10"):
        assert choice in str(info.value)


def test_dataset_is_frozen() -> None:
    ds = data.Dataset("x", np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(AttributeError):
        ds.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize(("side_in", "side_out"), [(28, 16), (28, 14), (28, 28), (25, 7)])
def test_downscale_shape_constant_and_mean(side_in: int, side_out: int) -> None:
    rng = np.random.default_rng(8)
    X = rng.random((5, side_in * side_in))
    Y = data.downscale_images(X, side_in, side_out)
    assert Y.shape == (5, side_out * side_out)
    np.testing.assert_allclose(Y.mean(axis=1), X.mean(axis=1), rtol=1e-12)
    const = np.full((2, side_in * side_in), 0.37)
    np.testing.assert_allclose(data.downscale_images(const, side_in, side_out), 0.37, rtol=1e-12)


def test_downscale_is_block_mean_for_integer_factors() -> None:
    X = np.random.default_rng(9).random((3, 784))
    blocks = X.reshape(3, 14, 2, 14, 2).mean(axis=(2, 4)).reshape(3, 196)
    np.testing.assert_allclose(data.downscale_images(X, 28, 14), blocks, rtol=1e-12)
    np.testing.assert_allclose(data.downscale_images(X, 28, 28), X, rtol=1e-12)


def test_downscale_28_to_16_weights() -> None:
    """Along one axis, output pixel 0 covers input [0, 1.75): weights 1/1.75 and 0.75/1.75."""
    A = data._area_matrix(28, 16)
    np.testing.assert_allclose(A[0, :3], [1 / 1.75, 0.75 / 1.75, 0.0])
    np.testing.assert_allclose(A.sum(axis=1), 1.0)
    with pytest.raises(ConfigError):
        data.downscale_images(np.zeros((1, 784)), 28, 29)


def test_corrupt_cached_file_is_replaced_or_reported(
    server: LocalServer, tiny_mnist: TinyMnist, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, blob in tiny_mnist.files.items():
        (cache / name).write_bytes(blob)
    name = "t10k-labels-idx1-ubyte.gz"
    (cache / name).write_bytes(b"bit rot")
    with pytest.raises(DataError, match="corrupt"):
        data.load_mnist(data_dir=cache, download=False)
    ds = data.load_mnist(data_dir=cache, mirrors=[server.good])
    assert_is_tiny_mnist(ds, tiny_mnist)
    assert [e[0] for e in server.log] == [f"/good/{name}"]  # only the corrupt file is fetched
    assert (cache / name).read_bytes() == tiny_mnist.files[name]
