"""Charts drawn on the server as SVG: no script, nothing fetched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    text: str | None = None  # written beside the bar instead of the value ("<10", ">=30")


def bar_chart(bars: Sequence[Bar], *, title: str, width: int = 560, row: int = 26) -> str:
    """Horizontal bars, one per label, with the value written beside each."""
    label_width, value_width = 180, 70
    plot = width - label_width - value_width
    top = max((bar.value for bar in bars), default=0) or 1
    height = row * len(bars) + 8
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    for index, bar in enumerate(bars):
        y = index * row + 4
        length = max(1, round(plot * bar.value / top)) if bar.value else 0
        parts.append(
            f'<text x="{label_width - 8}" y="{y + row / 2 + 4:.0f}" text-anchor="end">'
            f"{escape(bar.label)}</text>"
            f'<rect x="{label_width}" y="{y + 3}" width="{length}" height="{row - 8}" rx="2"/>'
            f'<text x="{label_width + length + 6}" y="{y + row / 2 + 4:.0f}">'
            f"{escape(bar.text if bar.text is not None else str(bar.value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
