"""Reads that pages make, shaped so they stay fast at a million rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils import timezone

from deadletters.models import DeadLetter, DeadLetterGroup, DeadLetterGroupHour, DeadLetterStats

COUNT_CAP = 10_000


@dataclass(frozen=True)
class Count:
    """How many rows a filter matches: exact up to the cap, else "more than"."""

    value: int
    exact: bool

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"more than {COUNT_CAP:,}"


def count_matching(rows: QuerySet[DeadLetter]) -> Count:
    """Counts at most COUNT_CAP + 1 rows: never a COUNT(*) over the whole table."""
    n = rows.order_by().values("pk")[: COUNT_CAP + 1].count()
    return Count(min(n, COUNT_CAP), n <= COUNT_CAP)


def open_total() -> int:
    """Open dead letters, from the counters (no scan)."""
    return int(DeadLetterStats.objects.aggregate(n=Sum("open"))["n"] or 0)


def open_cap_reached() -> bool:
    cap = settings.DEADLETTERS_MAX_OPEN
    return bool(cap) and open_total() >= cap


def hourly_counts(signatures: list[str], *, hours: int = 24) -> dict[str, list[int]]:
    """The last ``hours`` hourly counts of each group, oldest first."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours - 1)
    series = {signature: [0] * hours for signature in signatures}
    rows = DeadLetterGroupHour.objects.filter(signature__in=signatures, hour__gte=start)
    for signature, hour, count in rows.values_list("signature", "hour", "count"):
        index = int((hour - start).total_seconds() // 3600)
        if 0 <= index < hours:
            series[signature][index] += count
    return series


def top_open_group(since: datetime) -> DeadLetterGroup | None:
    return (
        DeadLetterGroup.objects.filter(open__gt=0, last_seen__gte=since)
        .order_by("-open", "-last_seen")
        .first()
    )
