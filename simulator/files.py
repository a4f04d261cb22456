"""Every file rooftune writes goes through here: whole or not at all.

``write_atomic`` writes to a temporary file beside the target and renames it over the target,
so a reader (or a crash, or Ctrl-C) sees the old file or the new one, never half of one, and
missing folders are created. What cannot be written raises ``OSError`` with the path, which
the command line turns into one line (``tuner/cli.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target
