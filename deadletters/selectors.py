"""Reads that pages make, shaped so they stay fast at a million rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.expressions import RawSQL
from django.http import QueryDict
from django.utils import timezone

from deadletters import search
from deadletters.models import (
    BulkAction,
    DeadLetter,
    DeadLetterGroup,
    DeadLetterGroupHour,
    DeadLetterStats,
)

COUNT_CAP = 10_000
# Columns that lists and the history never show: deferred, they stay in the database.
BIG_COLUMNS = ("traceback", "raw_body", "args", "kwargs", "headers", "search_text")


@dataclass(frozen=True)
class Count:
    """How many rows a filter matches: exact up to the cap, else "more than"."""

    value: int
    exact: bool
    cap: int = COUNT_CAP

    def __str__(self) -> str:
        return f"{self.value:,}" if self.exact else f"more than {self.cap:,}"


def count_matching(rows: QuerySet[DeadLetter]) -> Count:
    """Counts at most COUNT_CAP + 1 rows: never a COUNT(*) over the whole table."""
    n = rows.order_by().values("pk")[: COUNT_CAP + 1].count()
    return Count(min(n, COUNT_CAP), n <= COUNT_CAP)


def count_filtered(rows: QuerySet[DeadLetter], given: dict[str, Any]) -> Count:
    """``count_matching`` of a console filter's rows (``given``: its cleaned
    fields); a search alone is counted on the search index instead, exactly up
    to the index's common term (a commoner one is "more than" that)."""
    text = str(given.get("q") or "").strip()
    others = [name for name, value in given.items() if name != "q" and value]
    if text and not others and search.uses_index():
        cap = min(COUNT_CAP, search.COMMON_TERM)
        n = search.count(text, cap)
        return Count(min(n, cap), n <= cap, cap)
    return count_matching(rows)


def open_in_queue(queue: str) -> Count:
    """The open dead letters of one queue, counted as the console counts them
    (capped; on the queue's index)."""
    return count_matching(DeadLetter.objects.filter(queue=queue, state=DeadLetter.State.OPEN))


