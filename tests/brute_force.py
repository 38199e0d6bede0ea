"""Brute-force expectations over every (case, y) pair of a tiny tanh network, sharing no code
with :mod:`kfac_ref` (the oracle of ``test_cumulants.py`` and ``test_diagnostics.py``).

The forward and backward passes are written here; y is enumerated with its probability
(softmax: the classes; Bernoulli: the binary vectors; unit-variance Gaussian: y = s + ε with
ε ∈ {±1}^d, which has the Gaussian's moments up to order three — enough for every expectation
that holds at most two g's and is linear in each). Joint cumulants come from moments by the
set-partition formula κ(X_1..X_k) = Σ_π (−1)^{|π|−1} (|π|−1)! Π_{B∈π} E[Π_{i∈B} X_i].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np


def forward_backward(weights: list[np.ndarray], x: np.ndarray, output: str, y_of: Callable) -> list:
    """[(prob, [ā_0, ā_1, …], [g_1, g_2, …])] for one case x, one entry per value y can take."""
    abars, a = [], x
    acts = []
    for i, W in enumerate(weights):
        ab = np.append(a, 1.0)
        abars.append(ab)
        s = W @ ab
        if i < len(weights) - 1:
            a = np.tanh(s)
            acts.append(a)
    out = []
    for prob, ds in y_of(s, output):
        g = [None] * len(weights)
        g[-1] = ds
        for i in range(len(weights) - 1, 0, -1):
            g[i - 1] = (weights[i][:, :-1].T @ g[i]) * (1.0 - acts[i - 1] ** 2)
        out.append((prob, abars, g))
    return out


def prediction(s: np.ndarray, output: str) -> np.ndarray:
    """E[y | s]: softmax, logistic, or s itself (unit-variance Gaussian)."""
    if output == "softmax":
        p = np.exp(s - s.max())
        return p / p.sum()
    if output == "bernoulli":
        return 1.0 / (1.0 + np.exp(-s))
    return s


def targets(s: np.ndarray, output: str) -> Iterator[tuple[float, np.ndarray]]:
    """(P(y | s), ∂L/∂s = prediction − y) for every y the output distribution can take."""
    d = s.shape[0]
    p = prediction(s, output)
    if output == "softmax":
        for c in range(d):
            yield p[c], p - np.eye(d)[c]
    elif output == "bernoulli":
        for bits in np.ndindex(*(2,) * d):
            y = np.array(bits, dtype=float)
            yield float(np.prod(np.where(y == 1, p, 1 - p))), p - y
    else:  # gaussian, y = s + ε with Rademacher ε
        for signs in np.ndindex(*(2,) * d):
            eps = 2.0 * np.array(signs) - 1.0
            yield 0.5**d, -eps


def per_parameter(abars: list[np.ndarray], g: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(ā_p, g_p) for every parameter p in θ's vec (column-major) order: parameter (c, r) of
    layer i sits at c·d_i + r, with ā_p = ā_{i-1}[c] and g_p = g_i[r]."""
    a = np.concatenate([np.repeat(ab, gi.shape[0]) for ab, gi in zip(abars, g, strict=True)])
    gg = np.concatenate([np.tile(gi, ab.shape[0]) for ab, gi in zip(abars, g, strict=True)])
    return a, gg


def gradient(weights: list[np.ndarray], X: np.ndarray, Y: np.ndarray, output: str) -> np.ndarray:
    """∇h = mean over cases of Dθ = ā_p g_p with the training targets Y (no weight cost)."""
    total = 0.0
    for x, y in zip(X, Y, strict=True):

        def observed(s: np.ndarray, out: str, y=y) -> Iterator[tuple[float, np.ndarray]]:
            yield 1.0, prediction(s, out) - y

        [(_, abars, g)] = forward_backward(weights, x, output, observed)
        a, gg = per_parameter(abars, g)
        total = total + a * gg
    return total / X.shape[0]


def atoms(weights: list[np.ndarray], X: np.ndarray, output: str):
    """Probabilities w (atoms,) of every (case, y), cases uniform, and ā_p, g_p (atoms, P)
    (:func:`per_parameter`)."""
    w, A, G = [], [], []
    for x in X:
        for prob, abars, g in forward_backward(weights, x, output, targets):
            w.append(prob / X.shape[0])
            a, gg = per_parameter(abars, g)
            A.append(a)
            G.append(gg)
    return np.array(w), np.array(A), np.array(G)


def partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1 :]
        yield [[first]] + part


def joint_cumulant(w: np.ndarray, variables: list[np.ndarray]) -> np.ndarray:
    """κ(X_1, …, X_k) from the moments of the enumerated distribution (set partitions)."""
    total = 0.0
    for part in partitions(list(range(len(variables)))):
        term = (-1.0) ** (len(part) - 1) * math.factorial(len(part) - 1)
        for block in part:
            prod = np.prod(np.broadcast_arrays(*[variables[i] for i in block]), axis=0)
            term = term * np.tensordot(w, prod, axes=(0, 0))
        total = total + term
    return total


class BruteForce:
    """Every matrix over ordered pairs (p, q): (1) = p (rows), (2) = q (columns)."""

    def __init__(self, weights: list[np.ndarray], X: np.ndarray, output: str) -> None:
        w, A, G = atoms(weights, X, output)
        self.w = w
        self.a1, self.a2 = A[:, :, None], A[:, None, :]
        self.g1, self.g2 = G[:, :, None], G[:, None, :]

    def E(self, *xs: np.ndarray) -> np.ndarray:
        return np.tensordot(self.w, np.prod(np.broadcast_arrays(*xs), axis=0), axes=(0, 0))

    def k(self, *xs: np.ndarray) -> np.ndarray:
        return joint_cumulant(self.w, list(xs))
