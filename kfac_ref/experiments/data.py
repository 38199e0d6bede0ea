"""The three autoencoder data sets of the experiments: MNIST, CURVES, FACES (spec §10–§11).

This module is at the edge of the package: it does I/O (a cache directory, downloads, ``.mat``
and ``.npz`` files) and logging, and hands the math host arrays.

Conventions (one place): every loader returns a :class:`Dataset` whose ``X_train`` / ``X_test``
are float64 NumPy arrays with **one case per row** (shape ``(n, d)``), pixels in the order they are
stored on disk (row-major 28×28 for MNIST IDX and for CURVES). The authors' MATLAB code holds
cases in columns (``indata`` is ``d × n``); the loaders transpose where the file needs it.

Cache directory: :func:`default_data_dir` (``$KFAC_REF_DATA_DIR``, else
``$XDG_CACHE_HOME/kfac_ref``, else ``~/.cache/kfac_ref``); every loader takes ``data_dir=`` to
override it.

* MNIST (§11): the four original IDX ``.gz`` files, fetched from the first mirror in
  :data:`MNIST_MIRRORS` that serves them (override with ``mirrors=`` or
  ``$KFAC_REF_MNIST_MIRRORS``), MD5-checked against :data:`MNIST_MD5` (or, for copies gzipped
  again, :data:`MNIST_RAW_MD5` of the decompressed bytes); or the authors' ``mnist_all.mat``;
  or, when only the two ``t10k-*`` files are on disk, the 10,000-case test split alone
  (``origin="subset"``).
* CURVES (§11): generated here, deterministically from a seed (:func:`make_curves`), and cached as
  ``.npz``; the authors' ``digs3pts_1.mat`` is used instead when present.
* FACES (§11): only the authors' ``newfaces_rot_single.mat`` (not generated, not downloaded).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATA_DIR_ENV_VAR = "KFAC_REF_DATA_DIR"
MIRRORS_ENV_VAR = "KFAC_REF_MNIST_MIRRORS"
OFFLINE_ENV_VAR = "KFAC_REF_OFFLINE"
_FAILED_DOWNLOADS: set[str] = set()  # URLs that failed in this process (not retried)
DATASET_NAMES = ("mnist", "curves", "faces")
ORIGINS = ("original", "subset", "stand-in")


@dataclass(frozen=True)
class Dataset:
    """One data set of §11: training and test cases as rows of float64 host arrays.

    ``X_train: (n_train, d)``, ``X_test: (n_test, d)``; ``y_train`` / ``y_test`` are int64 labels
    of shape ``(n,)`` (MNIST) or ``None`` (the autoencoders' targets are the inputs).
    ``source`` says where the numbers came from (a file, or the generator and its seed).
    ``origin`` is one of :data:`ORIGINS`: ``"original"`` (the files the paper used),
    ``"subset"`` (part of the original, e.g. only the MNIST test split) or ``"stand-in"``
    (generated here, not the paper's data). ``label`` is one line for logs, JSON and figure
    panels that names the data set, its origin and the number of cases, e.g.
    ``"MNIST test split only, 10,000 cases"``.
    """

    name: str
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    source: str = ""
    origin: str = "original"
    label: str = ""


# --------------------------------------------------------------------------------------------
# Cache directory and small file helpers
# --------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """The cache directory (§11): ``$KFAC_REF_DATA_DIR``, ``$XDG_CACHE_HOME/kfac_ref`` or
    ``~/.cache/kfac_ref``, in that order. Not created here."""
    explicit = os.environ.get(DATA_DIR_ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "kfac_ref"
    return Path.home() / ".cache" / "kfac_ref"


def _resolve_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """``data_dir`` if given, else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def _md5(path: Path) -> str:
    """Hex MD5 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _loadmat(path: Path) -> dict[str, Any]:
    """``scipy.io.loadmat`` with every failure reported as a :class:`DataError` naming the file."""
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise DataError(
            f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported ({exc}); "
            "re-save it with `save -v7`."
        ) from exc
    except (
        Exception
    ) as exc:  # scipy's parser on arbitrary bytes: IndexError, KeyError, zlib.error, …
        raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc}).") from exc


def _mat_variable(mat: dict[str, Any], key: str, path: Path) -> np.ndarray:
    """The variable ``key`` of a loaded .mat file, or a :class:`DataError` listing what is there."""
    if key not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path}: variable {key!r} not found; the file holds {found}.")
    return np.asarray(mat[key])


def _as_float_rows(A: np.ndarray, d: int, path: Path, key: str) -> np.ndarray:
    """``A`` as a float64 ``(n, d)`` array (cases in rows), or a :class:`DataError`."""
    if A.ndim != 2 or A.shape[1] != d:
        raise DataError(f"{path}: variable {key!r} has shape {A.shape}; expected (n, {d}).")
    return np.ascontiguousarray(A, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# MNIST (§11): IDX files, checksums, mirrors, resumable downloads
# --------------------------------------------------------------------------------------------

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
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 16
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


def _mirror_url(base: str, name: str) -> str:
    """``base`` joined with a file name."""
    return base.rstrip("/") + "/" + name


def _http_fetch(url: str, part: Path, progress: bool = False) -> None:
    """Download ``url`` into ``part``, resuming an existing partial ``part`` with a Range request.

    A server that answers a Range request with the whole file (status 200) is handled by
    rewriting ``part`` from the start. HTTP 416 (nothing left to send) leaves ``part`` as it is
    for the caller's checksum to judge.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "kfac_ref"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return
        raise
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response) == have
        if have and not resumed:
            log.info("%s ignored the Range request; downloading the whole file", url)
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        bar = tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            desc=part.name[: -len(".part")],
            disable=not progress,
            leave=False,
        )
        with bar, part.open("ab" if resumed else "wb") as f:
            for block in iter(lambda: response.read(_CHUNK), b""):
                f.write(block)
                bar.update(len(block))


