"""Numbers and tables as the package prints them: one unit for bytes, one for seconds, one table renderer.

The tables of `inspect` (`UnrollComparison`, `GraphView`), the demo's and the `devices` command's lines
all go through here, as text, Markdown or HTML. Imports nothing from the package.
"""

from __future__ import annotations

import html
from typing import Optional, Sequence


def format_bytes(count: Optional[int]) -> str:
    """Bytes in decimal units (`918.3 kB`, `21.2 MB`), "n/a" for None (memory the runtime did not count)."""
    if count is None:
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1, style: str = "text") -> str:
    """`rows` under `header`, the first `left` columns left-aligned and the others (numbers) right-aligned.

    Args:
        header: The column titles.
        rows: The cells, already formatted as strings.
        left: How many leading columns are left-aligned.
        style: `"text"` (columns padded, a rule of dashes under the header), `"markdown"` (GitHub's table,
            with the alignment in its rule) or `"html"` (a `<table>`, cells escaped).

    Returns:
        The table, without a trailing newline.
    """
    if style == "markdown":
        rule = "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"
        lines = ["| " + " | ".join(row) + " |" for row in [header, *rows]]
        return "\n".join([lines[0], rule, *lines[1:]])
    if style == "html":
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"
    if style != "text":
        raise ValueError(f'`style` must be "text", "markdown" or "html". Received: style={style!r}')
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = lambda row: "  ".join(  # noqa: E731
        cell.ljust(width) if i < left else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
    )
    return "\n".join([line(header), "  ".join("-" * width for width in widths), *(line(row) for row in rows)])
