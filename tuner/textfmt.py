"""Plain-text tables for the terminal: fixed-width columns, numbers right-aligned."""

from __future__ import annotations

from collections.abc import Sequence


def table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None
) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            numeric = cell[:1].isdigit() or cell[:1] in "-+." and cell[1:2].isdigit()
            out.append(cell.rjust(widths[i]) if numeric and i else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    parts = [title] if title else []
    parts.append(line(cells[0]))
    parts.append("  ".join("-" * w for w in widths))
    parts.extend(line(row) for row in cells[1:])
    return "\n".join(parts)


def key_values(rows: Sequence[tuple[str, str]], *, title: str | None = None) -> str:
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title] if title else []
    lines.extend(f"  {k.ljust(width)}  {v}" for k, v in rows)
    return "\n".join(lines)