def _range_start(response: Any) -> int | None:
    """First byte position of a 206 response's ``Content-Range: bytes a-b/n`` header."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _download_verified(name: str, md5: str, directory: Path, mirrors: Sequence[str]) -> Path:
    """Fetch ``name`` from the first mirror that serves bytes with the expected MD5.

    The bytes go to ``<name>.part`` and are renamed (``os.replace``) to ``<name>`` only after the
    checksum matches, so a final name never holds a partial or corrupt file. A corrupt download
    is deleted; a resumed one that fails the checksum is retried once from scratch.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final, part = directory / name, directory / (name + ".part")
    failures: list[str] = []
    for base in mirrors:
        url = _mirror_url(base, name)
        for _attempt in range(2):
            resuming = part.exists() and part.stat().st_size > 0
            try:
                log.info("downloading %s%s", url, " (resuming)" if resuming else "")
                _http_fetch(url, part)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                failures.append(f"{url}: {exc}")
                break
            actual = _md5(part)
            if actual == md5:
                os.replace(part, final)
                return final
            part.unlink()
            failures.append(f"{url}: MD5 {actual}, expected {md5}")
            if not resuming:
                break
    raise _download_failed(name, md5, directory, mirrors, failures)


def _download_failed(
    name: str, md5: str, directory: Path, mirrors: Sequence[str], failures: list[str]
) -> DataError:
    """The :class:`DataError` for a file that no mirror delivered intact."""
    corrupt = any("MD5" in f for f in failures)
    what = "checksum mismatch (corrupt download)" if corrupt else "download failed"
    return DataError(
        f"MNIST file {name}: {what}. Expected MD5 {md5}. Cache directory searched: {directory}. "
        f"Mirrors tried: {list(mirrors)}. Details: " + "; ".join(failures or ["no mirrors given"])
    )


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
    """MNIST from the authors' ``mnist_all.mat`` (§11): ``train0..train9``, ``test0..test9``.

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


def _mnist_original(directory: Path, download: bool, mirrors: Sequence[str]) -> Dataset:
    """The four IDX files: cached intact copies, else (``download``) fetched and verified.

    A damaged cached file (wrong checksum, corrupt or truncated gzip stream) is reported in the
    log and downloaded again; with ``download=False`` it is a :class:`DataError` naming it.
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
                        "download=True to fetch it again, or replace it with an intact copy "
                        "(download=False)."
                    ) from None
                log.warning("MNIST file %s is damaged (%s); downloading it again", final, exc)
        elif not download:
            raise DataError(
                f"MNIST file {name} not found; directory searched: {directory} "
                f"(download=False). Mirrors that serve it: {list(mirrors)}."
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
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    require_full: bool = False,
) -> Dataset:
    """MNIST (§11): 60,000 / 10,000 cases, pixels / 255 in [0, 1], shape ``(n, 784)``.

    Order of sources, first match wins:

    1. ``path`` (an ``mnist_all.mat``);
    2. all four IDX files present in the data directory: each is checked (published MD5, or
       :data:`MNIST_RAW_MD5` of the decompressed bytes); a damaged one is downloaded again
       (``download=True``) or is a :class:`DataError` naming it;
    3. ``mnist_all.mat`` in the data directory;
    4. both ``t10k-*`` files present and ``require_full=False``: the 10,000-case **test split
       only**, returned as the training set with an empty ``(0, 784)`` test set,
       ``origin="subset"``; no download is attempted (a damaged file is a :class:`DataError`);
    5. else the missing IDX files are downloaded (``download=True``) from ``mirrors``, or a
       :class:`DataError` says which file is missing where.

    ``Dataset.origin`` / ``Dataset.label`` say which of these was used, e.g. ``"original"`` /
    ``"MNIST (original), 60,000 training cases"`` or ``"subset"`` /
    ``"MNIST test split only, 10,000 cases"``.
    """
    if path is not None:
        return load_mnist_mat(path)
    directory = _resolve_dir(data_dir)
    urls = _mnist_mirrors(mirrors)
    present = {n: (directory / n).is_file() for n in MNIST_MD5}
    if all(present.values()):
        return _mnist_original(directory, download, urls)
    if (directory / MNIST_MAT_NAME).is_file():
        return load_mnist_mat(directory / MNIST_MAT_NAME)
    if all(present[n] for n in MNIST_TEST_FILES) and not require_full:
        return _mnist_test_split_only(directory)
    return _mnist_original(directory, download, urls)


