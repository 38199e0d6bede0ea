"""FACES (§13): the authors' ``newfaces_rot_single.mat``."""

from __future__ import annotations

import http.client
import logging
import os
from pathlib import Path

import numpy as np

from ...errors import DataError
from .dataset import Dataset
from .download import _check_recorded_md5, _downloads_allowed, _fetch_original
from .files import _loadmat, _mat_variable, _resolve_dir

log = logging.getLogger(__name__)

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
    """FACES (§13) from ``newfaces_rot_single.mat``: ``(103500, 625)`` / ``(41400, 625)``.

    The file holds ``newfaces_single``, 625 × 165,600 with one case per **column** (the authors'
    code indexes ``newfaces_single(:, 1:trainsize)``); it is transposed to one case per row and
    split by :func:`faces_split`. Values are kept as stored (real-valued; the FACES autoencoder
    has linear outputs and squared error, §13). Pixel order within a case is left as stored.

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
