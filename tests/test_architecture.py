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


def modules_of(package: str) -> list[str]:
    """Every module of ``package``, subpackages included, as dotted names."""
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / package).rglob("*.py")
    )


def test_simulator_imports_only_numpy_pydantic_yaml():
    modules = modules_of("simulator")
    loaded = imported_after("\n".join(f"import {m}" for m in modules))
    forbidden = {"torch", "optuna", "matplotlib", "tuner", "executor", "pandas"}
    assert not forbidden & {name.split(".")[0] for name in loaded}, forbidden & loaded


def test_tuner_never_imports_torch_at_import_time():
    modules = modules_of("tuner")
    loaded = imported_after("\n".join(f"import {m}" for m in modules))
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


# The simulator's parts and what each may import: the data knows nothing of costing, the step
# cost model nothing of serving, and the fit of measurements stands on the cost model alone.
# The shared contracts (errors, results, units, files) are open to every part and import none.
MAY_IMPORT = {
    "data": {"data"},
    "cost": {"data", "cost"},
    "serving": {"data", "cost", "serving"},
    "calibration": {"data", "cost", "calibration"},
}


def _simulator_part(path: Path, node) -> str | None:
    """The simulator part an import reaches (None: a shared module or outside the simulator)."""
    import ast

    if not isinstance(node, ast.ImportFrom):
        names = [alias.name for alias in node.names]
    elif node.level == 0:
        names = [node.module or ""]
    else:
        here = path.relative_to(ROOT / "simulator").parent.parts
        base = here[: len(here) - (node.level - 1)]
        names = [".".join(("simulator", *base, node.module or ""))]
    for name in names:
        parts = name.split(".")
        if parts[0] == "simulator" and len(parts) > 1 and parts[1] in MAY_IMPORT:
            return parts[1]
    return None


def test_simulator_parts_import_only_the_parts_beneath():
    import ast

    broken = []
    for path in sorted((ROOT / "simulator").rglob("*.py")):
        if path.parent == ROOT / "simulator" and path.name == "__init__.py":
            continue  # the public surface re-exports every part
        inside = path.relative_to(ROOT / "simulator").parts
        allowed = MAY_IMPORT.get(inside[0], set()) if len(inside) > 1 else set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                reached = _simulator_part(path, node)
                if reached is not None and reached not in allowed:
                    broken.append(f"{'/'.join(inside)} imports simulator.{reached}")
    assert not broken, broken
