"""One K-FAC step of kfac_ref against one step of kfac-jax on the CPU.

Both optimizers train the MNIST deep autoencoder of §13 (784-1000-500-250-30-250-500-1000-784,
logistic hidden units, linear code layer, logistic output with cross-entropy; §13) on the
same random mini-batches in [0, 1], from the same sparse initialization, in float32, in one
process. kfac_ref runs block-diagonal K-FAC (F̆, §4.2) on the NumPy backend with the paper's
defaults (:class:`kfac_ref.config.KFACConfig`). kfac-jax runs ``kfac_jax.Optimizer`` with its
closest settings:

============================  =============================  ====================================
                              kfac_ref (paper, §5–§8)        kfac-jax (``kfac_jax.Optimizer``)
============================  =============================  ====================================
curvature blocks              Kronecker factors Ā ⊗ G of     ``kfac_jax.register_dense`` per
                              every layer, bias joint        layer: ``KroneckerFactored`` blocks
                                                             (bias joint with the weights)
statistics (§5)               one sampled target per case,   ``estimation_mode="fisher_gradients"``
                              on τ1 = 1/8 of the batch,      (one sampled target per case) on the
                              decay min(1 − 1/k, 0.95)       whole batch, ``curvature_ema=0.95``
inverses (§8)                 every T3 = 20 steps (and       ``inverse_update_period=20``
                              k ≤ 3), Cholesky in float64    (float32 inverses)
factored damping (§6.3)       π-adjusted, γ searched over    π-adjusted with γ² = λ + η (no γ
                              3 candidates every T2 = 20     search: kfac-jax ties γ to λ)
λ (§6.5)                      Levenberg–Marquardt every      ``use_adaptive_damping=True``,
                              T1 = 5, ω1 = (19/20)^5, λ0=150 interval 5, decay 0.95, λ0 = 150
α, μ (§7)                     exact-Fisher quadratic model   ``use_adaptive_learning_rate=True``,
                              on τ2 = 1/4 of the batch       ``use_adaptive_momentum=True`` (exact
                                                             quadratic model on the whole batch)
ℓ2 weight cost η              1e-5                           ``l2_reg=1e-5``
============================  =============================  ====================================

So per step kfac-jax does more work than kfac_ref in its statistics (the whole batch instead
of 1/8) and its quadratic model (the whole batch instead of 1/4), and less at an inverse step
(one set of inverses instead of three for the γ search, in float32). Its first step does no
burn-in (``num_burnin_steps=0``). ``--matched`` runs kfac_ref with the same amount of work as
kfac-jax instead (τ1 = τ2 = 1, no γ search in the timed windows, float32 inverses): that ratio
compares the implementations rather than the algorithms' settings.

Timing. After a warm-up of one inverse period (which holds kfac-jax's JIT compilation), the
script times windows of 20 consecutive steps, each holding exactly one inverse recomputation
(and four λ adjustments) on both sides, alternating kfac_ref and kfac-jax windows; the per-step
time is the window's time / 20, and the reported number is the median over windows. Every
kfac-jax step ends with ``block_until_ready``. Both libraries use every core (OpenBLAS threads,
XLA's thread pool). Each window also records this process's CPU time and the share of the CPU
that other processes took meanwhile: on a shared machine the numbers are only worth keeping when
that share is small (a warning is printed above 10 %); ``--wait-quiet S`` waits up to S seconds
before each window for the machine to be idle, and runs another window (at most 3 more) in place
of one during which other processes took over 10 % of the CPU. The last line is
``kfac_jax_over_kfac_ref R``
(R > 1: kfac_ref is faster; the target is R ≥ 2).

    python benchmarks/peer_kfac_jax.py                  # batch 1000, 5 windows of 20 steps
    python benchmarks/peer_kfac_jax.py --quick          # batch 500, 2 windows (a few minutes)
    python benchmarks/peer_kfac_jax.py --matched --json out.json

Needs the ``bench`` extra: ``pip install -e '.[bench]'`` (jax[cpu] and kfac-jax). kfac-jax 0.0.8
(the newest release) fails with jax ≥ 0.9.2, whose ``Primitive.get_bind_params`` no longer
returns a pair; the script stops with a message then.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy

from kfac_ref.backend import get_backend
from kfac_ref.config import KFACConfig
from kfac_ref.experiments import autoencoder
from kfac_ref.mlp import MLP
from kfac_ref.optimizer import KFAC

ETA = 1e-5  # ℓ2 weight cost of §13
LAM0 = 150.0  # initial λ for the autoencoders (§6.5, [code])
PERIOD = 20  # T3 = inverse_update_period: one inverse recomputation per window
BENCH_EXTRA = "pip install -e '.[bench]'"
N_BATCHES = 4  # random mini-batches, cycled
#: kfac_ref doing kfac-jax's work (``--matched``): statistics and quadratic model on the whole
#: mini-batch, one γ (no search within the timed windows), inverses in float32.
MATCHED = {"tau1": 1.0, "tau2": 1.0, "T2": PERIOD * 10**6, "linalg": "training"}
BUSY_LOAD = 0.10  # warn when other processes take more of the CPU than this
MAX_RETRIES = 3  # with --wait-quiet: re-runs of a window that was busier than BUSY_LOAD


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--batch", type=int, default=None, help="mini-batch size (default 1000; 500 with --quick)"
    )
    p.add_argument(
        "--windows",
        type=int,
        default=None,
        help=f"timed windows of {PERIOD} steps per optimizer (default 5; 2 with --quick)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller batch and fewer windows (a few minutes)"
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each window, wait up to SECONDS for other processes to leave the CPU idle, "
        f"and re-run (up to {MAX_RETRIES} times) a window during which they took over "
        f"{100 * BUSY_LOAD:.0f}%% of it",
    )
    p.add_argument(
        "--matched",
        action="store_true",
        help="run kfac_ref with kfac-jax's amount of work (whole-batch statistics and quadratic "
        "model, no γ search, float32 inverses) instead of the paper's settings",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = 500 if args.quick else 1000
    if args.windows is None:
        args.windows = 2 if args.quick else 5
    if args.batch < 8 or args.windows < 1 or args.wait_quiet < 0:
        p.error("--batch must be at least 8, --windows at least 1 and --wait-quiet at least 0")
    return args


def import_kfac_jax() -> tuple[Any, Any, Any]:
    """(jax, jax.numpy, kfac_jax), or exit naming the ``bench`` extra."""
    try:
        import jax
        import jax.numpy as jnp
        import kfac_jax
    except ImportError as exc:
        sys.exit(
            f"peer_kfac_jax.py needs jax and kfac-jax ({exc}); install the bench extra: "
            f"{BENCH_EXTRA}"
        )
    if release(version("kfac-jax")) <= (0, 0, 8) and release(version("jax")) >= (0, 9, 2):
        # jax 0.9.2 changed Primitive.get_bind_params, which kfac-jax's tracer unpacks.
        sys.exit(
            f"kfac-jax {version('kfac-jax')} fails with jax {version('jax')} (≥ 0.9.2); "
            "install an older jax: pip install 'jax[cpu]<0.9.2'"
        )
    return jax, jnp, kfac_jax


def release(v: str) -> tuple[int, ...]:
    """'0.9.1' → (0, 9, 1) (leading numeric components only)."""
    parts = []
    for p in v.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, p))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    blas = "?"
    try:
        info = numpy.show_config(mode="dicts")
        deps = info.get("Build Dependencies", {}).get("blas", {})
        blas = f"{deps.get('name', '?')} {deps.get('version', '')}".strip()
    except TypeError:  # NumPy < 1.25 has no mode="dicts"
        pass
    return {
        "cpu": cpu,
        "cores": cores,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "numpy_blas": blas,
        "kfac_ref": version("kfac_ref"),
        "jax": version("jax"),
        "jaxlib": version("jaxlib"),
        "kfac_jax": version("kfac-jax"),
    }


# --------------------------------------------------------------------------- kfac_ref
class KfacRefSide:
    """kfac_ref's block-diagonal K-FAC on the NumPy backend in float32."""

    def __init__(
        self, mlp: MLP, weights: list[numpy.ndarray], seed: int, matched: bool = False
    ) -> None:
        self.backend = get_backend("numpy", "float32")
        self.mlp = mlp
        options = MATCHED if matched else {}
        self.config = KFACConfig(structure="block_diagonal", eta=ETA, lam0=LAM0, **options)
        self.opt = KFAC(mlp, self.config, self.backend)
        self.weights = [self.backend.asarray(W) for W in weights]
        self.state = self.opt.init_state(self.weights)
        self.seed = seed
        self.k = 0

    def step(self, X: numpy.ndarray) -> float:
        """One step on the batch X; returns its wall time in seconds."""
        self.k += 1
        rng = self.backend.rng(self.seed * 1_000_003 + self.k)
        t0 = time.perf_counter()
        self.weights, self.state, _ = self.opt.step(
            self.weights, self.state, X, X, rng, validate=False
        )
        return time.perf_counter() - t0

    def loss(self, X: numpy.ndarray) -> float:
        return float(self.mlp.loss(self.weights, X, X, ETA))