# --------------------------------------------------------------------------------------------
# CURVES (§11): a deterministic generator, its .npz cache, or the authors' digs3pts_1.mat
# --------------------------------------------------------------------------------------------

CURVES_MAT_NAME = "digs3pts_1.mat"
#: The authors' copy of the original CURVES set (named by the released code's demos).
CURVES_URL = "http://www.cs.toronto.edu/~jmartens/digs3pts_1.mat"
#: Variables of ``digs3pts_1.mat`` and their shapes once transposed to one case per row.
CURVES_MAT_SHAPES = {"bdata": (20000, 784), "bdatatest": (10000, 784)}
CURVES_SIDE = 28
CURVE_SAMPLES_PER_SEGMENT = 64
_RENDER_CHUNK = 512

#: What is known of the original ``digs3pts_1.mat`` from the authors' logs
#: (``shared/reference/kfac3_published``): the squared error and the cross-entropy (nats) of
#: predicting the mean training image, and the cross-entropy's floor, the mean over cases of
#: the sum of the per-pixel Bernoulli entropies. :func:`curves_statistics` computes them.
CURVES_ORIGINAL_STATISTICS = {
    "mean_image_squared_error": 16.9,
    "mean_image_cross_entropy": 126.5,
    "bernoulli_entropy": 54.0,
}


@dataclass(frozen=True)
class CurvesStyle:
    """How one version of :func:`make_curves` draws and renders its curves (our choices).

    Control points are uniform in ``[margin, 27 − margin]²``, consecutive points at least
    ``min_separation`` pixels apart, with a turn of at most arccos(``max_turn_cos``) at the
    middle point. A pixel at distance d from the curve gets ``peak · f(d)``, with
    f(d) = (1 − d²/w²)³ for d < w (``profile="poly"``) or f(d) = exp(−d²/(2w²))
    (``profile="gauss"``), w = ``width`` in pixels.
    """

    margin: float
    min_separation: float
    max_turn_cos: float
    profile: str
    width: float
    peak: float


#: Generator versions. Version 1 (2026-11) drew bright 3-pixel strokes: about twice the
#: original's pixel variance (mean-image error 36.5 against 16.9). Version 2 keeps the curves
#: and changes the stroke: a Gaussian profile of width 0.84 px and peak 0.795, control points
#: 3.8 px from the border; these three numbers were fitted (Nelder–Mead on 3,000 images) to
#: :data:`CURVES_ORIGINAL_STATISTICS`. Version 1 stays reproducible (``version=1``); the
#: fidelity fixture in ``tests/data`` holds its images frozen.
CURVES_STYLES = {
    1: CurvesStyle(
        margin=2.0, min_separation=5.0, max_turn_cos=-0.5, profile="poly", width=2.5, peak=1.0
    ),
    2: CurvesStyle(
        margin=3.8, min_separation=5.0, max_turn_cos=-0.5, profile="gauss", width=0.84, peak=0.795
    ),
}
CURVES_VERSION = 2  # the default; bump (and add a style) when make_curves changes


def curves_style(version: int) -> CurvesStyle:
    """The :class:`CurvesStyle` of generator ``version``, or a :class:`ConfigError`."""
    if version not in CURVES_STYLES:
        raise ConfigError(
            f"unknown CURVES generator version {version!r}; known: {sorted(CURVES_STYLES)}."
        )
    return CURVES_STYLES[version]


def _draw_control_points(n: int, rng: np.random.Generator, style: CurvesStyle) -> np.ndarray:
    """``(n, 3, 2)`` control points (x, y), uniform in the margin box, consecutive points at
    least ``style.min_separation`` apart and a bounded turn at the middle point (so the curve
    does not fold back into a hairpin). Rejected cases are redrawn, all at once."""
    lo, hi = style.margin, CURVES_SIDE - 1 - style.margin
    P = rng.uniform(lo, hi, size=(n, 3, 2))
    while True:
        D = np.diff(P, axis=1)  # (n, 2, 2): P₁ − P₀, P₂ − P₁
        gaps = np.linalg.norm(D, axis=2)  # (n, 2)
        cos = np.einsum("nk,nk->n", D[:, 0], D[:, 1]) / np.maximum(gaps.prod(axis=1), 1e-12)
        bad = np.flatnonzero((gaps.min(axis=1) < style.min_separation) | (cos < style.max_turn_cos))
        if bad.size == 0:
            return P
        P[bad] = rng.uniform(lo, hi, size=(bad.size, 3, 2))


