"""MNIST (§13): the four original IDX files (mirrors, MD5 checks, resumable downloads), the
authors' ``mnist_all.mat``, or the test split alone."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import DataError
from .dataset import Dataset
from .download import OFFLINE_ENV_VAR, _download_verified, _downloads_allowed
from .files import _as_float_rows, _loadmat, _mat_variable, _resolve_dir

log = logging.getLogger(__name__)

MIRRORS_ENV_VAR = "KFAC_REF_MNIST_MIRRORS"

#: The four original MNIST files and their published MD5 checksums.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

#: MD5 of each file's **decompressed** IDX bytes. A copy that was gzipped again (another gzip
#: header, so other compressed bytes around the same payload) is accepted when its payload has
#: this checksum; the t10k values are the ones the ``mnist-t10k`` data README gives.
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

#: Public copies of the IDX files, tried in order (base URLs; the file name is appended).
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://raw.githubusercontent.com/fgnt/mnist/master/",
    "http://yann.lecun.com/exdb/mnist/",
)

MNIST_MAT_NAME = "mnist_all.mat"
_IDX_UBYTE = 0x08
_MNIST_SIDE = 28


def _mnist_mirrors(mirrors: Sequence[str] | None) -> tuple[str, ...]:
    """Mirrors to try: the argument, else ``$KFAC_REF_MNIST_MIRRORS`` (comma-separated), else
    :data:`MNIST_MIRRORS`."""
    if mirrors is not None:
        return tuple(mirrors)
    env = os.environ.get(MIRRORS_ENV_VAR, "")
    from_env = tuple(m.strip() for m in env.split(",") if m.strip())
    return from_env or MNIST_MIRRORS


def _mnist_downloads_allowed(download: bool | None, mirrors: Sequence[str] | None) -> bool:
    """Whether :func:`load_mnist` may download: ``download`` if given; else yes when
    ``mirrors`` were passed (naming mirrors asks for them); else yes unless
    ``$KFAC_REF_OFFLINE`` is set (:func:`_downloads_allowed`), which also stops downloads from
    :data:`MNIST_MIRRORS` and from mirrors named in ``$KFAC_REF_MNIST_MIRRORS``."""
    if download is None and mirrors is not None:
        return True
    return _downloads_allowed(download)


class _DamagedFile(Exception):
    """A cached MNIST file that is not an intact copy; the message says what is wrong."""


def _gunzip(raw: bytes) -> bytes:
    """``raw`` decompressed when it starts with the gzip magic bytes, else ``raw`` itself.

    A corrupt or truncated stream (``zlib.error``, ``EOFError``, ``BadGzipFile``) raises
    :class:`_DamagedFile`.
    """
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise _DamagedFile(
            f"corrupt gzip stream (damaged or truncated; {type(exc).__name__}: {exc})"
        ) from exc


def _verified_idx_bytes(path: Path, name: str) -> bytes:
    """The decompressed IDX bytes of the cached MNIST file ``name`` at ``path``, checked.

    Intact means: the file's bytes have the published MD5 (:data:`MNIST_MD5`), or its
    decompressed bytes have :data:`MNIST_RAW_MD5` (a copy gzipped again). Anything else (a
    flipped bit, a truncated file, another file under the name) raises :class:`_DamagedFile`.
    """
    raw = path.read_bytes()
    packed = hashlib.md5(raw).hexdigest()
    if packed == MNIST_MD5[name]:
        return _gunzip(raw)
    payload = _gunzip(raw)
    unpacked = hashlib.md5(payload).hexdigest()
    if unpacked != MNIST_RAW_MD5.get(name):
        raise _DamagedFile(
            f"MD5 {packed} (decompressed {unpacked}); expected {MNIST_MD5[name]} "
            f"(decompressed {MNIST_RAW_MD5.get(name)})"
        )
    return payload


def _read_maybe_gzip(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    try:
        return _gunzip(path.read_bytes())
    except _DamagedFile as exc:
        raise DataError(f"{path}: {exc}.") from exc


def _parse_idx(raw: bytes, ndim: int, where: Path) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX ubyte file; errors name ``where``."""
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DataError(
            f"{where}: not an IDX ubyte file with {ndim} dimensions (magic number "
            f"{raw[:4].hex() or 'missing'}, expected 0000{_IDX_UBYTE:02x}{ndim:02x})."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{where}: IDX header truncated ({len(raw)} bytes).")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataError(
            f"{where}: IDX dims {dims} need {expected} data bytes, file has {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike[str], ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (MNIST format, optionally gzipped) into uint8.

    Header: two zero bytes, type code 0x08 (ubyte), the number of dimensions, then one big-endian
    int32 per dimension; then the data, row-major. Raises :class:`DataError` naming the file on
    a corrupt gzip stream, a wrong magic number, a wrong number of dimensions or a wrong data
    length.
    """
    path = Path(path)
    return _parse_idx(_read_maybe_gzip(path), ndim, path)


def _mnist_split(
    images: Path, labels: Path, payloads: dict[Path, bytes] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One MNIST split from its IDX files: ``X (n, 784)`` in [0, 1] float64, ``y (n,)`` int64.

    ``payloads`` maps a path to its already verified, decompressed bytes (else the file is read).
    """
    payloads = payloads or {}
    img = _parse_idx(payloads[images], 3, images) if images in payloads else read_idx(images, 3)
    lab = _parse_idx(payloads[labels], 1, labels) if labels in payloads else read_idx(labels, 1)
    if img.shape[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        raise DataError(f"{images}: images are {img.shape[1:]}, expected (28, 28).")
    if img.shape[0] != lab.shape[0]:
        raise DataError(
            f"{images} has {img.shape[0]} images but {labels} has {lab.shape[0]} labels."
        )
    if lab.size and lab.max() > 9:
        raise DataError(f"{labels}: label {int(lab.max())} outside 0..9.")
    X = img.reshape(img.shape[0], -1).astype(np.float64) / 255.0
    return X, lab.astype(np.int64)


def load_mnist_mat(path: str | os.PathLike[str]) -> Dataset:
    """MNIST from the authors' ``mnist_all.mat`` (§13): ``train0..train9``, ``test0..test9``.

    Each variable is a uint8 array with one 784-pixel case per row. Cases are concatenated in
    digit order (as the authors' ``KFAC_demo``/``nnet_demo`` do), labelled by the digit, and
    divided by 255.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    mat = _loadmat(path)
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        blocks = [
            _as_float_rows(_mat_variable(mat, f"{split}{d}", path), 784, path, f"{split}{d}")
            for d in range(10)
        ]
        y = np.concatenate([np.full(len(b), d, dtype=np.int64) for d, b in enumerate(blocks)])
        parts[split] = (np.concatenate(blocks) / 255.0, y)
    return Dataset(
        "mnist",
        parts["train"][0],
        parts["test"][0],
        parts["train"][1],
        parts["test"][1],
        source=str(path),
        origin="original",
        label=f"MNIST (original, {path.name}), {len(parts['train'][0]):,} training cases",
    )


def find_mnist_files(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The MNIST files present in the data directory (the four IDX files, ``mnist_all.mat``),
    intact or not; an empty list means no MNIST file is there at all."""
    directory = _resolve_dir(data_dir)
    return [directory / n for n in (*MNIST_MD5, MNIST_MAT_NAME) if (directory / n).is_file()]


def _mnist_original(
    directory: Path, download: bool, mirrors: Sequence[str], why_not: str = "download=False"
) -> Dataset:
    """The four IDX files: cached intact copies, else (``download``) fetched and verified.

    A damaged cached file (wrong checksum, corrupt or truncated gzip stream) is reported in the
    log and downloaded again; without ``download`` it is a :class:`DataError` naming it (and
    ``why_not``, the reason downloads are off).
    """
    payloads: dict[Path, bytes] = {}
    for name in MNIST_MD5:
        final = directory / name
        if final.is_file():
            try:
                payloads[final] = _verified_idx_bytes(final, name)
                continue
            except _DamagedFile as exc:
                if not download:
                    raise DataError(
                        f"MNIST file {final} is damaged: {exc}. Delete it and load with "
                        f"download=True to fetch it again, or replace it with an intact copy "
                        f"({why_not})."
                    ) from None
                log.warning("MNIST file %s is damaged (%s); downloading it again", final, exc)
        elif not download:
            raise DataError(
                f"MNIST file {name} not found; directory searched: {directory} "
                f"({why_not}). Mirrors that serve it: {list(mirrors)}."
            )
        fetched = _download_verified(name, MNIST_MD5[name], directory, mirrors)
        try:
            payloads[fetched] = _verified_idx_bytes(fetched, name)
        except _DamagedFile as exc:  # only if the checksum tables disagree with each other
            raise DataError(f"MNIST file {fetched}: downloaded copy unreadable: {exc}.") from None
    tr_img, tr_lab, te_img, te_lab = (directory / n for n in MNIST_MD5)
    X_train, y_train = _mnist_split(tr_img, tr_lab, payloads)
    X_test, y_test = _mnist_split(te_img, te_lab, payloads)
    return Dataset(
        "mnist",
        X_train,
        X_test,
        y_train,
        y_test,
        source=str(directory),
        origin="original",
        label=f"MNIST (original), {len(X_train):,} training cases",
    )


def _mnist_test_split_only(directory: Path) -> Dataset:
    """The two ``t10k-*`` files alone: their cases become the training set, the test set is empty.

    A damaged file is a :class:`DataError` naming it (nothing is downloaded here).
    """
    payloads: dict[Path, bytes] = {}
    for name in MNIST_TEST_FILES:
        path = directory / name
        try:
            payloads[path] = _verified_idx_bytes(path, name)
        except _DamagedFile as exc:
            raise DataError(
                f"MNIST test-split file {path} is damaged: {exc}. Replace it with an intact copy, "
                "or put all four original MNIST files in that directory (load_mnist(..., "
                "require_full=True) downloads them)."
            ) from None
    X, y = _mnist_split(directory / MNIST_TEST_FILES[0], directory / MNIST_TEST_FILES[1], payloads)
    log.info(
        "MNIST: only the test split is in %s; using its %d cases as the training set",
        directory,
        len(X),
    )
    return Dataset(
        "mnist",
        X,
        np.zeros((0, X.shape[1])),
        y,
        np.zeros(0, dtype=np.int64),
        source=f"{directory} (t10k files only)",
        origin="subset",
        label=f"MNIST test split only, {len(X):,} cases",
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    mirrors: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    require_full: bool = False,
) -> Dataset:
    """MNIST (§13): 60,000 / 10,000 cases, pixels / 255 in [0, 1], shape ``(n, 784)``.

    Order of sources, first match wins:

    1. ``path`` (an ``mnist_all.mat``);
    2. all four IDX files present in the data directory: each is checked (published MD5, or
       :data:`MNIST_RAW_MD5` of the decompressed bytes); a damaged one is downloaded again
       (downloads allowed) or is a :class:`DataError` naming it;
    3. ``mnist_all.mat`` in the data directory;
    4. both ``t10k-*`` files present and ``require_full=False``: the 10,000-case **test split
       only**, returned as the training set with an empty ``(0, 784)`` test set,
       ``origin="subset"``; no download is attempted (a damaged file is a :class:`DataError`);
    5. else the missing IDX files are downloaded from ``mirrors`` when downloads are allowed
       (:func:`_mnist_downloads_allowed`), or a :class:`DataError` says which file is missing
       where.

    ``download=None`` (the default) allows downloads unless ``$KFAC_REF_OFFLINE`` is set;
    ``mirrors=`` given by the caller allows them too (see :func:`_mnist_downloads_allowed`).
    ``Dataset.origin`` / ``Dataset.label`` say which of these was used, e.g. ``"original"`` /
    ``"MNIST (original), 60,000 training cases"`` or ``"subset"`` /
    ``"MNIST test split only, 10,000 cases"``.
    """
    if path is not None:
        return load_mnist_mat(path)
    directory = _resolve_dir(data_dir)
    urls = _mnist_mirrors(mirrors)
    allowed = _mnist_downloads_allowed(download, mirrors)
    why_not = "download=False" if download is False else f"${OFFLINE_ENV_VAR} is set"
    present = {n: (directory / n).is_file() for n in MNIST_MD5}
    if all(present.values()):
        return _mnist_original(directory, allowed, urls, why_not)
    if (directory / MNIST_MAT_NAME).is_file():
        return load_mnist_mat(directory / MNIST_MAT_NAME)
    if all(present[n] for n in MNIST_TEST_FILES) and not require_full:
        return _mnist_test_split_only(directory)
    return _mnist_original(directory, allowed, urls, why_not)
