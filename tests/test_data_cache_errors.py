"""Damaged data caches: a damaged CURVES cache or MNIST file is reported (what is wrong with
it) and rebuilt or downloaded again, and the data come back identical to a fresh build.

Table-driven: each row damages the cache one way and names a fragment of the warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_mnist_data import TRAIN_IMAGES, files, flip_bit, mirror, pixels, truncate  # noqa: F401 (fixtures)

from kfac_ref.errors import DataError
from kfac_ref.experiments import data


def _empty(blob: bytes) -> bytes:
    return b""


def _shapes(path: Path) -> None:
    data._save_npz_atomic(
        path, X_train=np.zeros((3, 784), np.float32), X_test=np.zeros((10, 784), np.float32)
    )


def _out_of_range(path: Path) -> None:
    d = data.build_curves(0, 30, 10)
    data._save_npz_atomic(
        path, X_train=2 + d.X_train.astype(np.float32), X_test=d.X_test.astype(np.float32)
    )


CACHE_CASES = [
    ("bit-flipped", lambda p: p.write_bytes(flip_bit(p.read_bytes())), "Bad CRC-32"),
    ("empty", lambda p: p.write_bytes(b""), "EOFError"),
    ("truncated", lambda p: p.write_bytes(truncate(p.read_bytes())), "unreadable"),
    ("wrong shapes", _shapes, "shapes (3, 784)"),
    ("pixels outside [0, 1]", _out_of_range, "outside [0, 1]"),
]


@pytest.mark.parametrize(
    ("damage", "fragment"), [c[1:] for c in CACHE_CASES], ids=[c[0] for c in CACHE_CASES]
)
def test_damaged_curves_cache_is_reported_and_rebuilt_identically(
    tmp_path, caplog, damage, fragment
):
    fresh = data.load_curves(tmp_path, n_train=30, n_test=10)
    cache = data._curves_cache_path(tmp_path, 0, 30, 10)
    damage(cache)
    with caplog.at_level(logging.WARNING, logger="kfac_ref.experiments.data"):
        again = data.load_curves(tmp_path, n_train=30, n_test=10)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "is damaged" in message and fragment in message and "rebuilding" in message
    np.testing.assert_array_equal(again.X_train, fresh.X_train)
    np.testing.assert_array_equal(again.X_test, fresh.X_test)
    np.testing.assert_array_equal(
        data.load_curves(tmp_path, n_train=30, n_test=10).X_train, fresh.X_train
    )


@pytest.mark.parametrize("damage", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_damaged_mnist_file_is_reported_and_downloaded_again(
    damage,
    files,  # noqa: F811 (the fixture imported above)
    mirror,  # noqa: F811
    tmp_path,
    caplog,
):
    url, requests = mirror
    d = files.write(tmp_path / "d")
    (d / TRAIN_IMAGES).write_bytes(damage(files.gz[TRAIN_IMAGES]))
    with caplog.at_level(logging.WARNING, logger="kfac_ref.experiments.data"):
        ds = data.load_mnist(data_dir=d, mirrors=[url])
    assert requests == [TRAIN_IMAGES] and any("damaged" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(ds.X_train, pixels(files.arrays[TRAIN_IMAGES]))
    (d / TRAIN_IMAGES).write_bytes(damage(files.gz[TRAIN_IMAGES]))
    with pytest.raises(DataError, match="is damaged"):
        data.load_mnist(data_dir=d, download=False)


def test_curves_stand_in_in_a_read_only_or_full_directory_is_generated_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    """Where the stand-in cannot be cached, the data still come (in memory), with one warning
    said before the work (read-only) or after it (a full disk), and nothing is left behind."""
    monkeypatch.setenv("KFAC_REF_OFFLINE", "1")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING):
            ds = data.load_curves(data_dir=read_only, n_train=8, n_test=4)
        assert ds.X_train.shape == (8, 784) and list(read_only.iterdir()) == []
        assert "cannot be cached" in caplog.text and "read-only" in caplog.text
    finally:
        read_only.chmod(0o755)
    caplog.clear()

    def disk_full(path, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.curves, "_save_npz_atomic", disk_full)
    with caplog.at_level(logging.WARNING):
        again = data.load_curves(data_dir=tmp_path / "full", n_train=8, n_test=4)
    np.testing.assert_array_equal(again.X_train, ds.X_train)
    assert "could not cache the CURVES stand-in" in caplog.text and "No space left" in caplog.text
