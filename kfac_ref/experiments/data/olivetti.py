"""FACES reconstructed from the Olivetti faces (§13): the recipe, from the 400 faces of
``olivettifaces.mat`` to 165,600 standardized 25×25 images.

The authors trained their FACES autoencoder on ``newfaces_rot_single.mat``, which Hinton &
Salakhutdinov (2006) made from the Olivetti faces by rotating, scaling, cropping and
subsampling; the file's exact recipe is not published. :func:`make_faces` is our reconstruction
of it: what is known (the number of images, the ranges of the rotations and scalings, the size,
the standardization, the person-by-person split of the authors' code) is kept, and every detail
that is not known is chosen and stated in its docstring. The set it makes is a reconstruction,
not the authors' file, and :mod:`.faces` labels it so everywhere.

Arrays in, arrays out, except :func:`read_olivetti` (one ``.mat`` file). No cache, no Dataset:
:mod:`.faces` does that.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import scipy.ndimage

from ...errors import ConfigError, DataError
from .files import _loadmat, _mat_variable

OLIVETTI_MAT_NAME = "olivettifaces.mat"
OLIVETTI_VARIABLE = "faces"
#: Where scikit-learn's ``fetch_olivetti_faces`` downloads the faces (figshare file 5976027):
#: the same ``faces`` array as Sam Roweis' original file, under another MAT-file header.
OLIVETTI_URL = "https://ndownloader.figshare.com/files/5976027"
#: Sam Roweis' page, where the file first appeared (named in the error for a missing file).
OLIVETTI_ORIGINAL_URL = "https://cs.nyu.edu/~roweis/data/olivettifaces.mat"
#: MD5 of the ``faces`` array as the C-ordered bytes of the (4096, 400) uint8 array. The files
#: differ (headers), the array does not: this is what a copy is checked by.
OLIVETTI_FACES_MD5 = "9a493646b4750151c213ee02908147da"
OLIVETTI_SIDE = 64
IMAGES_PER_PERSON = 10  # the Olivetti layout: 40 people in order, 10 images each
OLIVETTI_IMAGES = 400
FACES_SIDE = 25
#: 165,600 images / 400 faces (the size of the authors' file).
IMAGES_PER_FACE = 414
ANGLE_RANGE_DEG = (-90.0, 90.0)
SCALE_RANGE = (1.4, 2.0)
INTERPOLATION_ORDER = 1  # bilinear
#: Version of :func:`make_faces`; bump when any image it makes changes (the cache is keyed by it).
RECONSTRUCTION_VERSION = 1


def faces_md5(faces: np.ndarray) -> str:
    """Hex MD5 of ``faces`` as C-ordered bytes (the check of an ``olivettifaces.mat``)."""
    return hashlib.md5(np.ascontiguousarray(faces).tobytes()).hexdigest()


def read_olivetti(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``faces`` array of an ``olivettifaces.mat``: ``(4096, 400)`` uint8, one 64×64 face per
    column stored column-major (people in order, :data:`IMAGES_PER_PERSON` columns each).

    Checked by :data:`OLIVETTI_FACES_MD5` of the array (not of the file, whose header differs
    between copies); anything else is a :class:`DataError` naming the file and both checksums.
    """
    path = Path(path)
    faces = _mat_variable(_loadmat(path), OLIVETTI_VARIABLE, path)
    want = (OLIVETTI_SIDE**2, OLIVETTI_IMAGES)
    if faces.shape != want or faces.dtype != np.uint8:
        raise DataError(
            f"{path}: {OLIVETTI_VARIABLE!r} is {faces.dtype} of shape {faces.shape}; the Olivetti "
            f"faces are uint8 of shape {want}, one 64×64 face per column."
        )
    actual = faces_md5(faces)
    if actual != OLIVETTI_FACES_MD5:
        raise DataError(
            f"{path}: the MD5 of its {OLIVETTI_VARIABLE!r} array is {actual}, expected "
            f"{OLIVETTI_FACES_MD5} (the 400 Olivetti faces); not the Olivetti faces, or damaged."
        )
    return np.ascontiguousarray(faces)


