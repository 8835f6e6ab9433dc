"""Adding up what the beat processes report about themselves.

Every ``celery beat`` that imports the hook reports, every few seconds, its
process, its schedule and the entries it sent since its last report
(``deadletters.hook``, docs/hygiene.md), on the queue of the outcome reports.
The monitor applies each report once (process id and sequence number, as for
outcomes) and keeps: the beat processes (``BeatProcess``), the entries as last
reported (``PeriodicEntry``), and per entry and process how often it was sent
(``PeriodicSend``), from which two beats sending one entry are told.

A report is untrusted: one that cannot be read is handed back, with the
reason, to be kept as a quarantined dead letter; it never stops the rest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from dashboard.broker.inbox import InboundMessage
from dashboard.models import BeatProcess, PeriodicEntry, PeriodicSend

REPORT_VERSION = 1
MAX_ENTRIES = 1_000
MAX_SENDS = 1_000
# A beat's clock may be this far from ours; further, its times are not believed.
CLOCK_SLACK = timedelta(days=1)


class UnreadableReport(ValueError):
    pass


@dataclass
class Folded:
    applied: int = 0
    duplicates: int = 0
    unreadable: list[tuple[InboundMessage, str]] = field(default_factory=list)


@dataclass
class _Entry:
    name: str
    task: str
    schedule: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    queue: str
    lossy: bool
    enabled: bool
    last_run_at: datetime | None
    next_due: datetime | None
    total_run_count: int


@dataclass
class _Report:
    process: str
    seq: int
    hostname: str
    pid: int | None
    scheduler: str
    database_scheduler: bool
    started_at: datetime | None
    interval: float
    stopping: bool
    entries: list[_Entry]
    # (entry, task, sent at, task id)
    sends: list[tuple[str, str, datetime, str]]


def fold(messages: list[InboundMessage], now: datetime | None = None) -> Folded:
    """Apply the readable beat reports among ``messages``, in one transaction."""
    now = now or timezone.now()
    folded = Folded()
    reports = []
    for message in messages:
        try:
            reports.append(read(message, now))
        except UnreadableReport as exc:
            folded.unreadable.append((message, str(exc)))
    if reports:
        with transaction.atomic():
            for report in sorted(reports, key=lambda r: (r.process, r.seq)):
                if _apply(report, now):
                    folded.applied += 1
                else:
                    folded.duplicates += 1
    return folded


# --- reading a report ---------------------------------------------------------------


def read(message: InboundMessage, now: datetime) -> _Report:
    if message.transport_error:
        raise UnreadableReport(message.transport_error)
    try:
        body = json.loads(message.body.decode(message.content_encoding or "utf-8"))
    except (ValueError, LookupError, RecursionError) as exc:
        raise UnreadableReport(f"the beat report is not JSON: {exc}") from exc
    try:
        return _report(body, now)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise UnreadableReport(f"the beat report has a bad field: {exc!r}") from exc


def _report(body: Any, now: datetime) -> _Report:
    if not isinstance(body, dict) or body.get("type") != "beat":
        raise ValueError("not a beat report")
    if body.get("v") != REPORT_VERSION:
        raise ValueError(f"unknown beat report version {str(body.get('v'))[:20]}")
    process = _text(body["process"], 64)
    seq = _count(body["seq"])
    if not process or seq < 1:
        raise ValueError("no process id or sequence number")
    pid = body.get("pid")
    interval = _number(body.get("interval", 10.0))
    entries = [_entry(e, now) for e in _list(body.get("entries"))[:MAX_ENTRIES]]
    sends = []
    for name, task, sent_at, task_id in _list(body.get("sends"))[:MAX_SENDS]:
        moment = _moment(sent_at, now)
        if moment is None:
            raise ValueError("a send without a time")
        sends.append((_text(name), _text(task), moment, _text(task_id)))
    return _Report(
        process=process,
        seq=seq,
        hostname=_text(body["hostname"]),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31 else None,
        scheduler=_text(body.get("scheduler") or ""),
        database_scheduler=body.get("database_scheduler") is True,
        started_at=_moment(body.get("started_at"), now),
        interval=min(max(interval, 0.1), 3600.0),
        stopping=body.get("stopping") is True,
        entries=entries,
        sends=sends,
    )


def _entry(raw: Any, now: datetime) -> _Entry:
    if not isinstance(raw, dict):
        raise TypeError(f"{type(raw).__name__} where an entry belongs")
    name = _text(raw["name"])
    if not name:
        raise ValueError("an entry without a name")
    args, kwargs, options = raw.get("args", []), raw.get("kwargs", {}), raw.get("options", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
        raise TypeError("an entry's args, kwargs or options of the wrong kind")
    return _Entry(
        name=name,
        task=_text(raw["task"]),
        schedule=_text(raw.get("schedule") or ""),
        args=_clean(args),
        kwargs=_clean(kwargs),
        options=_clean(options),
        queue=_text(raw.get("queue") or ""),
        lossy=raw.get("lossy") is True,
        enabled=raw.get("enabled") is not False,
        last_run_at=_moment(raw.get("last_run_at"), now),
        next_due=_moment(raw.get("next_due"), now),
        total_run_count=_count(raw.get("total_run_count") or 0),
    )


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{type(value).__name__} where a list belongs")
    return value


def _text(value: Any, limit: int = 255) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} where text belongs")
    return _clean(value)[:limit]


def _clean(value: Any) -> Any:
    """JSON as the database takes it: no NUL, no lone surrogate, anywhere in it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise ValueError(f"{str(value)[:40]} is not a count")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{str(value)[:40]} is not a number")
    return float(value)


