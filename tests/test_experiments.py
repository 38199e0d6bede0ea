"""The experiment runner, its log/checkpoint/resume, the CLI and the autoencoder figure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfac_ref.errors import ConfigError, DataError, NonFiniteError
from kfac_ref.experiments import (
    RunConfig,
    autoencoder,
    checkpoint,
    io,
    reconstruction_error,
    run_experiment,
)
from kfac_ref.experiments.cli import main as cli_main

LAYERS = [16, 10, 3, 10, 16]


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    basis = rng.random((3, 16))
    codes = rng.random((96, 3))
    X = 1.0 / (1.0 + np.exp(-4.0 * (codes @ basis - 0.75)))
    return X[:64], X[64:]


def tiny_config(**kw):
    base = dict(
        dataset="curves",
        method="kfac-tridiag",
        iters=12,
        layers=LAYERS,
        m1=16,
        k_full=8,
        eval_every=4,
        checkpoint_every=5,
        dtype="float64",
        average_start=6,
        kfac={"T3": 2, "T2": 4},
    )
    base.update(kw)
    return RunConfig(**base)


def test_autoencoder_architecture_follows_the_paper():
    mlp = autoencoder("mnist")
    assert mlp.layer_sizes == (784, 1000, 500, 250, 30, 250, 500, 1000, 784)
    names = [a.name for a in mlp.activations]
    assert names == ["logistic"] * 3 + ["linear"] + ["logistic"] * 3
    assert mlp.output.name == "bernoulli"
    assert autoencoder("faces").output.name == "gaussian"
    assert [a.name for a in autoencoder("curves").activations].count("linear") == 1


def test_reconstruction_error_is_mean_summed_squared_error():
    mlp = autoencoder("curves", [4, 2, 4])
    W = mlp.init_gaussian(0)
    X = np.random.default_rng(1).random((7, 4))
    pred = mlp.output.predict(mlp.forward(W, X).output)
    expected = ((pred - X) ** 2).sum(axis=1).mean()
    assert reconstruction_error(mlp, W, X, chunk=3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["kfac-blockdiag", "kfac-tridiag", "sgd-momentum"])
def test_run_writes_log_and_result_and_learns(tmp_path, tiny_data, method):
    cfg = tiny_config(method=method, sgd_lr=0.5)
    records = run_experiment(cfg, tmp_path, data=tiny_data, progress=False)
    assert [r["iteration"] for r in records] == list(range(1, 13))
    assert io.read_jsonl(tmp_path / "log.jsonl") == [io.jsonable(r) for r in records]
    result = json.loads((tmp_path / "result.json").read_text())
    evals = [r for r in records if "train_error" in r]
    assert [r["iteration"] for r in evals] == [1, 4, 8, 12]
    assert result["train_error"] == evals[-1]["train_error"]
    assert evals[-1]["train_error"] < evals[0]["train_error"]
    assert all(r["time"] >= 0 for r in records)
    assert records[-1]["time"] >= records[0]["time"]


def test_resumed_run_is_identical_to_uninterrupted(tmp_path, tiny_data):
    full = run_experiment(tiny_config(), tmp_path / "a", data=tiny_data, progress=False)
    run_experiment(tiny_config(iters=7), tmp_path / "b", data=tiny_data, progress=False)
    resumed = run_experiment(
        tiny_config(), tmp_path / "b", data=tiny_data, resume=True, progress=False
    )
    # The 7-iteration run also evaluated at its last iteration; compare everything else exactly.
    evals = ("train_error", "train_error_raw", "train_error_avg", "test_error")

    def strip(r):
        return {k: v for k, v in io.jsonable(r).items() if k != "time" and k not in evals}

    assert [strip(r) for r in full] == [strip(r) for r in resumed]
    for a, b in zip(full, resumed, strict=True):
        if "train_error" in a and "train_error" in b:
            assert a["train_error"] == b["train_error"]
    a, b = (
        checkpoint.load_checkpoint(tmp_path / "a" / "checkpoint.npz"),
        checkpoint.load_checkpoint(tmp_path / "b" / "checkpoint.npz"),
    )
    for Wa, Wb in zip(a["weights"] + a["average"], b["weights"] + b["average"], strict=True):
        np.testing.assert_array_equal(Wa, Wb)


def test_progress_bar_of_a_time_budgeted_run_counts_seconds(tmp_path, tiny_data, capsys):
    cfg = tiny_config(method="sgd-momentum", sgd_lr=0.5, iters=10**7, max_seconds=0.05)
    records = run_experiment(cfg, tmp_path, data=tiny_data, progress=True)
    err = capsys.readouterr().err
    assert records[-1]["time"] >= 0.05 and "/0.1 s" in err  # 0.05 s shown to one decimal
    assert "10000000" not in err  # not the iteration cap


def test_existing_run_needs_resume_or_overwrite(tmp_path, tiny_data):
    run_experiment(tiny_config(iters=5), tmp_path, data=tiny_data, progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_experiment(tiny_config(iters=5), tmp_path, data=tiny_data, progress=False)
    with pytest.raises(ConfigError, match="differs"):
        run_experiment(
            tiny_config(iters=9, seed=3), tmp_path, data=tiny_data, resume=True, progress=False
        )


def test_non_finite_stops_with_log_and_last_checkpoint_intact(tmp_path, tiny_data, monkeypatch):
    from kfac_ref.optimizer import KFAC

    real_step = KFAC.step

    def failing_step(self, weights, state, X, Y, rng, **kw):
        new = real_step(self, weights, state, X, Y, rng, **kw)
        if new[2]["k"] == 8:
            raise NonFiniteError("iteration 8: the update δ is not finite")
        return new

    monkeypatch.setattr(KFAC, "step", failing_step)
    with pytest.raises(NonFiniteError, match="iteration 8"):
        run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    assert [r["iteration"] for r in io.read_jsonl(tmp_path / "log.jsonl")] == list(range(1, 8))
    assert checkpoint.load_checkpoint(tmp_path / "checkpoint.npz")["k"] == 5
    assert not (tmp_path / "result.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_nan_in_data_is_refused(tmp_path, tiny_data):
    X = tiny_data[0].copy()
    X[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match="NaN"):
        run_experiment(tiny_config(), tmp_path, data=(X, None), progress=False)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="corrupt"):
        checkpoint.load_checkpoint(tmp_path / "checkpoint.npz")


@pytest.fixture(scope="module")
def curves_dir(tmp_path_factory):
    """A data directory shared by the tests that load the real (generated) CURVES set."""
    return tmp_path_factory.mktemp("data")


def test_cli_train_and_resume(tmp_path, monkeypatch, capsys, curves_dir):
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(curves_dir))
    args = [
        "train",
        "--dataset",
        "curves",
        "--layers",
        "784",
        "8",
        "3",
        "8",
        "784",
        "--n-train",
        "40",
        "--n-test",
        "20",
        "--m1",
        "20",
        "--k-full",
        "4",
        "--iters",
        "4",
        "--eval-every",
        "2",
        "--dtype",
        "float64",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    assert cli_main(args) == 0
    assert "training error" in capsys.readouterr().out
    assert len(io.read_jsonl(tmp_path / "run" / "log.jsonl")) == 4
    assert cli_main(args) == 2  # refuses to overwrite
    assert "already holds a run" in capsys.readouterr().err
    args[args.index("--iters") + 1] = "6"
    assert cli_main([*args, "--resume"]) == 0
    assert len(io.read_jsonl(tmp_path / "run" / "log.jsonl")) == 6


def test_cli_compare_prints_errors(capsys):
    assert cli_main(["compare", "--layers", "5", "4", "3", "3", "--cases", "30"]) == 0
    out = capsys.readouterr().out
    assert "F_hat" in out and "F_breve" in out


def _load_figure_script(name):
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "paper_figures"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(
            f"paper_figures_{name}", folder / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_autoencoder_figure_is_drawn_from_the_logs(tmp_path, monkeypatch, curves_dir, capsys):
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(curves_dir))
    fig = _load_figure_script("autoencoders")
    argv = [
        "--quick",
        "--iters",
        "3",
        "--n-train",
        "64",
        "--sgd-lr",
        "0.01",
        "0.05",
        "--sgd-tune-iters",
        "2",
        "--methods",
        "kfac-blockdiag",
        "sgd-momentum",
        "--no-progress",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "fig"),
    ]
    assert fig.main(argv) == 0
    stem = tmp_path / "fig" / "autoencoders_curves_quick"
    for ext in ("png", "pdf"):
        assert stem.with_suffix(f".{ext}").stat().st_size > 1000
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    entry = json.loads(stem.with_suffix(".json").read_text())["curves"]
    plotted = entry["curves"]
    assert "first 64 of" in entry["data"] and entry["constants"] == "code"
    args = fig.parse_args(argv)
    kfac_times = []
    for method in ("kfac-blockdiag",):
        (cfg,) = fig.run_configs(args, "curves", method)
        assert cfg.constants == "code" and cfg.sparse_init_replace
        log = io.read_jsonl(fig.run_dir(args, cfg) / "log.jsonl")
        assert log[0]["data"] == entry["data"], (log[0], entry["data"])
        assert plotted[method]["train_error"] == [
            r["train_error"] for r in log if "train_error" in r
        ]
        assert plotted[method]["iteration"] == [1, 3]
        kfac_times.append(log[-1]["time"])
    tuned = {}
    for cfg in fig.run_configs(args, "curves", "sgd-momentum"):
        log = io.read_jsonl(fig.run_dir(args, cfg) / "log.jsonl")
        tuned[cfg.sgd_lr] = next(r["train_error"] for r in log if r["iteration"] == 2)
    best = min(tuned, key=tuned.get)
    sgd = plotted["sgd-momentum"]
    assert sgd["choice"] == best and sgd["grid"] == {str(k): v for k, v in tuned.items()}
    # SGD gets the optimizer time of the slowest K-FAC run: it stops at the first iteration past it
    assert sgd["budget_seconds"] == max(kfac_times) and sgd["tuned"] == "sgd_lr"
    assert sgd["time"][-1] >= max(kfac_times)
    assert all(t < max(kfac_times) for t in sgd["time"][:-1])
    # a second call reuses the finished runs: no training, same numbers
    monkeypatch.setattr(
        fig, "run_experiment", lambda *a, **k: pytest.fail("finished run was retrained")
    )
    assert fig.main(argv) == 0
    assert json.loads(stem.with_suffix(".json").read_text())["curves"]["curves"] == plotted
    assert "reusing" in capsys.readouterr().out


def test_autoencoder_figure_tunes_the_fixed_m_of_kfac_without_momentum(
    tmp_path, monkeypatch, curves_dir
):
    """K-FAC without momentum: each candidate m trains for the same optimizer seconds, the
    lowest final error wins, and the winner's run goes on to the K-FAC run's time."""
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(curves_dir))
    fig = _load_figure_script("autoencoders")
    argv = ["--quick", "--iters", "3", "--n-train", "64", "--no-progress"]
    argv += ["--methods", "kfac-blockdiag", "kfac-blockdiag-nomomentum"]
    argv += ["--fixed-m", "16", "48", "--fixed-m-tune-seconds", "0.05"]
    argv += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "fig")]
    assert fig.main(argv) == 0
    entry = json.loads((tmp_path / "fig" / "autoencoders_curves_quick.json").read_text())["curves"]
    c = entry["curves"]["kfac-blockdiag-nomomentum"]
    args = fig.parse_args(argv)
    finals = {}
    for cfg in fig.run_configs(args, "curves", "kfac-blockdiag-nomomentum"):
        assert cfg.kfac_config().use_momentum is False and cfg.max_seconds == 0.05
        out = fig.run_dir(args, cfg)
        assert out.name == f"kfac-blockdiag-nomomentum-m{cfg.kfac_batch}"
        log = io.read_jsonl(out / "log.jsonl")
        assert {r["batch_size"] for r in log} == {cfg.kfac_batch} and {r["mu"] for r in log} == {0}
        first_past = next(r for r in log if r["time"] >= 0.05)
        finals[cfg.kfac_batch] = first_past["train_error"]
    assert c["tuned"] == "kfac_batch" and c["grid"] == {str(m): e for m, e in finals.items()}
    assert c["choice"] == min(finals, key=finals.get)
    kfac_time = entry["curves"]["kfac-blockdiag"]["time"][-1]
    assert c["budget_seconds"] == kfac_time and c["time"][-1] >= kfac_time
    assert all(t < kfac_time for t in c["time"][:-1])


def test_autoencoder_figure_caps_the_sgd_budget_when_asked(tmp_path, monkeypatch, curves_dir):
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(curves_dir))
    fig = _load_figure_script("autoencoders")
    argv = [
        "--quick",
        "--iters",
        "3",
        "--n-train",
        "64",
        "--sgd-lr",
        "0.05",
        "--sgd-tune-iters",
        "2",
        "--methods",
        "kfac-blockdiag",
        "sgd-momentum",
        "--sgd-seconds",
        "1e-9",
        "--no-progress",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "fig"),
    ]
    assert fig.main(argv) == 0
    entry = json.loads((tmp_path / "fig" / "autoencoders_curves_quick.json").read_text())["curves"]
    sgd = entry["curves"]["sgd-momentum"]
    kfac_time = entry["curves"]["kfac-blockdiag"]["time"][-1]
    assert sgd["budget_capped"] is True and sgd["budget_seconds"] == 1e-9 < kfac_time
    # the tuned run is already past the cap at its first iteration: it is reused, cut there
    assert sgd["iteration"] == [1] and sgd["time"][-1] >= 1e-9
    for bad in ("0", "-5", "nan"):
        with pytest.raises(SystemExit) as exc:
            fig.parse_args(["--sgd-seconds", bad])
        assert exc.value.code == 2


def test_table_beside_the_authors_uses_raw_iterates_at_common_iterations():
    fig = _load_figure_script("autoencoders")
    curves = {
        "kfac-tridiag": {
            "iteration": [100, 200, 250],
            "train_error": [5.0, 2.0, 1.0],
            "train_error_raw": [6.0, 2.5, 1.5],
            "time": [1, 2, 3],
        },
        "sgd-momentum": {
            "iteration": [100],
            "train_error": [9.0],
            "train_error_raw": [9.0],
            "time": [1],
        },
    }
    ref = {"iteration": [50, 100, 300], "train_error": [16.9, 11.0, 3.2]}
    rows = fig.versus_authors(curves, ref)
    assert rows == [
        {
            "iteration": 100,
            "authors_raw": 11.0,
            "kfac-tridiag_raw": 6.0,
            "kfac-tridiag_reported": 5.0,
        },
        {
            "iteration": 200,
            "authors_raw": None,
            "kfac-tridiag_raw": 2.5,
            "kfac-tridiag_reported": 2.0,
        },
    ]
    assert fig.versus_authors(curves, None) == []
    published = fig.reference_trace("curves")
    assert dict(zip(published["iteration"], published["train_error"], strict=True))[
        500
    ] == pytest.approx(0.255, rel=0.01)


def test_time_to_error_stops_at_the_first_crossing(tmp_path, monkeypatch, curves_dir):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "time_to_error.py"
    spec = importlib.util.spec_from_file_location("time_to_error", path)
    tte = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tte)
    log = [
        {"iteration": 1, "time": 0.5, "train_error": 9.0},
        {"iteration": 2, "time": 0.9},
        {"iteration": 3, "time": 1.4, "train_error": 2.0},
        {"iteration": 6, "time": 3.0, "train_error": 1.0},
    ]
    assert tte.first_crossing(log, 2.5)["iteration"] == 3
    assert tte.first_crossing(log, 0.5) is None
    monkeypatch.setenv("KFAC_REF_DATA_DIR", str(curves_dir))
    cfg = RunConfig(
        dataset="curves",
        method="kfac-blockdiag",
        iters=40,
        layers=[784, 8, 3, 8, 784],
        n_train=40,
        n_test=0,
        m1=20,
        k_full=4,
        eval_every=2,
        checkpoint_every=2,
        dtype="float64",
    )
    first = run_experiment(
        RunConfig(**{**cfg.to_json(), "iters": 6}), tmp_path / "probe", progress=False
    )
    target = [r for r in first if "train_error" in r][-1]["train_error"]  # reached by iteration 6
    row = tte.time_to_target(cfg, target, tmp_path / "run")
    assert row["reached"] and row["iteration"] <= 6 and row["final_iteration"] <= 6
    assert row["seconds"] == pytest.approx(
        next(
            r["time"]
            for r in io.read_jsonl(tmp_path / "run" / "log.jsonl")
            if r["iteration"] == row["iteration"]
        )
    )


def test_minibatch_size_figure_fits_the_progress_exponent(tmp_path, monkeypatch):
    """Fig. 9's script: every method at every m from its own run (fixed m, the method's
    momentum), the cases-processed axis k · m, and the exponent of 1/k(m) ∝ m^p."""
    from kfac_ref.experiments import data as data_pkg

    rng = np.random.default_rng(0)
    X = 1 / (1 + np.exp(-4 * (rng.random((1064, 3)) @ rng.random((3, 16)) - 3)))
    fake = data_pkg.Dataset("mnist", X[:64], X[64:], source="test", origin="given", label="fake")
    monkeypatch.setattr(data_pkg, "load_dataset", lambda name, **kw: fake)
    fig = _load_figure_script("minibatch_size")
    argv = ["--quick", "--m", "8", "32", "--iters", "4", "--eval-every", "2", "--n-train", "64"]
    argv += ["--layers", "16", "6", "3", "6", "16", "--no-progress"]
    argv += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "fig")]
    assert fig.main(argv) == 0
    result = json.loads((tmp_path / "fig" / "fig9_minibatch_size_quick.json").read_text())
    assert list(result["methods"]) == list(fig.METHODS)
    for entry in result["methods"].values():
        for m in ("8", "32"):
            c = entry["curves"][m]
            assert c["iteration"] == [1, 2, 4] and c["cases"] == [k * int(m) for k in (1, 2, 4)]
        f = entry["finding"]
        assert f["target_error"] == max(entry["curves"][m]["train_error"][-1] for m in ("8", "32"))
    args = fig.parse_args(argv)
    for method in fig.METHODS:
        cfg = fig.run_config(args, method, 32)
        log = io.read_jsonl(fig.get_log.__globals__["run_dir"](args, cfg) / "log.jsonl")
        assert {r["batch_size"] for r in log} == {32}
        if method == "kfac-blockdiag-nomomentum":
            assert {r["mu"] for r in log} == {0.0}
    # the exponent: k(m) halves when m doubles twice as fast → p = 1 (and p = 2 when it quarters)
    c = {"iteration": [1, 2, 4, 8], "train_error": [9.0, 5.0, 3.0, 1.0]}
    fast = {"iteration": [1, 2, 4, 8], "train_error": [9.0, 5.0, 1.0, 0.5]}
    slow = {"iteration": [1, 2, 4, 8], "train_error": [9.0, 8.0, 6.0, 3.0]}
    assert fig.progress_exponent({100: slow, 200: c})["exponent"] == pytest.approx(1.0)
    assert fig.progress_exponent({100: slow, 200: fast})["exponent"] == pytest.approx(1.0)
    f = fig.progress_exponent({100: slow, 400: fast})
    assert f["iterations_to_target"] == {100: 8, 400: 4} and f["exponent"] == pytest.approx(0.5)


def test_autoencoder_figure_full_scale_sgd_grid_evaluates_as_its_budget_run():
    """At full scale an SGD grid run is evaluated as rarely as the budget run that continues it
    (FACES' evaluations are the dearest); K-FAC without momentum has its own full-scale cadence;
    the quick grids keep the quick cadence. FACES' fixed-m grid is the one measured (1000, 2000,
    5000)."""
    fig = _load_figure_script("autoencoders")
    full = fig.parse_args(["--datasets", "curves", "mnist", "faces"])
    for dataset, every in (("curves", 250), ("mnist", 1000), ("faces", 500)):
        configs = fig.run_configs(full, dataset, "sgd-momentum")
        assert len(configs) == 3
        assert {c.eval_every for c in configs} == {every}
        assert {c.iters for c in configs} == {1000}
    kfac = fig.run_configs(full, "faces", "kfac-blockdiag")[0]
    assert kfac.eval_every == 25  # K-FAC's cadence is untouched
    fixed = fig.run_configs(full, "faces", "kfac-blockdiag-nomomentum")
    assert [c.kfac_batch for c in fixed] == [1000, 2000, 5000]
    # K-FAC without momentum: its own full-scale cadence, grid and budget run alike
    for dataset, every in (("curves", 100), ("mnist", 250), ("faces", 25)):
        configs = fig.run_configs(full, dataset, "kfac-blockdiag-nomomentum")
        assert {c.eval_every for c in configs} == {every}
    quick = fig.parse_args(["--quick"])
    assert {c.eval_every for c in fig.run_configs(quick, "curves", "sgd-momentum")} == {10}
    assert {
        c.eval_every for c in fig.run_configs(quick, "curves", "kfac-blockdiag-nomomentum")
    } == {10}