def last_page(rows: QuerySet[DeadLetter], *, per_page: int, before: int) -> int:
    """The last page of ``rows`` that has any, for page ``before`` found past the end.

    Counts at most the rows before that page: what its offset read already.
    """
    n = rows.order_by().values("pk")[: (before - 1) * per_page].count()
    return max(1, -(-n // per_page))


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


def recent_queues(now: datetime) -> set[str]:
    """Queues of dead letters within the history window.

    A DISTINCT over the whole table would read every row of an index that
    grows without bound; the window keeps it to recent rows.
    """
    since = now - timedelta(hours=settings.MONITOR_HISTORY_HOURS)
    rows = (
        DeadLetter.objects.filter(failed_at__gte=since)
        .exclude(queue="")
        .order_by()
        .values_list("queue", flat=True)
        .distinct()
    )
    return set(rows)


def distinct_stats(field: str) -> list[str]:
    """The known values of a counter column (task names, queues) for the filter's suggestions."""
    values = DeadLetterStats.objects.order_by(field).values_list(field, flat=True).distinct()
    return [v for v in values[:500] if v]


def failure_groups(*, show_all: bool = False, task: str = "") -> QuerySet[DeadLetterGroup]:
    """Groups with open dead letters first, then by the latest failure."""
    rows = DeadLetterGroup.objects.order_by("-open", "-last_seen")
    if not show_all:
        rows = rows.filter(open__gt=0)
    if task:
        rows = rows.filter(task_name=task)
    return rows


def group_names(signatures: Iterable[str]) -> dict[str, str]:
    """The name of each of these groups that still has its row, in one query
    (retention prunes the rows of old, closed groups)."""
    wanted = {signature for signature in signatures if signature}
    if not wanted:
        return {}
    rows = DeadLetterGroup.objects.filter(signature__in=wanted).only(
        "signature", "task_name", "exception_type", "message"
    )
    return {group.signature: group.name for group in rows}


# The list's filters in words, in the order a person reads them.
FILTER_WORDS = {
    "task": "task", "queue": "queue", "exception": "exception", "signature": "group",
    "worker": "worker", "range": "failed in the last", "since": "failed since",
    "until": "failed before", "q": "search",
}  # fmt: skip


def describe_filter(filter_query: str, names: Mapping[str, str]) -> str:
    """A filter in words, its group named from ``names`` (``group_names``); a group
    no longer known is shown by the start of its hash, the one thing left of it."""
    params = QueryDict(filter_query)
    parts = []
    for field, words in FILTER_WORDS.items():
        value = params.get(field)
        if value and field == "signature":
            value = names.get(value) or f"{value[:12]}…"
        if value:
            parts.append(f"{words} {value!r}")
    return ", ".join(parts) or "all dead letters"


def filter_group(filter_query: str) -> str:
    """The signature of the group a stored filter names, or ''."""
    return QueryDict(filter_query).get("signature") or ""


# The SQL form of ``DeadLetter.requeue_blocker`` being empty, for an open row.
REQUEUEABLE = Q(state=DeadLetter.State.OPEN, quarantine_reason="", lossy=False) & ~Q(task_name="")


def attach_requeue_blockers(groups: Iterable[DeadLetterGroup]) -> None:
    """Set ``requeue_blocker`` on each group of a page: why none of its open rows
    can be requeued, or "" when one can. One query for the page: an EXISTS per
    group stops at its first requeueable row."""
    groups = list(groups)
    requeueable = set(
        DeadLetterGroup.objects.filter(signature__in=[g.signature for g in groups])
        .filter(Exists(DeadLetter.objects.filter(REQUEUEABLE, signature=OuterRef("signature"))))
        .values_list("signature", flat=True)
    )
    for group in groups:
        if group.signature in requeueable:
            blocker = ""
        elif not group.task_name:
            blocker = "These messages could not be read or name no task: they cannot run again."
        else:
            blocker = "Their arguments could not be kept as JSON: a requeue would not be faithful."
        group.requeue_blocker = blocker  # type: ignore[attr-defined]


def attach_series(groups: Iterable[DeadLetterGroup]) -> None:
    """Set ``series`` on each group (one page of them): its last 24 hourly counts."""
    groups = list(groups)
    series = hourly_counts([group.signature for group in groups])
    for group in groups:
        group.series = series[group.signature]  # type: ignore[attr-defined]


# Both directions of the chain in one statement. UNION (not UNION ALL) drops a
# row found before, so a cycle in requeued_from ends the recursion instead of
# looping: each CTE selects only columns that follow from the id.
REQUEUE_CHAIN_SQL = f"""
WITH RECURSIVE
  earlier(id, origin) AS (
    SELECT id, requeued_from_id FROM {DeadLetter._meta.db_table} WHERE id = %s
    UNION
    SELECT t.id, t.requeued_from_id FROM {DeadLetter._meta.db_table} t
      JOIN earlier e ON t.id = e.origin
  ),
  later(id) AS (
    SELECT id FROM {DeadLetter._meta.db_table} WHERE id = %s
    UNION
    SELECT t.id FROM {DeadLetter._meta.db_table} t JOIN later l ON t.requeued_from_id = l.id
  )
SELECT id FROM earlier UNION SELECT id FROM later
"""  # noqa: S608 - our table name; the id is a parameter


def requeue_chain(dead_letter: DeadLetter) -> list[DeadLetter]:
    """This failure's chain across requeues, oldest first, itself included.

    One query: the recursive CTE (SQLite and PostgreSQL) finds the ids, as a
    subquery of the ORM fetch that reads the rows with who handled them. The
    order is the chain's, followed from ``dead_letter`` both ways in Python
    over the fetched rows; a cycle or a second follow-up of one row is walked
    once, the follow-up with the lowest id first.
    """
    ids = RawSQL(REQUEUE_CHAIN_SQL, (dead_letter.pk, dead_letter.pk))  # noqa: S611 - values are parameters
    related = DeadLetter.objects.select_related("requeued_by", "discarded_by")
    rows = {row.pk: row for row in related.defer(*BIG_COLUMNS).filter(pk__in=ids).order_by("pk")}
    rows[dead_letter.pk] = dead_letter
    chain, seen = [dead_letter], {dead_letter.pk}
    node = dead_letter
    while node.requeued_from_id in rows and node.requeued_from_id not in seen:
        node = rows[node.requeued_from_id]
        seen.add(node.pk)
        chain.insert(0, node)
    later: dict[int, list[DeadLetter]] = {}
    for row in rows.values():  # by id, so each list holds the lowest id first
        if row.requeued_from_id is not None:
            later.setdefault(row.requeued_from_id, []).append(row)
    node = dead_letter
    while nxt := next((r for r in later.get(node.pk, []) if r.pk not in seen), None):
        seen.add(nxt.pk)
        chain.append(nxt)
        node = nxt
    return chain


# --- what became of requeued tasks ------------------------------------------------------


def follow_up(dead_letter: DeadLetter, chain: list[DeadLetter]) -> DeadLetter | None:
    """The dead letter its requeue ended in (failed again), from its chain
    (``requeue_chain``, already read): no query of its own."""
    return next((row for row in chain if row.requeued_from_id == dead_letter.pk), None)


@dataclass(frozen=True)
class RequeueOutcomes:
    """What became of the tasks a bulk action requeued, as their workers reported."""

    succeeded: int = 0
    failed: int = 0
    # Failed and retried by Celery: it runs again.
    retrying: int = 0
    not_run: int = 0

    @property
    def requeued(self) -> int:
        return self.succeeded + self.failed + self.retrying + self.not_run

    @property
    def pending(self) -> int:
        return self.retrying + self.not_run


def failed_again_groups(action: BulkAction, limit: int = 20) -> list[dict[str, Any]]:
    """The groups the action's requeued tasks fell into when they failed again."""
    rows = (
        DeadLetter.objects.filter(requeued_from__bulk_action=action)
        .order_by()
        .values("signature", "task_name", "exception_type")
        .annotate(n=models.Count("pk"))
        .order_by("-n")[:limit]
    )
    return [dict(row) for row in rows]


def requeue_outcomes(action: BulkAction) -> RequeueOutcomes:
    """One aggregate over the action's requeued rows, by reported outcome."""
    counts = dict(
        DeadLetter.objects.filter(bulk_action=action, state=DeadLetter.State.REQUEUED)
        .order_by()
        .values_list("requeue_outcome")
        .annotate(n=models.Count("pk"))
    )
    return RequeueOutcomes(
        succeeded=counts.get("succeeded", 0),
        failed=counts.get("failed", 0),
        retrying=counts.get("retried", 0),
        not_run=counts.get("", 0),
    )


def dead_letters_of_tasks(task_ids: Iterable[str]) -> dict[str, DeadLetter]:
    """The newest dead letter of each of these task ids that has one."""
    found: dict[str, DeadLetter] = {}
    ids = [task_id for task_id in task_ids if task_id]
    for dead_letter in DeadLetter.objects.filter(task_id__in=ids).order_by("id"):
        found[dead_letter.task_id] = dead_letter
    return found
