"""Cost of one K-FAC iteration relative to one gradient (§8: "only several times" a gradient).

The MNIST autoencoder of §13 (784-1000-500-250-30-250-500-1000-784, logistic units, linear code
layer, Bernoulli output), a mini-batch of random inputs in [0, 1] (no data set needed), float32.

* gradient: one forward + backward pass with :meth:`kfac_ref.mlp.MLP.loss_and_grad`.
* K-FAC iteration, amortized over a window of T3 = 20 iterations of the default configuration
  (T1 = 5, T2 = T3 = 20): 16 plain iterations, 4 with the λ adjustment (ρ needs h(θ + δ), one
  more forward pass), and the last of those is also the k ≡ 0 (mod 20) iteration that recomputes the
  damped inverses for the three γ candidates (§6.6) and re-scales each. Each kind is timed on
  its own (the iteration counter of the state is set so that ``step`` takes the wanted
  branches) and the window's cost is 16·plain + 3·λ-step + 1·(γ search + λ-step), divided by 20.
  The cost without the γ search (one inverse per T3, as with T2 ≫ T3) is reported too.

Each K-FAC timing is paired with a gradient timed just before it, and the reported ratios are
medians of these per-pair ratios, which keeps them meaningful on a host shared with other work.

Prints a table, optionally saves JSON (``--json``); the last two lines are
``kfac_blockdiag_over_gradient R1`` and ``kfac_tridiag_over_gradient R2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
if __name__ == "__main__" and "--threads" in sys.argv:  # must precede the import of NumPy
    n_threads = sys.argv[sys.argv.index("--threads") + 1]
    for var in THREAD_VARS:
        os.environ[var] = n_threads

import numpy  # noqa: E402

from kfac_ref import MLP, get_backend  # noqa: E402
from kfac_ref.config import KFACConfig  # noqa: E402
from kfac_ref.optimizer import KFAC  # noqa: E402
from kfac_ref.rng import RunGenerator  # noqa: E402
from kfac_ref.structures import FACTORED as STRUCTURES  # noqa: E402  (the paper-scale ones)

LAYERS = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
ACTIVATIONS = ["logistic"] * 3 + ["linear"] + ["logistic"] * 3
ETA = 1e-5
WINDOW = 20  # T3 = T2 = 20, T1 = 5 (defaults)


def timed(fn: Callable[[], Any], backend) -> float:
    """Wall-clock seconds of one call of ``fn`` (GPU work synchronized)."""
    backend.synchronize()
    t0 = time.perf_counter()
    fn()
    backend.synchronize()
    return time.perf_counter() - t0


def paired(
    fn: Callable[[], Any], gradient: Callable[[], Any], backend, reps: int
) -> dict[str, list[float]]:
    """``reps`` timings of ``fn``, each right after a timing of one gradient, so that each ratio
    compares the two under the same machine load (the host may be shared)."""
    out: dict[str, list[float]] = {"step": [], "gradient": [], "ratio": []}
    for _ in range(reps):
        g = timed(gradient, backend)
        t = timed(fn, backend)
        out["gradient"].append(g)
        out["step"].append(t)
        out["ratio"].append(t / g)
    return out


def kfac_costs(
    mlp: MLP,
    weights,
    X,
    backend,
    config: KFACConfig,
    reps: dict[str, int],
    gradient: Callable[[], Any],
    warm: bool,
) -> dict[str, Any]:
    """Median seconds and step/gradient ratios of each kind of iteration, and the amortized cost."""
    opt = KFAC(mlp, config, backend)
    gen = RunGenerator(backend.xp, 0, lambda seed, k: k)  # NumPy: default_rng(k); CuPy: one Philox
    W, st = weights, opt.init_state(weights)
    for k in range(1, 4 if warm else 2):  # fills the statistics, the inverse and δ₀
        W, st, _ = opt.step(W, st, X, X, gen.for_iteration(k), validate=False)

    def step_at(k: int) -> Callable[[], Any]:
        state = dataclasses.replace(st, k=k - 1)
        return lambda: opt.step(W, state, X, X, gen.for_iteration(k), validate=False)

    # k = 21: plain; 25: λ rule; 40: recompute for three γ and λ rule; 60 with T2 = 40: recompute
    # for one γ and λ rule (the window without the γ search)
    kinds = {
        "plain": (21, WINDOW),
        "lambda": (25, WINDOW),
        "gamma_search": (40, WINDOW),
        "refresh_only": (60, 2 * WINDOW),
    }
    times: dict[str, dict[str, list[float]]] = {}
    for kind, (k, T2) in kinds.items():
        opt.config = dataclasses.replace(opt.config, T2=T2)
        if warm:
            step_at(k)()  # warm-up of this branch
        times[kind] = paired(step_at(k), gradient, backend, reps[kind])
    med = {kind: statistics.median(t["step"]) for kind, t in times.items()}
    ratio = {kind: statistics.median(t["ratio"]) for kind, t in times.items()}

    def window(r: dict[str, float], last: str) -> float:
        # a window k = 21..40 has 16 plain iterations, 3 with the λ rule, and k = 40
        return (16 * r["plain"] + 3 * r["lambda"] + r[last]) / WINDOW

    return {
        "median_s": med,
        "median_ratio": ratio,
        "timings": times,
        "amortized_s": window(med, "gamma_search"),
        "amortized_no_gamma_search_s": window(med, "refresh_only"),
        "ratio": window(ratio, "gamma_search"),
        "ratio_no_gamma_search": window(ratio, "refresh_only"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--batch", type=int, default=1000, help="mini-batch size (default 1000)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions (under a minute on 2 cores)"
    )
    parser.add_argument("--json", metavar="PATH", help="save the measurements as JSON")
    parser.add_argument(
        "--threads", type=int, help="BLAS threads (sets OPENBLAS/OMP/MKL_NUM_THREADS)"
    )
    parser.add_argument(
        "--constants",
        default="both",
        choices=["paper", "code", "both"],
        help="constant set: the paper's (τ2 = 1/4), the released code's (τ2 = 1), or both "
        "(default both)",
    )
    parser.add_argument(
        "--linalg",
        default="auto",
        choices=["auto", "float64", "training"],
        help="precision of the factorizations (KFACConfig.linalg; default auto: the training "
        "dtype, redone in float64 where it cannot be trusted)",
    )
    parser.add_argument(
        "--lapack-threads",
        default="1",
        help="KFACConfig.lapack_threads: SciPy's LAPACK threads during refreshes where SciPy "
        "has its own BLAS, or 'none' to leave the thread pools alone (default 1)",
    )
    parser.add_argument(
        "--float32-linalg",
        action="store_true",
        help="the older spelling of --linalg training",
    )
    args = parser.parse_args(argv)

    linalg = "training" if args.float32_linalg else args.linalg
    if args.lapack_threads.lower() == "none":
        lapack_threads = None
    elif args.lapack_threads.isdigit() and int(args.lapack_threads) >= 1:
        lapack_threads = int(args.lapack_threads)
    else:
        parser.error(
            f"--lapack-threads must be a positive integer or none, got {args.lapack_threads!r}"
        )
    backend = get_backend(args.backend, args.dtype)
    mlp = MLP(LAYERS, ACTIVATIONS, "bernoulli")
    weights = mlp.init_sparse(seed=0, backend=backend)
    X = backend.asarray(numpy.random.default_rng(0).random((args.batch, LAYERS[0])))
    if args.quick:
        grad_reps, reps = 3, {"plain": 3, "lambda": 1, "gamma_search": 1, "refresh_only": 1}
    else:
        grad_reps, reps = 9, {"plain": 7, "lambda": 5, "gamma_search": 5, "refresh_only": 5}

    def gradient() -> None:
        mlp.loss_and_grad(weights, X, X, ETA, validate=False)

    gradient()
    grad_t = [timed(gradient, backend) for _ in range(grad_reps)]
    g = statistics.median(grad_t)
    results: dict[str, Any] = {
        "device": f"{platform.machine()}, {os.cpu_count()} CPUs"
        if args.backend == "numpy"
        else "GPU",
        "blas_threads": {var: os.environ.get(var) for var in THREAD_VARS},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "backend": args.backend,
        "dtype": args.dtype,
        "batch": args.batch,
        "quick": args.quick,
        "linalg": linalg,
        "lapack_threads": lapack_threads,
        "gradient_s": g,
        "gradient_times_s": grad_t,
    }
    constant_sets = ["paper", "code"] if args.constants == "both" else [args.constants]
    for constants in constant_sets:
        for structure, key in (
            (name, cls.method.removeprefix("kfac-")) for name, cls in STRUCTURES.items()
        ):
            config = KFACConfig(
                structure=structure,
                eta=ETA,
                constants=constants,
                linalg=linalg,
                lapack_threads=lapack_threads,
            )
            results.setdefault(constants, {})[key] = kfac_costs(
                mlp, weights, X, backend, config, reps, gradient, warm=not args.quick
            )

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(
        f"MNIST autoencoder {LAYERS}, batch {args.batch}, {args.dtype} (factorizations: linalg={linalg}, "
        f"lapack_threads={lapack_threads}), "
        f"{args.backend} ({results['device']}, BLAS threads: {threads})"
    )
    print("seconds (median) and, in brackets, the median ratio to a gradient timed just before")
    rows = [
        ("plain iteration", "plain"),
        ("iteration with λ rule", "lambda"),
        ("iteration with γ search", "gamma_search"),
        ("recompute, no γ search", "refresh_only"),
    ]
    for constants in constant_sets:
        bd, td = results[constants]["blockdiag"], results[constants]["tridiag"]
        tau2 = KFACConfig(constants=constants).resolved.tau2
        print(f"\n{constants} constants (τ2 = {tau2:g})")
        print(f"{'':28}{'block-diag':>20}{'tridiag':>20}")
        print(f"{'gradient':28}{g:>20.4f}{g:>20.4f}")
        for label, kind in rows:
            cells = [
                f"{r['median_s'][kind]:.4f} [{r['median_ratio'][kind]:5.2f}]" for r in (bd, td)
            ]
            print(f"{label:28}{cells[0]:>20}{cells[1]:>20}")
        for label, a, b in (
            ("amortized over T3 = 20", "amortized_s", "ratio"),
            ("  without the γ search", "amortized_no_gamma_search_s", "ratio_no_gamma_search"),
        ):
            cells = [f"{r[a]:.4f} [{r[b]:5.2f}]" for r in (bd, td)]
            print(f"{label:28}{cells[0]:>20}{cells[1]:>20}")
        for key, r in (("blockdiag", bd), ("tridiag", td)):
            results[f"kfac_{key}_over_gradient_{constants}"] = r["ratio"]
            results[f"kfac_{key}_over_gradient_no_gamma_search_{constants}"] = r[
                "ratio_no_gamma_search"
            ]
    first = constant_sets[0]
    r1 = results[f"kfac_blockdiag_over_gradient_{first}"]
    r2 = results[f"kfac_tridiag_over_gradient_{first}"]
    results.update(kfac_blockdiag_over_gradient=r1, kfac_tridiag_over_gradient=r2)
    results["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    for constants in constant_sets:
        for key in ("blockdiag", "tridiag"):
            name = f"kfac_{key}_over_gradient_{constants}"
            print(f"{name} {results[name]:.3f}")
    print(f"kfac_blockdiag_over_gradient {r1:.3f}")
    print(f"kfac_tridiag_over_gradient {r2:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
