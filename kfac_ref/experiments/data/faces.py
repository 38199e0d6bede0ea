"""FACES (§13): the authors' ``newfaces_rot_single.mat`` when it can be had, else FACES
reconstructed from the Olivetti faces (:mod:`.olivetti`) and cached as ``.npz``.

Order of sources (:func:`load_faces`): the authors' file (``path=``, the data directory, or a
download from :data:`FACES_URL`); else the reconstruction: its cache in the data directory, or
built from ``olivettifaces.mat`` found in the data directory or downloaded from
:data:`~.olivetti.OLIVETTI_URL`; else one :class:`DataError` that says what to put where.
Every label of the reconstruction says "FACES reconstructed from the Olivetti faces".
"""

from __future__ import annotations

import http.client
import logging
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from . import olivetti
from .dataset import Dataset
from .download import (
    _check_recorded_md5,
    _downloads_allowed,
    _failed_before,
    _fetch_original,
    _remember_failure,
)
from .files import _loadmat, _mat_variable, _resolve_dir, _save_npz_atomic, _unwritable_reason

log = logging.getLogger(__name__)

FACES_MAT_NAME = "newfaces_rot_single.mat"
FACES_VARIABLE = "newfaces_single"
FACES_URL = "http://www.cs.toronto.edu/~jmartens/newfaces_rot_single.mat"
FACES_PIXELS = 625
FACES_CASES = 165600
#: Hinton & Salakhutdinov (2006), Science 313:504: the average squared reconstruction error
#: per test image of 30-component PCA on their FACES set (their autoencoder: 126).
#: :func:`faces_statistics` measures it.
FACES_ORIGINAL_STATISTICS = {"pca_test_error": 135.0}
PCA_COMPONENTS = 30
_DOWNLOAD_ERRORS = (OSError, ValueError, http.client.HTTPException, DataError)
_CACHE_META = ("version", "seed", "images_per_face", "source_md5")


def faces_split(n_total: int) -> tuple[slice, slice]:
    """The authors' FACES split: the first 25/40 of the cases train, the last 10/40 test.

    From ``KFAC_demo_2.m`` / ``nnet_demo_2.m``: ``trainsize = (total/40)*25``,
    ``testsize = (total/40)*10``, ``indata = newfaces_single(:, 1:trainsize)``,
    ``intest = newfaces_single(:, (end-testsize+1):end)``; for 165,600 cases: 103,500 and
    41,400 (the 5/40 in between are unused).
    """
    block = n_total // 40
    return slice(0, 25 * block), slice(n_total - 10 * block, n_total)


# --------------------------------------------------------------------------------------------
# The authors' newfaces_rot_single.mat
# --------------------------------------------------------------------------------------------


def _faces_matrix(file: Path, strict: bool = False) -> np.ndarray:
    """``newfaces_single`` of ``file``, validated: ``(625, n)`` (with ``strict``, a downloaded
    file: exactly ``(625, 165600)``), finite. :class:`DataError` otherwise."""
    A = _mat_variable(_loadmat(file), FACES_VARIABLE, file)
    if A.ndim != 2 or A.shape[0] != FACES_PIXELS or (strict and A.shape[1] != FACES_CASES):
        want = f"({FACES_PIXELS}, {FACES_CASES})" if strict else f"({FACES_PIXELS}, n)"
        raise DataError(
            f"{file}: {FACES_VARIABLE!r} has shape {A.shape}; expected {want} with one case per "
            "column."
        )
    if not np.isfinite(A).all():
        raise DataError(f"{file}: {FACES_VARIABLE!r} holds NaN or inf values.")
    return A


