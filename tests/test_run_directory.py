"""One run directory, one writer; resume only onto the same data; validate before deleting.

The run directory's promises (:func:`kfac_ref.experiments.run_experiment`): a second writer
is refused naming the first, a lock left by a killed process is taken over, temporary files of
a killed writer are removed, a resume onto other data is refused naming both, and nothing of an
earlier run is deleted before everything that can fail has been checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.errors import ConfigError
from kfac_ref.experiments import RunConfig, batch_size, checkpoint, io, run_experiment, run_lock
from kfac_ref.experiments.run_dir import array_digest

LAYERS = [16, 6, 3, 6, 16]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    basis, codes = rng.random((3, 16)), rng.random((96, 3))
    X = 1.0 / (1.0 + np.exp(-4.0 * (codes @ basis - 0.75)))
    return X[:64], X[64:]


def tiny_config(**kw) -> RunConfig:
    base = dict(
        dataset="curves",
        method="kfac-blockdiag",
        iters=4,
        layers=LAYERS,
        m1=16,
        k_full=4,
        eval_every=2,
        checkpoint_every=2,
        dtype="float64",
        backend="numpy",
    )
    base.update(kw)
    return RunConfig(**base)


# --------------------------------------------------------------------------- the lock
def test_a_held_lock_refuses_a_second_writer_naming_the_holder(tmp_path, tiny_data):
    with run_lock.RunLock(tmp_path):
        assert (tmp_path / run_lock.LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on host ")
        with pytest.raises(ConfigError, match=rf"in use by another process \(pid {os.getpid()}"):
            run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()  # released and removed
    assert not any(tmp_path.iterdir())  # the refused run wrote nothing
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()


def test_lock_is_released_when_the_run_fails(tmp_path, tiny_data):
    with pytest.raises(ConfigError):
        run_experiment(tiny_config(n_train=10**6), tmp_path, progress=False)
    assert not (tmp_path / run_lock.LOCK_NAME).exists()
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)


HOLD = """
import sys, time
from kfac_ref.experiments import run_lock
lock = run_lock.RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(60)
"""


def _holder(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_of_a_killed_process_is_taken_over_with_a_line(tmp_path, tiny_data, caplog):
    proc = _holder(tmp_path)
    with pytest.raises(ConfigError, match=rf"pid {proc.pid} on host"):
        run_lock.RunLock(tmp_path).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / run_lock.LOCK_NAME).exists()  # left behind by the killed holder
    # and a temporary checkpoint a killed writer left mid-write
    (tmp_path / ".checkpoint.npz.abc123.npz.tmp").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")  # not ours: kept
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    assert f"taking over the lock left by pid {proc.pid}" in caplog.text
    assert not list(tmp_path.glob(".*tmp")) and (tmp_path / "notes.txt").read_text() == "mine"


TRAIN = """
import sys
from kfac_ref.experiments.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_one_directory_exactly_one_run(tmp_path):
    """Two ``train`` commands started together on one --out: one trains, the other exits 2
    naming the holder, and the directory holds one run's files (its seed throughout)."""
    out = tmp_path / "run"
    data = tmp_path / "data"
    common = ["train", "--dataset", "curves", "--method", "kfac-blockdiag", "--iters", "40"]
    common += ["--layers", "784", "8", "784", "--n-train", "64", "--n-test", "1", "--m1", "32"]
    common += ["--k-full", "2", "--dtype", "float64", "--no-progress", "--out", str(out)]
    common += ["--data-dir", str(data)]
    env = {**os.environ, "KFAC_REF_OFFLINE": "1"}
    # the stand-in is generated once beforehand, so both processes start training at once
    subprocess.run(
        [sys.executable, "-c", TRAIN, *common, "--iters", "1", "--out", str(tmp_path / "warm")],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRAIN, *common, "--seed", str(seed)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, err in results if rc == 2)
    assert "in use by another process (pid" in loser and len(loser.strip().splitlines()) == 1
    seed = json.loads((out / "config.json").read_text())["seed"]
    assert json.loads((out / "result.json").read_text())["config"]["seed"] == seed
    payload = checkpoint.load_checkpoint(out / checkpoint.CHECKPOINT_NAME)
    assert payload["config"]["seed"] == seed and payload["k"] == 40
    assert not (out / run_lock.LOCK_NAME).exists()


# --------------------------------------------------------------------- data identity
def test_resume_onto_other_data_is_refused_naming_both(tmp_path, tiny_data):
    run_experiment(tiny_config(iters=2), tmp_path, data=tiny_data, progress=False)
    other = (tiny_data[0][::-1].copy(), tiny_data[1])  # same cases, other order
    with pytest.raises(ConfigError) as info:
        run_experiment(tiny_config(), tmp_path, data=other, resume=True, progress=False)
    msg = str(info.value)
    assert "it was trained on" in msg and "but the data now are" in msg
    assert "--resume-other-data" in msg and msg.count("SHA-256") == 2
    assert checkpoint.load_checkpoint(tmp_path / checkpoint.CHECKPOINT_NAME)["k"] == 2  # untouched
    fewer = (tiny_data[0][:60], tiny_data[1])
    with pytest.raises(ConfigError, match="64 training"):
        run_experiment(tiny_config(), tmp_path, data=fewer, resume=True, progress=False)
    # the same data resume; the explicit option continues on other data, and the log says so
    log = run_experiment(
        tiny_config(iters=3), tmp_path, data=tiny_data, resume=True, progress=False
    )
    assert "resumed_on_other_data" not in log[2]
    log = run_experiment(
        tiny_config(), tmp_path, data=other, resume=True, progress=False, allow_other_data=True
    )
    assert log[3]["resumed_on_other_data"]["train_sha256"] == array_digest(other[0])
    assert "resumed_on_other_data" not in log[1]