# --------------------------------------------------------------------------- kfac-jax
def sigmoid_cross_entropy(jnp: Any, z: Any, t: Any) -> Any:
    """−[t log σ(z) + (1 − t) log(1 − σ(z))], elementwise and stable."""
    return jnp.maximum(z, 0.0) - z * t + jnp.log1p(jnp.exp(-jnp.abs(z)))


def kfac_jax_loss(jax: Any, jnp: Any, kfac_jax: Any, mlp: MLP, eta: float = ETA) -> Any:
    """h(θ) of ``mlp`` (logistic or linear hidden units, Bernoulli output) for kfac-jax: mean over
    cases of the summed cross-entropy + (η/2)‖θ‖² (§2.1, η = ``eta``), every layer a tagged dense
    layer
    s_i = a_{i-1} w_i + b_i, params a list of {"w", "b"}."""
    n_hidden = mlp.n_layers - 1
    hidden = [a.name for a in mlp.activations]

    def forward(params: list[dict[str, Any]], x: Any) -> Any:
        a = x
        for i, p in enumerate(params):
            s = kfac_jax.register_dense(a @ p["w"] + p["b"], a, p["w"], p["b"])
            a = jax.nn.sigmoid(s) if i < n_hidden and hidden[i] == "logistic" else s
        return a

    def loss_fn(params: list[dict[str, Any]], x: Any) -> Any:
        z = forward(params, x)
        kfac_jax.register_sigmoid_cross_entropy_loss(z, x)
        data = jnp.sum(sigmoid_cross_entropy(jnp, z, x)) / x.shape[0]
        sq = sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(params))
        return data + 0.5 * eta * sq

    return loss_fn


