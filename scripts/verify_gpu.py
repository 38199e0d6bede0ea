"""Verify kfac_ref's CuPy backend on a machine with an NVIDIA GPU; print a report to paste.

One command, from the repository root, after ``pip install -e '.[test,gpu]'``::

    python scripts/verify_gpu.py                 # CURVES, MNIST and FACES widths
    python scripts/verify_gpu.py --quick         # CURVES only, fewer iterations
    python scripts/verify_gpu.py --out gpu-report.md

It runs, in order:

1. **the GPU tests on real CuPy**: ``pytest -m gpu tests/test_cupy.py`` (each test runs on the
   GPU and on the CPU stand-in; none of the GPU ones may be skipped here);
2. **a CuPy-vs-NumPy parity report** on the §13 autoencoders (CURVES, MNIST, FACES widths,
   random inputs in [0, 1]): both structures, the same initial weights and the same random bits
   (one Philox generator per run, :mod:`kfac_ref.rng`, draws identical numbers on both
   backends), float64 and float32; the relative difference of the losses at every iteration and
   of the final weights;
3. ``benchmarks/step_cost.py --backend cupy`` (``--quick`` with ``--quick``): a K-FAC
   iteration's cost relative to a gradient on the GPU.

The report (Markdown) names the GPU, CuPy, CUDA and the commit; it ends with one verdict line.
``--stand-in`` runs step 2 on the strict CPU stand-in of ``tests/fakecupy`` instead (a check of
this script on a machine without a GPU; the numbers then agree exactly).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy  # noqa: E402

from kfac_ref.backend import KNOWN_DTYPES, cupy_available, get_backend, to_numpy  # noqa: E402
from kfac_ref.config import KFACConfig  # noqa: E402
from kfac_ref.experiments import AUTOENCODERS, autoencoder  # noqa: E402
from kfac_ref.optimizer import KFAC  # noqa: E402
from kfac_ref.rng import Philox  # noqa: E402
from kfac_ref.structures import FACTORED as STRUCTURES  # noqa: E402  (the paper-scale ones)
from kfac_ref.vec import weights_to_theta  # noqa: E402

# Agreement expected between a GPU and a CPU run from the same start and the same random bits:
# float64 differs only by summation order (≈ 1e-13 per operation, grown over the iterations);
# float32 by ≈ 1e-7 per operation, which a few K-FAC iterations amplify.
TOLERANCE = {"float64": 1e-8, "float32": 1e-2}


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe_device(stand_in: bool) -> list[str]:
    if stand_in:
        return ["- device: CPU stand-in of CuPy (tests/fakecupy), not a GPU"]
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return [
        f"- GPU: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB (of "
        f"{cupy.cuda.runtime.getDeviceCount()} devices)",
        f"- CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"driver {cupy.cuda.runtime.driverGetVersion()}",
    ]


def run_gpu_tests() -> tuple[bool, list[str]]:
    """pytest -m gpu on tests/test_cupy.py; ok when nothing failed and no real-GPU test skipped."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "tests/test_cupy.py"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    summary = next(
        (line for line in reversed(out.splitlines()) if re.search(r"\d+ (passed|failed)", line)),
        "no summary",
    )
    gpu_skips = [
        line for line in out.splitlines() if line.startswith("SKIPPED") and "real CuPy" in line
    ]
    ok = proc.returncode == 0 and not gpu_skips
    lines = [f"- `{' '.join(cmd[2:])}`: {summary.strip('= ')} ({time.perf_counter() - t0:.0f} s)"]
    if gpu_skips:
        lines.append(
            f"- {len(gpu_skips)} real-GPU tests were skipped: CuPy did not find a usable GPU"
        )
    if proc.returncode != 0:
        lines += ["", "```", *out.splitlines()[-40:], "```"]
    return ok, lines


def train(
    backend: Any, dataset: str, structure: str, iters: int, batch: int
) -> tuple[list[float], Any]:
    """K-FAC on random inputs, the paper's settings but short intervals (T1 = 2, T2 = T3 = 4), so a
    few iterations include plain ones, the λ rule, refreshes and a γ search; the losses and the
    final θ on the host."""
    mlp = autoencoder(dataset)
    weights = mlp.init_sparse(0, backend)
    X = backend.asarray(numpy.random.default_rng(0).random((batch, mlp.layer_sizes[0])))
    opt = KFAC(
        mlp,
        KFACConfig(structure=structure, eta=AUTOENCODERS[dataset]["eta"], T1=2, T2=4, T3=4),
        backend,
    )
    state, gen, losses = opt.init_state(weights), Philox.from_seed(backend.xp, 1), []
    for _ in range(iters):
        weights, state, info = opt.step(weights, state, X, X, gen)
        losses.append(info["loss"])
    return losses, to_numpy(weights_to_theta(weights))


