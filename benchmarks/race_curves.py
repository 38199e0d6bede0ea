"""Time-to-error race on the CURVES quick problem.

One run at a time, each on the same problem as ``paper_figures/autoencoders.py --quick``: the
first 2000 training cases of the CURVES stand-in kfac_ref loads, the 784-400-200-100-50-25-6-…-784
autoencoder of §13 (logistic hidden units, linear code layer, Bernoulli output), kfac_ref's
sparse initialization from seed 0, float32 on the CPU. The racers:

* ``kfac-blockdiag-{paper,code}``, ``kfac-tridiag-{paper,code}``: kfac_ref's K-FAC, F̆ and F̂, with
  the paper's constants (τ2 = 1/4) and the released code's (τ2 = 1), trained by
  :func:`kfac_ref.experiments.run_experiment` (m_k from m₁ = 250 growing to all 2000 at k = 100);
* ``sgd-lr{0.02,0.05,0.1}``: kfac_ref's SGD with Nesterov momentum (batch 250), the quick figure's
  CURVES learning-rate grid;
* ``kfac-jax``: ``kfac_jax.Optimizer`` (adaptive learning rate, momentum and damping, λ0 = 150,
  ``l2_reg=1e-5``, ``inverse_update_period=20``) on the same arrays, initial weights, mini-batch
  sizes and mini-batch order (the cases kfac_ref's run draws at iteration k).

Every run's clock counts optimizer time only, as kfac_ref's runs log it (the step and the iterate
average); drawing the mini-batch and evaluating the training error are outside it, for every
racer. The training error is kfac_ref's ``train_error``: the mean over the 2000 cases of the
squared reconstruction error summed over pixels, the smaller of the raw and the averaged
iterate's (averaging from k = 200, decay 0.99, as in the authors' code), computed by kfac_ref for
the kfac-jax weights too. The script reports, per run, the optimizer seconds and iteration at
which the error first reaches 10, 1 and 0.1, a trace (seconds, error), and the machine's load
(load average at the start and end, share of the CPU other processes took). A run stops at
``--max-seconds`` of optimizer time, ``--max-iters`` or once it has reached the last target
(checked every 50 iterations for kfac_ref's K-FAC runs, every 2000 for SGD, at every evaluation
for kfac-jax; the crossings are the first evaluated points either way).

kfac-jax compiles its step once per mini-batch shape and per value of a static flag (damping
update, every 5th step): on this schedule about 100 variants, 15–60 s each on a 2-core CPU (XLA's
compilation is most of it). By default each variant is compiled just before the step that
first needs it, outside the clock, with at most ``LIVE_VARIANTS`` kept (compiling all of them
before the run exhausted this machine's 24 GB); ``prewarm_s`` and ``compile_s_per_shape`` in the
JSON give those seconds, and ``compile_s_in_clock`` checks that none fell inside the clock.
``--kfac-jax-cold`` compiles inside the run instead and reports both clocks:
with compilation, and without it (the seconds jax reports through ``jax.monitoring``
subtracted; the budget ``--max-seconds`` counts the latter).

    python benchmarks/race_curves.py --json race.json --plot race.png           # the full race
    python benchmarks/race_curves.py --quick --json quick.json --plot quick.png  # 2–3 min
    python benchmarks/race_curves.py --only kfac-tridiag-code kfac-jax --max-seconds 120
    python benchmarks/race_curves.py --json race.json --plot race.png --resume   # continue

kfac-jax needs the ``bench`` extra (``pip install -e '.[bench]'``); without it the kfac-jax racer
is skipped with a message and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_kfac_jax import (  # noqa: E402
    BENCH_EXTRA,
    cpu_between,
    cpu_counters,
    kfac_jax_loss,
    machine_info,
    release,
    version,
)

from kfac_ref.backend import get_backend  # noqa: E402
from kfac_ref.errors import ConfigError, NonFiniteError  # noqa: E402
from kfac_ref.experiments import (  # noqa: E402
    AUTOENCODERS,
    RunConfig,
    autoencoder,
    io,
    load_run_data,
    reconstruction_error,
    run_experiment,
)
from kfac_ref.experiments.cli import ArgumentParser  # noqa: E402
from kfac_ref.experiments.exit_status import run_script  # noqa: E402
from kfac_ref.experiments.schedules import (  # noqa: E402
    average_decay,
    draw_minibatch,
    minibatch_size,
)

TARGETS = (10.0, 1.0, 0.1)
#: The CURVES quick problem (paper_figures/autoencoders.py QUICK): 2000 cases, m₁ = 250 → 2000
#: at k = 100; evaluated every 10 iterations.
PROBLEM = {"n_train": 2000, "m1": 250, "k_full": 100, "eval_every": 10}
#: --quick: a tiny race (a smaller schedule, a few seconds per run).
QUICK = {"n_train": 500, "m1": 250, "k_full": 2, "max_seconds": 8.0, "max_iters": 40}
SGD_LRS = (0.02, 0.05, 0.1)
KFAC_RACERS = tuple(f"kfac-{s}-{c}" for s in ("blockdiag", "tridiag") for c in ("paper", "code"))
SGD_RACERS = tuple(f"sgd-lr{lr:g}" for lr in SGD_LRS)
RACERS = (*KFAC_RACERS, *SGD_RACERS, "kfac-jax")
GROUPS = {"kfac_ref": KFAC_RACERS, "sgd": SGD_RACERS}
LAM0 = 150.0  # λ0 of the autoencoders (§6.5)
ETA = AUTOENCODERS["curves"]["eta"]  # ℓ2 weight cost η = 1e-5 (§13)
INVERSE_PERIOD = 20  # T3 (§8)
#: Iterations per run_experiment call of a kfac_ref racer (it stops between calls once the last
#: target is reached); SGD's iterations are cheap, so its chunks are longer.
CHUNK = {"kfac": 50, "sgd": 2000}
#: kfac-jax step variants kept compiled at once (each holds several hundred MB of XLA code)
LIVE_VARIANTS = 6
#: The keys of the JSON's settings that must match for --resume to continue a race.
SETTINGS_KEYS = (
    "n_train",
    "m1",
    "k_full",
    "eval_every",
    "sgd_eval_every",
    "max_seconds",
    "sgd_max_seconds",
    "max_iters",
    "seed",
    "layers",
    "kfac_jax_cold",
)


# --------------------------------------------------------------------------- arguments
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="RACER",
        help=f"racers to run, in this order: {', '.join(RACERS)}, or the groups "
        f"{', '.join(GROUPS)} (default: all)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="optimizer seconds per run (default 600; 8 with --quick)",
    )
    p.add_argument(
        "--sgd-max-seconds",
        type=float,
        default=None,
        help="optimizer seconds per SGD run (default: --max-seconds, an equal budget)",
    )
    p.add_argument(
        "--max-iters",
        type=int,
        default=None,
        help="iterations per run at most (default: no cap; 40 with --quick)",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"a tiny race (2–3 min on a 2-core CPU): {QUICK}"
    )
    p.add_argument("--n-train", type=int, default=None, help="training cases (default 2000)")
    p.add_argument("--m1", type=int, default=None, help="first mini-batch size (default 250)")
    p.add_argument(
        "--k-full",
        type=int,
        default=None,
        help="iteration from which m_k is all the cases (default 100)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=10,
        help="K-FAC, kfac-jax: evaluate every N iterations (default 10)",
    )
    p.add_argument(
        "--sgd-eval-every",
        type=int,
        default=50,
        help="SGD: evaluate every N iterations (default 50)",
    )
    p.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        help="other layer widths (tests; default: the CURVES autoencoder of §13)",
    )
    p.add_argument(
        "--kfac-jax-cold",
        action="store_true",
        help="compile kfac-jax's step inside the run, not before it (both clocks are reported)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of θ₀, mini-batches and samples")
    p.add_argument("--data-dir", default=None, help="data directory (default: the cache)")
    p.add_argument("--json", type=Path, default=None, help="write the results here (atomically)")
    p.add_argument("--plot", type=Path, default=None, help="draw error vs seconds here")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the race in --json: keep its finished runs, run the others",
    )
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback")
    args = p.parse_args(argv)
    quick = QUICK if args.quick else {}
    for name, default in (("n_train", 2000), ("m1", 250), ("k_full", 100)):
        if getattr(args, name) is None:
            setattr(args, name, quick.get(name, default))
    if args.max_seconds is None:
        args.max_seconds = quick.get("max_seconds", 600.0)
    if args.max_iters is None:
        args.max_iters = quick.get("max_iters", 10**7)
    if args.sgd_max_seconds is None:
        args.sgd_max_seconds = args.max_seconds
    for name in ("max_seconds", "sgd_max_seconds"):
        value = getattr(args, name)
        if not (value > 0 and value < float("inf")):
            p.error(f"--{name.replace('_', '-')} must be a number of seconds > 0, got {value:g}")
    for name in ("max_iters", "n_train", "m1", "k_full", "eval_every", "sgd_eval_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.resume and args.json is None:
        p.error("--resume continues the race saved in --json PATH; give --json")
    if args.resume and not args.json.is_file():
        p.error(f"--resume: {args.json} does not exist (run without --resume to start the race)")
    racers: list[str] = []
    for name in args.only or RACERS:
        if name in GROUPS:
            racers.extend(GROUPS[name])
        elif name in RACERS:
            racers.append(name)
        else:
            p.error(
                f"--only: unknown racer {name!r}; choose from {', '.join(RACERS)} or the groups "
                f"{', '.join(GROUPS)}"
            )
    args.racers = list(dict.fromkeys(racers))
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_train": args.n_train,
        "m1": args.m1,
        "k_full": args.k_full,
        "eval_every": args.eval_every,
        "sgd_eval_every": args.sgd_eval_every,
        "max_seconds": args.max_seconds,
        "sgd_max_seconds": args.sgd_max_seconds,
        "max_iters": args.max_iters,
        "seed": args.seed,
        "layers": args.layers,
        "kfac_jax_cold": args.kfac_jax_cold,
        "targets": list(TARGETS),
        "dtype": "float32",
    }


# --------------------------------------------------------------------------- crossings
def finite(x: Any) -> float | None:
    """x as a float, or None when it is missing, NaN or infinite (JSON has neither)."""
    return float(x) if x is not None and numpy.isfinite(x) else None


def crossings(
    trace: Sequence[Sequence[float]], targets: Sequence[float] = TARGETS
) -> dict[str, dict[str, float] | None]:
    """For each target, the first point of ``trace`` ((iteration, seconds, error), in order of
    iteration) whose error is ≤ target: ``{"iteration", "seconds", "error"}``, or None if none."""
    out: dict[str, dict[str, float] | None] = {}
    for t in targets:
        hit = next((p for p in trace if p[2] is not None and p[2] <= t), None)
        out[f"{t:g}"] = (
            None if hit is None else {"iteration": hit[0], "seconds": hit[1], "error": hit[2]}
        )
    return out


def fmt_err(e: float | None) -> str:
    return "nan" if e is None else f"{e:.4g}"


class Load:
    """The machine's load over one run: load averages at the start and end, and the share of
    the CPU that other processes took meanwhile (from /proc/stat, as peer_kfac_jax.py)."""

    def __init__(self) -> None:
        self.start = list(os.getloadavg())
        self.counters = cpu_counters()
        self.t0 = time.perf_counter()

    def finish(self) -> dict[str, Any]:
        _, foreign = cpu_between(self.counters, cpu_counters())
        return {
            "loadavg_start": self.start,
            "loadavg_end": list(os.getloadavg()),
            "foreign_cpu_share": foreign,
            "wall_s": time.perf_counter() - self.t0,
        }


# --------------------------------------------------------------------------- kfac_ref racers
def run_config(args: argparse.Namespace, racer: str) -> RunConfig:
    common = dict(
        dataset="curves",
        seed=args.seed,
        backend="numpy",
        dtype="float32",
        n_train=args.n_train,
        n_test=0,
        layers=args.layers,
        m1=args.m1,
        k_full=args.k_full,
        data_dir=args.data_dir,
        max_seconds=args.max_seconds,
        iters=args.max_iters,
    )
    if racer.startswith("sgd-lr"):
        lr = float(racer.removeprefix("sgd-lr"))
        common["max_seconds"] = args.sgd_max_seconds
        return RunConfig(method="sgd-momentum", sgd_lr=lr, eval_every=args.sgd_eval_every, **common)
    structure, constants = racer.removeprefix("kfac-").split("-")
    return RunConfig(
        method=f"kfac-{structure}", constants=constants, eval_every=args.eval_every, **common
    )


def race_kfac_ref(
    args: argparse.Namespace, racer: str, X_train: numpy.ndarray, theta0: list[numpy.ndarray]
) -> dict[str, Any]:
    """One kfac_ref racer: :func:`run_experiment` in chunks (resuming its checkpoint, so the
    numbers are an uninterrupted run's), stopping once the last target is reached."""
    cfg = run_config(args, racer)
    chunk = CHUNK["sgd" if racer.startswith("sgd") else "kfac"]
    load = Load()
    with tempfile.TemporaryDirectory(prefix="race_curves_") as tmp:
        k, records = 0, []
        while True:
            k = min(k + chunk, args.max_iters)
            part = RunConfig(**{**cfg.to_json(), "iters": k, "checkpoint_every": chunk})
            records = run_experiment(
                part,
                tmp,
                resume=bool(records),
                progress=False,
                data=(X_train, None),
                init_weights=theta0,
                data_label=f"CURVES, first {args.n_train} training cases",
            )
            last = records[-1]
            trace = [
                [r["iteration"], r["time"], finite(r["train_error"])]
                for r in records
                if "train_error" in r
            ]
            print(
                f"  {racer}: k = {last['iteration']}, {last['time']:.1f} s, "
                f"error {fmt_err(trace[-1][2])}",
                flush=True,
            )
            if (
                trace[-1][2] is None
                or trace[-1][2] <= min(TARGETS)
                or last["iteration"] >= args.max_iters
                or last["time"] >= cfg.max_seconds
            ):
                break
    err = trace[-1][2]
    stop = stop_reason(err, last["time"] >= cfg.max_seconds)
    return {
        "racer": racer,
        "library": "kfac_ref",
        "config": cfg.to_json(),
        "iterations": last["iteration"],
        "seconds": last["time"],
        "final_error": err,
        "stopped": stop,
        "crossings": crossings(trace),
        "trace": trace,
        **load.finish(),
    }


# --------------------------------------------------------------------------- kfac-jax
def import_kfac_jax() -> tuple[Any, Any, Any] | str:
    """(jax, jax.numpy, kfac_jax), or why they cannot be used (a message naming the extra)."""
    try:
        import jax
        import jax.numpy as jnp
        import kfac_jax
    except ImportError as exc:
        return f"kfac-jax is not installed ({exc}); install the bench extra: {BENCH_EXTRA}"
    if release(version("kfac-jax")) <= (0, 0, 8) and release(version("jax")) >= (0, 9, 2):
        return (
            f"kfac-jax {version('kfac-jax')} fails with jax {version('jax')} (≥ 0.9.2); install "
            "an older jax: pip install 'jax[cpu]<0.9.2'"
        )
    return jax, jnp, kfac_jax


class CompileClock:
    """Seconds jax spends tracing, lowering and compiling (its ``jax.monitoring`` events)."""

    EVENTS = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")

    def __init__(self, jax: Any) -> None:
        self.seconds = 0.0
        self.by_event = dict.fromkeys(self.EVENTS, 0.0)
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        for name in self.EVENTS:
            if event.endswith(name):
                self.seconds += duration
                self.by_event[name] += duration


def stop_reason(err: float | None, out_of_time: bool) -> str:
    """Why a run ended: diverged (no finite error), target (0.1 reached), max_seconds, max_iters."""
    if err is None:
        return "diverged"
    if err <= min(TARGETS):
        return "target"
    return "max_seconds" if out_of_time else "max_iters"


def race_kfac_jax(
    args: argparse.Namespace, X_train: numpy.ndarray, theta0: list[numpy.ndarray]
) -> dict[str, Any]:
    """``kfac_jax.Optimizer`` on kfac_ref's problem: same arrays, θ₀, m_k and mini-batch order."""
    jax, jnp, kfac_jax = import_kfac_jax()
    mlp = autoencoder("curves", args.layers)
    backend = get_backend("numpy", "float32")
    clock = CompileClock(jax)
    n = X_train.shape[0]

    loss_fn = kfac_jax_loss(jax, jnp, kfac_jax, mlp, ETA)

    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_fn),
        l2_reg=ETA,
        use_adaptive_learning_rate=True,
        use_adaptive_momentum=True,
        use_adaptive_damping=True,
        initial_damping=LAM0,
        damping_adaptation_interval=5,
        damping_adaptation_decay=0.95,
        include_damping_in_quad_change=True,
        estimation_mode="fisher_gradients",
        curvature_ema=0.95,
        curvature_update_period=1,
        inverse_update_period=INVERSE_PERIOD,
        num_burnin_steps=0,
        use_automatic_registration=False,
        multi_device=False,
    )

    copy = jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))

    def batch_size(k: int) -> int:
        return minibatch_size(k, min(args.m1, n), n, args.k_full)

    @jax.jit
    def average(avg: Any, params: Any, c: Any) -> Any:
        return jax.tree_util.tree_map(lambda a, w: c * a + (1.0 - c) * w, avg, params)

    def to_ref(params: Any) -> list[Any]:
        """kfac_ref's W_i = [wᵀ | b]."""
        return [
            backend.asarray(numpy.hstack([numpy.asarray(p["w"]).T, numpy.asarray(p["b"])[:, None]]))
            for p in params
        ]

    Xd = jax.device_put(jnp.asarray(X_train, dtype=jnp.float32))
    params = [
        {
            "w": jnp.asarray(W[:, :-1].T, dtype=jnp.float32),
            "b": jnp.asarray(W[:, -1], dtype=jnp.float32),
        }
        for W in theta0
    ]
    key = jax.random.PRNGKey(args.seed)
    t0 = time.perf_counter()
    state = opt.init(params, key, Xd[: batch_size(1)])
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0

    # kfac-jax's step is compiled per mini-batch shape and per value of its static argument
    # "update the damping now" (every 5th step): the variants this run will meet.
    last_k = min(args.max_iters, args.k_full)
    variants = {(batch_size(k), k % 5 == 0) for k in range(1, last_k + 1)}
    if args.max_iters > args.k_full:
        variants |= {(n, False), (n, True)}
    compile_s: dict[str, float] = {}
    prewarm_s = 0.0
    live: set[tuple[int, bool]] = set()  # variants compiled since the caches were last cleared

    def warm(k: int, m: int) -> None:
        """Compile the variant of step k outside the clock, on copies (the step donates its
        arguments), first clearing jax's caches when LIVE_VARIANTS are held: compiling all ~100
        at once exhausted the 24 GB of this machine (LLVM: cannot allocate memory)."""
        nonlocal prewarm_s
        variant = (m, k % 5 == 0)
        if variant in live:
            return
        t0 = time.perf_counter()
        if len(live) >= LIVE_VARIANTS:
            jax.clear_caches()
            live.clear()
        p_copy, s_copy = copy(params), copy(state)
        before = clock.seconds
        jax.block_until_ready(opt.step(p_copy, s_copy, key, batch=Xd[:m]))
        jax.block_until_ready(average(params, copy(params), 0.5))
        call_s = time.perf_counter() - t0
        name = f"{m}{'/damping' if variant[1] else ''}"
        compile_s[name] = min(clock.seconds - before, call_s)
        prewarm_s += call_s
        live.add(variant)

    load = Load()
    in_compile = 0.0  # jax's tracing and compilation seconds inside the clock
    avg, elapsed, k = params, 0.0, 0
    trace: list[list[float]] = []
    trace_no_compile: list[list[float]] = []
    while True:
        k += 1
        m = batch_size(k)
        # the mini-batch kfac_ref's run draws at k, put on the device outside the clock
        Xb = jax.block_until_ready(jax.device_put(X_train[draw_minibatch(n, m, args.seed, k)]))
        key, sub = jax.block_until_ready(jax.random.split(key))
        c = average_decay(k, 200, 0.99)  # RunConfig's average_start and average_decay
        if not args.kfac_jax_cold:
            warm(k, m)
        before = clock.seconds
        t0 = time.perf_counter()
        params, state, _ = opt.step(params, state, sub, batch=Xb)
        # iterate average, inside the clock as in kfac_ref's runs (a copy before averaging starts:
        # the next step donates the weights)
        avg = copy(params) if c == 0.0 else average(avg, params, c)
        jax.block_until_ready((params, state, avg))
        step_s = time.perf_counter() - t0
        elapsed += step_s
        # jax's reported seconds can overlap (nested traces): at most the step's own time
        in_compile += min(clock.seconds - before, step_s)
        # the budget counts optimizer seconds without compilation (all of it before the clock
        # unless --kfac-jax-cold)
        done = elapsed - in_compile >= args.max_seconds or k >= args.max_iters
        if k % args.eval_every == 0 or k == 1 or done:
            raw = reconstruction_error(mlp, to_ref(params), X_train)
            av = reconstruction_error(mlp, to_ref(avg), X_train)
            err = finite(min(raw, av))
            trace.append([k, elapsed, err])
            trace_no_compile.append([k, elapsed - in_compile, err])
            if k % (5 * args.eval_every) == 0 or done:
                print(f"  kfac-jax: k = {k}, {elapsed:.1f} s, error {fmt_err(err)}", flush=True)
            if err is None or err <= min(TARGETS):
                done = True
        if done:
            break
    err = trace[-1][2]
    stop = stop_reason(err, elapsed - in_compile >= args.max_seconds)
    result = {
        "racer": "kfac-jax",
        "library": f"kfac-jax {version('kfac-jax')}, jax {version('jax')}",
        "iterations": k,
        "seconds": elapsed,
        "final_error": err,
        "stopped": stop,
        "crossings": crossings(trace),
        "trace": trace,
        "init_s": init_s,
        "compiled_before_clock": not args.kfac_jax_cold,  # each variant just before its step
        "prewarm_s": prewarm_s,
        "compile_s_per_shape": compile_s,
        "compile_s_in_clock": in_compile,
        "n_step_variants": len(variants),
        "jax_compile_s_by_event": clock.by_event,
        **load.finish(),
    }
    if args.kfac_jax_cold:
        result["crossings_excluding_compile"] = crossings(trace_no_compile)
        result["trace_excluding_compile"] = trace_no_compile
    return result


