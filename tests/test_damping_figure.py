"""paper_figures/damping.py with tiny settings: files, the runs behind the curves, and the one-step
probe's numbers against a computation written here (per-layer inverses of the damped factors by
``numpy.linalg.inv``, the Fisher by :func:`kfac_ref.fisher.fisher_vector_product`)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.experiments import autoencoder, checkpoint, io
from kfac_ref.experiments.data import load_dataset
from kfac_ref.fisher import fisher_vector_product

FOLDER = Path(__file__).resolve().parent.parent / "paper_figures"


def _load_script():
    sys.path.insert(0, str(FOLDER))
    try:
        spec = importlib.util.spec_from_file_location(
            "paper_figures_damping", FOLDER / "damping.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(FOLDER))
    return module


@pytest.fixture(scope="module")
def curves_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _argv(tmp_path):
    return [
        "--quick",
        "--layers",
        *"784 8 3 8 784".split(),
        "--n-train",
        "64",
        "--iters",
        "4",
        "--eval-every",
        "2",
        "--gammas",
        "3",
        "--ablations",
        "no-rescaling",
        "--no-progress",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "fig"),
    ]


def test_damping_figure_tiny(tmp_path, monkeypatch, curves_dir, capsys):
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(curves_dir))
    fig = _load_script()
    argv = _argv(tmp_path)
    assert fig.main(argv) == 0
    stem = tmp_path / "fig" / "damping_quick_quick"
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stem.with_suffix(".pdf").stat().st_size > 1000
    result = json.loads(stem.with_suffix(".json").read_text())
    assert list(result["curves"]) == ["defaults", "no-rescaling"]
    args = fig.parse_args(argv)
    for name, c in result["curves"].items():
        cfg = fig.run_config(args, name)
        log = io.read_jsonl(fig.run_dir(args, cfg, name) / "log.jsonl")
        assert c["train_error_raw"] == [r["train_error_raw"] for r in log if "train_error" in r]
        assert c["iteration"] == [1, 2, 4]
    assert [r["iteration"] for r in result["table"]] == [1, 2, 4]
    assert set(result["claims"]) == {
        "rescaling",
        "single_lambda",
        "factored_vs_exact",
        "trace_norm_pi",
    }
    assert all(isinstance(c["reproduces"], bool) for c in result["claims"].values())

    # the probe, recomputed here for the factored trace-norm damping at the middle γ
    p = result["probe"]
    assert len(p["gammas"]) == 3 and all(len(p[d]["dh_raw"]) == 3 for d in fig.DAMPINGS)
    cfg = fig.run_config(args, "defaults")
    payload = checkpoint.load_checkpoint(
        fig.run_dir(args, cfg, "defaults") / checkpoint.CHECKPOINT_NAME
    )
    mlp = autoencoder("curves", cfg.layers)
    W = [np.asarray(w, dtype=float) for w in payload["weights"]]
    stats = payload["opt_state"]["stats"]
    X = load_dataset("curves", data_dir=curves_dir).X_train[:64].astype(float)
    eta, lam, gamma = 1e-5, payload["opt_state"]["lam"], p["gammas"][1]
    h, grads, _ = mlp.loss_and_grad(W, X, X, eta)
    Delta = []
    for A, G, V in zip(stats["A_diag"], stats["G_diag"], grads, strict=True):
        A, G = np.asarray(A, dtype=float), np.asarray(G, dtype=float)
        pi = math.sqrt((np.trace(A) / A.shape[0]) / (np.trace(G) / G.shape[0]))
        A_d, G_d = A + pi * gamma * np.eye(A.shape[0]), G + gamma / pi * np.eye(G.shape[0])
        Delta.append(-np.linalg.inv(G_d) @ V @ np.linalg.inv(A_d))
    FD = fisher_vector_product(mlp, W, X, Delta)
    dFd = sum(float(np.vdot(d, f)) for d, f in zip(Delta, FD, strict=True))
    dd = sum(float(np.vdot(d, d)) for d in Delta)
    gd = sum(float(np.vdot(g, d)) for g, d in zip(grads, Delta, strict=True))
    quad = dFd + (lam + eta) * dd
    f = p["factored"]
    assert f["dM_raw"][1] == pytest.approx(0.5 * quad + gd, rel=1e-6)
    alpha = -gd / quad
    assert f["alpha"][1] == pytest.approx(alpha, rel=1e-6)
    assert f["dM_rescaled"][1] == pytest.approx(0.5 * alpha * gd, rel=1e-6)
    h_new = mlp.loss([w + d for w, d in zip(W, Delta, strict=True)], X, X, eta)
    assert f["dh_raw"][1] == pytest.approx(float(h_new) - float(h), rel=1e-6, abs=1e-9)

    # a second call reuses the finished runs
    monkeypatch.setattr(fig, "run_experiment", lambda *a, **k: pytest.fail("retrained"))
    capsys.readouterr()
    data = {"data": result["data"]}
    for name in result["curves"]:
        cfg = fig.run_config(args, name)
        assert (
            fig.curve(fig.get_log(args, cfg, fig.run_dir(args, cfg, name), data))
            == (result["curves"][name])
        )
    assert capsys.readouterr().out.count("reusing") == 2


@pytest.mark.parametrize("bad", [["--gammas", "1"], ["--iters", "0"], ["--scale", "faces"]])
def test_damping_figure_bad_options_exit_2(bad):
    fig = _load_script()
    with pytest.raises(SystemExit) as exc:
        fig.parse_args(bad)
    assert exc.value.code == 2
