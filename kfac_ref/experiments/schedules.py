"""Schedules of the experiments (§13, [code]): mini-batch size, SGD momentum, iterate averaging.

Pure functions of the iteration number k (1-based: the k-th call of ``step``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy

from ..errors import ConfigError


def minibatch_size(k: int, m1: int, n_total: int, k_full: int = 500) -> int:
    """m_k = min(⌊m₁ exp((k−1)/b)⌋, |S|), b such that m_{k_full} = |S| (§13, [code]).

    The code writes it as ⌊2^{(k−1)/div} m₁⌋ with div = (k_full − 1)/log2(|S|/m₁), the same
    numbers; from k_full on the whole training set is used. A relative slack of 1e-12 before the
    floor keeps m_{k_full} = |S| exact despite round-off.
    """
    if k < 1 or m1 < 1 or n_total < 1 or k_full < 1:
        raise ConfigError(
            f"minibatch_size needs k, m1, n_total, k_full ≥ 1; got {k}, {m1}, {n_total}, {k_full}"
        )
    if m1 >= n_total or k >= k_full:
        return n_total
    if k_full == 1:
        return n_total
    b = (k_full - 1) / math.log(n_total / m1)
    m = m1 * math.exp((k - 1) / b)
    return min(int(math.floor(m * (1.0 + 1e-12))), n_total)


def draw_minibatch(n: int, m: int, *seed: int) -> numpy.ndarray:
    """The m case indices of a mini-batch drawn without replacement from n cases (§13), from a
    NumPy generator seeded by ``seed`` (e.g. the run's seed and the iteration k): the same draw
    on every machine and after every resume."""
    return numpy.random.default_rng(list(seed)).choice(n, size=m, replace=False)


def sutskever_momentum(t: int, mu_max: float) -> float:
    """μ_t = min(1 − 2^{−1−log2(⌊t/250⌋+1)}, μ_max) (Sutskever et al. 2013, the baseline of §13).

    Equivalently 1 − 1/(2(⌊t/250⌋+1)): 0.5 for t < 250, 0.75 for t < 500, 5/6 for t < 750, …
    """
    if t < 0:
        raise ConfigError(f"the momentum schedule needs t ≥ 0, got {t}")
    return min(1.0 - 2.0 ** (-1.0 - math.log2(t // 250 + 1)), mu_max)


def average_decay(k: int, start: int = 200, decay: float = 0.99) -> float:
    """Decay of the iterate average at iteration k ([code]): 0 before ``start``, then
    min(1 − 1/(k − start + 1), ``decay``) — a plain mean at first, then exponential."""
    if k < start:
        return 0.0
    return min(1.0 - 1.0 / (k - start + 1), decay)


def iterate_average(
    avg: Sequence[Any], weights: Sequence[Any], k: int, start: int = 200, decay: float = 0.99
) -> list[Any]:
    """θ̄_k = c θ̄_{k−1} + (1 − c) θ_k with c = :func:`average_decay` (the authors' code, §13).

    Before ``start`` (c = 0) the average is a copy of the weights. Returns a new list.
    """
    c = average_decay(k, start, decay)
    if c == 0.0:
        return [W.copy() for W in weights]
    return [c * A + (1.0 - c) * W for A, W in zip(avg, weights, strict=True)]
