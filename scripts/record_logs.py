"""Fixed-seed training logs for "nothing changes numerically" checks.

Trains twelve tiny runs with :func:`kfac_ref.experiments.run_experiment` on NumPy (K-FAC
block-diagonal and block-tridiagonal, SGD-momentum; float32 and float64; the paper's and the
code's constants; one with exact statistics and no momentum, one with float32 factorizations;
30 iterations, short T1/T2/T3 so λ rules, refreshes and γ searches all happen) and writes, per
run, ``log_notime.jsonl`` (the log without its wall-clock ``time``) and, in ``summary.json``,
SHA-256 hashes of that log and of the final checkpoint's contents. Run it on two commits and
compare the summaries: equal files mean bit-identical trajectories on this machine.

    python scripts/record_logs.py runs/logs_before   # on the old commit
    python scripts/record_logs.py runs/logs_after    # on the new one
    cmp runs/logs_before/summary.json runs/logs_after/summary.json
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kfac_ref.backend import KNOWN_DTYPES
from kfac_ref.experiments import RunConfig, checkpoint, run_experiment


def settings() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(method, dtype, constants, K-FAC overrides) of each run."""
    out = []
    for method in ("kfac-blockdiag", "kfac-tridiag", "sgd-momentum"):
        for dtype in KNOWN_DTYPES:
            for consts in ("code", "paper"):
                if method == "sgd-momentum" and consts == "paper":
                    continue
                out.append(
                    (
                        method,
                        dtype,
                        consts,
                        {"T1": 3, "T2": 10, "T3": 5} if method != "sgd-momentum" else {},
                    )
                )
    out.append(
        (
            "kfac-tridiag",
            "float64",
            "paper",
            {"T1": 2, "T2": 4, "T3": 2, "use_momentum": False, "stats_method": "exact"},
        )
    )
    out.append(("kfac-blockdiag", "float32", "code", {"linalg": "training", "T2": 6, "T3": 3}))
    return out


def payload_hash(payload: Any) -> str:
    """SHA-256 of every array and value of a checkpoint, in sorted key order, without times."""
    h = hashlib.sha256()

    def walk(v: Any, path: str) -> None:
        if isinstance(v, dict):
            for k in sorted(v):
                if k not in ("elapsed", "time"):
                    walk(v[k], f"{path}/{k}")
        elif isinstance(v, list):
            for j, x in enumerate(v):
                walk(x, f"{path}/{j}")
        elif isinstance(v, np.ndarray):
            h.update(path.encode() + str(v.dtype).encode() + v.tobytes())
        else:
            h.update(path.encode() + repr(v).encode())

    walk(payload, "")
    return h.hexdigest()


def main(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    X = (rng.random((160, 12)) > 0.5) * 0.8 + 0.1 * rng.random((160, 12))
    data = (X[:128], X[128:])
    summary = {}
    for i, (method, dtype, consts, kfac) in enumerate(settings()):
        name = f"{i:02d}_{method}_{dtype}_{consts}"
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        cfg = RunConfig(
            dataset="curves",
            method=method,
            iters=30,
            seed=7 + i,
            backend="numpy",
            dtype=dtype,
            eval_every=5,
            layers=[12, 8, 5, 3, 5, 8, 12],
            m1=32,
            k_full=20,
            sgd_batch=32,
            average_start=10,
            checkpoint_every=10,
            kfac=kfac,
            constants=consts,
        )
        records = [
            {k: v for k, v in r.items() if k != "time"}
            for r in run_experiment(cfg, d, progress=False, data=data)
        ]
        text = "\n".join(json.dumps(r, sort_keys=True) for r in records)
        (d / "log_notime.jsonl").write_text(text)
        summary[name] = {
            "log": hashlib.sha256(text.encode()).hexdigest(),
            "ckpt": payload_hash(checkpoint.load_checkpoint(d / checkpoint.CHECKPOINT_NAME)),
            "last_loss": records[-1]["loss"],
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/logs")), indent=1))
