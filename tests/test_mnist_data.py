"""Tests of the MNIST sources of ``kfac_ref.experiments.data.load_mnist``: the four original files,
re-gzipped copies, the test split alone, damaged cache files, and (when present) the real test
split in ``../shared/data/mnist-t10k``.

No internet: IDX files are built here (tiny random images), downloads come from a local
``http.server`` thread on 127.0.0.1, and ``urllib.request.urlopen`` is replaced by a function that
fails the test where no download may happen.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import struct
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.errors import DataError
from kfac_ref.experiments import data

SHARED_T10K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist-t10k"
TRAIN_IMAGES, TRAIN_LABELS = data.MNIST_TRAIN_FILES
TEST_IMAGES, TEST_LABELS = data.MNIST_TEST_FILES


def idx_payload(array: np.ndarray) -> bytes:
    """Uncompressed IDX ubyte bytes: 0x0000, type 0x08, ndim, big-endian int32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


@dataclass
class Files:
    """Five training and four test images (28×28) with labels, as IDX payloads and .gz files."""

    arrays: dict[str, np.ndarray]
    payloads: dict[str, bytes]
    gz: dict[str, bytes]

    def write(self, directory: Path, names: tuple[str, ...] | None = None) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        for name in names or tuple(self.gz):
            (directory / name).write_bytes(self.gz[name])
        return directory


@pytest.fixture
def files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Files:
    """Tiny MNIST files whose checksums replace both of the module's tables."""
    rng = np.random.default_rng(1)
    arrays = {
        TRAIN_IMAGES: rng.integers(0, 256, size=(5, 28, 28)),
        TRAIN_LABELS: rng.integers(0, 10, size=5),
        TEST_IMAGES: rng.integers(0, 256, size=(4, 28, 28)),
        TEST_LABELS: rng.integers(0, 10, size=4),
    }
    payloads = {name: idx_payload(a) for name, a in arrays.items()}
    gz = {name: gzip.compress(p, mtime=0) for name, p in payloads.items()}
    monkeypatch.setattr(data.mnist, "MNIST_MD5", {n: md5(b) for n, b in gz.items()})
    monkeypatch.setattr(data.mnist, "MNIST_RAW_MD5", {n: md5(p) for n, p in payloads.items()})
    monkeypatch.setenv(data.DATA_DIR_ENV_VAR, str(tmp_path / "default_cache"))
    monkeypatch.delenv(data.MIRRORS_ENV_VAR, raising=False)
    return Files(arrays, payloads, gz)


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", fail)


def pixels(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1) / 255.0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        name = self.path.rsplit("/", 1)[-1]
        blob = self.server.blobs.get(name)  # type: ignore[attr-defined]
        self.server.requests.append(name)  # type: ignore[attr-defined]
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
def mirror(files: Files) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP mirror of the tiny files: (base URL, list of requested file names)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.blobs, srv.requests = dict(files.gz), []  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = srv.server_address[:2]
        yield f"http://{host}:{port}/", srv.requests  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------- the three sources
