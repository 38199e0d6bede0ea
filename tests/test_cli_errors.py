"""The command line (``python -m kfac_ref``): a mistake is one line ``error: …`` and exit
status 2, Ctrl-C one line with the resume command and status 130, a closed standard output a
quiet status 141; and every option states its default.

Table-driven: each row is one mistake on the command line and a fragment of its error line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from kfac_ref.errors import ConfigError
from kfac_ref.experiments import io
from kfac_ref.experiments.cli import HelpFormatter, build_parser
from kfac_ref.experiments.cli import main as cli_main
from kfac_ref.optimizer import KFAC

REPO = Path(__file__).resolve().parents[1]
REAL_STEP = KFAC.step

# ------------------------------------------------------------------- one line each
SMALL = [
    "train",
    "--layers",
    "16",
    "4",
    "16",
    "--n-train",
    "40",
    "--n-test",
    "8",
    "--m1",
    "20",
    "--k-full",
    "4",
    "--iters",
    "2",
    "--eval-every",
    "1",
    "--dtype",
    "float64",
    "--no-progress",
]

CLI_CASES = [
    ("--kfac foo=1", ["--kfac", "foo=1"], "unknown K-FAC option 'foo'"),
    ("--kfac lamda0=1 suggests lam0", ["--kfac", "lamda0=1"], "did you mean 'lam0'?"),
    ("--kfac without =", ["--kfac", "lam0"], "--kfac expects NAME=VALUE"),
    (
        "--kfac structure with --method",
        ["--kfac", "structure=block_diagonal"],
        "conflicts with --method",
    ),
    ("--n-train −1", ["--n-train", "-1"], "argument --n-train: expected an integer ≥ 1, got -1"),
    ("--n-train 0", ["--n-train", "0"], "argument --n-train: expected an integer ≥ 1, got 0"),
    ("--n-test −5", ["--n-test", "-5"], "argument --n-test: expected an integer ≥ 1"),
    ("--n-train over the set", ["--n-train", "65"], "asks for more than the 64 training cases"),
    ("--iters 0", ["--iters", "0"], "argument --iters"),
    (
        "--sgd-lr −1",
        ["--method", "sgd-momentum", "--sgd-lr", "-1"],
        "sgd_lr must be a number in (0",
    ),
    ("unknown option", ["--itres", "3"], "unrecognized arguments: --itres"),
    ("--resume without a checkpoint", ["--resume"], "has no checkpoint.npz"),
    ("--resume with --overwrite", ["--resume", "--overwrite"], "pass only one of them"),
]


def _cli(argv, capsys):
    try:
        status = cli_main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "fragment"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_mistakes_end_with_one_error_line(tmp_path, capsys, fake_curves, extra, fragment):
    status, err = _cli([*SMALL, *extra, "--out", str(tmp_path / "run")], capsys)
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err
    assert lines[-1].startswith("error: ") and fragment in lines[-1], err


def test_cli_compare_gamma_names_gamma(capsys):
    status, err = _cli(["compare", "--gamma", "-0.5"], capsys)
    assert status == 2 and err.strip() == (
        "error: γ (gamma, the factored Tikhonov damping of §6.3) must be a finite number ≥ 0, got "
        "-0.5"
    )


def test_cli_uncreatable_out_and_earlier_run(tmp_path, capsys, fake_curves):
    (tmp_path / "file").write_text("x")
    status, err = _cli([*SMALL, "--out", str(tmp_path / "file" / "run")], capsys)
    assert status == 2 and err.startswith("error: the run directory") and "cannot be created" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text("{}\n")
    status, err = _cli([*SMALL, "--out", str(run)], capsys)
    assert (
        status == 2
        and "already holds a run (log.jsonl)" in err
        and (run / "log.jsonl").read_text() == "{}\n"
    )
    assert _cli([*SMALL, "--out", str(run), "--overwrite"], capsys)[0] == 0
    status, err = _cli(
        [*SMALL, "--seed", "4", "--iters", "3", "--out", str(run), "--resume"], capsys
    )
    assert status == 2 and "seed: 0 → 4" in err


def test_cli_debug_shows_the_traceback(tmp_path, fake_curves):
    with pytest.raises(ConfigError, match="unknown K-FAC option"):
        cli_main([*SMALL, "--kfac", "foo=1", "--out", str(tmp_path / "run"), "--debug"])
    with pytest.raises(ConfigError):
        cli_main(["--debug", *SMALL, "--kfac", "foo=1", "--out", str(tmp_path / "run")])


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_option_states_its_default(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    formatter = HelpFormatter(command)
    for action in sub._actions:
        if action.dest == "help":
            continue
        text = formatter._get_help_string(action)
        assert text and "default" in text, (action.option_strings, text)


def test_train_defaults_are_the_run_configs():
    """``train``'s defaults are RunConfig's (taken from its fields, so they cannot drift)."""
    import dataclasses

    from kfac_ref.experiments import RunConfig, cli
    from kfac_ref.experiments.commands import run_config

    args = build_parser().parse_args(["train", "--out", "x"])
    fields = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    shared = sorted(set(vars(args)) & set(fields) - {"kfac"})
    assert len(shared) == 20, shared
    assert {n: getattr(args, n) for n in shared} == {n: fields[n] for n in shared}
    # every field is an option (or --kfac), or named as one the command line leaves alone
    assert set(cli.TRAIN_OPTIONS) | {"kfac"} | set(cli.NOT_OPTIONS) == set(fields)
    assert not set(cli.TRAIN_OPTIONS) & set(cli.NOT_OPTIONS)
    assert run_config(args) == RunConfig()  # the options given back as the run they name


# -------------------------------------------------------------------------- compare
COMPARE_CASES = [
    # (case, argv, fragment): refused before any case is drawn
    ("--seed −1", ["--seed", "-1"], "argument --seed: expected an integer in [0, "),
    ("--cases 0", ["--cases", "0"], "argument --cases: expected an integer ≥ 1, got 0"),
    (
        "--cases 400000 on the default net",
        ["--cases", "400000"],
        "a dense Fisher for 166 parameters needs about 2353 MiB (13 × 166² × 8 + 400,000 cases "
        "× 770 × 8 bytes), over the limit of 2048 MiB; use fewer --cases than 400000",
    ),
    (
        "--cases 40000 under --max-memory 0.1",
        ["--cases", "40000", "--max-memory", "0.1"],
        "over the limit of 102 MiB; use fewer --cases than 40000, smaller --layers or a larger "
        "--max-memory",
    ),
    ("--max-memory 0", ["--max-memory", "0"], "--max-memory must be a number of GiB > 0, got 0"),
    ("--layers 0", ["--layers", "8", "0", "4"], "argument --layers: expected an integer ≥ 1"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), [c[1:] for c in COMPARE_CASES], ids=[c[0] for c in COMPARE_CASES]
)
def test_compare_mistakes_are_one_line_before_any_work(capsys, argv, fragment):
    tracemalloc.start()
    try:
        status, err = _cli(["compare", *argv], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 2 and "Traceback" not in err and fragment in err.strip().splitlines()[-1]
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"


# --------------------------------------------------------------------------- Ctrl-C
def _interrupt_at(monkeypatch, iteration: int) -> None:
    """Ctrl-C during K-FAC's step of ``iteration``."""

    def step(self, weights, state, *args, **kw):
        if state.k + 1 == iteration:
            raise KeyboardInterrupt
        return REAL_STEP(self, weights, state, *args, **kw)

    monkeypatch.setattr(KFAC, "step", step)


