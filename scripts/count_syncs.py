"""Count the device→host synchronizations of K-FAC iterations on the strict CuPy stand-in.

No GPU needed: the stand-in (``tests/fakecupy``) logs every transfer with the file:line that
caused it. The network has the MNIST autoencoder's depth (784-1000-500-250-30 mirrored, 8 weight
layers) with the hidden widths divided by ``--shrink`` (10 by default, which keeps it fast; the
counts depend on the depth, not the widths); the optimizer has the paper's settings
(``KFACConfig()``: T1 = 5, T2 = T3 = 20, recompute at k ≤ 3, τ1 = 1/8, τ2 = 1/4).

    python scripts/count_syncs.py                 # both structures, top sources of each kind
    python scripts/count_syncs.py --shrink 1      # the paper's widths (slow on a CPU)

Iteration kinds: ``plain`` (k = 4: no inverse refresh, no λ update), ``lambda`` (k = 5: the
T1 λ update needs h(θ + δ)), ``refresh`` (k = 3: inverses recomputed) and ``gamma_search``
(k = 20: inverses for three γ, λ update too). The budget (README, Backends) is 4 for
plain/lambda iterations and 12 for refresh/γ-search iterations.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fakecupy  # noqa: E402
import numpy  # noqa: E402

from kfac_ref.structures import FACTORED  # noqa: E402

MNIST_LAYERS = (784, 1000, 500, 250, 30, 250, 500, 1000, 784)
KINDS = {"plain": 4, "lambda": 5, "refresh": 3, "gamma_search": 20}
BUDGET = {"plain": 4, "lambda": 4, "refresh": 12, "gamma_search": 12}
STRUCTURES = tuple(FACTORED)  # the dense structures are for small nets only


def layers(shrink: int) -> list[int]:
    """The MNIST autoencoder's widths, hidden ones divided by ``shrink`` (at least 2)."""
    return (
        [MNIST_LAYERS[0]] + [max(2, d // shrink) for d in MNIST_LAYERS[1:-1]] + [MNIST_LAYERS[-1]]
    )


def count_syncs(
    structure: str,
    shrink: int = 10,
    batch: int = 400,
    iters: int = 20,
    widths: list[int] | None = None,
) -> dict[int, list[tuple[str, str]]]:
    """The transfers of each of ``iters`` K-FAC iterations on the stand-in: {k: [(kind, where)]}.

    ``widths`` replaces the layer widths (same depth expected: the counts depend on it only)."""
    with fakecupy.installed():
        from kfac_ref.backend import get_backend
        from kfac_ref.config import KFACConfig
        from kfac_ref.experiments import autoencoder
        from kfac_ref.optimizer import KFAC
        from kfac_ref.rng import RunGenerator

        backend = get_backend("cupy", "float32")
        mlp = autoencoder("mnist", widths or layers(shrink))
        weights = mlp.init_sparse(0, backend)
        X = backend.asarray(numpy.random.default_rng(0).random((batch, mlp.layer_sizes[0])))
        opt = KFAC(mlp, KFACConfig(structure=structure, eta=1e-5), backend)
        state = opt.init_state(weights)
        gen = RunGenerator(backend.xp, 0, lambda seed, k: seed * 1_000_003 + k)
        out: dict[int, list[tuple[str, str]]] = {}
        for k in range(1, iters + 1):
            rng = gen.for_iteration(k)
            with fakecupy.SYNCS.counting() as log:
                weights, state, _ = opt.step(weights, state, X, X, rng, validate=False)
            out[k] = list(log.events)
        return out


def report(per_k: dict[int, list[tuple[str, str]]], top: int) -> dict[str, Any]:
    rows = {}
    for kind, k in KINDS.items():
        events = per_k[k]
        sources: dict[str, int] = {}
        for what, where in events:
            sources[f"{where} ({what})"] = sources.get(f"{where} ({what})", 0) + 1
        rows[kind] = {
            "k": k,
            "syncs": len(events),
            "budget": BUDGET[kind],
            "top": sorted(sources.items(), key=lambda kv: -kv[1])[:top],
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--shrink", type=int, default=10, help="divide the hidden widths by this (1 = paper's)"
    )
    p.add_argument("--batch", type=int, default=400, help="mini-batch size")
    p.add_argument("--top", type=int, default=5, help="sources listed per iteration kind")
    p.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=STRUCTURES)
    args = p.parse_args(argv)
    over = False
    print(
        f"device→host syncs per K-FAC iteration on the CuPy stand-in, layers {layers(args.shrink)}"
    )
    for structure in args.structures:
        rows = report(count_syncs(structure, args.shrink, args.batch), args.top)
        print(f"\n{structure}")
        for kind, r in rows.items():
            flag = "ok" if r["syncs"] <= r["budget"] else "OVER BUDGET"
            over |= r["syncs"] > r["budget"]
            print(
                f"  {kind:<13} k={r['k']:<3} {r['syncs']:>4} syncs (budget {r['budget']}, {flag})"
            )
            for src, n in r["top"]:
                print(f"      {n:>4}  {src}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
