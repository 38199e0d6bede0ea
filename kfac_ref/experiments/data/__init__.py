"""The three autoencoder data sets of the experiments (§13): MNIST, CURVES, FACES.

This package is at the edge of kfac_ref: it does I/O (a cache directory, downloads, ``.mat``
and ``.npz`` files) and logging, and hands the math host arrays. One module per subject:

* :mod:`.dataset`: the :class:`Dataset` record every loader returns;
* :mod:`.files`: the data directory, ``.mat`` variables, atomic ``.npz`` caches;
* :mod:`.download`: resumable HTTP fetches, verified downloads, MD5 records, the offline switch
  (``$KFAC_REF_OFFLINE``);
* :mod:`.mnist`, :mod:`.curves`, :mod:`.faces`: the three data sets; :mod:`.olivetti`: the
  recipe of FACES reconstructed from the Olivetti faces;
* :mod:`.downscale`: area-averaging down-scaling (the 16×16 digits of Figs. 2–3).

Conventions (one place): every loader returns a :class:`Dataset` whose ``X_train`` / ``X_test``
are float64 NumPy arrays with **one case per row** (shape ``(n, d)``), pixels in the order they are
stored on disk (row-major 28×28 for MNIST IDX and for CURVES). The authors' MATLAB code holds
cases in columns (``indata`` is ``d × n``); the loaders transpose where the file needs it.

Cache directory: :func:`default_data_dir` (``$KFAC_REF_DATA_DIR``, else
``$XDG_CACHE_HOME/kfac_ref``, else ``~/.cache/kfac_ref``); every loader takes ``data_dir=`` to
override it.

* MNIST: the four original IDX ``.gz`` files, fetched from the first mirror in
  :data:`MNIST_MIRRORS` that serves them (override with ``mirrors=`` or
  ``$KFAC_REF_MNIST_MIRRORS``), MD5-checked against :data:`MNIST_MD5` (or, for copies gzipped
  again, :data:`MNIST_RAW_MD5` of the decompressed bytes); or the authors' ``mnist_all.mat``;
  or, when only the two ``t10k-*`` files are on disk, the 10,000-case test split alone
  (``origin="subset"``).
* CURVES: the authors' ``digs3pts_1.mat`` when present or downloadable, else a stand-in
  generated here deterministically from a seed (:func:`make_curves`) and cached as ``.npz``.
* FACES: the authors' ``newfaces_rot_single.mat`` when present or downloadable, else FACES
  reconstructed from the Olivetti faces (:mod:`.olivetti`, ``olivettifaces.mat``; cached as
  ``.npz``), labelled as a reconstruction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import ConfigError, DataError
from .curves import (
    CURVE_SAMPLES_PER_SEGMENT,
    CURVES_MAT_NAME,
    CURVES_MAT_SHAPES,
    CURVES_ORIGINAL_STATISTICS,
    CURVES_SIDE,
    CURVES_STYLES,
    CURVES_URL,
    CURVES_VERSION,
    CurvesStyle,
    build_curves,
    curves_statistics,
    curves_style,
    load_curves,
    load_curves_mat,
    make_curves,
    natural_spline_3pts,
    render_curves,
    stroke_profile,
)
from .curves import (
    _curves_cache_path as _curves_cache_path,
)
from .curves import (
    _draw_control_points as _draw_control_points,
)
from .dataset import DATASET_NAMES, ORIGINS, Dataset
from .download import DOWNLOAD_TIMEOUT_S, OFFLINE_ENV_VAR, write_md5_record
from .downscale import _area_matrix as _area_matrix
from .downscale import downscale_images
from .faces import (
    FACES_CASES,
    FACES_MAT_NAME,
    FACES_ORIGINAL_STATISTICS,
    FACES_PIXELS,
    FACES_URL,
    FACES_VARIABLE,
    build_faces,
    faces_split,
    faces_statistics,
    load_faces,
    load_faces_mat,
)
from .files import DATA_DIR_ENV_VAR, default_data_dir
from .files import _save_npz_atomic as _save_npz_atomic
from .mnist import (
    MIRRORS_ENV_VAR,
    MNIST_MAT_NAME,
    MNIST_MD5,
    MNIST_MIRRORS,
    MNIST_RAW_MD5,
    MNIST_TEST_FILES,
    MNIST_TRAIN_FILES,
    find_mnist_files,
    load_mnist,
    load_mnist_mat,
    read_idx,
)
from .mnist import (
    _mnist_mirrors as _mnist_mirrors,
)
from .olivetti import (
    OLIVETTI_FACES_MD5,
    OLIVETTI_MAT_NAME,
    OLIVETTI_URL,
    RECONSTRUCTION_VERSION,
    make_faces,
    read_olivetti,
)

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "curves": load_curves,
    "faces": load_faces,
}


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load one of the §13 data sets by name: ``"mnist"``, ``"curves"`` or ``"faces"``.

    Keyword arguments go to the loader. An unknown name raises :class:`ConfigError`.
    """
    key = str(name).strip().lower()
    if key not in _LOADERS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {list(DATASET_NAMES)}.")
    return _LOADERS[key](**kwargs)


__all__ = [
    "read_olivetti",
    "make_faces",
    "load_faces_mat",
    "faces_statistics",
    "build_faces",
    "RECONSTRUCTION_VERSION",
    "OLIVETTI_URL",
    "OLIVETTI_MAT_NAME",
    "OLIVETTI_FACES_MD5",
    "FACES_ORIGINAL_STATISTICS",
    "CURVES_MAT_NAME",
    "CURVES_MAT_SHAPES",
    "CURVES_ORIGINAL_STATISTICS",
    "CURVES_SIDE",
    "CURVES_STYLES",
    "CURVES_URL",
    "CURVES_VERSION",
    "CURVE_SAMPLES_PER_SEGMENT",
    "DATASET_NAMES",
    "DATA_DIR_ENV_VAR",
    "DOWNLOAD_TIMEOUT_S",
    "FACES_CASES",
    "FACES_MAT_NAME",
    "FACES_PIXELS",
    "FACES_URL",
    "FACES_VARIABLE",
    "MIRRORS_ENV_VAR",
    "MNIST_MAT_NAME",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "MNIST_RAW_MD5",
    "MNIST_TEST_FILES",
    "MNIST_TRAIN_FILES",
    "OFFLINE_ENV_VAR",
    "ORIGINS",
    "ConfigError",
    "CurvesStyle",
    "DataError",
    "Dataset",
    "build_curves",
    "curves_statistics",
    "curves_style",
    "default_data_dir",
    "downscale_images",
    "faces_split",
    "find_mnist_files",
    "load_curves",
    "load_curves_mat",
    "load_dataset",
    "load_faces",
    "load_mnist",
    "load_mnist_mat",
    "make_curves",
    "natural_spline_3pts",
    "read_idx",
    "render_curves",
    "stroke_profile",
    "write_md5_record",
]