# --------------------------------------------------------------------------- output
def write_json(path: Path, payload: dict[str, Any]) -> None:
    io.write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False))


def plot(path: Path, payload: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for j, (name, run) in enumerate(payload["runs"].items()):
        pts = [(s, e) for _, s, e in run.get("trace", []) if e is not None and e > 0]
        if not pts:
            continue
        color, style = ("k", "-") if name == "kfac-jax" else (f"C{j}", "-")
        if name.startswith("sgd"):
            style = "--"
        ax.plot(*zip(*pts, strict=True), style, marker=".", ms=3, label=name, color=color)
    for t in TARGETS:
        ax.axhline(t, color="0.6", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer seconds (evaluation excluded)")
    ax.set_ylabel("training error (squared error per case)")
    s = payload["settings"]
    ax.set_title(
        f"CURVES, {s['n_train']} cases, m₁ = {s['m1']} → all at k = {s['k_full']}, float32, CPU",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    with io.atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)


def fmt(c: dict[str, float] | None) -> str:
    return "-" if c is None else f"{c['seconds']:.1f} s (k={c['iteration']})"


def summary(payload: dict[str, Any]) -> None:
    print()
    head = "".join(f"{'to ' + format(t, 'g'):>20}" for t in TARGETS)
    print(f"{'racer':<20}{head}{'final':>10}{'iters':>7}{'s/iter':>8}{'other CPU':>10}")
    for name, run in payload["runs"].items():
        if "crossings" not in run:
            print(f"{name:<20} {run.get('skipped', run.get('error', '?'))}")
            continue
        row = "".join(f"{fmt(run['crossings'][f'{t:g}']):>20}" for t in TARGETS)
        share = run.get("foreign_cpu_share")
        fe = run["final_error"]
        print(
            f"{name:<20}{row}{'nan' if fe is None else format(fe, '.4g'):>10}{run['iterations']:>7}"
            f"{run['seconds'] / max(run['iterations'], 1):>8.3f}"
            f"{'?' if share is None else format(100 * share, '.0f') + '%':>10}"
        )
        if "crossings_excluding_compile" in run:
            row = "".join(
                f"{fmt(run['crossings_excluding_compile'][f'{t:g}']):>20}" for t in TARGETS
            )
            print(f"{'  (no compile)':<20}{row}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    payload: dict[str, Any] = {
        "benchmark": "race_curves",
        "settings": settings(args),
        "machine": machine_info(),
        "runs": {},
    }
    if args.resume:
        try:
            saved = json.loads(args.json.read_text())
            old = saved["settings"]
            runs = dict(saved["runs"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--resume: {args.json} is not a race_curves JSON ({exc})") from None
        diff = [k for k in SETTINGS_KEYS if old.get(k) != payload["settings"][k]]
        if diff:
            raise ConfigError(
                f"--resume: {args.json} was run with other settings ("
                + ", ".join(f"{k}: {old.get(k)!r} → {payload['settings'][k]!r}" for k in diff)
                + "); use its options or another --json"
            )
        payload["runs"] = {k: v for k, v in runs.items() if "crossings" in v}
    for path in (args.json, args.plot):
        if path is not None:
            io.require_writable_dir(
                path.parent if str(path.parent) else Path("."), "output directory"
            )

    # The data and θ₀ kfac_ref's runs use (the quick figure's), on the host in float32.
    base = run_config(args, KFAC_RACERS[0])
    backend = get_backend("numpy", "float32")
    X_train, _, info = load_run_data(base, backend)
    mlp = autoencoder("curves", args.layers)
    theta0 = mlp.init_sparse(args.seed, backend, replace=base.sparse_init_replace)
    payload["data"] = info
    print(
        f"# CURVES race: {info['data']}; {'-'.join(map(str, mlp.layer_sizes))}; m₁ = {args.m1} → "
        f"{args.n_train} at k = {args.k_full}; ≤ {args.max_seconds:g} optimizer s per run",
        flush=True,
    )
    if args.json is not None:  # from now on --resume can continue this race
        write_json(args.json, payload)
    jax_ok = import_kfac_jax() if "kfac-jax" in args.racers else None
    for racer in args.racers:
        if racer in payload["runs"]:
            print(f"# {racer}: kept from {args.json}")
            continue
        print(f"# {racer}", flush=True)
        if racer == "kfac-jax":
            if isinstance(jax_ok, str):
                print(f"# kfac-jax skipped: {jax_ok}", flush=True)
                payload["runs"][racer] = {"racer": racer, "skipped": jax_ok}
                continue
            try:
                run = race_kfac_jax(args, X_train, theta0)
            except Exception as exc:  # noqa: BLE001 - a failing peer must not lose the race
                if args.debug:
                    raise
                traceback.print_exc()
                print(f"# kfac-jax failed: {exc!r}", flush=True)
                run = {"racer": racer, "error": repr(exc)}
        else:
            try:
                run = race_kfac_ref(args, racer, X_train, theta0)
            except NonFiniteError as exc:  # a diverged run is a result, not the end of the race
                print(f"# {racer} failed: {exc}", flush=True)
                run = {"racer": racer, "error": str(exc)}
        payload["runs"][racer] = run
        if args.json is not None:
            write_json(args.json, payload)
    summary(payload)
    if args.json is not None:
        write_json(args.json, payload)
    if args.plot is not None:
        plot(args.plot, payload)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
