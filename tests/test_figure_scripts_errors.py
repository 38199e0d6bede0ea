"""The figure scripts (``paper_figures/``): a mistake in their options is one line
``error: …`` and exit status 2, found before any data are made or loaded; a run directory
holding another run is never replaced unasked, and a FIFO planted in one is never opened.

Table-driven: each row is one mistake (a seed, a size, a count that used to be replaced by its
default when 0, a path) and a fragment of its error line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.errors import ConfigError
from kfac_ref.experiments import data, io, run_data_info
from kfac_ref.experiments.exit_status import run_script


def _figure(name: str):
    folder = Path(__file__).resolve().parent.parent / "paper_figures"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(
            f"paper_figures_{name}_rel", folder / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


FIGURE_CASES = [
    # (case, script, argv ({tmp}: a directory holding "file" and the FIFO "fifo"), fragment,
    #  whether the error comes before any data are made or loaded)
    (
        "fisher_blocks --cases 1",
        "fisher_blocks",
        ["--quick", "--cases", "1"],
        "argument --cases: expected an integer ≥ 2, got 1",
        True,
    ),
    (
        "fisher_blocks --cases 0 (not the default)",
        "fisher_blocks",
        ["--quick", "--cases", "0"],
        "argument --cases: expected an integer ≥ 2, got 0",
        True,
    ),
    (
        "fisher_blocks --train-cases 0",
        "fisher_blocks",
        ["--train-cases", "0"],
        "argument --train-cases: expected an integer ≥ 2, got 0",
        True,
    ),
    (
        "fisher_blocks --cases over --train-cases",
        "fisher_blocks",
        ["--cases", "300", "--train-cases", "200"],
        "need 2 ≤ --cases ≤ --train-cases",
        True,
    ),
    (
        "fisher_blocks --train-cases 10¹²",
        "fisher_blocks",
        ["--train-cases", str(10**12)],
        "use a smaller --hidden or fewer --train-cases",
        True,
    ),
    (
        "fisher_blocks --seed −1",
        "fisher_blocks",
        ["--quick", "--seed", "-1"],
        "argument --seed: expected an integer in [0, 9223372036854775807], got -1",
        True,
    ),
    (
        "inverse_quality --hidden 0",
        "inverse_quality",
        ["--hidden", "0"],
        "argument --hidden: expected an integer ≥ 1, got 0",
        True,
    ),
    (
        "inverse_quality --hidden 100000",
        "inverse_quality",
        ["--quick", "--hidden", "100000"],
        "--hidden 100000 (40,000,400,000 parameters in the middle layers)",
        True,
    ),
    (
        "fisher_blocks --further-iters −1",
        "fisher_blocks",
        ["--quick", "--further-iters", "-1"],
        "argument --further-iters: expected an integer ≥ 0, got -1",
        True,
    ),
    (
        "fisher_blocks --data-dir a file",
        "fisher_blocks",
        ["--quick", "--data-dir", "{tmp}/file"],
        "--data-dir {tmp}/file is a file, not a directory",
        True,
    ),
    (
        "inverse_quality --weights missing",
        "inverse_quality",
        ["--weights", "{tmp}/nope.npz"],
        "file not found",
        True,
    ),
    (
        "inverse_quality --weights a FIFO",
        "inverse_quality",
        ["--weights", "{tmp}/fifo"],
        "--weights {tmp}/fifo: is not a regular file",
        True,
    ),
    ("inverse_quality --dpi 5", "inverse_quality", ["--dpi", "5"], "--dpi must be in", True),
    (
        "inverse_quality --weights damaged",
        "inverse_quality",
        ["--weights", "{tmp}/file"],
        "not a readable .npz file",
        False,
    ),
    (
        "fisher_blocks unknown option",
        "fisher_blocks",
        ["--cases", "x"],
        "argument --cases: expected an integer, got 'x'",
        True,
    ),
    (
        "fisher_blocks --out name of 300 bytes",
        "fisher_blocks",
        ["--quick", "--out", "{tmp}/" + "n" * 300],
        "has 300 bytes",
        True,
    ),
    (
        "autoencoders --iters 0",
        "autoencoders",
        ["--quick", "--iters", "0"],
        "argument --iters: expected an integer ≥ 1, got 0",
        True,
    ),
    (
        "autoencoders --sgd-tune-iters 0 (not the default)",
        "autoencoders",
        ["--quick", "--sgd-tune-iters", "0"],
        "argument --sgd-tune-iters: expected an integer ≥ 1, got 0",
        True,
    ),
    (
        "autoencoders --n-train 0",
        "autoencoders",
        ["--quick", "--n-train", "0"],
        "argument --n-train: expected an integer ≥ 1, got 0",
        True,
    ),
    (
        "autoencoders --seed −1",
        "autoencoders",
        ["--quick", "--seed", "-1"],
        "argument --seed: expected an integer in [0,",
        True,
    ),
    (
        "autoencoders --sgd-lr 0",
        "autoencoders",
        ["--quick", "--sgd-lr", "0.1", "0", "nan"],
        "every --sgd-lr must be a number > 0, got 0 nan",
        True,
    ),
    (
        "autoencoders --data-dir a file",
        "autoencoders",
        ["--quick", "--data-dir", "{tmp}/file"],
        "--data-dir {tmp}/file is a file",
        True,
    ),
    (
        "autoencoders --out under a file",
        "autoencoders",
        ["--out", "{tmp}/file/x"],
        "--out {tmp}/file/x cannot be created: {tmp}/file is a file",
        True,
    ),
    (
        "autoencoders --runs ~unknown user",
        "autoencoders",
        ["--runs", "~nosuchuser-kfac/runs"],
        "--runs ~nosuchuser-kfac/runs: cannot expand ~nosuchuser-kfac",
        True,
    ),
    (
        "fisher_blocks --out under a file",
        "fisher_blocks",
        ["--quick", "--out", "{tmp}/file/x"],
        "--out {tmp}/file/x cannot be created: {tmp}/file is a file",
        True,
    ),
    (
        "structures_compare --seeds 0 −1",
        "structures_compare",
        ["--quick", "--seeds", "0", "-1"],
        "argument --seeds: expected an integer in [0,",
        True,
    ),
]


@pytest.mark.parametrize(
    ("script", "argv", "fragment", "first"),
    [c[1:] for c in FIGURE_CASES],
    ids=[c[0] for c in FIGURE_CASES],
)
def test_figure_script_mistakes_end_with_one_error_line(
    tmp_path, capsys, monkeypatch, one_line_error, script, argv, fragment, first
):
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    if script == "autoencoders" and "--runs" not in argv:
        argv += ["--runs", str(tmp_path / "runs")]
    module = _figure(script)
    if first:  # the mistake is found before any data are made or loaded
        for name in ("make_curves", "load_dataset", "load_mnist"):
            monkeypatch.setattr(data, name, lambda *a, **k: pytest.fail("worked before checking"))
    try:
        status = run_script(module.main, argv)
    except SystemExit as exc:
        status = exc.code
    line = one_line_error(capsys.readouterr().err)
    assert status == 2 and fragment.replace("{tmp}", str(tmp_path)) in line, line


@pytest.fixture
def fake_curves_784(monkeypatch):
    rng = np.random.default_rng(0)
    ds = data.Dataset(
        "curves",
        rng.random((64, 784)),
        rng.random((1000, 784)),
        origin="stand-in",
        label="tiny 784",
    )
    monkeypatch.setattr(data, "load_dataset", lambda name, **kw: ds)
    return ds


def test_figure_script_never_runs_or_replaces_a_foreign_run(
    tmp_path, capsys, fake_curves_784, evil_pickle
):
    fig = _figure("autoencoders")
    argv = [
        "--quick",
        "--iters",
        "2",
        "--n-train",
        "64",
        "--methods",
        "kfac-blockdiag",
        "--no-progress",
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "fig"),
    ]

    def iters(n: int) -> list[str]:
        return [*argv[:2], str(n), *argv[3:]]

    (cfg,) = fig.run_configs(fig.parse_args(argv), "curves", "kfac-blockdiag")
    run = fig.run_dir(fig.parse_args(argv), cfg)
    run.mkdir(parents=True)
    evil, sentinel = evil_pickle
    (run / "checkpoint.pkl").write_bytes(evil)
    (run / "log.jsonl").write_text(json.dumps({"iteration": 1, "data": "tiny 784"}) + "\n")
    assert run_script(fig.main, argv) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint.npz to continue from" in err and "--overwrite" in err
    assert not sentinel.exists() and (run / "checkpoint.pkl").exists()
    # --overwrite trains afresh in place, and says so
    assert run_script(fig.main, [*argv, "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"replacing {run}" in out and f"runs replaced: {run}" in out
    assert not sentinel.exists()
    # only --iters grew: resumed from the matching checkpoint
    assert run_script(fig.main, iters(3)) == 0
    assert f"runs resumed: {run}" in capsys.readouterr().out
    # a run of other settings is an error naming them, and is not replaced
    io.write_text_atomic(run / "config.json", json.dumps({**cfg.to_json(), "m1": 7}))
    (run / "result.json").unlink()
    assert run_script(fig.main, iters(4)) == 2
    assert "m1: 7 → 250" in capsys.readouterr().err
    # a finished matching run is reused, and listed
    assert run_script(fig.main, [*iters(4), "--overwrite"]) == 0
    capsys.readouterr()
    assert run_script(fig.main, iters(4)) == 0
    assert f"runs reused: {run}" in capsys.readouterr().out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_planted_in_a_run_directory_is_never_opened(tmp_path, fake_curves_784):
    """result.json, then config.json too, replaced by FIFOs: the script neither hangs nor
    opens them; it resumes the run (writing a real result.json), or names what it cannot read."""
    fig = _figure("autoencoders")
    argv = ["--quick", "--iters", "2", "--n-train", "64", "--no-progress"]
    args = fig.parse_args([*argv, "--runs", str(tmp_path / "runs"), "--out", str(tmp_path)])
    (cfg,) = fig.run_configs(args, "curves", "kfac-blockdiag")
    info = run_data_info(cfg)
    records = fig.get_log(args, cfg, info)  # trained
    run = fig.run_dir(args, cfg)

    def fail(*_):
        raise TimeoutError("blocked on a FIFO")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(30)
    try:
        (run / "result.json").unlink()
        os.mkfifo(run / "result.json")
        assert fig.get_log(args, cfg, info) == records  # resumed at its end: nothing to train
        assert (run / "result.json").is_file()  # written anew, atomically, over the FIFO
        for name in ("result.json", "config.json"):
            (run / name).unlink()
            os.mkfifo(run / name)
        with pytest.raises(ConfigError, match="config.json is not a regular file.*--overwrite"):
            fig.get_log(args, cfg, info)
    finally:
        signal.alarm(0)