def test_fingerprint_is_of_the_arrays_not_their_dtype_on_the_device(tmp_path, tiny_data):
    a = array_digest(tiny_data[0])
    assert a == array_digest(tiny_data[0].copy()) and len(a) == 64
    assert a != array_digest(tiny_data[0].astype(np.float32))
    changed = tiny_data[0].copy()
    changed[5, 5] = np.nextafter(changed[5, 5], 2.0)  # one ulp
    assert a != array_digest(changed)
    assert array_digest(np.zeros((0, 3))) != array_digest(np.zeros((3, 0)))


# ------------------------------------------------------------------ validate, then act
def test_a_failing_overwrite_leaves_the_earlier_run_intact(tmp_path, tiny_data):
    run_experiment(tiny_config(iters=2), tmp_path, data=tiny_data, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    bad_weights = [np.zeros((6, 17))]  # wrong: the net has four layers
    with pytest.raises(Exception):  # noqa: B017 (any error, as long as nothing is deleted)
        run_experiment(
            tiny_config(),
            tmp_path,
            data=tiny_data,
            overwrite=True,
            progress=False,
            init_weights=bad_weights,
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with pytest.raises(ConfigError, match="first and last widths"):
        run_experiment(tiny_config(layers=[16, 3, 8]), tmp_path, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_path_like_data_dir_numpy_scalars_and_tuples_are_accepted(tmp_path):
    cfg = tiny_config(
        data_dir=tmp_path / "data",
        seed=np.int64(3),
        iters=np.int32(5),
        sgd_lr=np.float32(0.25),
        layers=(np.int64(16), 6, 3, 6, 16),
    )
    d = cfg.to_json()
    assert d["data_dir"] == str(tmp_path / "data") and d["layers"] == LAYERS
    assert type(d["seed"]) is int and type(d["sgd_lr"]) is float and d["iters"] == 5
    assert RunConfig(**json.loads(json.dumps(d))).same_run_as(cfg)
    for bad, fragment in [("", "non-empty"), (3, "non-empty path")]:
        with pytest.raises(ConfigError, match=fragment):
            tiny_config(data_dir=bad)
    with pytest.raises(ConfigError, match="non-empty path"):
        run_experiment(tiny_config(), "", progress=False)


# ----------------------------------------------------- K-FAC without momentum, fixed m
def test_no_momentum_method_and_fixed_batch(tmp_path, tiny_data):
    cfg = tiny_config(method="kfac-blockdiag-nomomentum", kfac_batch=24, iters=3)
    kcfg = cfg.kfac_config()
    assert kcfg.use_momentum is False and kcfg.structure == "block_diagonal"
    assert tiny_config().kfac_config().use_momentum is True
    assert [batch_size(cfg, k, 64) for k in (1, 2, 500)] == [24, 24, 24]
    assert batch_size(tiny_config(kfac_batch=1000), 1, 64) == 64
    log = run_experiment(cfg, tmp_path, data=tiny_data, progress=False)
    assert [r["mu"] for r in log] == [0.0, 0.0, 0.0]
    assert [r["batch_size"] for r in log] == [24, 24, 24]
    with_momentum = run_experiment(
        tiny_config(kfac_batch=24, iters=3), tmp_path / "m", data=tiny_data, progress=False
    )
    assert with_momentum[1]["mu"] != 0.0
    with pytest.raises(ConfigError, match="conflicts with --method kfac-blockdiag-nomomentum"):
        tiny_config(method="kfac-blockdiag-nomomentum", kfac={"use_momentum": True})


def test_cli_resume_other_data_needs_resume(tmp_path, capsys):
    from kfac_ref.experiments.cli import main

    assert main(["train", "--out", str(tmp_path), "--resume-other-data"]) == 2
    assert "only applies with --resume" in capsys.readouterr().err


# ------------------------------------------------------------ diagnostics along training
def test_diagnose_every_logs_the_diagnostics_without_changing_the_run(tmp_path, tiny_data):
    from kfac_ref.diagnostics import DIAGNOSE_COPIES  # noqa: F401 (the module the runner uses)

    plain = run_experiment(tiny_config(), tmp_path / "a", data=tiny_data, progress=False)
    diag = run_experiment(
        tiny_config(diagnose_every=2), tmp_path / "b", data=tiny_data, progress=False
    )
    keys = [k for k in diag[1] if k.startswith("diag_")]
    assert "diag_total_error" in keys and "diag_cosine_delta_vs_natural_gradient" in keys
    assert "diag_F_tilde_vs_F_block_1_2" in keys and "diag_bound" in keys
    assert diag[1]["diag_bound"] >= diag[1]["diag_total_error"] > 0
    assert not any(k.startswith("diag_") for k in [*diag[0], *diag[2]])

    def same(r: dict) -> str:  # NaN-safe: as the log file holds it
        return json.dumps(io.jsonable({k: v for k, v in r.items() if k != "time"}))

    strip = [{k: v for k, v in r.items() if not k.startswith("diag_")} for r in diag]
    assert [same(r) for r in strip] == [same(r) for r in plain]
    with pytest.raises(ConfigError, match="SGD has no curvature"):
        tiny_config(method="sgd-momentum", diagnose_every=2)


def test_diagnostics_of_a_net_too_large_are_refused_before_training(tmp_path, tiny_data):
    big = tiny_config(layers=[16, 2000, 16], diagnose_every=1)
    with pytest.raises(ConfigError, match="parameters"):
        run_experiment(big, tmp_path, data=tiny_data, progress=False)
    assert not (tmp_path / "log.jsonl").exists() and not (tmp_path / "config.json").exists()
