"""Every curvature structure in the same optimizer on a small deep autoencoder (§3, §4, §6, §7).

K-FAC's F̆⁻¹ (§4.2) and F̂⁻¹ (§4.3) against the dense F̃⁻¹ (§3) and exact natural gradient
(F + D_γ)⁻¹, each run by :class:`kfac_ref.optimizer.KFAC` with the paper's constants but λ0.
The problem: synthetic CURVES images (``make_curves``, generator v1, seed 0) pooled 28×28 → 4×4,
and a 16-8-3-8-16 autoencoder (logistic hidden units, linear code, Bernoulli outputs; P = 339);
mini-batches growing from :data:`FIRST_BATCH` cases to all of them by half the run (§13). Every
run of a seed uses the same initialization, batches and random numbers; only the structure
differs. The error is the squared reconstruction error per case on all cases.

Used by ``paper_figures/structures_compare.py`` (the figure) and
``notebooks_src/06_exact_natural_gradient.py`` (the same runs, discussed).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import get_backend
from ..config import KFACConfig
from ..mlp import MLP
from ..optimizer import KFAC
from .data import downscale_images, make_curves
from .run_config import autoencoder
from .runner import reconstruction_error
from .schedules import draw_minibatch, minibatch_size

LAYERS = (16, 8, 3, 8, 16)
FIRST_BATCH = 100


def problem(cases: int) -> tuple[MLP, np.ndarray]:
    """The 16-8-3-8-16 CURVES autoencoder and ``cases`` pooled 4×4 CURVES images."""
    X = downscale_images(make_curves(cases, np.random.default_rng(0), version=1), 28, 4)
    return autoencoder("curves", list(LAYERS)), X


def train(
    mlp: MLP, X: np.ndarray, structure: str, lam0: float, seed: int, iters: int, eval_every: int
) -> dict[str, Any]:
    """One run: the training error at 0, eval_every, …, the wall time of each step, the last γ
    and λ."""
    backend = get_backend("numpy", "float64")
    n = X.shape[0]
    opt = KFAC(mlp, KFACConfig(structure=structure, lam0=lam0), backend)
    W = mlp.init_sparse(seed=seed, backend=backend)
    state, errors, seconds = opt.init_state(W), [reconstruction_error(mlp, W, X)], []
    for k in range(1, iters + 1):
        size = minibatch_size(k, FIRST_BATCH, n, k_full=max(1, iters // 2))
        idx = draw_minibatch(n, size, seed, 0, k)
        t0 = time.perf_counter()
        W, state, info = opt.step(W, state, X[idx], X[idx], np.random.default_rng([seed, 1, k]))
        seconds.append(time.perf_counter() - t0)
        if k % eval_every == 0 or k == iters:
            errors.append(reconstruction_error(mlp, W, X))
    return {"errors": errors, "step_seconds": seconds, "gamma": info["gamma"], "lam": info["lam"]}


def evaluated_iterations(iters: int, eval_every: int) -> list[int]:
    """The iterations :func:`train` evaluates the error at: 0, eval_every, …, and the last."""
    its = [0, *range(eval_every, iters + 1, eval_every)]
    return its if its[-1] == iters else [*its, iters]


def compare(
    cases: int,
    structures: Sequence[str],
    seeds: Sequence[int],
    lam0s: Sequence[float],
    iters: int,
    eval_every: int,
) -> dict[str, Any]:
    """Every run, the median and range of the errors, and the cost per iteration of each
    structure: for each k the fastest of its runs (iteration k does the same work in every run
    of a structure), the mean over k."""
    mlp, X = problem(cases)
    runs = {
        lam0: {
            s: {n: train(mlp, X, n, lam0, s, iters, eval_every) for n in structures} for s in seeds
        }
        for lam0 in lam0s
    }
    cost = {
        n: float(
            np.min(
                [runs[lam0][s][n]["step_seconds"] for lam0 in lam0s for s in seeds], axis=0
            ).mean()
        )
        for n in structures
    }
    curves = {}
    for lam0 in lam0s:
        curves[lam0] = {}
        for n in structures:
            E = np.array([runs[lam0][s][n]["errors"] for s in seeds])
            curves[lam0][n] = {
                "median": np.median(E, axis=0),
                "min": E.min(axis=0),
                "max": E.max(axis=0),
            }
    return {
        "iterations": evaluated_iterations(iters, eval_every),
        "runs": runs,
        "curves": curves,
        "seconds_per_iteration": cost,
        "n_params": mlp.n_params,
        "layers": list(LAYERS),
        "data": f"{cases} CURVES images (make_curves v1, seed 0), 28×28 pooled to 4×4",
    }