def load_faces_mat(path: str | os.PathLike[str]) -> Dataset:
    """The authors' ``newfaces_rot_single.mat``: ``(103500, 625)`` / ``(41400, 625)``.

    The file holds ``newfaces_single``, 625 × 165,600 with one case per **column** (the authors'
    code indexes ``newfaces_single(:, 1:trainsize)``); it is transposed to one case per row and
    split by :func:`faces_split`. Values are kept as stored (real-valued; the FACES autoencoder
    has linear outputs and squared error, §13). Pixel order within a case is left as stored.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"{file} not found (it was given as path=). The authors' FACES file is "
            f"{FACES_MAT_NAME}, from {FACES_URL}; without path=, load_faces also looks in the "
            "data directory and reconstructs FACES from the Olivetti faces when it can."
        )
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
        label=f"FACES ({'original' if origin == 'original' else 'partial'} {FACES_MAT_NAME}), "
        f"{len(X_train):,} training cases",
    )


def _authors_faces(directory: Path, download: bool | None, url: str) -> tuple[Dataset | None, str]:
    """The authors' file from the data directory (checked against the MD5 recorded when it was
    downloaded; a changed copy is fetched again) or downloaded from ``url`` (resumable, about
    400 MB, validated by shape before it is kept). ``(None, why)`` when neither works."""
    file = directory / FACES_MAT_NAME
    if file.is_file() and not _check_recorded_md5(file):
        log.warning(
            "%s does not match the MD5 recorded when it was downloaded (damaged?); fetching it "
            "again",
            file,
        )
        file.unlink()
    if file.is_file():
        return load_faces_mat(file), ""
    if not _downloads_allowed(download):
        return None, "downloads are off"
    if _failed_before(url):
        return None, f"the download from {url} failed earlier in this process"
    try:
        _fetch_original(FACES_MAT_NAME, url, directory, lambda p: _faces_matrix(p, strict=True))
    except _DOWNLOAD_ERRORS as exc:
        _remember_failure(url)
        return None, f"the download from {url} failed ({exc})"
    return load_faces_mat(file), ""


# --------------------------------------------------------------------------------------------
# FACES reconstructed from the Olivetti faces, and its cache
# --------------------------------------------------------------------------------------------


def _reconstruction_label(seed: int, images_per_face: int, n_train: int) -> str:
    """E.g. ``"FACES reconstructed from the Olivetti faces (v1, seed 0), 103,500 training
    cases"``."""
    per = "" if images_per_face == olivetti.IMAGES_PER_FACE else f", {images_per_face} per face"
    version = olivetti.RECONSTRUCTION_VERSION
    return (
        f"FACES reconstructed from the Olivetti faces (v{version}, seed {seed}{per}), "
        f"{n_train:,} training cases"
    )


def _reconstruction_dataset(
    X_train: np.ndarray, X_test: np.ndarray, seed: int, images_per_face: int, source: str
) -> Dataset:
    """The two float32 halves as a float64 :class:`Dataset` named as a reconstruction."""
    return Dataset(
        "faces",
        X_train.astype(np.float64),
        X_test.astype(np.float64),
        source=source,
        origin="reconstruction",
        label=_reconstruction_label(seed, images_per_face, len(X_train)),
    )


def build_faces(
    faces: np.ndarray, seed: int = 0, images_per_face: int = olivetti.IMAGES_PER_FACE
) -> Dataset:
    """FACES reconstructed from the Olivetti ``faces`` (:func:`~.olivetti.make_faces`), split
    as the authors split theirs: training = the first 25 people, test = the last 10.

    Images are float32 (as cached) returned as float64, so a fresh build and a cached one are
    identical. ``origin="reconstruction"``.
    """
    X, mu, sigma = olivetti.make_faces(faces, seed, images_per_face)
    source = (
        f"make_faces v{olivetti.RECONSTRUCTION_VERSION}, seed {seed}, from the Olivetti faces "
        f"(MD5 {olivetti.faces_md5(faces)}; raw mean {mu:.4f}, standard deviation {sigma:.4f})"
    )
    train, test = faces_split(len(X))
    return _reconstruction_dataset(X[train], X[test], seed, images_per_face, source)


def _faces_cache_path(directory: Path, seed: int, images_per_face: int) -> Path:
    """Cache file name, keyed by recipe version, seed and images per face."""
    version = olivetti.RECONSTRUCTION_VERSION
    return directory / f"faces_olivetti_v{version}_seed{seed}_x{images_per_face}.npz"


def _cache_meta(seed: int, images_per_face: int) -> dict[str, np.ndarray]:
    """What a cache must record to be used: recipe version, seed, images per face, and the MD5
    of the faces it was made from."""
    return {
        "version": np.array(olivetti.RECONSTRUCTION_VERSION),
        "seed": np.array(seed),
        "images_per_face": np.array(images_per_face),
        "source_md5": np.array(olivetti.OLIVETTI_FACES_MD5),
    }


def _cache_problem(z: dict[str, np.ndarray], seed: int, images_per_face: int) -> str | None:
    """Why the cached arrays ``z`` cannot be used, or ``None``."""
    for key, want in _cache_meta(seed, images_per_face).items():
        if key not in z:
            return f"no {key!r} recorded"
        if z[key].shape != ():
            return f"{key} of shape {z[key].shape}, expected a single value"
        if z[key].item() != want.item():
            return f"{key} {z[key].item()!r}, expected {want.item()!r}"
    train, test = faces_split(olivetti.OLIVETTI_IMAGES * images_per_face)
    want = ((train.stop - train.start, FACES_PIXELS), (test.stop - test.start, FACES_PIXELS))
    if (z["X_train"].shape, z["X_test"].shape) != want:
        return f"shapes {z['X_train'].shape}, {z['X_test'].shape} instead of {want[0]}, {want[1]}"
    if z["X_train"].dtype != np.float32 or z["X_test"].dtype != np.float32:
        return f"dtype {z['X_train'].dtype} instead of float32"
    if not (np.isfinite(z["X_train"]).all() and np.isfinite(z["X_test"]).all()):
        return "NaN or inf values"
    return None


