"""Write the public names and call signatures of the installed CuPy to a JSON file.

The strict CuPy stand-in of the tests (``tests/fakecupy``) offers exactly the names listed there,
and refuses keyword arguments the real function does not take, so code that passes on the
stand-in uses nothing CuPy lacks. Regenerate the list whenever the CuPy pin in ``setup.cfg``
changes; no GPU is needed, only the package and its CUDA libraries (the ``ctk`` extra)::

    python -m venv /tmp/cupyenv
    /tmp/cupyenv/bin/pip install 'cupy-cuda12x[ctk]>=14,<15'
    /tmp/cupyenv/bin/python scripts/dump_cupy_api.py            # → tests/fakecupy/cupy_api.json

Signatures come from :func:`inspect.signature`, or, for Cython functions that have none, from
the ``name(args)`` line that Cython puts first in their docstring; where neither exists the
entry's ``params`` is null (the stand-in then accepts any keyword).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import sys
from pathlib import Path
from typing import Any

MODULES = (
    "cupy",
    "cupy.linalg",
    "cupy.random",
    "cupy.cuda",
    "cupy.cuda.runtime",
    "cupyx",
    "cupyx.scipy",
    "cupyx.scipy.linalg",
    "cupyx.scipy.special",
)
CLASSES = ("cupy.ndarray", "cupy.random.Generator", "cupy.random.BitGenerator", "cupy.cuda.Device")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fakecupy" / "cupy_api.json"


def _params_from_doc(obj: Any) -> dict[str, Any] | None:
    """Parameters from a Cython docstring's first line ``name(self, a, b=1) -> ...``, or None."""
    first = (getattr(obj, "__doc__", None) or "").strip().split("\n", 1)[0]
    if "(" not in first or ")" not in first:
        return None
    inside = first[first.index("(") + 1 : first.rindex(")")]
    try:
        args = ast.parse(f"def f({inside}): pass").body[0].args
    except SyntaxError:
        return None
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return {
        "params": [n for n in names if n != "self"],
        "var_positional": args.vararg is not None,
        "var_keyword": args.kwarg is not None,
    }


def describe_callable(obj: Any) -> dict[str, Any]:
    """{"params": [...], "var_positional": bool, "var_keyword": bool}, params None if unknown."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return _params_from_doc(obj) or {
            "params": None,
            "var_positional": True,
            "var_keyword": True,
        }
    kinds = [p.kind for p in sig.parameters.values()]
    return {
        "params": [
            n
            for n in sig.parameters
            if n != "self"
            and sig.parameters[n].kind
            not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ],
        "var_positional": inspect.Parameter.VAR_POSITIONAL in kinds,
        "var_keyword": inspect.Parameter.VAR_KEYWORD in kinds,
    }


def describe(obj: Any) -> dict[str, Any]:
    """One entry: its kind and, for callables, its parameters."""
    import cupy

    if inspect.ismodule(obj):
        return {"kind": "module"}
    if isinstance(obj, cupy.ufunc):
        return {"kind": "ufunc", "nin": int(obj.nin), "nout": int(obj.nout)}
    if inspect.isclass(obj):
        return {"kind": "class"}
    if callable(obj):
        return {"kind": "function", **describe_callable(obj)}
    return {"kind": "value"}


def public_names(obj: Any) -> list[str]:
    return sorted(n for n in dir(obj) if not n.startswith("_"))


def dump() -> dict[str, Any]:
    import cupy

    modules = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        modules[name] = {n: describe(getattr(mod, n)) for n in public_names(mod)}
    classes = {}
    for path in CLASSES:
        owner, _, attr = path.rpartition(".")
        cls = getattr(importlib.import_module(owner), attr)
        entries = {}
        for n in public_names(cls) + [
            n for n in dir(cls) if n.startswith("__") and n.endswith("__")
        ]:
            member = getattr(cls, n)
            entries[n] = (
                {"kind": "function", **describe_callable(member)}
                if callable(member)
                else {"kind": "value"}
            )
        classes[path] = entries
    return {
        "cupy_version": cupy.__version__,
        "python": sys.version.split()[0],
        "generated_by": "scripts/dump_cupy_api.py",
        "modules": modules,
        "classes": classes,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    args = p.parse_args(argv)
    api = dump()
    args.out.write_text(json.dumps(api, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    n = sum(len(v) for v in api["modules"].values()) + sum(len(v) for v in api["classes"].values())
    print(f"CuPy {api['cupy_version']}: {n} names written to {args.out}")


if __name__ == "__main__":
    main()
