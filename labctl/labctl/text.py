"""Plain-text output for the terminal."""

from __future__ import annotations


def table(headers: list[str], rows: list[list]) -> str:
    """Columns padded to their widest cell, a rule under the headers, no trailing spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths])] + [line(row) for row in rows])
