"""benchmarks/race_curves.py: crossing detection, the JSON and the plot of a tiny race, resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.experiments import describe_data

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def race():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("race_curves", BENCH / "race_curves.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def curves_dir(race, monkeypatch):
    """64 cases of 64 pixels on a 2-dimensional manifold in place of the CURVES cases the race
    loads (nothing generated): a 64-16-3-16-64 autoencoder learns them in a few iterations."""
    rng = np.random.default_rng(0)
    Z, B = rng.standard_normal((64, 2)), rng.standard_normal((2, 64))
    X = (1 / (1 + np.exp(-3 * Z @ B))).astype(np.float32)

    def load(cfg, backend):
        assert cfg.dataset == "curves" and cfg.n_train == 64
        return backend.asarray(X), None, describe_data("test images", "given", 64, 64)

    monkeypatch.setattr(race, "load_run_data", load)


def test_crossings_first_point_at_or_below_each_target(race):
    # (iteration, seconds, error): not monotone, a missing error, a point exactly on a target
    trace = [
        [1, 0.5, 200.0],
        [10, 1.0, None],
        [20, 2.0, 9.0],
        [30, 3.0, 11.0],
        [40, 4.0, 1.0],
        [50, 5.0, 0.5],
        [60, 6.0, 2.0],
    ]
    got = race.crossings(trace, (10.0, 1.0, 0.1))
    assert got["10"] == {"iteration": 20, "seconds": 2.0, "error": 9.0}
    assert got["1"] == {"iteration": 40, "seconds": 4.0, "error": 1.0}
    assert got["0.1"] is None
    assert race.crossings([], (1.0,)) == {"1": None}


def tiny(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--n-train",
        "64",
        "--m1",
        "16",
        "--k-full",
        "4",
        "--max-iters",
        "20",
        "--eval-every",
        "2",
        "--sgd-eval-every",
        "2",
        "--layers",
        "64",
        "16",
        "3",
        "16",
        "64",
        "--json",
        str(tmp_path / "race.json"),
        "--plot",
        str(tmp_path / "race.png"),
        *extra,
    ]


def check_run(run: dict) -> None:
    """The crossings are the first traced points at or below each target, the trace is in order."""
    trace = run["trace"]
    assert [p[0] for p in trace] == sorted(p[0] for p in trace)
    assert trace[0][0] == 1
    for t in (10.0, 1.0, 0.1):
        below = [p for p in trace if p[2] is not None and p[2] <= t]
        c = run["crossings"][f"{t:g}"]
        if below:
            assert c == {"iteration": below[0][0], "seconds": below[0][1], "error": below[0][2]}
        else:
            assert c is None
    assert {"loadavg_start", "loadavg_end", "foreign_cpu_share"} <= set(run)


def test_tiny_race_json_plot_and_resume(race, tmp_path, curves_dir, capsys):
    assert race.main(tiny(tmp_path, "--only", "kfac-blockdiag-code", "sgd-lr0.1")) == 0
    data = json.loads((tmp_path / "race.json").read_text())
    assert list(data["runs"]) == ["kfac-blockdiag-code", "sgd-lr0.1"]
    kfac = data["runs"]["kfac-blockdiag-code"]
    check_run(kfac)
    check_run(data["runs"]["sgd-lr0.1"])
    assert kfac["iterations"] == 20 and kfac["stopped"] == "max_iters"
    assert kfac["trace"][-1][2] < kfac["trace"][0][2]  # it trains (slowly: λ0 = 150)
    # SGD's error starts above 10 and gets below it within the 20 iterations: a crossing
    sgd = data["runs"]["sgd-lr0.1"]
    assert sgd["trace"][0][2] > 10 and sgd["crossings"]["10"]["iteration"] > 1
    assert sgd["crossings"]["1"] is None and sgd["stopped"] == "max_iters"
    png = (tmp_path / "race.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # --resume keeps the finished runs (bit for bit) and runs only the new racer
    assert race.main(tiny(tmp_path, "--only", "kfac_ref", "--resume", "--max-iters", "20")) == 0
    again = json.loads((tmp_path / "race.json").read_text())
    assert again["runs"]["kfac-blockdiag-code"] == kfac
    assert set(again["runs"]) >= {"kfac-tridiag-paper", "sgd-lr0.1"}
    out = capsys.readouterr().out
    assert "kfac-blockdiag-code: kept" in out


def test_user_mistakes_are_one_error_line(race, tmp_path, curves_dir, capsys):
    for argv, words in (
        (["--only", "adam"], "unknown racer 'adam'"),
        (["--max-seconds", "0"], "--max-seconds"),
        (["--resume"], "give --json"),
        (["--resume", "--json", str(tmp_path / "none.json")], "does not exist"),
    ):
        with pytest.raises(SystemExit) as exc:
            race.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1
    (tmp_path / "race.json").write_text(
        json.dumps({"settings": {"n_train": 999}, "runs": {}}), encoding="utf-8"
    )
    assert race.run_script(race.main, tiny(tmp_path, "--resume")) == 2
    assert "other settings" in capsys.readouterr().err


def test_kfac_jax_missing_is_a_message_and_the_others_run(race, tmp_path, curves_dir, capsys):
    if not isinstance(race.import_kfac_jax(), str):
        pytest.skip("kfac-jax is installed; the message for a missing one cannot be seen here")
    argv = tiny(tmp_path, "--only", "kfac-jax", "kfac-tridiag-code", "--max-iters", "4")
    assert race.main(argv) == 0
    runs = json.loads((tmp_path / "race.json").read_text())["runs"]
    assert "bench extra" in runs["kfac-jax"]["skipped"]
    check_run(runs["kfac-tridiag-code"])
    assert "kfac-jax skipped" in capsys.readouterr().out


def test_kfac_jax_tiny_run(race, tmp_path, curves_dir):
    why = race.import_kfac_jax()
    if isinstance(why, str):
        pytest.skip(why)
    # one mini-batch shape (m1 = n), no damping update (k < 5): one compilation, in the clock
    argv = tiny(tmp_path, "--only", "kfac-jax", "--m1", "64", "--max-iters", "4", "--kfac-jax-cold")
    assert race.main(argv) == 0
    run = json.loads((tmp_path / "race.json").read_text())["runs"]["kfac-jax"]
    check_run(run)
    assert run["iterations"] == 4 and run["trace"][-1][2] < run["trace"][0][2]
    assert run["compile_s_in_clock"] > 0
    assert [p[2] for p in run["trace_excluding_compile"]] == [p[2] for p in run["trace"]]