def natural_spline_3pts(P: np.ndarray, per_segment: int) -> np.ndarray:
    """Points on the natural cubic spline through 3 control points, chord-length parametrized.

    ``P: (n, 3, 2)``. Knots t₀ = 0, t₁ = h₀, t₂ = h₀ + h₁ with hᵢ = ‖Pᵢ₊₁ − Pᵢ‖; second
    derivatives M₀ = M₂ = 0 (natural ends) and M₁ = 3 [(P₂−P₁)/h₁ − (P₁−P₀)/h₀] / (h₀ + h₁).
    On segment i, with u ∈ [0, 1] and s = t − tᵢ = u hᵢ:
    S = Mᵢ (hᵢ−s)³/(6hᵢ) + Mᵢ₊₁ s³/(6hᵢ) + (Pᵢ − Mᵢhᵢ²/6)(1−u) + (Pᵢ₊₁ − Mᵢ₊₁hᵢ²/6) u.
    Returns ``(n, 2·per_segment, 2)``; each segment is sampled at ``per_segment`` points from
    u = 0 to u = 1 inclusive, so P₀, P₁, P₂ are among the samples.
    """
    h = np.linalg.norm(np.diff(P, axis=1), axis=2)[:, :, None, None]  # (n, 2, 1, 1)
    M1 = 3.0 * ((P[:, 2] - P[:, 1]) / h[:, 1, 0] - (P[:, 1] - P[:, 0]) / h[:, 0, 0])
    M1 = M1 / (h[:, 0, 0] + h[:, 1, 0])  # (n, 2)
    zero = np.zeros_like(M1)
    M_left = np.stack([zero, M1], axis=1)[:, :, None, :]  # Mᵢ per segment, (n, 2, 1, 2)
    M_right = np.stack([M1, zero], axis=1)[:, :, None, :]  # Mᵢ₊₁
    u = np.linspace(0.0, 1.0, per_segment)[None, None, :, None]
    s = u * h
    S = (M_left * (h - s) ** 3 + M_right * s**3) / (6.0 * h)
    S = S + (P[:, :2, None, :] - M_left * h**2 / 6.0) * (1.0 - u)
    S = S + (P[:, 1:, None, :] - M_right * h**2 / 6.0) * u
    return S.reshape(P.shape[0], 2 * per_segment, 2)


def _min_sq_distance(C: np.ndarray, side: int) -> np.ndarray:
    """Squared distance from every pixel centre to the nearest curve sample.

    ``C: (b, K, 2)`` samples (x = column, y = row); returns ``(b, side, side)``, the running
    minimum over k of (row − y_k)² + (col − x_k)², one broadcast add per sample.
    """
    grid = np.arange(side, dtype=np.float32)
    dx2 = np.ascontiguousarray(((grid - C[:, :, 0, None]) ** 2).transpose(1, 0, 2))
    dy2 = np.ascontiguousarray(((grid - C[:, :, 1, None]) ** 2).transpose(1, 0, 2))
    d2 = dy2[0][:, :, None] + dx2[0][:, None, :]
    tmp = np.empty_like(d2)
    for k in range(1, C.shape[1]):
        np.add(dy2[k][:, :, None], dx2[k][:, None, :], out=tmp)
        np.minimum(d2, tmp, out=d2)
    return d2


def stroke_profile(d2: np.ndarray, style: CurvesStyle) -> np.ndarray:
    """Intensity ``peak · f(d)`` from squared pixel–curve distances ``d2`` (see :class:`CurvesStyle`)."""
    w2 = np.float32(style.width**2)
    if style.profile == "poly":
        f = np.clip(1.0 - d2 / w2, 0.0, 1.0) ** 3
    elif style.profile == "gauss":
        f = np.exp(-d2 / (2.0 * w2))
    else:
        raise ConfigError(
            f"unknown CURVES stroke profile {style.profile!r}; use 'poly' or 'gauss'."
        )
    return np.float32(style.peak) * f


def render_curves(
    C: np.ndarray, side: int = CURVES_SIDE, version: int = CURVES_VERSION
) -> np.ndarray:
    """Images of curves: intensity :func:`stroke_profile` of the pixel–curve distance.

    ``C: (n, K, 2)`` densely sampled curve points in pixel coordinates (x = column, y = row,
    pixel centres at integers). Returns ``(n, side²)`` float64 in [0, 1], row-major, computed in
    float32 chunks of :data:`_RENDER_CHUNK` images.
    """
    style = curves_style(version)
    n = C.shape[0]
    out = np.empty((n, side * side), dtype=np.float64)
    C32 = C.astype(np.float32)
    for start in range(0, n, _RENDER_CHUNK):
        d2 = _min_sq_distance(C32[start : start + _RENDER_CHUNK], side)
        out[start : start + _RENDER_CHUNK] = stroke_profile(d2, style).reshape(len(d2), -1)
    return out