def upright_faces(faces: np.ndarray) -> np.ndarray:
    """``(4096, n)`` columns → ``(n, 64, 64)`` upright images: image i is
    ``faces[:, i].reshape(64, 64).T`` (each column holds a face stored column-major)."""
    n = faces.shape[1]
    return faces.T.reshape(n, OLIVETTI_SIDE, OLIVETTI_SIDE).transpose(0, 2, 1)


def sample_coordinates(theta_deg: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Where in a 64×64 face each pixel of its 25×25 images is sampled: ``(2, m, 25, 25)``
    (row, column) in the face's pixel coordinates, for ``m`` (angle, scale) pairs.

    Output pixel (r, c) sits at offset (dr, dc) = (r − 12, c − 12) from the output centre; one
    output pixel spans k = 64 / (25 s) face pixels (the face magnified s times, its central
    64×64 window subsampled to 25×25). The sample point is the face centre (31.5, 31.5) plus
    that offset rotated: row = 31.5 + k (sin θ · dc + cos θ · dr),
    column = 31.5 + k (cos θ · dc − sin θ · dr), so the face appears turned counter-clockwise
    by θ as displayed (rows downwards). The farthest sample is 12√2 · 64 / (25 s) ≤ 31.03
    pixels from the centre for s ≥ 1.4: inside the face, whatever θ.
    """
    theta = np.deg2rad(np.asarray(theta_deg, dtype=np.float64))[:, None, None]
    k = (OLIVETTI_SIDE / FACES_SIDE / np.asarray(scale, dtype=np.float64))[:, None, None]
    offsets = np.arange(FACES_SIDE, dtype=np.float64) - (FACES_SIDE - 1) / 2
    dr, dc = offsets[None, :, None], offsets[None, None, :]
    centre = (OLIVETTI_SIDE - 1) / 2
    sin, cos = np.sin(theta), np.cos(theta)
    rows = centre + k * (sin * dc + cos * dr)
    cols = centre + k * (cos * dc - sin * dr)
    return np.stack([rows, cols])


def transform_face(face: np.ndarray, theta_deg: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``m`` 25×25 images of one upright 64×64 ``face``: turned by ``theta_deg``, magnified by
    ``scale``, cropped and subsampled (:func:`sample_coordinates`), sampled by bilinear
    interpolation (``scipy.ndimage.map_coordinates``, order :data:`INTERPOLATION_ORDER`).
    Returns ``(m, 625)`` float64, each image row-major."""
    coords = sample_coordinates(theta_deg, scale)
    out = scipy.ndimage.map_coordinates(
        np.asarray(face, dtype=np.float64),
        coords,
        order=INTERPOLATION_ORDER,
        mode="nearest",  # never used: every sample lies inside the face (see above)
        prefilter=INTERPOLATION_ORDER > 1,  # splines of order > 1 need their coefficients
    )
    return out.reshape(len(coords[0]), FACES_SIDE * FACES_SIDE)


def draw_transforms(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` angles θ ~ U(−90°, 90°) and scales s ~ U(1.4, 2.0), drawn as one ``(m, 2)``
    uniform array (so the first m' draws do not depend on m)."""
    u = rng.random((m, 2))
    (a_lo, a_hi), (s_lo, s_hi) = ANGLE_RANGE_DEG, SCALE_RANGE
    return a_lo + (a_hi - a_lo) * u[:, 0], s_lo + (s_hi - s_lo) * u[:, 1]


def standardize(X: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(X − μ) / σ`` as float32, with one scalar μ and one scalar σ: the mean and standard
    deviation of all pixels of all images of ``X`` (accumulated in float64, in chunks).
    Returns the standardized array and (μ, σ)."""
    n = max(len(X), 1)
    chunks = range(0, len(X), 4096)
    mu = sum(float(X[i : i + 4096].sum(dtype=np.float64)) for i in chunks) / (n * X.shape[1])
    sq = sum(float(((X[i : i + 4096] - mu) ** 2).sum(dtype=np.float64)) for i in chunks)
    sigma = float(np.sqrt(sq / (n * X.shape[1])))
    if not sigma > 0:
        raise DataError("standardize: the images are constant (standard deviation 0).")
    Z = np.empty(X.shape, dtype=np.float32)
    for i in chunks:
        Z[i : i + 4096] = (X[i : i + 4096].astype(np.float64) - mu) / sigma
    return Z, mu, sigma


def make_faces(
    faces: np.ndarray,
    seed: int = 0,
    images_per_face: int = IMAGES_PER_FACE,
    n_people: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """FACES reconstructed from the Olivetti faces (§13): ``(n · images_per_face, 625)`` float32.

    ``faces: (4096, n)`` uint8 as in ``olivettifaces.mat`` (:func:`read_olivetti`); with
    ``n_people``, only the first ``n_people · 10`` columns (the first people) are used. Steps:

    1. Each column is turned upright: ``faces[:, i].reshape(64, 64).T`` (:func:`upright_faces`).
    2. Each face i gets its own random stream, ``SeedSequence(seed).spawn(n)[i]``, from which
       ``images_per_face`` pairs (θ, s) are drawn (:func:`draw_transforms`): θ uniform in
       −90°…+90° (counter-clockwise as displayed), s uniform in 1.4…2.0. So the images of face
       i depend on (seed, i) only, and fewer people or images give a prefix of the full set.
    3. Image (θ, s) of a face: the face magnified s times about its centre (31.5, 31.5),
       turned by θ, its central 64×64 window subsampled to 25×25, i.e. one output pixel per
       64 / (25 s) = 1.28…1.83 face pixels (:func:`sample_coordinates`). For s ≥ 1.4 every
       sample lies inside the face at every angle (the reason, we take it, for the range's
       lower end), so no fill value is ever needed. Pixel values by bilinear interpolation
       (``scipy.ndimage.map_coordinates``, order 1; :func:`transform_face`). Measured on the
       full set (seed 0, :func:`.faces.faces_statistics`): 30-component PCA test error 133.65
       with order 1, within 1 % of Hinton & Salakhutdinov's 135; 154.88 with
       nearest-neighbour samples (order 0) and 150.65 with cubic splines (order 3), whose
       sharper samples keep more fine detail that 30 components cannot hold.
    4. Images are kept in column order, face after face (face i's images contiguous), so each
       person's 10 · images_per_face images are contiguous and the authors' split of the
       columns (:func:`.faces.faces_split`: first 25/40 training, last 10/40 test) splits by
       person, as in their code.
    5. Standardization (:func:`standardize`): one scalar mean and one scalar standard deviation
       over all pixels of all images made (including the 5/40 between the training and test
       people, which the split leaves unused): the set then has mean 0 and variance 1. One
       scalar for all pixels keeps the contrasts of the photographs, so every pixel weighs in
       the squared error as it did in the image (dividing each pixel by its own deviation
       would not); the shift changes no squared error that PCA or an autoencoder with biases
       reaches.

    Each image is row-major (row 0 at the top). Returns ``(X, μ, σ)``: the standardized images
    and the mean and standard deviation of the raw intensities (0…255) that were removed.
    """
    if images_per_face < 1:
        raise ConfigError(f"make_faces: images_per_face must be >= 1, got {images_per_face}.")
    faces = np.asarray(faces)
    if n_people is not None:
        faces = faces[:, : n_people * IMAGES_PER_PERSON]
    upright = upright_faces(faces)
    streams = np.random.SeedSequence(seed).spawn(len(upright))
    raw = np.empty((len(upright) * images_per_face, FACES_SIDE * FACES_SIDE), dtype=np.float32)
    for i, (face, stream) in enumerate(zip(upright, streams, strict=True)):
        theta, scale = draw_transforms(np.random.default_rng(stream), images_per_face)
        raw[i * images_per_face : (i + 1) * images_per_face] = transform_face(face, theta, scale)
    return standardize(raw)
