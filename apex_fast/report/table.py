"""Plain-text tables (no heavy imports: `models` and `gpus` print with this alone)."""

from __future__ import annotations


def table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned table framed by dashed lines (the seed's prettytable FRAME style)."""
    cols = len(header)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(cols)]
    width = sum(widths) + 2 * cols + 2
    line = "-" * width

    def fmt(r: list[str]) -> str:
        return "  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line, fmt(header), line, *[fmt(r) for r in rows], line])