def make_curves(n: int, rng: np.random.Generator, version: int = CURVES_VERSION) -> np.ndarray:
    """``n`` synthetic CURVES images (§11), ``(n, 784)`` float64 in [0, 1]; pure given ``rng``.

    What the sources say. Spec §11: 28×28 images of curves drawn through 3 random points (cubic
    spline), pixel intensities from the curve's distance, 20,000 / 10,000 cases. Hinton &
    Salakhutdinov (2006), Science 313:504, Supporting Online Material: "the synthetic curves";
    the construction parameters are not published. Martens' HF and K-FAC demos: "this dataset
    (by Ruslan Salakhutdinov) is available here: www.cs.toronto.edu/~jmartens/digs3pts_1.mat"
    (:data:`CURVES_URL`; :func:`load_curves` downloads it when it can).

    Our procedure: control points as in :func:`_draw_control_points`; the natural cubic spline
    through them (chord-length knots, :func:`natural_spline_3pts`), sampled at 128 points
    (spacing well under 1 px); intensity from the pixel-to-curve distance
    (:func:`stroke_profile`) with the parameters of ``CURVES_STYLES[version]``. Version 2 (the
    default) matches the original's three known statistics (:data:`CURVES_ORIGINAL_STATISTICS`;
    :func:`curves_statistics`): strokes about 2 px wide, peak intensity 0.8, a faint halo.
    Draws from ``rng`` only, so equal generator states give equal images.
    """
    if n < 0:
        raise ConfigError(f"make_curves: n must be >= 0, got {n}.")
    P = _draw_control_points(n, rng, curves_style(version))
    return render_curves(natural_spline_3pts(P, CURVE_SAMPLES_PER_SEGMENT), version=version)


def curves_statistics(X: np.ndarray) -> dict[str, float]:
    """The three statistics by which a CURVES set is compared with the original (per case).

    ``X: (n, d)`` intensities in [0, 1], m = the mean image. Returns
    ``mean_image_squared_error`` = mean_n Σ_p (x_p − m_p)² (the plateau every optimizer first
    reaches), ``mean_image_cross_entropy`` = mean_n Σ_p −[x_p log m_p + (1 − x_p) log(1 − m_p)]
    (nats) and ``bernoulli_entropy`` = mean_n Σ_p −[x_p log x_p + (1 − x_p) log(1 − x_p)], the
    floor of the Bernoulli cross-entropy; 0 log 0 = 0.
    """
    X = np.asarray(X, dtype=np.float64)
    m = X.mean(axis=0)

    def xlogy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(a > 0, a * np.log(np.where(a > 0, b, 1.0)), 0.0)

    cross = -(xlogy(X, m) + xlogy(1.0 - X, 1.0 - m)).sum(axis=1).mean()
    entropy = -(xlogy(X, X) + xlogy(1.0 - X, 1.0 - X)).sum(axis=1).mean()
    return {
        "mean_image_squared_error": float(((X - m) ** 2).sum(axis=1).mean()),
        "mean_image_cross_entropy": float(cross),
        "bernoulli_entropy": float(entropy),
    }


def _curves_cache_path(
    directory: Path, seed: int, n_train: int, n_test: int, version: int = CURVES_VERSION
) -> Path:
    """Cache file name, keyed by generator version, seed and sizes."""
    return directory / f"curves_v{version}_seed{seed}_train{n_train}_test{n_test}.npz"


