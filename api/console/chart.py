"""The overview's chart of records per second by outcome, drawn as inline SVG on the server: no chart library,
no script needed to see it, and it refreshes with the rest of the live fragment."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.ops.throughput import Throughput
from core.records.rules import OUTCOMES

WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 30


@dataclass(frozen=True, slots=True)
class Series:
    outcome: str
    points: str  # the polyline's points, "x,y x,y …"
    total: int  # records with this outcome in the window
    peak: float  # the highest rate, records per second
    latest: float  # the rate in the last interval


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    series: list[Series]
    y_ticks: list[tuple[float, str]]
    x_ticks: list[tuple[float, str]]
    window_minutes: int
    bucket_seconds: int

    @property
    def drawn(self) -> list[Series]:
        """The series worth a line: those with any record in the window."""
        return [s for s in self.series if s.total > 0]


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10^k at least `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _label(rate: float) -> str:
    return f"{rate:g}" if rate < 1000 else f"{rate / 1000:g}k"


def throughput_chart(throughput: Throughput) -> Chart:
    """The chart's geometry: one line per outcome over the window, oldest on the left, now on the right."""
    count = throughput.buckets
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((max(rates, default=0.0) for rates in throughput.rates.values()), default=0.0)
    top = _nice_ceiling(peak)

    def x(index: int) -> float:
        return LEFT + plot_width * index / max(1, count - 1)

    def y(rate: float) -> float:
        return TOP + plot_height * (1 - rate / top)

    series = []
    for outcome in OUTCOMES:
        rates = throughput.rates.get(outcome, [0.0] * count)
        points = " ".join(f"{x(i):.1f},{y(rate):.1f}" for i, rate in enumerate(rates))
        series.append(
            Series(outcome, points, throughput.total(outcome), max(rates, default=0.0), rates[-1] if rates else 0.0)
        )
    y_ticks = [(y(top * share), _label(top * share)) for share in (0, 0.25, 0.5, 0.75, 1)]
    minutes = throughput.window_seconds // 60
    x_ticks = [
        (LEFT + plot_width * share, "now" if share == 1 else f"−{round(minutes * (1 - share))} min")
        for share in (0, 0.25, 0.5, 0.75, 1)
    ]
    return Chart(WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM, series, y_ticks, x_ticks, minutes, throughput.bucket_seconds)