def parity(
    datasets: list[str], iters: int, batch: int, dtypes: list[str]
) -> tuple[bool, list[str]]:
    lines = [
        f"| data set | structure | dtype | max rel. loss diff ({iters} it.) | final θ rel. diff | "
        "ok |",
        "|---|---|---|---|---|---|",
    ]
    ok_all = True
    for dataset in datasets:
        for structure in STRUCTURES:
            for dtype in dtypes:
                t0 = time.perf_counter()
                host = train(get_backend("numpy", dtype), dataset, structure, iters, batch)
                dev = train(get_backend("cupy", dtype), dataset, structure, iters, batch)
                loss_diff = max(abs(a - b) / abs(b) for a, b in zip(dev[0], host[0], strict=True))
                theta_diff = float(numpy.linalg.norm(dev[1] - host[1]) / numpy.linalg.norm(host[1]))
                ok = math.isfinite(loss_diff) and max(loss_diff, theta_diff) <= TOLERANCE[dtype]
                ok_all &= ok
                lines.append(
                    f"| {dataset} | {structure} | {dtype} | {loss_diff:.2e} | {theta_diff:.2e} | "
                    f"{'yes' if ok else '**NO**'} ({time.perf_counter() - t0:.0f} s) |"
                )
    lines.append(
        f"\nTolerances: {', '.join(f'{k} {v:g}' for k, v in TOLERANCE.items())} (relative)."
    )
    return ok_all, lines


def run_step_cost(quick: bool) -> tuple[bool, list[str]]:
    cmd = [sys.executable, "benchmarks/step_cost.py", "--backend", "cupy"] + (
        ["--quick"] if quick else []
    )
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, [f"`{' '.join(cmd[1:])}`:", "", "```", *out[-14:], "```"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="CURVES only, fewer iterations, quick benchmark"
    )
    p.add_argument(
        "--iters",
        type=int,
        default=None,
        help="K-FAC iterations per parity run (default 8, quick 5)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="mini-batch of the parity runs (default 1000, quick 250)",
    )
    p.add_argument("--out", type=Path, help="also write the report to this file")
    p.add_argument("--skip-tests", action="store_true", help="skip step 1 (the GPU tests)")
    p.add_argument("--skip-bench", action="store_true", help="skip step 3 (step_cost.py)")
    p.add_argument(
        "--stand-in", action="store_true", help="run the parity on the CPU stand-in (no GPU)"
    )
    args = p.parse_args(argv)
    for name in ("iters", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be a positive integer, got {value}")
    iters = (5 if args.quick else 8) if args.iters is None else args.iters
    batch = (250 if args.quick else 1000) if args.batch is None else args.batch
    datasets = ["curves"] if args.quick else ["curves", "mnist", "faces"]

    with contextlib.ExitStack() as stack:
        if args.stand_in:
            sys.path.insert(0, str(ROOT / "tests"))
            import fakecupy

            stack.enter_context(fakecupy.installed())
            args.skip_tests = args.skip_bench = True
        elif not cupy_available():
            print(
                "CuPy with a usable GPU was not found (kfac_ref.backend.cupy_available() is "
                "False):\n"
                "install it with `pip install -e '.[gpu]'` (cupy-cuda12x[ctk]) on a machine with "
                "an NVIDIA GPU."
            )
            return 2
        report = [
            "## kfac_ref CuPy verification",
            "",
            f"- commit {_git_commit()}, Python {platform.python_version()}, NumPy "
            f"{numpy.__version__}",
            *describe_device(args.stand_in),
        ]
        verdicts = {}
        if not args.skip_tests:
            verdicts["GPU tests"], lines = run_gpu_tests()
            report += ["", "### 1. GPU tests", *lines]
        dtypes = sorted(KNOWN_DTYPES, reverse=True)  # float64 first
        verdicts["parity"], lines = parity(datasets, iters, batch, dtypes)
        report += ["", f"### 2. CuPy vs NumPy, autoencoders, batch {batch}", "", *lines]
        if not args.skip_bench:
            verdicts["step_cost"], lines = run_step_cost(args.quick)
            report += ["", "### 3. Step cost on the GPU", "", *lines]
    failed = [name for name, ok in verdicts.items() if not ok]
    report += [
        "",
        f"**Verdict: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}**",
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