def _stand_in_label(version: int, n_train: int) -> str:
    """The one-line name of generated CURVES, e.g. ``"CURVES stand-in (generated, v2), 20,000 training cases"``."""
    return f"CURVES stand-in (generated, v{version}), {n_train:,} training cases"


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` to a temporary file in the same directory, then
    ``os.replace`` it onto ``path`` (readers never see a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_curves_cache(
    path: Path, n_train: int, n_test: int, version: int = CURVES_VERSION
) -> Dataset | None:
    """The cached CURVES arrays if ``path`` holds them intact (a readable ``.npz`` without
    pickles, float32 images of the right shapes in [0, 1]), else ``None`` after a warning that
    names the damage (the caller rebuilds the cache)."""
    d = CURVES_SIDE**2
    try:
        with np.load(path, allow_pickle=False) as z:
            X_train, X_test = z["X_train"], z["X_test"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        why = f"unreadable: {type(exc).__name__}: {exc}"
    else:
        if X_train.shape != (n_train, d) or X_test.shape != (n_test, d):
            why = f"shapes {X_train.shape}, {X_test.shape} instead of {(n_train, d)}, {(n_test, d)}"
        elif X_train.dtype != np.float32 or X_test.dtype != np.float32:
            why = f"dtype {X_train.dtype} instead of float32"
        elif not all(
            np.isfinite(A).all() and A.min(initial=0) >= 0 and A.max(initial=0) <= 1
            for A in (X_train, X_test)
        ):
            why = "pixels outside [0, 1] or not finite"
        else:
            return Dataset(
                "curves",
                X_train.astype(np.float64),
                X_test.astype(np.float64),
                source=str(path),
                origin="stand-in",
                label=_stand_in_label(version, n_train),
            )
    log.warning("CURVES cache %s is damaged (%s); rebuilding it", path, why)
    return None


def build_curves(
    seed: int = 0, n_train: int = 20000, n_test: int = 10000, version: int = CURVES_VERSION
) -> Dataset:
    """CURVES generated from ``seed``: independent streams for the training and test sets
    (``SeedSequence(seed).spawn(2)``), so the test set does not depend on ``n_train``.

    Images are rounded to float32 (as cached) and returned as float64, so a fresh build and a
    cached one are identical. ``origin="stand-in"``.
    """
    ss_train, ss_test = np.random.SeedSequence(seed).spawn(2)
    X_train = make_curves(n_train, np.random.default_rng(ss_train), version).astype(np.float32)
    X_test = make_curves(n_test, np.random.default_rng(ss_test), version).astype(np.float32)
    return Dataset(
        "curves",
        X_train.astype(np.float64),
        X_test.astype(np.float64),
        source=f"make_curves v{version}, seed {seed}",
        origin="stand-in",
        label=_stand_in_label(version, n_train),
    )


def load_curves_mat(path: str | os.PathLike[str], strict: bool = False) -> Dataset:
    """The authors' ``digs3pts_1.mat`` (§11): ``bdata`` (training) and ``bdatatest`` (test),
    one 784-pixel case per row (the MATLAB demos transpose them: ``indata = tmp.bdata'``).

    Validated by structure: both variables present, 784 pixels per case, finite values in
    [0, 1]; with ``strict`` (a downloaded file) also the original's sizes,
    :data:`CURVES_MAT_SHAPES`. Anything else is a :class:`DataError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    mat = _loadmat(path)
    parts = {}
    for key, shape in CURVES_MAT_SHAPES.items():
        A = _as_float_rows(_mat_variable(mat, key, path), shape[1], path, key)
        if strict and A.shape != shape:
            raise DataError(
                f"{path}: variable {key!r} has shape {A.shape}; the original has {shape}."
            )
        if A.size and not (np.isfinite(A).all() and A.min() >= 0.0 and A.max() <= 1.0):
            raise DataError(
                f"{path}: variable {key!r} has values outside [0, 1] (or NaN/inf); CURVES pixels are intensities in [0, 1]."
            )
        parts[key] = A
    X_train, X_test = parts["bdata"], parts["bdatatest"]
    return Dataset(
        "curves",
        X_train,
        X_test,
        source=str(path),
        origin="original",
        label=f"CURVES (original {CURVES_MAT_NAME}), {len(X_train):,} training cases",
    )


def _downloads_allowed(download: bool | None) -> bool:
    """``download`` if given, else True unless ``$KFAC_REF_OFFLINE`` is set to a non-empty value
    other than ``0`` (the test suite sets it, so no test touches the network by accident)."""
    if download is not None:
        return bool(download)
    return os.environ.get(OFFLINE_ENV_VAR, "") in ("", "0")


def _fetch_original(name: str, url: str, directory: Path, validate: Callable[[Path], Any]) -> Path:
    """Download one of the authors' files that has no published checksum, safely.

    The bytes go to ``<name>.part`` (resumed with a Range request if a partial file is there,
    with a progress bar); ``validate(part)`` must accept them (it raises :class:`DataError`
    otherwise, and the part file is deleted). Only then is the file renamed to ``name`` and its
    MD5 recorded beside it in ``<name>.md5`` and printed, so a later change of the file is
    detected (:func:`_check_recorded_md5`). Network failures raise ``OSError``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final, part = directory / name, directory / (name + ".part")
    log.info("downloading %s to %s", url, final)
    _http_fetch(url, part, progress=True)
    try:
        validate(part)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    digest = _md5(part)
    os.replace(part, final)
    write_md5_record(final, digest, url)
    print(
        f"kfac_ref: downloaded {url}: {final.stat().st_size:,} bytes, MD5 {digest} (recorded in {final.name}.md5)"
    )
    return final


def write_md5_record(path: Path, digest: str, url: str) -> None:
    """Write ``<path>.md5`` (``"<md5>  <name>  <url>"``) atomically."""
    record = path.with_name(path.name + ".md5")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=record.name + ".", suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{digest}  {path.name}  {url}\n")
    os.replace(tmp, record)


def _check_recorded_md5(path: Path) -> bool:
    """False when ``<path>.md5`` exists and the file's MD5 differs from it (a damaged copy)."""
    record = path.with_name(path.name + ".md5")
    if not record.is_file():
        return True
    expected = record.read_text(encoding="utf-8").split()[:1]
    return bool(expected) and _md5(path) == expected[0]


