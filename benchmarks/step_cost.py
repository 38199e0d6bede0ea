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

``--breakdown`` times the parts of a plain iteration on their own, each as a ratio to the
gradient timed just before it: the gradient (forward and backward pass on the m cases), the
statistics (§5: the backward pass with sampled targets on the τ1 = 1/8 subset and the products
Ā, G), applying the inverse (Δ = −F̆⁻¹∇h or −F̂⁻¹∇h), the τ2 = 1 products of §7 (J Δ and J δ₀ on
all m cases, and the 2 × 2 model), and ρ's forward pass (h(θ + δ), every T1 iterations). These
are where the large mini-batches of §13 spend their time.

``--peak-memory mnist|faces`` instead runs one iteration of each structure at the data set's
whole training set (MNIST 60,000 × 784, FACES 103,500 × 625, random inputs; the FACES network
625-2000-1000-500-30-…, linear output) of the heaviest kind (γ search with three inverses and
the λ rule) in a fresh process, and reports the process's peak resident memory.
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
from kfac_ref.backend import KNOWN_BACKENDS, KNOWN_DTYPES  # noqa: E402
from kfac_ref.config import KFACConfig  # noqa: E402
from kfac_ref.optimizer import KFAC  # noqa: E402
from kfac_ref.rescale import quadratic_model_on_span  # noqa: E402
from kfac_ref.rng import RunGenerator  # noqa: E402
from kfac_ref.statistics import choose_subset, running_statistics, subset_forward  # noqa: E402
from kfac_ref.structures import FACTORED as STRUCTURES  # noqa: E402  (the paper-scale ones)

LAYERS = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
ACTIVATIONS = ["logistic"] * 3 + ["linear"] + ["logistic"] * 3
#: --peak-memory: (layers, output, training cases) of the §13 autoencoders at full batch
FULL_BATCH = {
    "mnist": (LAYERS, "bernoulli", 60_000),
    "faces": ([625, 2000, 1000, 500, 30, 500, 1000, 2000, 625], "gaussian", 103_500),
}
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


def breakdown(
    mlp: MLP, weights, X, backend, config: KFACConfig, reps: int, gradient: Callable[[], Any]
) -> dict[str, Any]:
    """Median seconds and median ratio to a paired gradient of each part of a plain iteration
    (module docstring), with the state of three warm-up iterations."""
    opt = KFAC(mlp, config, backend)
    gen = RunGenerator(backend.xp, 0, lambda seed, k: k)
    W, st = weights, opt.init_state(weights)
    for k in range(1, 4):
        W, st, _ = opt.step(W, st, X, X, gen.for_iteration(k), validate=False)
    rng = gen.for_iteration(21)
    eta, lam_eta = config.eta, st.lam + config.eta
    _, grads, fwd = mlp.loss_and_grad(W, X, X, eta, validate=False)
    Delta = [-v for v in st.inverse.apply(grads)]
    new_W = [w + d for w, d in zip(W, Delta, strict=True)]

    def statistics_part() -> None:
        idx = choose_subset(X.shape[0], config.tau1, rng)
        running_statistics(
            mlp, W, subset_forward(fwd, idx), st.stats, rng, 21, opt.structure.statistics
        )

    def products_part() -> None:
        J = mlp.jvps(W, fwd, [Delta, st.delta])
        quadratic_model_on_span(mlp, W, fwd, grads, Delta, st.delta, J[1], lam_eta, J_Delta=J[0])

    parts = {
        "gradient": gradient,
        "statistics (τ1 = 1/8)": statistics_part,
        "apply the inverse": lambda: st.inverse.apply(grads),
        "τ2 = 1 products (§7)": products_part,
        "ρ's forward pass": lambda: mlp.loss(new_W, X, X, eta, validate=False),
    }
    out = {}
    for name, fn in parts.items():
        fn()  # warm-up
        t = paired(fn, gradient, backend, reps)
        out[name] = {"s": statistics.median(t["step"]), "ratio": statistics.median(t["ratio"])}
    return out