def _moment(value: Any, now: datetime) -> datetime | None:
    """A timestamp of the report as a time; None when absent or unbelievable."""
    if value is None:
        return None
    moment = datetime.fromtimestamp(_number(value), UTC)
    return moment if abs(moment - now) <= CLOCK_SLACK else None


# --- applying a report once -------------------------------------------------------------


def _apply(report: _Report, now: datetime) -> bool:
    """Apply one report; False if it was applied before."""
    BeatProcess.objects.get_or_create(
        process=report.process,
        defaults={"hostname": report.hostname, "first_seen_at": now, "last_report_at": now},
    )
    beat = BeatProcess.objects.select_for_update().get(process=report.process)
    if report.seq <= beat.last_seq:
        return False
    beat.last_seq = report.seq
    beat.hostname = report.hostname
    beat.pid = report.pid
    beat.scheduler = report.scheduler
    beat.database_scheduler = report.database_scheduler
    beat.started_at = report.started_at
    beat.interval = report.interval
    beat.last_report_at = now
    beat.stopped_at = now if report.stopping else None
    beat.save()
    _store_entries(report, now)
    _store_sends(report, beat, now)
    return True


def _store_entries(report: _Report, now: datetime) -> None:
    rows = [
        PeriodicEntry(
            name=e.name,
            task=e.task,
            schedule=e.schedule,
            args=e.args,
            kwargs=e.kwargs,
            options=e.options,
            queue=e.queue,
            lossy=e.lossy,
            enabled=e.enabled,
            last_run_at=e.last_run_at,
            next_due=e.next_due,
            total_run_count=e.total_run_count,
            reported_by=report.process,
            reported_at=now,
        )
        for e in report.entries
    ]
    PeriodicEntry.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=[
            "task", "schedule", "args", "kwargs", "options", "queue", "lossy", "enabled",
            "last_run_at", "next_due", "total_run_count", "reported_by", "reported_at",
        ],
    )  # fmt: skip