def _download_curves(directory: Path, url: str) -> Dataset | None:
    """The original CURVES, downloaded into ``directory``; ``None`` (with a warning saying why
    and that the stand-in is used) when the network or the server does not deliver it. A URL
    that failed is not tried again in the same process."""
    if url in _FAILED_DOWNLOADS:
        return None
    try:
        path = _fetch_original(
            CURVES_MAT_NAME, url, directory, lambda p: load_curves_mat(p, strict=True)
        )
    except (OSError, ValueError, http.client.HTTPException, DataError) as exc:
        _FAILED_DOWNLOADS.add(url)
        log.warning(
            "could not download the original CURVES (%s: %s); using the generated stand-in. "
            "Put %s in %s to use the original.",
            url,
            exc,
            CURVES_MAT_NAME,
            directory,
        )
        return None
    return load_curves_mat(path, strict=True)


def load_curves(
    data_dir: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    seed: int = 0,
    n_train: int = 20000,
    n_test: int = 10000,
    version: int = CURVES_VERSION,
    download: bool | None = None,
    url: str = CURVES_URL,
) -> Dataset:
    """CURVES (§11): ``(n, 784)`` images in [0, 1].

    Order of sources: ``path`` (a ``digs3pts_1.mat``); ``digs3pts_1.mat`` in the data directory
    (checked against the MD5 recorded when it was downloaded: a changed copy is reported and
    fetched again); a download of the original from ``url`` (:data:`CURVES_URL`) when downloads
    are allowed (:func:`_downloads_allowed`: ``download``, else not ``$KFAC_REF_OFFLINE``);
    else the generated stand-in of generator ``version``: the ``.npz`` cache for
    (version, seed, n_train, n_test), or :func:`build_curves`, whose result is written to that
    cache atomically. ``Dataset.origin`` is ``"original"`` or ``"stand-in"`` and
    ``Dataset.label`` says which (with the generator version).
    """
    if path is not None:
        return load_curves_mat(path)
    curves_style(version)
    directory = _resolve_dir(data_dir)
    local = directory / CURVES_MAT_NAME
    if local.is_file():
        if _check_recorded_md5(local):
            return load_curves_mat(local)
        log.warning(
            "%s does not match the MD5 recorded when it was downloaded (damaged?); fetching it again",
            local,
        )
        local.unlink()
    if _downloads_allowed(download):
        original = _download_curves(directory, url)
        if original is not None:
            return original
    cache = _curves_cache_path(directory, seed, n_train, n_test, version)
    if cache.is_file():
        cached = _load_curves_cache(cache, n_train, n_test, version)
        if cached is not None:
            return cached
    log.info("generating CURVES v%d (seed %d, %d + %d images)", version, seed, n_train, n_test)
    data = build_curves(seed, n_train, n_test, version)
    _save_npz_atomic(
        cache, X_train=data.X_train.astype(np.float32), X_test=data.X_test.astype(np.float32)
    )
    return data


# --------------------------------------------------------------------------------------------
# FACES (§11): the authors' newfaces_rot_single.mat only
# --------------------------------------------------------------------------------------------

FACES_MAT_NAME = "newfaces_rot_single.mat"
FACES_VARIABLE = "newfaces_single"
FACES_URL = "http://www.cs.toronto.edu/~jmartens/newfaces_rot_single.mat"
FACES_PIXELS = 625
FACES_CASES = 165600


def faces_split(n_total: int) -> tuple[slice, slice]:
    """The authors' FACES split: the first 25/40 of the cases train, the last 10/40 test.

    From ``KFAC_demo_2.m`` / ``nnet_demo_2.m``: ``trainsize = (total/40)*25``,
    ``testsize = (total/40)*10``, ``indata = newfaces_single(:, 1:trainsize)``,
    ``intest = newfaces_single(:, (end-testsize+1):end)``; for 165,600 cases: 103,500 and
    41,400 (the 5/40 in between are unused).
    """
    block = n_total // 40
    return slice(0, 25 * block), slice(n_total - 10 * block, n_total)


def _faces_missing(missing: Path, why: str) -> DataError:
    """The error for a missing FACES file: what it is, where it comes from, where we looked."""
    return DataError(
        f"{missing} not found and {why}. FACES needs the authors' file {FACES_MAT_NAME} (variable "
        f"{FACES_VARIABLE!r}: 25×25 = {FACES_PIXELS} pixels × {FACES_CASES} images, Olivetti faces with "
        f"rotations and scalings), from Martens' page ({FACES_URL}). Download it there on a machine "
        f"with network access and put it in {missing.parent} (the data directory), or pass path=."
    )


def _faces_matrix(file: Path, strict: bool = False) -> np.ndarray:
    """``newfaces_single`` of ``file``, validated: ``(625, n)`` (with ``strict``, a downloaded
    file: exactly ``(625, 165600)``), finite. :class:`DataError` otherwise."""
    A = _mat_variable(_loadmat(file), FACES_VARIABLE, file)
    if A.ndim != 2 or A.shape[0] != FACES_PIXELS or (strict and A.shape[1] != FACES_CASES):
        want = f"({FACES_PIXELS}, {FACES_CASES})" if strict else f"({FACES_PIXELS}, n)"
        raise DataError(
            f"{file}: {FACES_VARIABLE!r} has shape {A.shape}; expected {want} with one case per column."
        )
    if not np.isfinite(A).all():
        raise DataError(f"{file}: {FACES_VARIABLE!r} holds NaN or inf values.")
    return A