def _load_faces_cache(path: Path, seed: int, images_per_face: int) -> Dataset | None:
    """The cached reconstruction if ``path`` holds it intact and it was made by this recipe
    version from the same seed, count and faces; else ``None`` after a warning that says why
    (the caller rebuilds it)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            z = {key: npz[key] for key in npz.files}
        if "X_train" not in z or "X_test" not in z:
            raise KeyError("X_train / X_test")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        why: str | None = f"unreadable: {type(exc).__name__}: {exc}"
    else:
        why = _cache_problem(z, seed, images_per_face)
        if why is None:
            return _reconstruction_dataset(
                z["X_train"], z["X_test"], seed, images_per_face, source=str(path)
            )
    log.warning(
        "FACES reconstruction cache %s is damaged or out of date (%s); rebuilding it", path, why
    )
    return None


def _save_faces_cache(path: Path, data: Dataset, seed: int, images_per_face: int) -> None:
    """Write the cache atomically; a data directory that cannot take it gets a warning (the set
    stays in memory), not a traceback."""
    why = _unwritable_reason(path.parent)
    if why is None:
        try:
            _save_npz_atomic(
                path,
                compressed=False,  # float pixels: zlib saves 9 % and takes 10 times longer
                X_train=data.X_train.astype(np.float32),
                X_test=data.X_test.astype(np.float32),
                **_cache_meta(seed, images_per_face),
            )
            return
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc}"
    log.warning(
        "could not cache FACES reconstructed from the Olivetti faces in %s (%s); built in "
        "memory, it will be built again next time",
        path.parent,
        why,
    )


def _olivetti_faces(
    directory: Path, download: bool | None, url: str
) -> tuple[np.ndarray | None, str]:
    """The Olivetti ``faces`` array: ``olivettifaces.mat`` in the data directory (checked by the
    MD5 of its array; a wrong one is a :class:`DataError`), or downloaded from ``url`` when
    downloads are allowed (kept only if its array checks out, its file MD5 recorded).
    ``(None, why)`` when there is none."""
    local = directory / olivetti.OLIVETTI_MAT_NAME
    if local.is_file() and not _check_recorded_md5(local):
        log.warning(
            "%s does not match the MD5 recorded when it was downloaded (damaged?); fetching it "
            "again",
            local,
        )
        local.unlink()
    if local.is_file():
        return olivetti.read_olivetti(local), ""
    if not _downloads_allowed(download):
        return None, "downloads are off"
    if _failed_before(url):
        return None, f"the download from {url} failed earlier in this process"
    try:
        path = _fetch_original(olivetti.OLIVETTI_MAT_NAME, url, directory, olivetti.read_olivetti)
    except _DOWNLOAD_ERRORS as exc:
        _remember_failure(url)
        return None, f"the download from {url} failed ({exc})"
    return olivetti.read_olivetti(path), ""


def _reconstructed_faces(
    directory: Path, download: bool | None, seed: int, images_per_face: int, url: str
) -> tuple[Dataset | None, str]:
    """FACES reconstructed from the Olivetti faces: the cache for (version, seed, count) if it
    is intact, else built from :func:`_olivetti_faces` and cached. ``(None, why)`` when there
    are no Olivetti faces to build from."""
    cache = _faces_cache_path(directory, seed, images_per_face)
    if cache.is_file():
        cached = _load_faces_cache(cache, seed, images_per_face)
        if cached is not None:
            return cached, ""
    faces, why = _olivetti_faces(directory, download, url)
    if faces is None:
        return None, why
    log.info(
        "reconstructing FACES from the Olivetti faces (v%d, seed %d)",
        olivetti.RECONSTRUCTION_VERSION,
        seed,
    )
    data = build_faces(faces, seed, images_per_face)
    _save_faces_cache(cache, data, seed, images_per_face)
    return data, ""


def _no_faces(directory: Path, reasons: list[str]) -> DataError:
    """The error when there is no FACES at all: both files, both sources, the data directory."""
    why = "; ".join(dict.fromkeys(r for r in reasons if r))
    return DataError(
        f"FACES: neither the authors' {FACES_MAT_NAME} nor {olivetti.OLIVETTI_MAT_NAME} is in "
        f"{directory} (the data directory), and {why}. Put one of them there (on a machine with "
        f"network access, download it first): {FACES_MAT_NAME}, the authors' set (variable "
        f"{FACES_VARIABLE!r}: 25×25 = {FACES_PIXELS} pixels × {FACES_CASES} images, Olivetti faces "
        f"with rotations and scalings), from Martens' page {FACES_URL} (or pass path=); or "
        f"{olivetti.OLIVETTI_MAT_NAME}, the 400 Olivetti faces (variable "
        f"{olivetti.OLIVETTI_VARIABLE!r}, 4096 × 400 uint8), from {olivetti.OLIVETTI_URL} (the "
        "copy "
        f"scikit-learn downloads) or {olivetti.OLIVETTI_ORIGINAL_URL}, from which FACES is "
        "reconstructed here."
    )


def load_faces(
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool | None = None,
    url: str = FACES_URL,
    seed: int = 0,
    images_per_face: int = olivetti.IMAGES_PER_FACE,
    olivetti_url: str | None = None,
) -> Dataset:
    """FACES (§13): ``(103500, 625)`` training and ``(41400, 625)`` test images.

    Order of sources, first match wins:

    1. ``path``: the authors' ``newfaces_rot_single.mat`` (:func:`load_faces_mat`; a missing or
       wrong file is a :class:`DataError`, nothing else is tried);
    2. the authors' file in the data directory, or downloaded from ``url`` when downloads are
       allowed (:func:`_downloads_allowed`: ``download``, else not ``$KFAC_REF_OFFLINE``);
       ``origin="original"``;
    3. FACES reconstructed from the Olivetti faces (:func:`~.olivetti.make_faces` with
       ``seed`` and ``images_per_face``): the ``.npz`` cache in the data directory for
       (recipe version, seed, images per face); else built from ``olivettifaces.mat`` in the
       data directory or downloaded from ``olivetti_url`` (default
       :data:`~.olivetti.OLIVETTI_URL`) when downloads are allowed, and cached there (a
       directory that cannot take it gets a warning). ``origin="reconstruction"``, label
       ``"FACES reconstructed from the Olivetti faces (v1, seed 0), 103,500 training cases"``;
    4. else a :class:`DataError` that says what to put where.

    A failed download of the authors' file, followed by a reconstruction, is logged as a
    warning.
    """
    if path is not None:
        return load_faces_mat(path)
    if images_per_face < 1:
        raise ConfigError(f"load_faces: images_per_face must be >= 1, got {images_per_face}.")
    directory = _resolve_dir(data_dir)
    original, why_not_original = _authors_faces(directory, download, url)
    if original is not None:
        return original
    url_o = olivetti.OLIVETTI_URL if olivetti_url is None else olivetti_url
    rebuilt, why_not_rebuilt = _reconstructed_faces(
        directory, download, seed, images_per_face, url_o
    )
    if rebuilt is None:
        raise _no_faces(directory, [why_not_original, why_not_rebuilt])
    if why_not_original != "downloads are off":
        log.warning("no %s (%s); using %s", FACES_MAT_NAME, why_not_original, rebuilt.label)
    return rebuilt


# --------------------------------------------------------------------------------------------
# Statistics: how a FACES set compares with the original
# --------------------------------------------------------------------------------------------


def faces_statistics(
    X_train: np.ndarray, X_test: np.ndarray, n_components: int = PCA_COMPONENTS
) -> dict[str, float]:
    """The numbers by which a FACES set is compared with the original (per image).

    PCA fitted to the training set: its mean image m and the ``n_components`` leading
    eigenvectors V (625 × k) of its covariance; an image x is reconstructed as
    x̂ = m + V Vᵀ (x − m). Returns ``pca_test_error`` = mean over test images of
    Σ_p (x_p − x̂_p)² (Hinton & Salakhutdinov 2006 report 135 for k = 30,
    :data:`FACES_ORIGINAL_STATISTICS`), ``pca_training_error`` (the same on the training
    images) and ``mean_image_training_error`` = mean over training images of Σ_p (x_p − m_p)²
    (the error of predicting the training mean image for every training case).
    """
    m = np.asarray(X_train, dtype=np.float64).mean(axis=0)
    scatter = np.zeros((m.size, m.size))
    for chunk in _chunks(X_train):
        D = chunk - m
        scatter += D.T @ D
    _, eigvecs = np.linalg.eigh(scatter)
    V = eigvecs[:, ::-1][:, :n_components]

    def pca_error(X: np.ndarray) -> float:
        total = 0.0
        for chunk in _chunks(X):
            D = chunk - m
            total += float(((D - (D @ V) @ V.T) ** 2).sum())
        return total / max(len(X), 1)

    mean_image = sum(float(((c - m) ** 2).sum()) for c in _chunks(X_train)) / max(len(X_train), 1)
    return {
        "pca_test_error": pca_error(X_test),
        "pca_training_error": pca_error(X_train),
        "mean_image_training_error": mean_image,
    }


def _chunks(X: np.ndarray, rows: int = 8192) -> Iterator[np.ndarray]:
    """``X`` in blocks of ``rows`` rows, each as float64."""
    for i in range(0, len(X), rows):
        yield np.asarray(X[i : i + rows], dtype=np.float64)
