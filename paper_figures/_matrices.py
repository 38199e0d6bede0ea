"""The middle-layer matrices of the matrix figures: F (exact), F̃, F̆, F̂ of W_2..W_5, undamped and
γ-damped, dense on the host, and how block-tridiagonal a matrix of block means is.

Restriction to the middle layers. Every matrix shown is the 1680×1680 matrix of those
parameters alone (F, F̃, F̆, F̂ of W_2..W_5 with the other weights held fixed); inverses are
inverses of these 1680×1680 matrices. The per-case gradients of W_2..W_5 depend on x only
through a_1 = φ(W_1 ā_0), so the exact F of the middle layers is computed as the exact Fisher of
the sub-network a_1 → W_2 … W_6 → softmax (whose first four layers are W_2..W_5), sliced to its
first 1680 rows and columns: the same numbers as slicing the Fisher of the whole 7030-parameter
network, at a fraction of the cost (``tests/test_matrix_figures.py`` checks this equality).
Likewise the Kronecker factors Ā_{k,l}, G_{k,l} of the middle layers are those of the full network,
so F̃, F̆ and F̂ are built from the factors of the four middle layers only. F̂ is then the
block-tridiagonal-inverse approximation of the four-layer chain, which equals the middle part
of the whole network's F̂: F̂ is the covariance of a Gaussian chain (§4.3), and a chain's
marginal over consecutive layers is the chain of those layers (also checked in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from _networks import TrainedNet
from _options import (
    FISHER_CHUNK,
    MIDDLE_COUNT,
    MIDDLE_FIRST,
)
from _output import Stages

from kfac_ref.backend import to_numpy
from kfac_ref.compare import APPROXIMATIONS as COMPARED
from kfac_ref.compare import DENSE_F_TILDE, dense_approximation, dense_F_tilde
from kfac_ref.factors import KroneckerFactors, kronecker_factors
from kfac_ref.fisher import exact_fisher
from kfac_ref.mlp import MLP
from kfac_ref.vec import layer_offsets

# --------------------------------------------------------------------- middle-layer matrices


def middle_shapes(mlp: MLP) -> list[tuple[int, int]]:
    """Shapes of W_2..W_5, the layers shown in the figures."""
    return mlp.shapes[MIDDLE_FIRST : MIDDLE_FIRST + MIDDLE_COUNT]


def middle_slice(mlp: MLP) -> slice:
    """Where W_2..W_5 sit in θ of the whole network (for tests and notebooks)."""
    off = layer_offsets(mlp.shapes)
    return slice(off[MIDDLE_FIRST], off[MIDDLE_FIRST + MIDDLE_COUNT])


def subnetwork(mlp: MLP, weights: Sequence[Any], X: Any, first: int) -> tuple[MLP, list[Any], Any]:
    """The network a_first → W_{first+1} … W_ℓ → output, its weights, and its inputs a_first.

    Its per-case gradients of W_{first+1}.. equal those of the whole network (same ā, same g).
    """
    if first == 0:
        return mlp, list(weights), X
    sub = MLP(mlp.layer_sizes[first:], [a.name for a in mlp.activations[first:]], mlp.output.name)
    a_first = mlp.forward(weights, X).abar[first][:, :-1]
    return sub, list(weights[first:]), a_first


def restrict_factors(factors: KroneckerFactors, count: int) -> KroneckerFactors:
    """The factor blocks of the first ``count`` layers only."""
    return KroneckerFactors(
        A_bar=[row[:count] for row in factors.A_bar[:count]],
        G=[row[:count] for row in factors.G[:count]],
    )


@dataclass
class MiddleMatrices:
    """Dense host matrices of the middle layers: F (exact), F̃, F̆, F̂, undamped and γ-damped.

    ``damped[name]`` adds the factored Tikhonov damping of §6.3 to the diagonal blocks: F̃, F̆,
    F̂ are built from the damped diagonal factors, and F becomes F + Δ with Δ = F̃(γ) − F̃(0)
    (block-diagonal), so inverses of equally damped matrices are compared (as
    ``kfac_ref.compare.compare_fisher`` does). ``factors`` (the middle layers' Kronecker factors)
    rebuild F̃ at other γ (:meth:`F_tilde_at`).
    """

    undamped: dict[str, np.ndarray]
    damped: dict[str, np.ndarray]
    shapes: list[tuple[int, int]]
    gamma: float
    factors: KroneckerFactors

    @property
    def boundaries(self) -> list[int]:
        """Indices where a new layer's block starts (for dashed lines), without 0 and P."""
        return layer_offsets(self.shapes)[1:-1]

    def F_tilde_at(self, gamma: float) -> np.ndarray:
        """F̃ with factored Tikhonov damping γ (§6.3), dense, host."""
        return to_numpy(dense_F_tilde(self.factors, gamma, DENSE_F_TILDE))

    def F_at(self, gamma: float) -> np.ndarray:
        """The exact F plus the same block-diagonal damping term as F̃(γ) (F̃(γ) − F̃(0))."""
        return self.undamped["F"] + (self.F_tilde_at(gamma) - self.undamped["F_tilde"])


APPROXIMATIONS = tuple(COMPARED)  # F̃ and one dense matrix per structure (kfac_ref.structures)


def exact_fisher_chunked(
    mlp: MLP,
    weights: Sequence[Any],
    X: Any,
    stages: Stages | None = None,
    chunk: int = FISHER_CHUNK,
) -> Any:
    """``exact_fisher`` as the case-weighted mean of its values on chunks of ``chunk`` cases
    (F is a mean over cases, §2.2), with a progress bar."""
    n = X.shape[0]
    total = None
    bar = stages.bar(-(-n // chunk), "exact F") if stages else None
    for start in range(0, n, chunk):
        part = X[start : start + chunk]
        term = exact_fisher(mlp, weights, part) * (part.shape[0] / n)
        total = term if total is None else total + term
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return total


def middle_matrices(
    net: TrainedNet,
    gamma: float,
    names: Sequence[str] = APPROXIMATIONS,
    stages: Stages | None = None,
) -> MiddleMatrices:
    """F of W_2..W_5 by ``exact_fisher`` (on the sub-network) and the approximations ``names``
    (F̃ is always built) from the factors of those layers, undamped and with damping γ."""
    sub, sub_w, A1 = subnetwork(net.mlp, net.weights, net.X_cases, MIDDLE_FIRST)
    shapes = middle_shapes(net.mlp)
    P = layer_offsets(shapes)[-1]
    if stages:
        stages(f"Fisher: exact F and Kronecker factors of W_2..W_5 on {A1.shape[0]:,} cases")
    F = to_numpy(exact_fisher_chunked(sub, sub_w, A1, stages))[:P, :P]
    factors = restrict_factors(kronecker_factors(sub, sub_w, A1, method="exact"), MIDDLE_COUNT)
    wanted = ["F_tilde"] + [n for n in names if n != "F_tilde"]
    undamped = {
        "F": F,
        **{n: to_numpy(dense_approximation(COMPARED[n])(factors, 0.0)) for n in wanted},
    }
    damped = {n: to_numpy(dense_approximation(COMPARED[n])(factors, gamma)) for n in wanted}
    damped["F"] = F + (damped["F_tilde"] - undamped["F_tilde"])  # Δ lives on the diagonal blocks
    return MiddleMatrices(undamped, damped, shapes, gamma, factors)


def band_ratios(block_means: np.ndarray) -> dict[str, float]:
    """How block-tridiagonal a matrix of block means is (Figure 3's 4×4 panel).

    ``first_off_over_farther``: mean of the blocks with |k − l| = 1 ÷ mean of those with
    |k − l| ≥ 2 (≫ 1 for a block-tridiagonal matrix, about 1 when the off-diagonal blocks do not
    fall off with distance); ``diagonal_over_first_off``: mean of the diagonal blocks ÷ mean of
    the first off-diagonal ones (≫ 1 for a nearly block-diagonal matrix).
    """
    L = block_means.shape[0]
    k, l = np.indices((L, L))
    d = np.abs(k - l)
    diag, first, far = (
        float(block_means[m].mean()) if m.any() else math.nan for m in (d == 0, d == 1, d >= 2)
    )
    return {
        "first_off_over_farther": first / far if far > 0 else math.inf,
        "diagonal_over_first_off": diag / first if first > 0 else math.inf,
        "mean_diagonal": diag,
        "mean_first_off": first,
        "mean_farther": far,
    }
