"""Checkpoints: never run code, never cost more memory than their declared arrays, and are
refused, in one line naming the file, when damaged, hostile or impossible.

Table-driven: each row crafts one kind of file from a good checkpoint (a damaged member, a zip
bomb, an ``.npy`` header declaring 10¹² elements, deeply nested JSON, a scalar stored as a
string, λ = NaN, all-NaN statistics, a FIFO) and names a fragment of the error. The loader
(:func:`kfac_ref.experiments.checkpoint.load_checkpoint`) checks every header before reading
data; the bomb's test measures the peak memory of the refusal (tracemalloc).
"""

from __future__ import annotations

import io as pyio
import json
import math
import os
import signal
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kfac_ref.errors import ConfigError, DataError, KFACError
from kfac_ref.experiments import checkpoint, run_experiment


# ------------------------------------------------------------------- crafting archives
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """An .npy version 1.0 magic and header declaring ``descr`` and ``shape`` (no data)."""
    buf = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue()


def _npy_of(a: np.ndarray) -> bytes:
    buf = pyio.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _write_npz(path: Path, members: dict[str, bytes], deflated: dict[str, int] = {}) -> None:  # noqa: B006
    """An .npz of the ``.npy`` bytes of ``members``; each member named in ``deflated`` is
    stored compressed, followed by that many zero bytes (a zip bomb when many)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            if name not in deflated:
                zf.writestr(name + ".npy", blob)
                continue
            info = zipfile.ZipInfo(name + ".npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                f.write(blob)
                zeros = bytes(2**20)
                left = deflated[name]
                while left:
                    f.write(zeros[: min(left, len(zeros))])
                    left -= min(left, len(zeros))


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename[: -len(".npy")]: zf.read(i) for i in zf.infolist()}


def test_crafted_pickle_checkpoint_runs_no_code(tmp_path, tiny_data, tiny_config, evil_pickle):
    evil, sentinel = evil_pickle
    (tmp_path / "checkpoint.pkl").write_bytes(evil)
    with pytest.raises(ConfigError, match="has no checkpoint.npz"):
        run_experiment(tiny_config(), tmp_path, data=tiny_data, resume=True, progress=False)
    with pytest.raises(DataError, match="not an .npz archive"):
        checkpoint.load_checkpoint(tmp_path / "checkpoint.pkl")
    (tmp_path / "checkpoint.npz").write_bytes(evil)  # a pickle in disguise
    with pytest.raises(DataError, match="not an .npz archive"):
        run_experiment(tiny_config(), tmp_path, data=tiny_data, resume=True, progress=False)
    assert not sentinel.exists()


def test_npz_with_a_pickled_member_runs_no_code(tmp_path, evil_pickle):
    evil, sentinel = evil_pickle
    meta = {
        "format": checkpoint.CHECKPOINT_FORMAT,
        "version": checkpoint.CHECKPOINT_VERSION,
        "arrays": {"a0": {"dtype": "|O", "shape": [1]}},
        "payload": {"x": {"__array__": "a0"}},
    }
    # an object member as numpy.save writes one: an .npy header, then a pickle
    _write_npz(
        tmp_path / "checkpoint.npz",
        {
            checkpoint.META_MEMBER: _npy_of(np.frombuffer(json.dumps(meta).encode(), np.uint8)),
            "a0": _npy_header("|O", (1,)) + evil,
        },
    )
    with pytest.raises(DataError, match=r"member a0 has dtype '\|O'; .* never unpickled"):
        checkpoint.load_checkpoint(tmp_path / "checkpoint.npz")
    assert not sentinel.exists()


def _good_checkpoint(tmp_path: Path, tiny_data, tiny_config) -> Path:
    run_experiment(tiny_config(), tmp_path, data=tiny_data, progress=False)
    return tmp_path / "checkpoint.npz"


def _rewrite(path: Path, change) -> None:
    """Rewrite the archive at ``path`` with ``change(members)`` applied (members by name)."""
    with np.load(path, allow_pickle=False) as z:
        members = {name: z[name] for name in z.files}
    change(members)
    with open(path, "wb") as f:
        np.savez(f, **members)


def _meta(members):
    return json.loads(members[checkpoint.META_MEMBER].tobytes())


def _set_meta(members, meta):
    members[checkpoint.META_MEMBER] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


def _shrink_first_array(m):
    m["a0"] = m["a0"][:1]


def _drop_meta(m):
    del m[checkpoint.META_MEMBER]


def _version_1(m):
    _set_meta(m, {**_meta(m), "version": 1})


def _transpose_weights(m):
    meta = _meta(m)
    name = meta["payload"]["weights"][0]["__array__"]
    m[name] = np.ascontiguousarray(m[name].T)
    meta["arrays"][name]["shape"] = list(m[name].shape)
    _set_meta(m, meta)


def _nan_weights(m):
    name = _meta(m)["payload"]["weights"][0]["__array__"]
    m[name] = np.full_like(m[name], np.nan)


def _other_k(m):
    meta = _meta(m)
    meta["payload"]["k"] = 3
    _set_meta(m, meta)


CHECKPOINT_CASES = [
    ("empty file", lambda p: p.write_bytes(b""), "not an .npz archive"),
    (
        "truncated",
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "corrupt or unreadable",
    ),
    ("member shape ≠ table", lambda p: _rewrite(p, _shrink_first_array), "its table says"),
    ("no __meta__", lambda p: _rewrite(p, _drop_meta), "no __meta__ member"),
    ("version 1", lambda p: _rewrite(p, _version_1), "has version 1"),
    ("weights of another network", lambda p: _rewrite(p, _transpose_weights), "weights[1]"),
    ("NaN weights", lambda p: _rewrite(p, _nan_weights), "NaN or infinite"),
    ("iteration and log disagree", lambda p: _rewrite(p, _other_k), "do not agree"),
]


@pytest.mark.parametrize(
    ("damage", "fragment"), [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES]
)
def test_damaged_checkpoint_is_refused_before_use(
    tmp_path, tiny_data, tiny_config, damage, fragment
):
    path = _good_checkpoint(tmp_path, tiny_data, tiny_config)
    damage(path)
    with pytest.raises(DataError) as info:
        run_experiment(tiny_config(iters=6), tmp_path, data=tiny_data, resume=True, progress=False)
    assert fragment in str(info.value)


def test_resume_with_other_settings_names_the_fields(tmp_path, tiny_data, tiny_config):
    _good_checkpoint(tmp_path, tiny_data, tiny_config)
    with pytest.raises(ConfigError) as info:
        run_experiment(
            tiny_config(iters=6, seed=3, sgd_lr=0.1),
            tmp_path,
            data=tiny_data,
            resume=True,
            progress=False,
        )
    assert "seed: 0 → 3" in str(info.value) and "sgd_lr: 0.05 → 0.1" in str(info.value)
    # the fields that may change do not block a resume
    run_experiment(
        tiny_config(iters=6, eval_every=3, checkpoint_every=3, max_seconds=1e6),
        tmp_path,
        data=tiny_data,
        resume=True,
        progress=False,
    )


def test_checkpoint_meta_round_trips_json_state_exactly(tmp_path):
    rng_state = {
        "kind": "counter",
        "key": [2**63 - 1, 7],
        "counter": 12345678901234567890,
        "lanes": [[1, 2], [3]],
    }
    payload = {
        "rng": rng_state,
        "x": 0.1 + 0.2,
        "nan": float("nan"),
        "none": None,
        "flag": True,
        "arrays": [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(0)],
    }
    checkpoint.save_checkpoint(tmp_path / "c.npz", payload)
    back = checkpoint.load_checkpoint(tmp_path / "c.npz")
    assert back["rng"] == rng_state and back["x"] == 0.1 + 0.2 and np.isnan(back["nan"])
    assert back["none"] is None and back["flag"] is True
    np.testing.assert_array_equal(back["arrays"][0], payload["arrays"][0])
    assert back["arrays"][0].dtype == np.float32
    with pytest.raises(TypeError, match="neither an array nor JSON"):
        checkpoint.save_checkpoint(tmp_path / "d.npz", {"bad": object()})
    assert not (tmp_path / "d.npz").exists() and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".")
    ]


# -------------------------------------------------------------- hostile and impossible files
BOMB_BYTES = 128 * 2**20  # inflated size of the bomb's member (its file: about 130 KiB)


def _bomb(path: Path, table_agrees: bool) -> None:
    """Member a0 replaced by a deflated run of zeros whose header declares BOMB_BYTES of
    float64 (the size the zip records too); the array table says the original shape unless
    ``table_agrees``."""
    members = _members(path)
    n = BOMB_BYTES // 8
    header = _npy_header("<f8", (n,))
    if table_agrees:
        meta = json.loads(np.load(pyio.BytesIO(members[checkpoint.META_MEMBER])).tobytes())
        meta["arrays"]["a0"] = {"dtype": "<f8", "shape": [n]}
        members[checkpoint.META_MEMBER] = _npy_of(
            np.frombuffer(json.dumps(meta).encode(), np.uint8)
        )
    members["a0"] = header
    _write_npz(path, members, deflated={"a0": BOMB_BYTES})


def _meta_bomb(path: Path) -> None:
    """__meta__ replaced by a deflated run of BOMB_BYTES zeros its header declares."""
    members = _members(path)
    members[checkpoint.META_MEMBER] = _npy_header("|u1", (BOMB_BYTES,))
    _write_npz(path, members, deflated={checkpoint.META_MEMBER: BOMB_BYTES})


def _huge_header(path: Path) -> None:
    """Member a0's header (and the table) declare 10¹² float64 entries; it holds 8 bytes."""
    members = _members(path)
    meta = json.loads(np.load(pyio.BytesIO(members[checkpoint.META_MEMBER])).tobytes())
    meta["arrays"]["a0"] = {"dtype": "<f8", "shape": [10**12]}
    members[checkpoint.META_MEMBER] = _npy_of(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    members["a0"] = _npy_header("<f8", (10**12,)) + bytes(8)
    _write_npz(path, members)


def _meta_text(path: Path, text: bytes) -> None:
    members = _members(path)
    members[checkpoint.META_MEMBER] = _npy_of(np.frombuffer(text, np.uint8))
    _write_npz(path, members)


def _edit_payload(path: Path, edit) -> None:
    """``edit(payload)`` applied to the JSON part of the checkpoint (arrays by reference)."""

    def change(m):
        meta = _meta(m)
        edit(meta["payload"])
        _set_meta(m, meta)

    _rewrite(path, change)


def _nan_statistics(path: Path) -> None:
    def change(m):
        name = _meta(m)["payload"]["opt_state"]["stats"]["A_diag"][0]["__array__"]
        m[name] = np.full_like(m[name], np.nan)

    _rewrite(path, change)


def _extra_member(path: Path) -> None:
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("README.txt", "not an array")


def _set(*keys, value):
    def edit(payload):
        node = payload
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return lambda p: _edit_payload(p, edit)


HOSTILE_CASES = [
    # (case, craft(path), fragment of the one-line DataError)
    ("zip bomb, table disagrees", lambda p: _bomb(p, False), "its table says"),
    ("zip bomb, table agrees", lambda p: _bomb(p, True), "this run's state can need"),
    ("zip bomb in __meta__", _meta_bomb, "member __meta__ has 134,217,728 bytes, over the"),
    ("header of 10¹² elements", _huge_header, "declares [1000000000000] <f8"),
    ("__meta__ 10⁵ deep", lambda p: _meta_text(p, b"[" * 10**5 + b"]" * 10**5), "too deeply"),
    ("__meta__ 500 deep", lambda p: _meta_text(p, b"[" * 500 + b"]" * 500), "deeper than 64"),
    ("__meta__ not UTF-8", lambda p: _meta_text(p, b"\xff\xfe"), "is not valid JSON"),
    ("a member not an array", _extra_member, "'README.txt' is not an array"),
    ("k as a string", _set("k", value="4"), "the iteration count k is '4', not an integer"),
    ("elapsed as a string", _set("elapsed", value="1.5"), "the elapsed time is '1.5'"),
    (
        "λ as a string",
        _set("opt_state", "lam", value="0.5"),
        "λ (lam) of the optimizer state is '0.5', not a finite number > 0",
    ),
    (
        "optimizer k as a string",
        _set("opt_state", "k", value="x"),
        "the optimizer state's iteration count is 'x'",
    ),
    (
        "training cases as a string",
        _set("data", "n_train", value="64"),
        "does not record its training data",
    ),
    ("λ = NaN", _set("opt_state", "lam", value=math.nan), "λ (lam) of the optimizer state is nan"),
    ("λ = inf", _set("opt_state", "lam", value=math.inf), "λ (lam) of the optimizer state is inf"),
    ("γ = −1", _set("opt_state", "gamma", value=-1.0), "γ (gamma) of the optimizer state is -1"),
    ("all-NaN statistics", _nan_statistics, "holds NaN or infinite values"),
]


@pytest.mark.parametrize(
    ("craft", "fragment"), [c[1:] for c in HOSTILE_CASES], ids=[c[0] for c in HOSTILE_CASES]
)
def test_hostile_checkpoint_is_one_line_naming_it(
    tmp_path, tiny_data, tiny_config, craft, fragment
):
    path = _good_checkpoint(tmp_path, tiny_data, tiny_config)
    craft(path)
    with pytest.raises(DataError) as info:
        run_experiment(tiny_config(iters=6), tmp_path, data=tiny_data, resume=True, progress=False)
    message = str(info.value)
    assert fragment in message and f"checkpoint {path}" in message and "\n" not in message


def test_zip_bomb_is_refused_before_it_is_inflated(tmp_path, tiny_data, tiny_config):
    """A 128 MiB member compressed to about 130 KiB: refused from its header, with a peak of
    a few MiB (the loader that read members first allocated all 128 MiB)."""
    path = _good_checkpoint(tmp_path, tiny_data, tiny_config)
    good = path.read_bytes()
    for table_agrees in (False, True):
        path.write_bytes(good)
        _bomb(path, table_agrees)
        assert path.stat().st_size < 2**20
        tracemalloc.start()
        try:
            with pytest.raises(DataError):
                checkpoint.load_checkpoint(path)  # the default bound: 4 × the file's size
            with pytest.raises(DataError):
                run_experiment(
                    tiny_config(iters=6), tmp_path, data=tiny_data, resume=True, progress=False
                )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB allocated refusing a zip bomb"


def test_every_scalar_of_a_checkpoint_is_checked(tmp_path, tiny_data, tiny_config):
    """Each scalar of the payload but the log's records (the configuration, the data
    fingerprint, k, the elapsed time, the optimizer state's) replaced by a value of another
    type (a number, None or a boolean by a string; a string by a list): the resume succeeds or
    ends in a one-line kfac_ref error, never another exception."""
    good = _good_checkpoint(tmp_path / "good", tiny_data, tiny_config)
    payload = json.loads(np.load(good)[checkpoint.META_MEMBER].tobytes())["payload"]
    leaves, stack = [], [((), payload)]
    while stack:
        keys, node = stack.pop()
        if isinstance(node, dict) and set(node) != {"__array__"}:
            stack.extend(((*keys, k), v) for k, v in node.items() if k != "records")
        elif isinstance(node, list):
            stack.extend(((*keys, i), v) for i, v in enumerate(node))
        elif not isinstance(node, dict):
            leaves.append(keys)
    assert len(leaves) > 30
    run = tmp_path / "run"
    for keys in leaves:
        leaf = payload
        for key in keys:
            leaf = leaf[key]
        for value in ([1],) if isinstance(leaf, str) else ("x",):
            if run.exists():
                for f in run.iterdir():
                    f.unlink()
            run.mkdir(exist_ok=True)
            for name in ("checkpoint.npz", "config.json", "log.jsonl"):
                (run / name).write_bytes((good.parent / name).read_bytes())
            _set(*keys, value=value)(run / "checkpoint.npz")
            try:
                run_experiment(
                    tiny_config(iters=4), run, data=tiny_data, resume=True, progress=False
                )
            except KFACError as exc:
                assert "\n" not in str(exc), (keys, value, exc)


def _alarm(seconds: int):
    def fail(*_):
        raise TimeoutError(f"blocked for {seconds} s")

    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_in_place_of_a_checkpoint_is_refused_not_waited_on(tmp_path, tiny_data, tiny_config):
    path = _good_checkpoint(tmp_path, tiny_data, tiny_config)
    path.unlink()
    os.mkfifo(path)
    _alarm(10)
    try:
        with pytest.raises(DataError, match="is not a regular file"):
            checkpoint.load_checkpoint(path)
        with pytest.raises(ConfigError, match="has no checkpoint.npz"):
            run_experiment(
                tiny_config(iters=6), tmp_path, data=tiny_data, resume=True, progress=False
            )
    finally:
        signal.alarm(0)


def test_meta_over_its_bound_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path / "c.npz", {"records": [{"x": 1.0}] * 100})
    monkeypatch.setattr(checkpoint, "META_MAX_BYTES", 200)
    with pytest.raises(DataError, match=r"__meta__ has [\d,]+ bytes, over the limit of 200"):
        checkpoint.load_checkpoint(tmp_path / "c.npz")
    with pytest.raises(DataError, match="over the 200 a checkpoint may hold"):
        checkpoint.save_checkpoint(tmp_path / "d.npz", {"records": [{"x": 1.0}] * 100})
