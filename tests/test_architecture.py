"""The dependency rules of DESIGN.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return set(out.stdout.split())


def test_simulator_imports_only_numpy_pydantic_yaml():
    modules = sorted(p.stem for p in (ROOT / "simulator").glob("*.py") if p.stem != "__init__")
    loaded = imported_after("\n".join(f"import simulator.{m}" for m in modules))
    forbidden = {"torch", "optuna", "matplotlib", "tuner", "executor", "pandas"}
    assert not forbidden & {name.split(".")[0] for name in loaded}, forbidden & loaded


def test_tuner_never_imports_torch_at_import_time():
    modules = sorted(p.stem for p in (ROOT / "tuner").glob("*.py") if p.stem != "__init__")
    loaded = imported_after("\n".join(f"import tuner.{m}" for m in modules))
    assert "torch" not in loaded


def test_help_is_light():
    loaded = imported_after("from tuner.cli import build_parser\nbuild_parser()")
    heavy = {"numpy", "optuna", "matplotlib", "torch", "pydantic"} & loaded
    assert not heavy, f"`tune --help` imports {sorted(heavy)}"


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, top-level module) of every import statement in a package, those inside
    functions included."""
    import ast

    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name.split(".")[0]) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((path.name, node.module.split(".")[0]))
    return found


def test_no_import_anywhere_breaks_the_direction_of_the_flow():
    """Lazy imports inside functions count too: the simulator never reaches torch, optuna,
    matplotlib, the tuner or the executor; the executor never reaches the tuner."""
    simulator = {f"{f}: {m}" for f, m in _imports("simulator")
                 if m in {"torch", "optuna", "matplotlib", "pandas", "tuner", "executor"}}  # fmt: skip
    executor = {f"{f}: {m}" for f, m in _imports("executor") if m == "tuner"}
    assert not simulator, sorted(simulator)
    assert not executor, sorted(executor)
