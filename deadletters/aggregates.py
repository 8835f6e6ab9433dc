"""The aggregates that pages and /metrics read instead of the big table.

Ingest adds the rows it stored (``count_received``); a requeue or discard takes
them out of "open" and adds to its own monotonic total (``count_handled``).
Retention pruning never touches them, so totals survive it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import F

from deadletters.models import DeadLetterGroup, DeadLetterStats


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def count_received(rows: Iterable[dict[str, Any]]) -> None:
    """Add newly stored (open) rows to the groups, the hourly counts and the counters."""
    groups: dict[str, dict[str, Any]] = {}
    hours: dict[tuple[str, datetime], int] = defaultdict(int)
    stats: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        failed_at = row["failed_at"]
        group = groups.get(row["signature"])
        if group is None:
            group = groups[row["signature"]] = {
                "task_name": row.get("task_name", ""),
                "exception_type": row.get("exception_type", ""),
                "n": 0,
                "first": failed_at,
                "last": failed_at,
                "message": row.get("exception_message", ""),
                "queue": row.get("queue", ""),
            }
        group["n"] += 1
        group["first"] = min(group["first"], failed_at)
        if failed_at >= group["last"]:
            group["last"] = failed_at
            group["message"] = row.get("exception_message", "")
            group["queue"] = row.get("queue", "")
        hours[(row["signature"], _hour(failed_at))] += 1
        stats[(row.get("task_name", ""), row.get("queue", ""))] += 1
    if not groups:
        return
    dt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            _GROUP_UPSERT,
            [
                (
                    sig,
                    g["task_name"],
                    g["exception_type"],
                    g["message"][:2000],
                    g["queue"],
                    g["n"],
                    g["n"],
                    dt(g["first"]),
                    dt(g["last"]),
                )
                for sig, g in groups.items()
            ],
        )
        cursor.executemany(_HOUR_UPSERT, [(sig, dt(hour), n) for (sig, hour), n in hours.items()])
        cursor.executemany(
            _STATS_UPSERT, [(task, queue, n, n) for (task, queue), n in stats.items()]
        )


# Portable upserts: PostgreSQL and SQLite share this syntax. In the SET list the
# table's own columns are the values before the update.
_GROUP_UPSERT = """
INSERT INTO deadletters_deadlettergroup
    (signature, task_name, exception_type, message, queue, total, open, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (signature) DO UPDATE SET
    total = deadletters_deadlettergroup.total + excluded.total,
    open = deadletters_deadlettergroup.open + excluded.open,
    first_seen = CASE WHEN excluded.first_seen < deadletters_deadlettergroup.first_seen
                      THEN excluded.first_seen ELSE deadletters_deadlettergroup.first_seen END,
    message = CASE WHEN excluded.last_seen >= deadletters_deadlettergroup.last_seen
                   THEN excluded.message ELSE deadletters_deadlettergroup.message END,
    queue = CASE WHEN excluded.last_seen >= deadletters_deadlettergroup.last_seen
                 THEN excluded.queue ELSE deadletters_deadlettergroup.queue END,
    last_seen = CASE WHEN excluded.last_seen > deadletters_deadlettergroup.last_seen
                     THEN excluded.last_seen ELSE deadletters_deadlettergroup.last_seen END
"""

_HOUR_UPSERT = """
INSERT INTO deadletters_deadlettergrouphour (signature, hour, count) VALUES (%s, %s, %s)
ON CONFLICT (signature, hour) DO UPDATE SET
    count = deadletters_deadlettergrouphour.count + excluded.count
"""

_STATS_UPSERT = """
INSERT INTO deadletters_deadletterstats
    (task_name, queue, received_total, requeued_total, discarded_total, open)
VALUES (%s, %s, %s, 0, 0, %s)
ON CONFLICT (task_name, queue) DO UPDATE SET
    received_total = deadletters_deadletterstats.received_total + excluded.received_total,
    open = deadletters_deadletterstats.open + excluded.open
"""


def count_handled(rows: Iterable[Any], *, action: str) -> None:
    """Rows (anything with signature, task_name, queue) left "open" by ``action``."""
    total_field = {"requeue": "requeued_total", "discard": "discarded_total"}[action]
    groups: Counter[str] = Counter()
    stats: Counter[tuple[str, str]] = Counter()
    for row in rows:
        groups[row.signature] += 1
        stats[(row.task_name, row.queue)] += 1
    for signature, n in groups.items():
        DeadLetterGroup.objects.filter(signature=signature).update(open=F("open") - n)
    for (task_name, queue), n in stats.items():
        DeadLetterStats.objects.filter(task_name=task_name, queue=queue).update(
            open=F("open") - n, **{total_field: F(total_field) + n}
        )
