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
