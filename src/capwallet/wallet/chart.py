"""Spend per day as an inline SVG bar chart: geometry only, drawn by the page template.

The chart is plain SVG elements inside the page (no script, no CDN, no external asset), so it
works offline and under the pages' strict Content-Security-Policy. This module computes
rectangles and labels from integer minor units; the template escapes every text it prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from capwallet.money import format_micros, format_short

WIDTH = 720
# The chart a phone shows (below 560 px): the SVG scales to the page's width, text included, so
# the wide chart's 11 px labels came out about 4.5 px on a 390 px screen. This one scales ~1:1.
NARROW_WIDTH = 340
HEIGHT = 200
LEFT = 64  # least room for the axis labels (more when a label is longer)
CHAR_WIDTH = 7  # px per character of an 11 px tick label, generously
BOTTOM = 24
TOP = 12


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    day: str
    label: str  # tooltip: "2026-11-26: 0.42 EUR"


@dataclass(frozen=True, slots=True)
class Tick:
    y: int
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    baseline: int
    bars: list[Bar]
    ticks: list[Tick]
    first_day: str
    last_day: str
    total: str
    empty: bool
    currency: str = ""


def _nice_max(value: int) -> int:
    """The smallest 1/2/5 x 10^k at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def spend_chart(per_day: list[tuple[str, int]], currency: str, width: int = WIDTH) -> Chart:
    top = _nice_max(max((v for _, v in per_day), default=0))
    # Values are microunits (ledger costs). Gridlines at 0, the middle (when exact), the top;
    # the left margin fits the longest label, so none is cut off ("0.0005 USD").
    steps = (0, 1, 2) if top % 2 == 0 else (0, 2)
    labels = {k: format_short(top * k // 2, currency) for k in steps}
    left = max(LEFT, 12 + CHAR_WIDTH * max(len(t) for t in labels.values()))
    plot_h = HEIGHT - BOTTOM - TOP
    plot_w = width - left - 8
    n = max(len(per_day), 1)
    slot = plot_w // n
    bar_w = max(slot - 4, 2)
    baseline = HEIGHT - BOTTOM
    bars = []
    for i, (day, value) in enumerate(per_day):
        h = value * plot_h // top
        if value > 0 and h < 2:
            h = 2  # a day with any spend stays visible
        bars.append(Bar(left + i * slot + 2, baseline - h, bar_w, h, day,
                        f"{day}: {format_micros(value, currency)}"))
    ticks = [Tick(baseline - plot_h * k // 2, labels[k]) for k in steps]
    total = sum(v for _, v in per_day)
    return Chart(
        width=width, height=HEIGHT, left=left, baseline=baseline, bars=bars, ticks=ticks,
        first_day=per_day[0][0] if per_day else "", last_day=per_day[-1][0] if per_day else "",
        total=format_micros(total, currency), empty=total == 0, currency=currency,
    )
