"""Records per second by outcome over a recent window: what the console charts (SPEC §10)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from core.ops import repository
from core.records.rules import OUTCOMES

WINDOW_SECONDS = 3600
BUCKET_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Throughput:
    """Per outcome, records per second in each interval of the window, oldest first; the last ends now."""

    window_seconds: int
    bucket_seconds: int
    rates: dict[str, list[float]] = field(default_factory=dict)

    @property
    def buckets(self) -> int:
        return self.window_seconds // self.bucket_seconds

    def total(self, outcome: str) -> int:
        """Records with this outcome over the whole window."""
        return round(sum(self.rates.get(outcome, ())) * self.bucket_seconds)


def records_per_second(
    session: Session, *, window_seconds: int = WINDOW_SECONDS, bucket_seconds: int = BUCKET_SECONDS
) -> Throughput:
    """Records per second by outcome over the last `window_seconds`, in intervals of `bucket_seconds`."""
    buckets = window_seconds // bucket_seconds
    rates = {name: [0.0] * buckets for name in OUTCOMES}
    rows = repository.records_by_interval(
        session.connection(), window_seconds=window_seconds, bucket_seconds=bucket_seconds
    )
    for row in rows:
        counts: tuple[int, ...] = tuple(row[1:])
        for name, count in zip(OUTCOMES, counts, strict=True):
            rates[name][int(row[0])] = int(count) / bucket_seconds
    return Throughput(window_seconds, bucket_seconds, rates)
