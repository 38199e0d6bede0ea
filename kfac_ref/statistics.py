"""Estimating the factor statistics online (§5).

Each iteration takes a random subset of τ1 = 1/8 of the mini-batch, reuses its rows of the
gradient's forward pass (the ā's do not depend on the targets), runs **one** extra backward pass
from targets sampled from the model (not the training targets, §5), and forms the batch estimates
of Ā_{i-1,i-1}, G_{i,i} (and, for the block-tridiagonal F̂, Ā_{i-1,i}, G_{i,i+1}). The running
estimates are exponentially decaying averages with decay ε_k = min(1 − 1/k, 0.95), so the first
iterations average plainly.

Indexing follows :mod:`kfac_ref.vec` (the table in :mod:`kfac_ref.inverse`): symbols carry the
paper's indices, list entry k is layer i = k+1: ``A_diag[k]`` = Ā_{i-1,i-1} (= Ā_{k,k}),
``G_diag[k]`` = G_{i,i} (= G_{k+1,k+1}), ``A_off[k]`` = Ā_{i-1,i}, ``G_off[k]`` = G_{i,i+1}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backend import cast, get_array_module
from .errors import ConfigError
from .factors import A_bar_block, G_block, exact_G_passes, sampled_G_passes
from .mlp import MLP, Forward


@dataclass
class FactorStats:
    """Kronecker-factor statistics of one network (§5); off-diagonals only for F̂ (else None).

    Shapes: ``A_diag[k]`` (d_k+1, d_k+1), ``G_diag[k]`` (d_{k+1}, d_{k+1}),
    ``A_off[k]`` (d_k+1, d_{k+1}+1), ``G_off[k]`` (d_{k+1}, d_{k+2}).
    """

    A_diag: list[Any]
    G_diag: list[Any]
    A_off: list[Any] | None = None
    G_off: list[Any] | None = None

    def arrays(self) -> list[Any]:
        """Every array, in a fixed order (for finiteness checks)."""
        return self.A_diag + self.G_diag + (self.A_off or []) + (self.G_off or [])

    def astype(self, dtype: Any) -> FactorStats:
        """The statistics in ``dtype`` (arrays already in it are not copied)."""

        def c(a: list[Any] | None) -> list[Any] | None:
            return None if a is None else cast(a, dtype)

        return FactorStats(c(self.A_diag), c(self.G_diag), c(self.A_off), c(self.G_off))


def stat_decay(k: int, max_decay: float = 0.95) -> float:
    """ε_k = min(1 − 1/k, max_decay) for iteration k ≥ 1 (§5, [code] ``maxfade_stats``)."""
    if k < 1:
        raise ConfigError(f"the statistics' decay needs k ≥ 1, got {k}")
    return min(1.0 - 1.0 / k, max_decay)


def ema_update(old: Any, new: Any, eps: float) -> Any:
    """ε·old + (1 − ε)·new (§5); ``old`` = None returns ``new``."""
    if old is None:
        return new
    return eps * old + (1.0 - eps) * new


def update_stats(old: FactorStats | None, new: FactorStats, eps: float) -> FactorStats:
    """The running statistics after iteration k: :func:`ema_update` of every factor (§5)."""
    if old is None:
        return new

    def mix(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        if a is None or b is None:
            return None
        return [ema_update(x, y, eps) for x, y in zip(a, b, strict=True)]

    return FactorStats(
        A_diag=mix(old.A_diag, new.A_diag),
        G_diag=mix(old.G_diag, new.G_diag),
        A_off=mix(old.A_off, new.A_off),
        G_off=mix(old.G_off, new.G_off),
    )


def subset_size(n: int, tau: float) -> int:
    """⌈τ n⌉ cases, at least one and at most n ([code] ``ceil(ratio_sample*size_minibatch)``)."""
    return min(n, max(1, math.ceil(tau * n)))


def choose_subset(n: int, tau: float, rng: Any) -> Any | None:
    """Sorted indices of a random ⌈τ n⌉-subset of the n cases, drawn with ``rng``; None = all."""
    m = subset_size(n, tau)
    if m == n:
        return None
    u = rng.random(n)
    xp = get_array_module(u)  # NumPy or CuPy, whichever the generator draws on
    return xp.sort(xp.argsort(u)[:m])


def subset_forward(fwd: Forward, idx: Any | None) -> Forward:
    """The rows ``idx`` of a forward pass (its ā, s and φ'); ``idx`` = None returns ``fwd``."""
    if idx is None:
        return fwd
    return Forward(abar=[a[idx] for a in fwd.abar], s=[s[idx] for s in fwd.s], dphi=[d[idx] for d in fwd.dphi])


def batch_factor_stats(
    mlp: MLP,
    weights: Sequence[Any],
    fwd: Forward,
    rng: Any,
    tridiagonal: bool,
    method: str = "sample",
) -> FactorStats:
    """Batch estimates of Ā_{i-1,i-1}, G_{i,i} (and Ā_{i-1,i}, G_{i,i+1}) on the cases of ``fwd`` (§5).

    ``method="sample"``: one backward pass from y ~ P(y | x, θ) drawn with ``rng`` (the paper);
    ``"exact"``: the expectation over y exactly, from the d_ℓ columns of a square root of F_R.
    """
    if method == "sample":
        passes = sampled_G_passes(mlp, weights, fwd, rng, 1)
    elif method == "exact":
        passes = exact_G_passes(mlp, weights, fwd)
    else:
        raise ConfigError(f"unknown statistics method {method!r}; choose 'sample' or 'exact'")
    n = fwd.abar[0].shape[0]
    L = mlp.n_layers
    abar = fwd.abar

    def G(k: int, l: int) -> Any:
        return sum(G_block(g[k], g[l], n) for g in passes)

    stats = FactorStats(
        A_diag=[A_bar_block(abar[k], abar[k]) for k in range(L)],
        G_diag=[G(k, k) for k in range(L)],
    )
    if tridiagonal:
        stats.A_off = [A_bar_block(abar[k], abar[k + 1]) for k in range(L - 1)]
        stats.G_off = [G(k, k + 1) for k in range(L - 1)]
    return stats


def running_statistics(
    mlp: MLP,
    weights: Sequence[Any],
    fwd: Forward,
    old: FactorStats | None,
    rng: Any,
    k: int,
    names: Sequence[str],
    method: str = "sample",
    max_decay: float = 0.95,
) -> tuple[FactorStats, float]:
    """(the statistics after iteration k, ε_k) (§5): the batch estimates of the statistics
    ``names`` (a structure's :attr:`~kfac_ref.inverse.CurvatureInverse.statistics`) on the
    cases of ``fwd``, mixed into ``old`` with decay ε_k = min(1 − 1/k, max_decay)."""
    new = batch_factor_stats(mlp, weights, fwd, rng, "A_off" in names, method)
    eps = stat_decay(k, max_decay)
    return update_stats(old, new, eps), eps