class KfacJaxSide:
    """``kfac_jax.Optimizer`` on the same network, written with jnp matmuls and layer tags."""

    def __init__(
        self, mlp: MLP, weights: list[numpy.ndarray], X0: numpy.ndarray, seed: int
    ) -> None:
        self.jax, self.jnp, kfac_jax = import_kfac_jax()
        jax, jnp = self.jax, self.jnp
        loss_fn = kfac_jax_loss(jax, jnp, kfac_jax, mlp)

        self.loss_fn = jax.jit(loss_fn)
        self.opt = kfac_jax.Optimizer(
            value_and_grad_func=jax.value_and_grad(loss_fn),
            l2_reg=ETA,
            use_adaptive_learning_rate=True,
            use_adaptive_momentum=True,
            use_adaptive_damping=True,
            initial_damping=LAM0,
            damping_adaptation_interval=5,  # T1 (§6.5)
            damping_adaptation_decay=0.95,  # ω1 = 0.95^5 per adjustment (§6.5)
            include_damping_in_quad_change=True,  # ρ uses M(δ) with (λ + η) (§6.5)
            estimation_mode="fisher_gradients",  # sampled targets (§5)
            curvature_ema=0.95,  # max_stat_decay (§5)
            curvature_update_period=1,
            inverse_update_period=PERIOD,  # T3 (§8)
            num_burnin_steps=0,
            use_automatic_registration=False,  # every layer is tagged by hand above
            multi_device=False,
        )
        # kfac_ref's W_i (d_i, d_{i-1}+1) = [wᵀ | b]: same starting point on both sides.
        self.params = [
            {
                "w": jnp.asarray(W[:, :-1].T, dtype=jnp.float32),
                "b": jnp.asarray(W[:, -1], dtype=jnp.float32),
            }
            for W in weights
        ]
        self.rng = jax.random.PRNGKey(seed)
        self.state = self.opt.init(self.params, self.rng, self.device(X0))

    def device(self, X: numpy.ndarray) -> Any:
        return self.jax.device_put(self.jnp.asarray(X, dtype=self.jnp.float32))

    def step(self, X: Any) -> float:
        """One step on the (device) batch X; returns its wall time in seconds."""
        self.rng, key = self.jax.random.split(self.rng)
        t0 = time.perf_counter()
        self.params, self.state, stats = self.opt.step(self.params, self.state, key, batch=X)
        self.jax.block_until_ready((self.params, self.state, stats))
        return time.perf_counter() - t0

    def loss(self, X: Any) -> float:
        return float(self.loss_fn(self.params, X))


