"""Writing a plan's files so that no reader, and no crash, meets half of them.

``write_json_atomic`` writes JSON beside its path and renames it over. ``write_study_dir`` puts
everything a plan produces (``plan.json``, each engine's config file and launch script, the
report and its plots) in a staging folder first, then renames each file into place with
``plan.json`` last."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuner.plan import DeploymentPlan

__all__ = ["write_json_atomic", "write_study_dir"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path`` then rename over it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def write_study_dir(
    *,
    out_dir: Path,
    plan: DeploymentPlan,
    figures: dict[str, bytes] | None,
    html_text: str | None,
    md_text: str | None,
) -> list[Path]:
    """Write every output through a staging folder; ``plan.json`` is renamed in last."""
    from tuner.handover.scripts import write_engine_files

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        files = write_engine_files(staging, plan)
        if figures:
            (staging / "plots").mkdir()
            for name, png in figures.items():
                (staging / "plots" / f"{name}.png").write_bytes(png)
                files.append(staging / "plots" / f"{name}.png")
        for name, text in (("report.html", html_text), ("report.md", md_text)):
            if text is not None:
                (staging / name).write_text(text, encoding="utf-8")
                files.append(staging / name)
        write_json_atomic(staging / "plan.json", plan.model_dump(mode="json"))
        final = []
        for path in [*files, staging / "plan.json"]:
            target = out_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