def load_faces(
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    url: str = FACES_URL,
) -> Dataset:
    """FACES (§11) from ``newfaces_rot_single.mat``: ``(103500, 625)`` / ``(41400, 625)``.

    The file holds ``newfaces_single``, 625 × 165,600 with one case per **column** (the authors'
    code indexes ``newfaces_single(:, 1:trainsize)``); it is transposed to one case per row and
    split by :func:`faces_split`. Values are kept as stored (real-valued; the FACES autoencoder
    has linear outputs and squared error, §10). Pixel order within a case is left as stored.

    Sources: ``path``; else the file in the data directory (checked against the MD5 recorded
    when it was downloaded); else, when downloads are allowed (:func:`_downloads_allowed`), a
    resumable download from ``url`` with a progress bar, validated by shape before it is kept
    (it is large: about 400 MB); else a :class:`DataError` that says what the file is and where
    to get it.
    """
    directory = _resolve_dir(data_dir)
    file = Path(path) if path is not None else directory / FACES_MAT_NAME
    if path is None and file.is_file() and not _check_recorded_md5(file):
        log.warning(
            "%s does not match the MD5 recorded when it was downloaded (damaged?); fetching it again",
            file,
        )
        file.unlink()
    if not file.is_file():
        if path is not None or not _downloads_allowed(download):
            raise _faces_missing(
                file, "downloads are off" if path is None else "it was given as path="
            )
        try:
            _fetch_original(FACES_MAT_NAME, url, directory, lambda p: _faces_matrix(p, strict=True))
        except (OSError, ValueError, http.client.HTTPException, DataError) as exc:
            raise _faces_missing(file, f"the download from {url} failed ({exc})") from exc
    A = _faces_matrix(file)
    if A.shape[1] != FACES_CASES:
        log.warning(
            "%s holds %d cases, not %d; splitting 25/40 : 10/40 anyway",
            file,
            A.shape[1],
            FACES_CASES,
        )
    train, test = faces_split(A.shape[1])
    X_train = np.ascontiguousarray(A[:, train].T, dtype=np.float64)
    X_test = np.ascontiguousarray(A[:, test].T, dtype=np.float64)
    origin = "original" if A.shape[1] == FACES_CASES else "subset"
    return Dataset(
        "faces",
        X_train,
        X_test,
        source=str(file),
        origin=origin,
        label=f"FACES ({'original' if origin == 'original' else 'partial'} {FACES_MAT_NAME}), {len(X_train):,} training cases",
    )


# --------------------------------------------------------------------------------------------
# Dispatch and preprocessing
# --------------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "curves": load_curves,
    "faces": load_faces,
}


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load one of the §11 data sets by name: ``"mnist"``, ``"curves"`` or ``"faces"``.

    Keyword arguments go to the loader. An unknown name raises :class:`ConfigError`.
    """
    key = str(name).strip().lower()
    if key not in _LOADERS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {list(DATASET_NAMES)}.")
    return _LOADERS[key](**kwargs)


def _area_matrix(side_in: int, side_out: int) -> np.ndarray:
    """``(side_out, side_in)`` area-averaging weights along one axis.

    Output pixel o covers input coordinates [o·s, (o+1)·s) with s = side_in / side_out; entry
    (o, i) is the overlap of that interval with input pixel [i, i+1), divided by s, so each row
    sums to 1.
    """
    s = side_in / side_out
    lo = np.arange(side_out)[:, None] * s
    i = np.arange(side_in)[None, :]
    overlap = np.clip(np.minimum(lo + s, i + 1) - np.maximum(lo, i), 0.0, None)
    return overlap / s


def downscale_images(X: np.ndarray, side_in: int, side_out: int) -> np.ndarray:
    """Area-averaging down-scaling of square images, e.g. MNIST 28×28 → 16×16 (§12, Figs. 2–3).

    ``X: (n, side_in²)`` row-major images; returns ``(n, side_out²)`` float64 with
    Y = A X Aᵀ per image, A from :func:`_area_matrix`. Constant images stay constant and the
    mean intensity of every image is preserved.
    """
    if not 0 < side_out <= side_in:
        raise ConfigError(
            f"downscale_images: need 0 < side_out <= side_in, got {side_out}, {side_in}."
        )
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != side_in * side_in:
        raise ConfigError(
            f"downscale_images: X has shape {X.shape}; expected (n, {side_in * side_in})."
        )
    A = _area_matrix(side_in, side_out)
    images = X.reshape(-1, side_in, side_in)
    Y = np.einsum("oi,nij,pj->nop", A, images, A, optimize=True)
    return Y.reshape(X.shape[0], side_out * side_out)