def test_ctrl_c_is_one_line_with_the_resume_command(tmp_path, capsys, monkeypatch, fake_curves):
    """Interrupted at iteration 3 of 4 (checkpoint at 2): one line naming both, status 130;
    the command it gives resumes the run, which ends as an uninterrupted run does."""
    run, whole = tmp_path / "run", tmp_path / "whole"
    argv = [*SMALL, "--iters", "4", "--checkpoint-every", "2", "--out", str(run), "--overwrite"]
    _interrupt_at(monkeypatch, 3)
    status, err = _cli(argv, capsys)
    lines = err.strip().splitlines()
    assert status == 130 and len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(
        f"interrupted at iteration 3; last checkpoint in {run} at iteration 2; resume with: "
    )
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "kfac_ref"] and "--overwrite" not in command
    assert command[-1] == "--resume" and io.read_jsonl(run / "log.jsonl")[-1]["iteration"] == 2
    monkeypatch.setattr(KFAC, "step", REAL_STEP)
    assert cli_main(command[3:]) == 0  # the command, as it would run
    assert cli_main([*SMALL, "--iters", "4", "--checkpoint-every", "2", "--out", str(whole)]) == 0
    capsys.readouterr()
    ours, theirs = (io.read_jsonl(d / "log.jsonl") for d in (run, whole))
    assert [r["train_error"] for r in ours if "train_error" in r] == [
        r["train_error"] for r in theirs if "train_error" in r
    ]


def test_ctrl_c_before_any_checkpoint_says_how_to_start_again(
    tmp_path, capsys, monkeypatch, fake_curves
):
    _interrupt_at(monkeypatch, 1)
    status, err = _cli([*SMALL, "--iters", "4", "--out", str(tmp_path / "run")], capsys)
    assert status == 130 and err.strip() == (
        f"interrupted at iteration 1; no checkpoint in {tmp_path / 'run'}; start again with "
        "--overwrite (no checkpoint was written yet)"
    )


def test_ctrl_c_while_loading_leaves_the_directory_as_it_was(
    tmp_path, capsys, monkeypatch, fake_curves
):
    from kfac_ref.experiments import data

    def interrupted(name, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "load_dataset", interrupted)
    status, err = _cli([*SMALL, "--out", str(tmp_path / "run")], capsys)
    assert status == 130 and err.strip() == (
        f"interrupted before training began; {tmp_path / 'run'} is as it was"
    )
    assert not (tmp_path / "run" / "log.jsonl").exists()


# ------------------------------------------------------------------ a closed stdout
def test_a_closed_stdout_ends_quietly(tmp_path):
    """``python -m kfac_ref compare | head -c0``: no traceback, no 'Exception ignored',
    status 141 (128 + SIGPIPE)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfac_ref", "compare", "--cases", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    proc.stdout.close()  # the reader goes away before the table is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == ""