def test_four_original_files_give_origin_original(
    files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_network(monkeypatch)
    ds = data.load_mnist(data_dir=files.write(tmp_path / "d"))
    assert ds.origin == "original" and ds.label == "MNIST (original), 5 training cases"
    np.testing.assert_array_equal(ds.X_train, pixels(files.arrays[TRAIN_IMAGES]))
    np.testing.assert_array_equal(ds.X_test, pixels(files.arrays[TEST_IMAGES]))
    np.testing.assert_array_equal(ds.y_test, files.arrays[TEST_LABELS])


def test_regzipped_copies_are_accepted_by_their_decompressed_checksum(
    files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another gzip header (file name, time stamp) changes the compressed MD5, not the payload."""
    forbid_network(monkeypatch)
    d = tmp_path / "d"
    d.mkdir()
    for name, payload in files.payloads.items():
        blob = gzip.compress(payload, mtime=1600000000, compresslevel=1)
        assert md5(blob) != data.mnist.MNIST_MD5[name]
        (d / name).write_bytes(blob)
    ds = data.load_mnist(data_dir=d, download=False)
    assert ds.origin == "original"
    np.testing.assert_array_equal(ds.y_train, files.arrays[TRAIN_LABELS])


def test_test_split_alone_is_a_subset_without_download(
    files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_network(monkeypatch)
    d = files.write(tmp_path / "d", (TEST_IMAGES, TEST_LABELS))
    ds = data.load_mnist(data_dir=d)  # download=True by default: still no download
    assert ds.origin == "subset" and ds.label == "MNIST test split only, 4 cases"
    np.testing.assert_array_equal(ds.X_train, pixels(files.arrays[TEST_IMAGES]))
    np.testing.assert_array_equal(ds.y_train, files.arrays[TEST_LABELS])
    assert ds.X_test.shape == (0, 784) and ds.y_test.shape == (0,)
    assert ds.y_test.dtype == np.int64 and ds.X_test.dtype == np.float64


def test_require_full_downloads_the_training_files(
    files: Files, mirror: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, requests = mirror
    d = files.write(tmp_path / "d", (TEST_IMAGES, TEST_LABELS))
    ds = data.load_mnist(data_dir=d, mirrors=[url], require_full=True)
    assert ds.origin == "original" and sorted(requests) == sorted([TRAIN_IMAGES, TRAIN_LABELS])
    np.testing.assert_array_equal(ds.X_train, pixels(files.arrays[TRAIN_IMAGES]))


def test_nothing_on_disk_without_download_is_an_error(files: Files, tmp_path: Path) -> None:
    assert data.find_mnist_files(tmp_path / "empty") == []
    with pytest.raises(DataError, match="not found"):
        data.load_mnist(data_dir=tmp_path / "empty", download=False)


def test_offline_switch_stops_mnist_downloads(
    files: Files, mirror: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$KFAC_REF_OFFLINE=1: no download from the built-in or configured mirrors, not even of a
    damaged file; download=True (or mirrors passed by the caller) still downloads."""
    url, requests = mirror
    monkeypatch.setenv(data.OFFLINE_ENV_VAR, "1")
    monkeypatch.setenv(data.MIRRORS_ENV_VAR, url)
    d = files.write(tmp_path / "d", (TEST_IMAGES, TEST_LABELS))
    with pytest.raises(DataError, match=r"not found.*\$KFAC_REF_OFFLINE is set"):
        data.load_mnist(data_dir=d, require_full=True)
    damaged = files.write(tmp_path / "damaged")
    (damaged / TRAIN_IMAGES).write_bytes(truncate(files.gz[TRAIN_IMAGES]))
    with pytest.raises(DataError, match="is damaged"):
        data.load_mnist(data_dir=damaged)
    assert requests == []
    ds = data.load_mnist(data_dir=d, require_full=True, download=True)
    assert ds.origin == "original" and sorted(requests) == sorted([TRAIN_IMAGES, TRAIN_LABELS])
    monkeypatch.delenv(data.OFFLINE_ENV_VAR)
    data.load_mnist(data_dir=damaged)  # downloads allowed again: the damaged file is replaced
    assert requests[-1] == TRAIN_IMAGES


def test_find_mnist_files_lists_what_is_there(files: Files, tmp_path: Path) -> None:
    d = files.write(tmp_path / "d", (TEST_LABELS,))
    assert data.find_mnist_files(d) == [d / TEST_LABELS]


# ------------------------------------------------------------------------------ damaged files
def flip_bit(blob: bytes) -> bytes:
    """One bit flipped in the middle of the deflate stream (zlib.error or a CRC error)."""
    b = bytearray(blob)
    b[len(b) // 2] ^= 0x10
    return bytes(b)


def truncate(blob: bytes) -> bytes:
    """The last third cut off (EOFError: the stream ends early)."""
    return blob[: 2 * len(blob) // 3]


@pytest.mark.parametrize("damage", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_damaged_cached_file_is_reported_and_downloaded_again(
    damage,
    files: Files,
    mirror: tuple[str, list[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, requests = mirror
    d = files.write(tmp_path / "d")
    (d / TRAIN_IMAGES).write_bytes(damage(files.gz[TRAIN_IMAGES]))
    with caplog.at_level(logging.WARNING, logger="kfac_ref.experiments.data"):
        ds = data.load_mnist(data_dir=d, mirrors=[url])
    assert requests == [TRAIN_IMAGES]
    assert any(
        TRAIN_IMAGES in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records
    )
    assert (d / TRAIN_IMAGES).read_bytes() == files.gz[TRAIN_IMAGES]
    np.testing.assert_array_equal(ds.X_train, pixels(files.arrays[TRAIN_IMAGES]))


@pytest.mark.parametrize("damage", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_damaged_file_without_download_names_it(
    damage, files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_network(monkeypatch)
    d = files.write(tmp_path / "d")
    (d / TRAIN_LABELS).write_bytes(damage(files.gz[TRAIN_LABELS]))
    with pytest.raises(DataError, match="is damaged") as info:
        data.load_mnist(data_dir=d, download=False)
    assert str(d / TRAIN_LABELS) in str(info.value)


@pytest.mark.parametrize("damage", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_damaged_test_split_file_is_a_clear_error(
    damage, files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_network(monkeypatch)
    d = files.write(tmp_path / "d", (TEST_IMAGES, TEST_LABELS))
    (d / TEST_IMAGES).write_bytes(damage(files.gz[TEST_IMAGES]))
    with pytest.raises(DataError) as info:
        data.load_mnist(data_dir=d)
    message = str(info.value)
    assert str(d / TEST_IMAGES) in message and "damaged" in message
    assert TEST_LABELS not in message


def test_read_idx_reports_corrupt_gzip(tmp_path: Path, files: Files) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(truncate(files.gz[TEST_IMAGES]))
    with pytest.raises(DataError, match="corrupt gzip stream"):
        data.read_idx(path, 3)


# --------------------------------------------------------------------- the real test split
@pytest.mark.skipif(
    not (SHARED_T10K / TEST_IMAGES).is_file(),
    reason="../shared/data/mnist-t10k (the real MNIST test split) is not on this machine",
)
def test_real_test_split_from_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-gzipped real files: accepted by their decompressed MD5s, 10,000 cases."""
    forbid_network(monkeypatch)
    ds = data.load_mnist(data_dir=SHARED_T10K.resolve())
    assert ds.origin == "subset" and ds.label == "MNIST test split only, 10,000 cases"
    assert ds.X_train.shape == (10000, 784) and ds.X_test.shape == (0, 784)
    # published facts of the MNIST test set: first three labels 7, 2, 1; 1,135 ones, 892 fives
    assert ds.y_train[:3].tolist() == [7, 2, 1]
    assert np.bincount(ds.y_train).tolist()[1] == 1135 and np.bincount(ds.y_train)[5] == 892
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() == 1.0