# --------------------------------------------------------------------------- timing
def cpu_counters() -> tuple[float, float, float] | None:
    """(busy, total) CPU seconds of the whole machine from /proc/stat, and this process's CPU
    seconds; None where /proc/stat is unreadable (not Linux)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    own = os.times()
    return (sum(fields) - idle) / hz, sum(fields) / hz, own.user + own.system


def cpu_between(before: Any, after: Any) -> tuple[float | None, float | None]:
    """(this process's CPU seconds, share of the machine's CPU taken by other processes)
    between two :func:`cpu_counters` readings."""
    if before is None or after is None:
        return None, None
    busy, total, own = (a - b for a, b in zip(after, before, strict=True))
    return own, (max(0.0, busy - own) / total if total > 0 else None)


def wait_until_quiet(max_wait: float) -> None:
    """Sleep until other processes take under ``BUSY_LOAD`` of the CPU (at most ``max_wait`` s)."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        before = cpu_counters()
        time.sleep(2.0)
        load = cpu_between(before, cpu_counters())[1]
        if load is None or load < BUSY_LOAD:
            return


def run_window(side: Any, batches: list[Any]) -> dict[str, Any]:
    """``PERIOD`` consecutive steps of ``side`` on the cycled batches (``PERIOD`` is a multiple of
    their number, so every window sees them in the same order).

    Returns the steps' wall times, this process's CPU seconds over the window, and the share of
    the machine's CPU time taken by other processes meanwhile (``foreign_load``; a busy machine
    makes every number here slower, NumPy's multi-threaded BLAS most).
    """
    before = cpu_counters()
    times = [side.step(batches[j % len(batches)]) for j in range(PERIOD)]
    cpu_s, load = cpu_between(before, cpu_counters())
    return {"times": times, "cpu_s": cpu_s, "foreign_load": load}


def summarize(windows: list[dict[str, Any]]) -> dict[str, Any]:
    per_step = [sum(w["times"]) / PERIOD for w in windows]
    flat = [t for w in windows for t in w["times"]]
    cpu = [w["cpu_s"] / PERIOD for w in windows if w["cpu_s"] is not None]
    load = [w["foreign_load"] for w in windows if w["foreign_load"] is not None]
    return {
        "per_step_s": statistics.median(per_step),
        "per_step_s_windows": per_step,
        "step_s_median": statistics.median(flat),
        "step_s_min": min(flat),
        "step_s_max": max(flat),
        "cpu_s_per_step": statistics.median(cpu) if cpu else None,
        "foreign_load": statistics.median(load) if load else None,
    }


