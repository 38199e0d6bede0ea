"""CURVES (§13): the authors' ``digs3pts_1.mat``, or a stand-in generated here deterministically
from a seed and cached as ``.npz``."""

from __future__ import annotations

import http.client
import logging
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from .dataset import Dataset
from .download import (
    _check_recorded_md5,
    _downloads_allowed,
    _failed_before,
    _fetch_original,
    _remember_failure,
)
from .files import (
    _as_float_rows,
    _loadmat,
    _mat_variable,
    _resolve_dir,
    _save_npz_atomic,
    _unwritable_reason,
)

log = logging.getLogger(__name__)

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
    """Intensity ``peak · f(d)`` from squared pixel–curve distances ``d2`` (see
    :class:`CurvesStyle`)."""
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
    """``n`` synthetic CURVES images (§13), ``(n, 784)`` float64 in [0, 1]; pure given ``rng``.

    What the sources say. The original: 28×28 images of curves drawn through 3 random points
    (cubic spline), pixel intensities from the curve's distance, 20,000 / 10,000 cases. Hinton &
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
    """The one-line name of generated CURVES, e.g. ``"CURVES stand-in (generated, v2), 20,000
    training cases"``."""
    return f"CURVES stand-in (generated, v{version}), {n_train:,} training cases"


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
    """The authors' ``digs3pts_1.mat`` (§13): ``bdata`` (training) and ``bdatatest`` (test),
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
                f"{path}: variable {key!r} has values outside [0, 1] (or NaN/inf); CURVES pixels "
                "are intensities in [0, 1]."
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


def _download_curves(directory: Path, url: str) -> Dataset | None:
    """The original CURVES, downloaded into ``directory``; ``None`` (with a warning saying why
    and that the stand-in is used) when the network or the server does not deliver it. A URL
    that failed is not tried again in the same process."""
    if _failed_before(url):
        return None
    try:
        path = _fetch_original(
            CURVES_MAT_NAME, url, directory, lambda p: load_curves_mat(p, strict=True)
        )
    except (OSError, ValueError, http.client.HTTPException, DataError) as exc:
        _remember_failure(url)
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
    """CURVES (§13): ``(n, 784)`` images in [0, 1].

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
            "%s does not match the MD5 recorded when it was downloaded (damaged?); fetching it "
            "again",
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
    why = _unwritable_reason(directory)
    if why is not None:  # said before the work, which then goes on in memory
        log.warning(
            "the CURVES stand-in cannot be cached in %s (%s); it is generated in memory and "
            "will be generated again next time",
            directory,
            why,
        )
    log.info("generating CURVES v%d (seed %d, %d + %d images)", version, seed, n_train, n_test)
    data = build_curves(seed, n_train, n_test, version)
    if why is None:
        try:
            _save_npz_atomic(
                cache,
                X_train=data.X_train.astype(np.float32),
                X_test=data.X_test.astype(np.float32),
            )
        except OSError as exc:  # a full disk, say: the data are good, only the cache is lost
            log.warning(
                "could not cache the CURVES stand-in in %s (%s: %s); it will be generated "
                "again next time",
                directory,
                type(exc).__name__,
                exc,
            )
    return data
