"""The parameter-vector convention, stated once (§2.1).

* Layer i (paper, 1-based) has W_i of shape (d_i, d_{i-1}+1): the last column is the bias,
  because the layer's input is the homogeneous ā_{i-1} = [a_{i-1}; 1].
* Python lists are 0-based: ``weights[k]`` is W_{k+1}, ``abar[k]`` is ā_k (the input of layer
  k+1), ``s[k]`` is s_{k+1}, ``g[k]`` is g_{k+1}. Factor lists keep the paper's subscripts exactly:
  ``A_bar[k][l]`` is Ā_{k,l} = E[ā_k ā_lᵀ] and ``G[k][l]`` is G_{k+1,l+1} = E[g_{k+1} g_{l+1}ᵀ], so
  the block (k, l) of F̃ is ``kron(A_bar[k][l], G[k][l])`` (= Ā_{i-1,j-1} ⊗ G_{i,j} with i=k+1).
* vec stacks **columns**: vec(X) = X.T.reshape(-1) (Fortran order). Hence vec(u vᵀ) = v ⊗ u and
  (A ⊗ B) vec(X) = vec(B X Aᵀ); the per-case gradient vec(DW_i) = ā_{i-1} ⊗ g_i.
* θ = [vec(W_1); …; vec(W_ℓ)].
* Batches are row-major: X has shape (n, d_0); every per-case quantity has the case as its first
  axis. Statistics and gradients are means over the n cases (1/n, not sums).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .backend import get_array_module
from .errors import ShapeError


def vec(X: Any) -> Any:
    """vec(X): the columns of X stacked into one vector."""
    return X.T.reshape(-1)


def unvec(v: Any, shape: tuple[int, int]) -> Any:
    """The matrix X of ``shape`` with vec(X) = v (inverse of :func:`vec`)."""
    rows, cols = shape
    return v.reshape(cols, rows).T


def weights_to_theta(weights: Sequence[Any]) -> Any:
    """θ = [vec(W_1); …; vec(W_ℓ)]."""
    xp = get_array_module(*weights)
    return xp.concatenate([vec(W) for W in weights])


def theta_to_weights(theta: Any, shapes: Sequence[tuple[int, int]]) -> list[Any]:
    """The list [W_1, …, W_ℓ] whose θ is ``theta`` (inverse of :func:`weights_to_theta`)."""
    sizes = [r * c for r, c in shapes]
    if theta.ndim != 1 or theta.shape[0] != sum(sizes):
        raise ShapeError(
            f"θ has shape {tuple(theta.shape)}; expected ({sum(sizes)},) for shapes {list(shapes)}"
        )
    out, start = [], 0
    for size, shape in zip(sizes, shapes, strict=True):
        out.append(unvec(theta[start : start + size], shape))
        start += size
    return out


def layer_offsets(shapes: Sequence[tuple[int, int]]) -> list[int]:
    """Start index of each layer's block in θ, plus the total length at the end."""
    offsets = [0]
    for r, c in shapes:
        offsets.append(offsets[-1] + r * c)
    return offsets


def per_case_vec_grad(abar_k: Any, g_k: Any) -> Any:
    """Per-case vec(DW) = ā ⊗ g for one layer: (n, d_in+1), (n, d_out) → (n, (d_in+1)·d_out)."""
    n = abar_k.shape[0]
    return (abar_k[:, :, None] * g_k[:, None, :]).reshape(n, -1)
