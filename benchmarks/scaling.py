"""How a K-FAC iteration's cost scales with the mini-batch and the layer width.

Two sweeps, each point timed in one process on random inputs in [0, 1] (no data set needed),
float32, the paper's constants unless ``--constants code``:

* batch: the MNIST autoencoder of §13 (784-1000-500-250-30-250-500-1000-784), m = 250 … 16,000;
* width: 784-w-w-w-784 autoencoders (logistic hidden units, Bernoulli output), w = 250 … 2000,
  batch 1000.

At each point, for block-diagonal F̆ and block-tridiagonal F̂: a plain iteration and an
iteration that recomputes the damped inverses for one γ (no γ search; k ≡ 0 mod T3, also a
λ-rule iteration), each as the median of
its ratio to a gradient (forward + backward) timed just before it; and the seconds of applying
the damped inverse to a gradient (§4.2 F̆⁻¹; §4.3 F̂⁻¹ = Ξᵀ Λ Ξ), with their ratio F̂/F̆.

    python benchmarks/scaling.py                       # both sweeps (about 10 min on 2 cores)
    python benchmarks/scaling.py --sweep width --json width.json
    python benchmarks/scaling.py --quick               # two points per sweep, one repetition

The last lines are ``name value`` pairs, e.g. ``width_2000_tridiag_plain 3.1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy

from kfac_ref import MLP, get_backend
from kfac_ref.config import KFACConfig
from kfac_ref.experiments import io
from kfac_ref.optimizer import KFAC
from kfac_ref.rng import RunGenerator

MNIST = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
MNIST_ACT = ["logistic"] * 3 + ["linear"] + ["logistic"] * 3
BATCHES = [250, 500, 1000, 2000, 4000, 8000, 16000]
WIDTHS = [250, 500, 1000, 2000]
ETA = 1e-5
STRUCTURES = {"blockdiag": "block_diagonal", "tridiag": "block_tridiagonal"}


def seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def point(layers: list[int], acts: list[str], batch: int, constants: str, reps: int) -> dict:
    """Ratios to a gradient of a plain and a refresh iteration, and the inverse's apply time."""
    backend = get_backend("numpy", "float32")
    mlp = MLP(layers, acts, "bernoulli")
    W = mlp.init_sparse(seed=0, backend=backend)
    X = backend.asarray(numpy.random.default_rng(0).random((batch, layers[0])))

    def gradient() -> None:
        mlp.loss_and_grad(W, X, X, ETA, validate=False)

    gradient()
    grads = mlp.loss_and_grad(W, X, X, ETA, validate=False)[1]
    out: dict[str, Any] = {"gradient_s": statistics.median(seconds(gradient) for _ in range(reps))}
    for key, structure in STRUCTURES.items():
        # T2 large: the refresh iteration (k = 40, a multiple of T3) builds one set of inverses
        cfg = KFACConfig(structure=structure, eta=ETA, constants=constants, T2=10**6)
        opt = KFAC(mlp, cfg, backend)
        gen = RunGenerator(backend.xp, 0, lambda seed, k: k)
        Wk, st = W, opt.init_state(W)
        for k in range(1, 4):
            Wk, st, _ = opt.step(Wk, st, X, X, gen.for_iteration(k), validate=False)
        res: dict[str, float] = {}
        for kind, k in (("plain", 21), ("refresh", 40)):
            step = functools.partial(
                opt.step, Wk, dataclasses.replace(st, k=k - 1), X, X, gen.for_iteration(k), False
            )
            step()  # warm-up of this branch
            ratios = []
            for _ in range(reps):
                g = seconds(gradient)
                ratios.append(seconds(step) / g)
            res[kind] = statistics.median(ratios)
        apply = functools.partial(st.inverse.apply, grads)
        apply()
        res["apply_s"] = statistics.median(seconds(apply) for _ in range(reps))
        out[key] = res
    out["apply_tridiag_over_blockdiag"] = out["tridiag"]["apply_s"] / out["blockdiag"]["apply_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sweep", choices=["batch", "width", "both"], default="both")
    p.add_argument("--constants", choices=["paper", "code"], default="paper")
    p.add_argument("--reps", type=int, default=3, help="timings per point (default 3)")
    p.add_argument("--quick", action="store_true", help="two points per sweep, one repetition")
    p.add_argument("--json", metavar="PATH", help="save the measurements as JSON")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be ≥ 1, got {args.reps}")
    reps = 1 if args.quick else args.reps
    batches = [250, 1000] if args.quick else BATCHES
    widths = [250, 500] if args.quick else WIDTHS
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "numpy": numpy.__version__,
        "constants": args.constants,
        "load_average_start": os.getloadavg(),
        "batch": {},
        "width": {},
    }
    head = (
        f"{'':>14}{'F̆ plain':>9}{'F̂ plain':>9}{'F̆ refresh':>11}{'F̂ refresh':>11}{'apply F̂/F̆':>12}"
    )
    names: list[tuple[str, float]] = []

    def show(label: str, tag: str, r: dict) -> None:
        bd, td = r["blockdiag"], r["tridiag"]
        print(
            f"{label:>14}{bd['plain']:>9.2f}{td['plain']:>9.2f}{bd['refresh']:>11.2f}"
            f"{td['refresh']:>11.2f}{r['apply_tridiag_over_blockdiag']:>12.2f}",
            flush=True,
        )
        for key in ("blockdiag", "tridiag"):
            names.append((f"{tag}_{key}_plain", r[key]["plain"]))
            names.append((f"{tag}_{key}_refresh", r[key]["refresh"]))
        names.append((f"{tag}_apply_tridiag_over_blockdiag", r["apply_tridiag_over_blockdiag"]))

    print(
        f"iteration / gradient (medians), float32, {args.constants} constants, {results['machine']}"
    )
    if args.sweep in ("batch", "both"):
        print(f"\nbatch sweep, MNIST autoencoder {MNIST}\n{head}")
        for m in batches:
            r = point(MNIST, MNIST_ACT, m, args.constants, reps)
            results["batch"][m] = r
            show(f"m = {m}", f"batch_{m}", r)
    if args.sweep in ("width", "both"):
        print(f"\nwidth sweep, 784-w-w-w-784, batch 1000\n{head}")
        for w in widths:
            layers = [784, w, w, w, 784]
            r = point(layers, ["logistic"] * 3, 1000, args.constants, reps)
            results["width"][w] = r
            show(f"w = {w}", f"width_{w}", r)
    results["load_average_end"] = os.getloadavg()
    if args.json:
        io.write_text_atomic(args.json, json.dumps(results, indent=2))
    print()
    for name, value in names:
        print(f"{name} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
