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

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .backend import cast, get_array_module
from .errors import ConfigError
from .factors import A_bar_block, G_block, exact_G_passes, sampled_G_passes
from .mlp import MLP, Forward
from .vec import per_case_vec_grad


@dataclass
class FactorStats:
    """The running statistics of one network (§5): those a structure names in its
    ``statistics`` (:mod:`kfac_ref.structures`); the others are None.

    Shapes (:func:`stats_shapes`): ``A_diag[k]`` (d_k+1, d_k+1), ``G_diag[k]`` (d_{k+1}, d_{k+1}),
    ``A_off[k]`` (d_k+1, d_{k+1}+1), ``G_off[k]`` (d_{k+1}, d_{k+2}) (for F̂); ``A_upper``,
    ``G_upper``: Ā_{k,l}, G_{k+1,l+1} for every pair k < l in the order of :func:`upper_pairs`
    (for F̃); ``F``: [the exact Fisher (P, P)] of the subset's cases (for exact natural gradient).
    """

    A_diag: list[Any]
    G_diag: list[Any]
    A_off: list[Any] | None = None
    G_off: list[Any] | None = None
    A_upper: list[Any] | None = None
    G_upper: list[Any] | None = None
    F: list[Any] | None = None

    @staticmethod
    def names() -> tuple[str, ...]:
        """The names of the statistics, in a fixed order."""
        return tuple(f.name for f in dataclasses.fields(FactorStats))

    def fields(self) -> dict[str, list[Any] | None]:
        """Every statistic by name, in a fixed order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def arrays(self) -> list[Any]:
        """Every array, in a fixed order (for finiteness checks)."""
        return [a for v in self.fields().values() if v is not None for a in v]

    def astype(self, dtype: Any) -> FactorStats:
        """The statistics in ``dtype`` (arrays already in it are not copied)."""
        return FactorStats(
            **{k: None if v is None else cast(v, dtype) for k, v in self.fields().items()}
        )


def upper_pairs(L: int) -> list[tuple[int, int]]:
    """The layer pairs (k, l), k < l, of ``A_upper``/``G_upper``, row by row."""
    return [(k, l) for k in range(L) for l in range(k + 1, L)]


def stats_shapes(sizes: Sequence[int], names: Sequence[str]) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of the statistics ``names`` for layer widths d_0 … d_ℓ."""
    L = len(sizes) - 1
    A = [(sizes[k] + 1, sizes[l] + 1) for k in range(L) for l in range(L)]
    G = [(sizes[k + 1], sizes[l + 1]) for k in range(L) for l in range(L)]
    P = sum(sizes[k + 1] * (sizes[k] + 1) for k in range(L))
    every = {
        "A_diag": [A[k * L + k] for k in range(L)],
        "G_diag": [G[k * L + k] for k in range(L)],
        "A_off": [A[k * L + k + 1] for k in range(L - 1)],
        "G_off": [G[k * L + k + 1] for k in range(L - 1)],
        "A_upper": [A[k * L + l] for k, l in upper_pairs(L)],
        "G_upper": [G[k * L + l] for k, l in upper_pairs(L)],
        "F": [(P, P)],
    }
    return {name: every[name] for name in names}


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

    return FactorStats(**{k: mix(v, getattr(new, k)) for k, v in old.fields().items()})


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
    return Forward(
        abar=[a[idx] for a in fwd.abar], s=[s[idx] for s in fwd.s], dphi=[d[idx] for d in fwd.dphi]
    )


def batch_factor_stats(
    mlp: MLP,
    weights: Sequence[Any],
    fwd: Forward,
    rng: Any,
    tridiagonal: bool,
    method: str = "sample",
) -> FactorStats:
    """Batch estimates of Ā_{i-1,i-1}, G_{i,i} (and Ā_{i-1,i}, G_{i,i+1}) on the cases of ``fwd``
    (§5).

    ``method="sample"``: one backward pass from y ~ P(y | x, θ) drawn with ``rng`` (the paper);
    ``"exact"``: the expectation over y exactly, from the d_ℓ columns of a square root of F_R.
    """
    names = ("A_diag", "G_diag", "A_off", "G_off") if tridiagonal else ("A_diag", "G_diag")
    return batch_statistics(mlp, weights, fwd, rng, names, method)


def batch_statistics(
    mlp: MLP,
    weights: Sequence[Any],
    fwd: Forward,
    rng: Any,
    names: Sequence[str],
    method: str = "sample",
) -> FactorStats:
    """Batch estimates of the statistics ``names`` (fields of :class:`FactorStats`) on the
    cases of ``fwd`` (§5), with the backward passes of ``method`` (:func:`batch_factor_stats`).

    ``"F"`` is the exact Fisher of the cases, (1/n) Σ_x E_y[Dθ Dθᵀ] with the expectation over
    the model's y computed exactly (d_ℓ backward passes, :func:`kfac_ref.factors.exact_G_passes`)
    whichever ``method`` gives the factors.
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
    if "A_off" in names:
        stats.A_off = [A_bar_block(abar[k], abar[k + 1]) for k in range(L - 1)]
        stats.G_off = [G(k, k + 1) for k in range(L - 1)]
    if "A_upper" in names:
        stats.A_upper = [A_bar_block(abar[k], abar[l]) for k, l in upper_pairs(L)]
        stats.G_upper = [G(k, l) for k, l in upper_pairs(L)]
    if "F" in names:
        stats.F = [exact_fisher_of_cases(mlp, weights, fwd)]
    return stats


def exact_fisher_of_cases(mlp: MLP, weights: Sequence[Any], fwd: Forward) -> Any:
    """F = (1/n) Σ_x Σ_j Dθ_j Dθ_jᵀ over the d_ℓ backward passes of the columns of C
    (F_R = C Cᵀ): the exact Fisher of the n cases of ``fwd`` (§2.2), (P, P) in θ order."""
    xp = get_array_module(fwd.abar[0])
    n = fwd.abar[0].shape[0]
    total: Any = 0.0
    for g in exact_G_passes(mlp, weights, fwd):
        J = xp.concatenate(
            [per_case_vec_grad(a, g_k) for a, g_k in zip(fwd.abar, g, strict=True)], axis=1
        )
        total = total + J.T @ J
    return total / n


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
    ``names`` (a structure's :attr:`~kfac_ref.curvature.CurvatureInverse.statistics`) on the
    cases of ``fwd``, mixed into ``old`` with decay ε_k = min(1 − 1/k, max_decay)."""
    new = batch_statistics(mlp, weights, fwd, rng, names, method)
    eps = stat_decay(k, max_decay)
    return update_stats(old, new, eps), eps
