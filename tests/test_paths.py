"""Paths and run directories: every problem with a path (a data directory that is a file, an
unknown ``~user``, a name too long, a directory that cannot be created, a FIFO where a file
belongs, a failing disk) is one line before any work, and no earlier run is lost.

Table-driven: each row passes one bad path to the command line (or to ``run_experiment``) and
names a fragment of its one-line error; every row also checks that no data set was loaded (the
check came first).
"""

from __future__ import annotations

import errno
import os
import signal

import pytest

from kfac_ref.errors import ConfigError, DataError
from kfac_ref.experiments import data, finished_log, io, run_experiment
from kfac_ref.experiments.cli import main as cli_main
from kfac_ref.optimizer import KFAC

# ------------------------------------------------------------------- no run lost
RUN_DIR_CASES = [
    (
        "log and result, no checkpoint",
        ("log.jsonl", "result.json"),
        {},
        ConfigError,
        "already holds a run (log.jsonl, result.json)",
    ),
    ("config.json only", ("config.json",), {}, ConfigError, "already holds a run (config.json)"),
    ("--resume, nothing there", (), {"resume": True}, ConfigError, "has no checkpoint.npz"),
    (
        "--resume, log but no checkpoint",
        ("log.jsonl",),
        {"resume": True},
        ConfigError,
        "it holds log.jsonl but has no checkpoint.npz",
    ),
    (
        "--resume with a pickle only",
        ("checkpoint.pkl",),
        {"resume": True},
        ConfigError,
        "has no checkpoint.npz",
    ),
    (
        "--resume --overwrite",
        (),
        {"resume": True, "overwrite": True},
        ConfigError,
        "pass only one of them",
    ),
]


@pytest.mark.parametrize(
    ("files_", "kw", "error", "fragment"),
    [c[1:] for c in RUN_DIR_CASES],
    ids=[c[0] for c in RUN_DIR_CASES],
)
def test_earlier_run_is_never_overwritten(
    tmp_path, tiny_data, tiny_config, files_, kw, error, fragment
):
    for name in files_:
        (tmp_path / name).write_text("earlier run\n")
    with pytest.raises(error) as info:
        run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False, **kw)
    assert fragment in str(info.value)
    for name in files_:
        assert (tmp_path / name).read_text() == "earlier run\n"


def test_overwrite_replaces_every_earlier_file(tmp_path, tiny_data, tiny_config):
    for name in ("log.jsonl", "result.json", "checkpoint.pkl"):
        (tmp_path / name).write_text("earlier run\n")
    run_experiment(tiny_config(), tmp_path, data=tiny_data, overwrite=True, progress=False)
    assert (tmp_path / "result.json").read_text() != "earlier run\n"
    assert (tmp_path / "checkpoint.pkl").read_text() == "earlier run\n"  # not a run file: kept
    assert io.read_jsonl(tmp_path / "log.jsonl")[-1]["iteration"] == 4


def test_uncreatable_or_read_only_run_dir_is_an_error_before_training(
    tmp_path, tiny_data, tiny_config, monkeypatch
):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be created: .*/file is a file"):
        run_experiment(tiny_config(), tmp_path / "file" / "run", data=tiny_data, progress=False)

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(io.tempfile, "mkstemp", read_only)  # a read-only directory, even for root
    monkeypatch.setattr(
        KFAC, "step", lambda *a, **k: pytest.fail("trained into a read-only directory")
    )
    with pytest.raises(ConfigError, match="cannot be written: Permission denied"):
        run_experiment(tiny_config(), tmp_path / "ro", data=tiny_data, progress=False)


