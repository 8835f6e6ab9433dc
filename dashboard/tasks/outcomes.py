"""Adding up the outcome reports of the processes that run and send tasks.

Each process that imports the hook reports, every few seconds, what it counted
since its last report (``deadletters.hook``, docs/outcomes.md). The monitor
drains those reports from their own queue and adds them up here: per minute
and per hour (``TaskMinute``, ``TaskHour``) for the pages, and since ever per
worker (``TaskTotal``) for ``/metrics``. Never one row per task run.

A report is applied once: each carries its process's id and a sequence
number, and the last number applied is kept per process. Every statement adds
(``column = column + excluded.column``), so monitors that drain side by side
need no lock but the one on the reporting process's row. Like dead letters,
reports are untrusted: one that cannot be read is handed back to be kept as a
quarantined dead letter, and never stops the rest.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from dashboard.broker.inbox import InboundMessage
from dashboard.models import (
    BUCKET_COLUMNS,
    COUNTER_COLUMNS,
    HISTOGRAMS,
    OUTCOME_BUCKETS,
    OUTCOME_EVENTS,
    OutcomeReporter,
    TaskFailureMinute,
    TaskFailureTotal,
    TaskHour,
    TaskMinute,
    TaskTotal,
)

REPORT_VERSION = 1
# How far from now a report's minutes may lie: a process with a wrong clock is
# not allowed to write charts of 1970 or of next year.
CLOCK_SLACK = timedelta(days=1)
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnreadableReport(ValueError):
    pass


@dataclass
class Folded:
    reports: int = 0
    applied: int = 0
    duplicates: int = 0
    # The outcome of each requeued task reported (for the dead letters).
    requeues: list[dict[str, Any]] = field(default_factory=list)
    # Messages that are not readable reports, and why: kept as dead letters.
    unreadable: list[tuple[InboundMessage, str]] = field(default_factory=list)


@dataclass
class _Report:
    process: str
    seq: int
    hostname: str
    pid: int | None
    counts: list[tuple[datetime, str, str, str, str, int]]
    histograms: list[tuple[datetime, str, str, str, list[int], float]]
    requeues: list[dict[str, Any]]


def fold(messages: list[InboundMessage], now: datetime | None = None) -> Folded:
    """Add the readable reports among ``messages`` up, in one transaction."""
    now = now or timezone.now()
    folded = Folded(reports=len(messages))
    reports = []
    for message in messages:
        try:
            reports.append(read(message, now))
        except UnreadableReport as exc:
            folded.unreadable.append((message, str(exc)))
    if not reports:
        return folded
    with transaction.atomic():
        fresh = _first_time_applied(reports, now, folded)
        # Added up together: a batch of reports is one upsert a row, not one a
        # row of each report (a fleet's processes report the same tasks).
        _add(fresh, now)
        for report in fresh:
            folded.requeues.extend(report.requeues)
        folded.applied += len(fresh)
    return folded


def add_observed(
    hostname: str,
    counts: list[tuple[datetime, str, str, str, str, int]],
    histograms: list[tuple[datetime, str, str, str, list[int], float]],
    now: datetime | None = None,
) -> None:
    """Add outcomes the monitor observed itself (Celery's events of a worker
    without the hook) as if that worker had reported them."""
    report = _Report("", 0, hostname, None, counts, histograms, [])
    with transaction.atomic():
        _add([report], now or timezone.now())


# --- reading a report: nothing in it is trusted ---------------------------------------


def read(message: InboundMessage, now: datetime) -> _Report:
    """The report in ``message``; ``UnreadableReport`` with the reason otherwise."""
    if message.transport_error:
        raise UnreadableReport(message.transport_error)
    try:
        body = json.loads(message.body.decode(message.content_encoding or "utf-8"))
    except (ValueError, LookupError, RecursionError) as exc:
        raise UnreadableReport(f"the outcome report is not JSON: {exc}") from exc
    try:
        return _report(body, now)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise UnreadableReport(f"the outcome report has a bad field: {exc!r}") from exc


def _report(body: Any, now: datetime) -> _Report:
    if not isinstance(body, dict) or body.get("type") != "outcomes":
        raise ValueError("not an outcome report")
    if body.get("v") != REPORT_VERSION:
        raise ValueError(f"unknown outcome report version {str(body.get('v'))[:20]}")
    if [float(b) for b in body["buckets"]] != list(OUTCOME_BUCKETS):
        raise ValueError("its histogram buckets are not the dashboard's")
    process = _text(body["process"], 64)
    seq = _count(body["seq"])
    if not process or seq < 1:
        raise ValueError("no process id or sequence number")
    pid = body.get("pid")
    counts = []
    for minute, task, queue, event, exception, n in body["counts"]:
        if event not in OUTCOME_EVENTS:
            raise ValueError(f"unknown event {str(event)[:40]}")
        counts.append(
            (_minute(minute, now), _text(task), _text(queue), event, _text(exception), _count(n))
        )
    histograms = []
    for minute, task, queue, kind, buckets, total in body["histograms"]:
        if kind not in HISTOGRAMS or len(buckets) != len(OUTCOME_BUCKETS) + 1:
            raise ValueError(f"a histogram of {str(kind)[:40]} that is not the dashboard's")
        total = float(total)
        if not math.isfinite(total) or total < 0:
            raise ValueError("a histogram sum that is not a duration")
        histograms.append(
            (_minute(minute, now), _text(task), _text(queue), kind, [_count(b) for b in buckets],
             total)
        )  # fmt: skip
    requeues = [_requeue(entry) for entry in body.get("requeues") or []]
    return _Report(
        process=process,
        seq=seq,
        hostname=_text(body["hostname"]),
        pid=pid if isinstance(pid, int) and 0 < pid < 2**31 else None,
        counts=counts,
        histograms=histograms,
        requeues=requeues,
    )


def _text(value: Any, limit: int = 255) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} where text belongs")
    return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))[:limit]


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise ValueError(f"{str(value)[:40]} is not a count")
    return value


def _minute(value: Any, now: datetime) -> datetime:
    moment = datetime.fromtimestamp(_count(value) * 60, UTC)
    if abs(moment - now) > CLOCK_SLACK:
        raise ValueError(f"minute {moment:%Y-%m-%d %H:%M} is too far from now")
    return moment


def _requeue(entry: Any) -> dict[str, Any]:
    state = entry["state"]
    if state not in ("succeeded", "failed", "retried"):
        raise ValueError(f"unknown requeue outcome {str(state)[:40]}")
    at = float(entry["at"])
    runtime = entry.get("runtime")
    return {
        "task_id": _text(entry["task_id"]),
        "requeued_from": _text(entry.get("requeued_from") or ""),
        "state": state,
        "at": datetime.fromtimestamp(at, UTC),
        "runtime": float(runtime) if isinstance(runtime, int | float) and runtime >= 0 else None,
        "exception": _text(entry.get("exception") or ""),
    }


# --- applying each report once ----------------------------------------------------------


def _first_time_applied(reports: list[_Report], now: datetime, folded: Folded) -> list[_Report]:
    """The reports not applied before, in each process's order; the processes'
    last sequence numbers move on, under a row lock each, in this transaction."""
    processes = sorted({report.process for report in reports})
    hostnames = {report.process: (report.hostname, report.pid) for report in reports}
    OutcomeReporter.objects.bulk_create(
        [
            OutcomeReporter(
                process=process,
                hostname=hostnames[process][0],
                pid=hostnames[process][1],
                last_seq=0,
                last_report_at=now,
            )
            for process in processes
        ],
        ignore_conflicts=True,
    )
    reporters = {
        reporter.process: reporter
        for reporter in OutcomeReporter.objects.select_for_update()
        .filter(process__in=processes)
        .order_by("process")
    }
    fresh = []
    for report in sorted(reports, key=lambda r: (r.process, r.seq)):
        reporter = reporters[report.process]
        if report.seq <= reporter.last_seq:
            folded.duplicates += 1
            continue
        reporter.last_seq = report.seq
        reporter.last_report_at = now
        fresh.append(report)
    OutcomeReporter.objects.bulk_update(
        list(reporters.values()), ["last_seq", "last_report_at"], batch_size=500
    )
    return fresh


def _add(reports: list[_Report], now: datetime) -> None:
    minutes: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    hours: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    failures: dict[tuple[Any, ...], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    failure_totals: dict[tuple[Any, ...], dict[str, float]] = defaultdict(
        lambda: defaultdict(float)
    )
    for report in reports:
        host = report.hostname
        for minute, task, queue, event, exception, n in report.counts:
            hour = minute.replace(minute=0)
            minutes[(minute, task, queue)][event] += n
            hours[(hour, task, queue)][event] += n
            totals[(task, queue, host)][event] += n
            if event == "failed" and exception:
                failures[(minute, task, queue, exception)]["count"] += n
                failure_totals[(task, queue, host, exception)]["count"] += n
        for minute, task, queue, kind, buckets, total in report.histograms:
            hour = minute.replace(minute=0)
            rows = (minutes[(minute, task, queue)], hours[(hour, task, queue)],
                    totals[(task, queue, host)])  # fmt: skip
            for column, n in zip(BUCKET_COLUMNS[kind], buckets, strict=True):
                if n:
                    for row in rows:
                        row[column] += n
            for row in rows:
                row[f"{kind}_sum"] += total
    _upsert(TaskMinute, ("minute", "task", "queue"), minutes)
    _upsert(TaskHour, ("hour", "task", "queue"), hours)
    _upsert(TaskTotal, ("task", "queue", "hostname"), totals, last_seen=now)
    by_exception = ("minute", "task", "queue", "exception")
    _upsert(TaskFailureMinute, by_exception, failures, counters=("count",))
    by_worker = ("task", "queue", "hostname", "exception")
    _upsert(TaskFailureTotal, by_worker, failure_totals, now, counters=("count",))


def _value(value: Any) -> Any:
    return connection.ops.adapt_datetimefield_value(value) if isinstance(value, datetime) else value


def _upsert(
    model: type[models.Model],
    keys: tuple[str, ...],
    rows: dict[tuple[Any, ...], dict[str, float]],
    last_seen: datetime | None = None,
    counters: tuple[str, ...] = COUNTER_COLUMNS,
) -> None:
    """Add ``rows`` (key -> column -> amount) to the model's ``counters``, one
    statement a row; ``last_seen`` replaces the stored one."""
    if not rows:
        return
    table = model._meta.db_table
    extra = ("last_seen",) if last_seen is not None else ()
    columns = (*keys, *counters, *extra)
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    sets = adds + (", last_seen = excluded.last_seen" if extra else "")
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - our own names
        f"VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )
    params = []
    for key, row in sorted(rows.items()):
        values = [row.get(c, 0.0) if c.endswith("_sum") else int(row.get(c, 0)) for c in counters]
        params.append([*map(_value, key), *values, *map(_value, (last_seen,) if extra else ())])
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


# --- retention ---------------------------------------------------------------------------


def prune(now: datetime | None = None) -> int:
    """Drop minutes and hours past their windows, and workers' totals not heard of
    for as long as a worker is remembered. Returns the rows deleted."""
    from django.conf import settings

    now = now or timezone.now()
    deleted = 0
    minute_cutoff = now - timedelta(days=settings.OUTCOMES_MINUTES_DAYS)
    hour_cutoff = now - timedelta(days=settings.OUTCOMES_HOURS_DAYS)
    deleted += TaskMinute.objects.filter(minute__lt=minute_cutoff).delete()[0]
    deleted += TaskFailureMinute.objects.filter(minute__lt=minute_cutoff).delete()[0]
    deleted += TaskHour.objects.filter(hour__lt=hour_cutoff).delete()[0]
    forget = now - timedelta(seconds=settings.MONITOR_WORKER_FORGET_AFTER)
    deleted += TaskTotal.objects.filter(last_seen__lt=forget).delete()[0]
    deleted += TaskFailureTotal.objects.filter(last_seen__lt=forget).delete()[0]
    deleted += OutcomeReporter.objects.filter(last_report_at__lt=forget).delete()[0]
    return deleted
