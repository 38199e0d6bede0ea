"""Area-averaging down-scaling of square images (the 16×16 MNIST digits of the paper's Figs.
2–3)."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError


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
    """Area-averaging down-scaling of square images, e.g. MNIST 28×28 → 16×16 (Figs. 2–3).

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