def _store_sends(report: _Report, beat: BeatProcess, now: datetime) -> None:
    by_entry: dict[str, list[tuple[str, datetime, str]]] = {}
    for name, task, sent_at, task_id in report.sends:
        if name:
            by_entry.setdefault(name, []).append((task, sent_at, task_id))
    for name, sends in by_entry.items():
        task, last_sent_at, last_task_id = max(sends, key=lambda s: s[1])
        entry, _ = PeriodicEntry.objects.get_or_create(
            name=name, defaults={"task": task, "reported_by": report.process, "reported_at": now}
        )
        if entry.last_sent_at is None or last_sent_at >= entry.last_sent_at:
            PeriodicEntry.objects.filter(pk=entry.pk).update(
                last_sent_at=last_sent_at, last_task_id=last_task_id
            )
        send, created = PeriodicSend.objects.get_or_create(
            entry=name,
            process=beat.process,
            defaults={"sends": len(sends), "last_sent_at": last_sent_at},
        )
        if not created:
            send.sends += len(sends)
            send.last_sent_at = max(send.last_sent_at, last_sent_at)
            send.save(update_fields=["sends", "last_sent_at"])
        _count_duplicates(entry, now)


def _count_duplicates(entry: PeriodicEntry, now: datetime) -> None:
    """Count the sends of every beat sending the entry beside an older one:
    the duplicates. Counted once each, whichever beat's report comes first."""
    sends = list(PeriodicSend.objects.filter(entry=entry.name))
    beats = BeatProcess.objects.in_bulk([s.process for s in sends], field_name="process")
    pairs = [(beats[send.process], send) for send in sends if send.process in beats]
    for _, send in current_senders(entry, pairs, now)[1:]:
        extra = send.sends - send.duplicates_counted
        if extra > 0:
            PeriodicSend.objects.filter(pk=send.pk).update(duplicates_counted=send.sends)
            PeriodicEntry.objects.filter(name=entry.name).update(
                duplicate_sends=F("duplicate_sends") + extra
            )


def sending_window(entry: PeriodicEntry | None, interval: float) -> timedelta:
    """How recent a beat's last send of the entry must be for it to count as
    sending it now: two of the entry's periods, and never less than a few reports."""
    period = 60.0
    if entry is not None and entry.next_due and entry.last_run_at:
        period = max((entry.next_due - entry.last_run_at).total_seconds(), 1.0)
    return timedelta(seconds=max(2 * period, BeatProcess.MISSED_REPORTS * interval + 5))


def current_senders(
    entry: PeriodicEntry, sends: list[tuple[BeatProcess, PeriodicSend]], now: datetime
) -> list[tuple[BeatProcess, PeriodicSend]]:
    """The live beats sending the entry now, oldest first.

    A beat counts if it is alive, sent the entry lately, and sent it after
    every other such beat started: two beats that each sent it while the other
    ran are both sending it. A beat that last sent it before the other started
    is one that restarted (or has not sent since): no second sender.
    """
    recent = [
        (beat, send)
        for beat, send in sends
        if beat.alive(now) and now - send.last_sent_at <= sending_window(entry, beat.interval)
    ]
    started = {beat.process: beat.started_at or beat.first_seen_at for beat, _ in recent}
    current = [
        (beat, send)
        for beat, send in recent
        if all(send.last_sent_at >= at for p, at in started.items() if p != beat.process)
    ]
    return sorted(current, key=lambda pair: (started[pair[0].process], pair[0].process))


def prune(now: datetime | None = None) -> int:
    """Forget beats, entries and sends not heard of for as long as a worker is remembered."""
    from django.conf import settings

    now = now or timezone.now()
    forget = now - timedelta(seconds=settings.MONITOR_WORKER_FORGET_AFTER)
    gone = list(
        BeatProcess.objects.filter(last_report_at__lt=forget).values_list("process", flat=True)
    )
    deleted = PeriodicSend.objects.filter(process__in=gone).delete()[0]
    deleted += BeatProcess.objects.filter(process__in=gone).delete()[0]
    deleted += PeriodicEntry.objects.filter(reported_at__lt=forget).delete()[0]
    return deleted