def test_write_failure_mid_run_is_a_data_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(DataError, match="cannot write .*No space left on device"):
        io.write_text_atomic(tmp_path / "log.jsonl", "x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- bad paths, one line
SMALL = [
    "train",
    "--layers",
    "16",
    "4",
    "16",
    "--iters",
    "2",
    "--dtype",
    "float64",
    "--no-progress",
]
LONG = "n" * 300

PATH_CASES = [
    # (case, extra argv ({tmp}: a directory holding the file "file"), environment, fragment)
    ("--data-dir is a file", ["--data-dir", "{tmp}/file"], {}, "{tmp}/file is a file, not a"),
    (
        "--data-dir under a file",
        ["--data-dir", "{tmp}/file/sub"],
        {},
        "{tmp}/file/sub cannot be created: {tmp}/file is a file",
    ),
    (
        "--data-dir ~unknown user",
        ["--data-dir", "~nosuchuser-kfac/data"],
        {},
        "cannot expand ~nosuchuser-kfac (there is no user 'nosuchuser-kfac')",
    ),
    (
        "$KFAC_REF_DATA_DIR is a file",
        [],
        {"KFAC_REF_DATA_DIR": "{tmp}/file"},
        "$KFAC_REF_DATA_DIR {tmp}/file is a file",
    ),
    ("--data-dir name of 300 bytes", ["--data-dir", f"{{tmp}}/{LONG}"], {}, "has 300 bytes"),
    ("--out name of 300 bytes", ["--out", f"{{tmp}}/{LONG}"], {}, "has 300 bytes"),
    ("--out under a file", ["--out", "{tmp}/file/run"], {}, "{tmp}/file is a file"),
    ("--out ~unknown user", ["--out", "~nosuchuser-kfac/run"], {}, "cannot expand ~nosuchuser"),
    ("--out with a NUL", ["--out", "{tmp}/a\0b"], {}, "contains a NUL character"),
    ("--out empty", ["--out", ""], {}, "must be a non-empty path"),
]


@pytest.mark.parametrize(
    ("extra", "env", "fragment"), [c[1:] for c in PATH_CASES], ids=[c[0] for c in PATH_CASES]
)
def test_bad_path_is_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, fake_curves, one_line_error, extra, env, fragment
):
    (tmp_path / "file").write_text("x")
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in [*SMALL, *extra]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    assert cli_main(argv) == 2
    line = one_line_error(capsys.readouterr().err)
    assert fragment.replace("{tmp}", str(tmp_path)) in line, line
    assert fake_curves == []  # refused before the data set was loaded


def test_run_experiment_checks_its_paths_too(tmp_path, tiny_config):
    """The notebooks' entry: the same checks, the same messages."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--data-dir .*/file is a file, not a directory"):
        run_experiment(tiny_config(data_dir=str(tmp_path / "file")), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="has 300 bytes"):
        run_experiment(tiny_config(), tmp_path / LONG, progress=False)
    with pytest.raises(ConfigError, match="cannot be created: .*/file is a file"):
        run_experiment(tiny_config(), tmp_path / "file" / "run", progress=False)


# ------------------------------------------------------------- failures of the machine
def _failing_loader(exc):
    def load(name, **kw):
        raise exc

    return load


OSERROR_CASES = [
    ("EIO", OSError(errno.EIO, "Input/output error", "/data/curves.npz"), "Input/output error"),
    ("ENOSPC", OSError(errno.ENOSPC, "No space left on device", "/data/x"), "No space left"),
    ("EACCES", PermissionError(errno.EACCES, "Permission denied", "/data/x"), "Permission denied"),
    ("EROFS", OSError(errno.EROFS, "Read-only file system", "/data/x"), "Read-only file system"),
]


@pytest.mark.parametrize(
    ("exc", "fragment"), [c[1:] for c in OSERROR_CASES], ids=[c[0] for c in OSERROR_CASES]
)
def test_an_oserror_escaping_a_loader_is_one_line_naming_the_file(
    tmp_path, capsys, monkeypatch, one_line_error, exc, fragment
):
    monkeypatch.setattr(data, "load_dataset", _failing_loader(exc))
    assert cli_main([*SMALL, "--out", str(tmp_path / "run")]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert fragment in line and exc.filename in line and "--debug" in line


def test_an_oserror_that_is_no_file_system_failure_keeps_its_traceback(tmp_path, monkeypatch):
    """Not every OSError is the machine's: one without a file-system errno is a bug, shown."""
    monkeypatch.setattr(data, "load_dataset", _failing_loader(OSError("not a file-system error")))
    with pytest.raises(OSError, match="not a file-system error"):
        cli_main([*SMALL, "--out", str(tmp_path / "run")])
    monkeypatch.setattr(data, "load_dataset", _failing_loader(ConnectionResetError(104, "reset")))
    with pytest.raises(ConnectionResetError):
        cli_main([*SMALL, "--out", str(tmp_path / "run2")])


# --------------------------------------------------------- FIFOs where run files belong
def _alarm(seconds: int):
    def fail(*_):
        raise TimeoutError(f"blocked for {seconds} s")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_in_a_run_directory_is_never_opened(tmp_path, tiny_data, tiny_config):
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    assert finished_log(tiny_config(), tmp_path) is not None
    _alarm(10)
    try:
        for name in ("result.json", "log.jsonl"):
            (tmp_path / name).rename(tmp_path / f"{name}.real")
            os.mkfifo(tmp_path / name)
            assert finished_log(tiny_config(), tmp_path) is None
            with pytest.raises(DataError, match="is not a regular file"):
                io.read_text(tmp_path / name)
            (tmp_path / name).unlink()
            (tmp_path / f"{name}.real").rename(tmp_path / name)
        with pytest.raises(DataError, match="log file .* is not a regular file"):
            os.mkfifo(tmp_path / "other.jsonl")
            io.read_jsonl(tmp_path / "other.jsonl")
    finally:
        signal.alarm(0)