def fmt_load(x: float | None) -> str:
    return "?" if x is None else f"{100 * x:.0f}%"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_kfac_jax()  # fail early, before the slow set-up
    mlp = autoencoder("mnist")
    rng = numpy.random.default_rng(args.seed)
    host = [
        rng.random((args.batch, mlp.layer_sizes[0]), dtype=numpy.float32) for _ in range(N_BATCHES)
    ]
    weights = mlp.init_sparse(args.seed, get_backend("numpy", "float32"))

    info = machine_info()
    print(
        f"# MNIST autoencoder {'-'.join(map(str, mlp.layer_sizes))}, batch {args.batch}, float32, "
        f"{args.windows} windows of {PERIOD} steps per optimizer after a {PERIOD}-step warm-up"
    )
    print(f"# {info['cpu']} ({info['cores']} cores), {info['platform']}, Python {info['python']}")
    print(
        f"# kfac_ref {info['kfac_ref']}, NumPy {info['numpy']} ({info['numpy_blas']}); "
        f"jax {info['jax']}, jaxlib {info['jaxlib']}, kfac-jax {info['kfac_jax']}",
        flush=True,
    )

    ref = KfacRefSide(mlp, weights, args.seed, args.matched)
    c = ref.config
    print(
        f"# kfac_ref settings: {'matched to kfac-jax' if args.matched else 'paper'} (τ1 = "
        f"{c.tau1:g}, "
        f"τ2 = {c.resolved.tau2:g}, T3 = {c.T3}, γ search every T2 = {c.T2}, "
        f"factorizations: linalg = {c.linalg!r})",
        flush=True,
    )
    t0 = time.perf_counter()
    jx = KfacJaxSide(mlp, weights, host[0], args.seed)
    dev = [jx.device(X) for X in host]
    init_s = time.perf_counter() - t0

    # Warm-up: one inverse period on each side (compiles kfac-jax's plain and λ-update steps).
    warm_jax = run_window(jx, dev)
    warm_ref = run_window(ref, host)
    print(
        f"# warm-up ({PERIOD} steps): kfac_ref {sum(warm_ref['times']):.1f} s; kfac-jax "
        f"{sum(warm_jax['times']):.1f} s with JIT compilation, +{init_s:.1f} s init",
        flush=True,
    )

    windows: dict[str, list[dict[str, Any]]] = {"kfac_ref": [], "kfac_jax": []}
    discarded: dict[str, list[dict[str, Any]]] = {"kfac_ref": [], "kfac_jax": []}
    retries = MAX_RETRIES if args.wait_quiet > 0 else 0
    for w in range(args.windows):  # alternate, so that a busy spell of the machine hits both
        line = []
        for name, side, batches in (("kfac_ref", ref, host), ("kfac_jax", jx, dev)):
            for attempt in range(retries + 1):
                wait_until_quiet(args.wait_quiet)
                win = run_window(side, batches)
                if attempt == retries or (win["foreign_load"] or 0.0) <= BUSY_LOAD:
                    break
                discarded[name].append(win)  # a busy window: run another one
            windows[name].append(win)
            line.append(
                f"{name} {sum(win['times']) / PERIOD * 1e3:.0f} ms/step "
                f"(other load {fmt_load(win['foreign_load'])})"
            )
        print(f"# window {w + 1}/{args.windows}: " + ", ".join(line), flush=True)
    n_discarded = sum(len(v) for v in discarded.values())
    if n_discarded:
        print(f"# {n_discarded} window(s) discarded and re-run: other load > {fmt_load(BUSY_LOAD)}")

    res = {name: summarize(ws) for name, ws in windows.items()}
    res["kfac_ref"]["final_loss"] = ref.loss(host[0])
    res["kfac_jax"]["final_loss"] = jx.loss(dev[0])
    ratio = res["kfac_jax"]["per_step_s"] / res["kfac_ref"]["per_step_s"]

    print()
    print(
        f"{'optimizer':<9} {'ms/step':>8} {'median ms':>10} {'min ms':>8} {'max ms':>8} "
        f"{'CPU ms/step':>12} {'other load':>11} {'h(θ) after':>11}"
    )
    for name in ("kfac_ref", "kfac_jax"):
        r = res[name]
        cpu = "?" if r["cpu_s_per_step"] is None else f"{r['cpu_s_per_step'] * 1e3:.0f}"
        print(
            f"{name:<9} {r['per_step_s'] * 1e3:>8.1f} {r['step_s_median'] * 1e3:>10.1f} "
            f"{r['step_s_min'] * 1e3:>8.1f} {r['step_s_max'] * 1e3:>8.1f} {cpu:>12} "
            f"{fmt_load(r['foreign_load']):>11} {r['final_loss']:>11.2f}"
        )
    print(
        f"# ms/step: median over windows of (wall time of {PERIOD} consecutive steps, one inverse "
        f"recomputation among them) / {PERIOD}; median/min/max: single steps (max: an inverse step)"
    )
    print(
        "# CPU ms/step: this process's CPU time (all threads); other load: share of the machine's "
        "CPU taken by other processes meanwhile (median over windows)"
    )
    loads = [r["foreign_load"] for r in res.values() if r["foreign_load"] is not None]
    busy = [w for ws in windows.values() for w in ws if (w["foreign_load"] or 0.0) > BUSY_LOAD]
    if loads and max(loads) > BUSY_LOAD:
        print(
            f"# WARNING: other processes took {fmt_load(max(loads))} of the CPU; rerun on a quiet "
            "machine"
        )
    elif busy:
        print(
            f"# note: {len(busy)} of {2 * args.windows} windows ran with other processes taking "
            "more "
            f"than {fmt_load(BUSY_LOAD)} of the CPU (the medians discount them)"
        )
    print(f"# target kfac_jax_over_kfac_ref ≥ 2: {'met' if ratio >= 2 else 'not met'}")

    if args.json is not None:
        payload = {
            "benchmark": "peer_kfac_jax",
            "network": list(mlp.layer_sizes),
            "batch": args.batch,
            "windows": args.windows,
            "period": PERIOD,
            "dtype": "float32",
            "machine": info,
            "kfac_ref_settings": "matched" if args.matched else "paper",
            "kfac_ref_config": {  # JSON has no inf (lam_max): write it as a string
                k: v if not isinstance(v, float) or math.isfinite(v) else str(v)
                for k, v in dataclasses.asdict(ref.config).items()
            },
            "kfac_jax_warmup_s": sum(warm_jax["times"]),
            "kfac_jax_init_s": init_s,
            "results": res,
            "windows_raw": windows,
            "windows_discarded": discarded,
            "kfac_jax_over_kfac_ref": ratio,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2))
    print(f"kfac_jax_over_kfac_ref {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