def peak_memory(dataset: str, dtype: str, cases: int | None = None) -> dict[str, Any]:
    """One heaviest-kind iteration (γ search, λ rule) of each factored structure at the whole
    training set of ``dataset`` (or ``cases`` cases), and the process's peak resident memory
    (``ru_maxrss``)."""
    import resource

    layers, output, n = FULL_BATCH[dataset]
    n = n if cases is None else cases
    backend = get_backend("numpy", dtype)
    hidden = len(layers) - 2
    acts = ["linear" if i == hidden // 2 else "logistic" for i in range(hidden)]
    mlp = MLP(layers, acts, output)
    X = backend.asarray(numpy.random.default_rng(0).random((n, layers[0])))
    weights = mlp.init_sparse(seed=0, backend=backend)
    out: dict[str, Any] = {"dataset": dataset, "cases": n, "layers": layers, "dtype": dtype}
    for structure in STRUCTURES:
        opt = KFAC(mlp, KFACConfig(structure=structure, constants="code"), backend)
        gen = RunGenerator(backend.xp, 0, lambda seed, k: k)
        st = opt.init_state(weights)
        t0 = time.perf_counter()
        _, st, _ = opt.step(weights, st, X, X, gen.for_iteration(1), validate=False)
        st = dataclasses.replace(st, k=19)  # the next step is k = 20: γ search and λ rule
        _, _, info = opt.step(weights, st, X, X, gen.for_iteration(20), validate=False)
        out[structure] = {
            "seconds_two_iterations": time.perf_counter() - t0,
            "gamma_searched": info["gamma_searched"],
        }
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out["load_average"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=KNOWN_BACKENDS)
    parser.add_argument("--batch", type=int, default=1000, help="mini-batch size (default 1000)")
    parser.add_argument("--dtype", default="float32", choices=KNOWN_DTYPES)
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
        "--breakdown",
        action="store_true",
        help="time the parts of a plain iteration (gradient, statistics, inverse, τ2 = 1 "
        "products, ρ's forward pass) instead of the kinds of iteration",
    )
    parser.add_argument(
        "--peak-memory",
        choices=sorted(FULL_BATCH),
        help="peak memory of one full-batch iteration of each structure on this data set's "
        "network and training-set size (random inputs)",
    )
    parser.add_argument(
        "--cases",
        type=int,
        help="with --peak-memory: this many cases instead of the whole training set (two sizes "
        "give the memory per case)",
    )
    args = parser.parse_args(argv)
    if args.cases is not None and (args.cases < 1 or not args.peak_memory):
        parser.error("--cases needs --peak-memory and a positive number of cases")

    if args.peak_memory:
        result = peak_memory(args.peak_memory, args.dtype, args.cases)
        print(json.dumps(result, indent=1))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        return 0
    linalg = args.linalg
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
    if args.breakdown:
        constants = "code" if args.constants == "both" else args.constants
        print(
            f"MNIST autoencoder, batch {args.batch}, {args.dtype}, {constants} constants: "
            "seconds (median) [median ratio to a gradient timed just before]"
        )
        for structure, cls in STRUCTURES.items():
            config = KFACConfig(
                structure=structure,
                eta=ETA,
                constants=constants,
                linalg=linalg,
                lapack_threads=lapack_threads,
            )
            parts = breakdown(mlp, weights, X, backend, config, grad_reps, gradient)
            results.setdefault("breakdown", {})[cls.method.removeprefix("kfac-")] = parts
            print(f"\n{cls.method}")
            for name, r in parts.items():
                print(f"  {name:26}{r['s']:10.4f} [{r['ratio']:5.2f}]")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
        return 0
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
        f"MNIST autoencoder {LAYERS}, batch {args.batch}, {args.dtype} (factorizations: "
        f"linalg={linalg}, "
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
