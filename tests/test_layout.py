"""The package layout: the paper's modules flat in ``kfac_ref/``, the experiments and
the edges (data, checkpoints, command line) in ``kfac_ref.experiments``, imported one way only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kfac_ref

PACKAGE = Path(kfac_ref.__file__).parent
EXPERIMENTS = "kfac_ref.experiments"
ENTRY_POINT = "__main__"  # ``python -m kfac_ref`` runs the command line, so it may import it


def math_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != ENTRY_POINT)


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module an ``import`` statement of ``path`` names, anywhere in the file (also the
    imports inside functions), relative imports resolved against ``package`` (the one that
    holds ``path``)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def _is_experiments(module: str) -> bool:
    return module == EXPERIMENTS or module.startswith(EXPERIMENTS + ".")


def test_math_modules_import_nothing_from_the_experiments() -> None:
    bad = {
        name: sorted(
            m for m in imported_modules(PACKAGE / f"{name}.py", "kfac_ref") if _is_experiments(m)
        )
        for name in math_modules()
    }
    assert not {k: v for k, v in bad.items() if v}, bad


def test_importing_every_math_module_loads_no_experiment_module() -> None:
    names = ", ".join(f"kfac_ref.{n}" for n in math_modules())
    code = (
        f"import sys, {names}; "
        f"print(sorted(m for m in sys.modules if m.startswith({EXPERIMENTS!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_experiment_side_lives_in_the_subpackage() -> None:
    edges = {"io", "checkpoint", "run_lock", "cli", "commands", "exit_status"}
    moved = {"experiments", "data", "schedules", "sgd", *edges}
    assert not moved & set(math_modules())
    experiments = PACKAGE / "experiments"
    assert {"runner", "data", "schedules", "sgd", *edges} <= {
        p.stem for p in experiments.glob("*.py")
    } | {p.parent.name for p in experiments.glob("*/__init__.py")}


def test_the_analysis_sees_relative_imports() -> None:
    """The import scan resolves ``from ..x import y`` inside the subpackage (a self-check)."""
    got = imported_modules(PACKAGE / "experiments" / "runner.py", EXPERIMENTS)
    assert "kfac_ref.optimizer" in got and "kfac_ref.experiments.io" in got


def test_the_optimizer_module_holds_algorithm_2_and_the_state_its_checkpoints() -> None:
    """§8: ``optimizer`` is Algorithm 2 and its named steps; the state carried between
    iterations and its checkpoint format live in ``state`` (``KFAC`` only delegates)."""
    from kfac_ref import optimizer, state

    assert optimizer.KFACState is state.KFACState
    for name in ("STATE_FORMAT", "BASE_STATS", "check_state_dict", "state_shapes"):
        assert hasattr(state, name) and not hasattr(optimizer, name), name
    assert "kfac_ref.backend.to_numpy" not in imported_modules(PACKAGE / "optimizer.py", "kfac_ref")


def test_the_figure_helpers_take_their_math_from_the_package() -> None:
    """``--trainer natgrad``'s step is :mod:`kfac_ref.natgrad` (math side, no figure code)."""
    networks = PACKAGE.parent / "paper_figures" / "_networks.py"
    tree = ast.parse(networks.read_text(), str(networks))
    defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "natgrad_step" not in defined
    assert "kfac_ref.natgrad.natgrad_step" in imported_modules(networks, "paper_figures")
    assert "natgrad" in math_modules()


def test_the_fisher_of_section_2_2_sits_below_the_structures():
    """§2.2 (``fisher``) imports nothing of §3–§4: the dense F̃, F̆, F̂ built through the
    structure table live in :mod:`kfac_ref.compare`, the size check both use in ``memory``."""
    path = PACKAGE / "fisher.py"
    top = ast.parse(path.read_text(), str(path)).body
    imported = {
        node.module or alias.name
        for node in top
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert imported <= {"backend", "errors", "memory", "mlp", "vec"}, imported
    from kfac_ref import compare, fisher

    assert not hasattr(fisher, "DENSE_STRUCTURES") and hasattr(compare, "approximate_fisher")


def test_the_configuration_is_a_leaf_of_the_imports():
    """``kfac_ref.config`` (the options, §5–§8) imports nothing of the package but its errors:
    no structure, no damping; the structure name is checked where it is looked up
    (:func:`kfac_ref.structures.configured_structure`)."""
    code = (
        "import sys, kfac_ref.config; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kfac_ref'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(["kfac_ref", "kfac_ref.config", "kfac_ref.errors"]), out.stdout
    assert {m for m in imported_modules(PACKAGE / "config.py", "kfac_ref") if "kfac_ref" in m} <= {
        "kfac_ref.errors",
        "kfac_ref.errors.ConfigError",
    }


def test_the_step_is_algorithm_2_on_one_screen():
    """``KFAC.step`` reads as Algorithm 2 (§8): at most 40 statements, nested ones included; the
    log record (:mod:`kfac_ref.step_info`) and the host transfers (:mod:`kfac_ref.host`) are
    objects of their own."""
    path = PACKAGE / "optimizer.py"
    tree = ast.parse(path.read_text(), str(path))
    (kfac,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KFAC"]
    (step,) = [n for n in kfac.body if isinstance(n, ast.FunctionDef) and n.name == "step"]
    count = sum(isinstance(node, ast.stmt) for s in step.body for node in ast.walk(s))
    assert count <= 40, count


def test_every_package_module_holds_one_thing_on_at_most_450_lines():
    """A module over 450 lines is a sign that it holds several things: split it by what it does
    (as §4.2/§4.3 in ``inverse.py`` and Appendix B in ``appendix_b.py`` are)."""
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert not long, long
