"""What the periodic page, the overview and /metrics read of beat.

Everything comes from the rows the monitor keeps (``dashboard.periodic.reports``):
no broker round trip, no beat asked. Bounded by the number of entries and beats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, Q
from django.urls import reverse
from django.utils import timezone

from dashboard.models import BeatProcess, PeriodicEntry, PeriodicSend, TaskMinute
from dashboard.periodic.reports import current_senders
from deadletters.selectors import dead_letters_of_tasks

# How far back the last outcome of an entry's task is looked for.
OUTCOME_LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class Outcome:
    """The last known outcome of the task an entry sent: a word, when, and where to look."""

    word: str
    at: datetime | None = None
    url: str = ""
    failed: bool = False


@dataclass
class EntryRow:
    entry: PeriodicEntry
    late: bool
    # The live beat processes sending the entry now, oldest first: two or more
    # is the duplicate every playbook warns about.
    senders: list[BeatProcess] = field(default_factory=list)
    outcome: Outcome | None = None

    @property
    def duplicate(self) -> bool:
        return len(self.senders) >= 2

    def senders_text(self) -> str:
        return ", ".join(f"{beat.hostname} pid {beat.pid}" for beat in self.senders)


@dataclass
class BeatState:
    beats: list[BeatProcess]
    alive: list[BeatProcess]
    entries: list[EntryRow]

    @property
    def down(self) -> bool:
        """No beat reports, and there is a schedule that somebody should run."""
        return not self.alive and any(row.entry.enabled for row in self.entries)

    @property
    def duplicates(self) -> list[EntryRow]:
        return [row for row in self.entries if row.duplicate]

    @property
    def late(self) -> list[EntryRow]:
        return [row for row in self.entries if row.late]

    @property
    def last_report_at(self) -> datetime | None:
        return max((beat.last_report_at for beat in self.beats), default=None)


def beat_state(now: datetime | None = None, *, outcomes: bool = False) -> BeatState:
    """Every beat, every entry with whether it is late and who sends it; with
    ``outcomes``, the last outcome of each entry's task too (the periodic page)."""
    now = now or timezone.now()
    beats = list(BeatProcess.objects.order_by("-last_report_at"))
    by_process = {beat.process: beat for beat in beats}
    alive = [beat for beat in beats if beat.alive(now)]
    sends: dict[str, list[tuple[BeatProcess, PeriodicSend]]] = {}
    for send in PeriodicSend.objects.filter(process__in=[b.process for b in alive]):
        sends.setdefault(send.entry, []).append((by_process[send.process], send))
    tolerance = settings.PERIODIC_LATE_AFTER
    # The entry's own beat reports its next due time; a late report is no lateness.
    slack = max((beat.interval for beat in alive), default=0.0)
    rows = []
    for entry in PeriodicEntry.objects.order_by("name"):
        senders = [beat for beat, _ in current_senders(entry, sends.get(entry.name, []), now)]
        rows.append(EntryRow(entry, entry.late(now, tolerance + slack), senders))
    if outcomes:
        attach_outcomes(rows, now)
    return BeatState(beats, alive, rows)


def attach_outcomes(rows: list[EntryRow], now: datetime) -> None:
    """The last outcome of the task each entry sent: its dead letter when it
    failed for good, else the last minute its task finished in, from the
    outcome counts (any run of the task, not only the entry's)."""
    dead = dead_letters_of_tasks(row.entry.last_task_id for row in rows)
    tasks = {row.entry.task for row in rows}
    finished = Q(succeeded__gt=0) | Q(failed__gt=0)
    latest = dict(
        TaskMinute.objects.filter(finished, task__in=tasks, minute__gte=now - OUTCOME_LOOKBACK)
        .values_list("task")
        .annotate(last=Max("minute"))
    )
    minutes: dict[str, tuple[int, int]] = {}
    for task, minute, succeeded, failed in TaskMinute.objects.filter(
        task__in=list(latest), minute__in=set(latest.values())
    ).values_list("task", "minute", "succeeded", "failed"):
        if minute == latest.get(task):
            before = minutes.get(task, (0, 0))
            minutes[task] = (before[0] + succeeded, before[1] + failed)
    for row in rows:
        entry = row.entry
        dead_letter = dead.get(entry.last_task_id)
        if dead_letter is not None:
            row.outcome = Outcome(
                f"failed: {dead_letter.exception_type or dead_letter.kind}",
                dead_letter.failed_at,
                reverse("deadletters:detail", args=[dead_letter.pk]),
                failed=True,
            )
        elif entry.task in minutes:
            succeeded, failed = minutes[entry.task]
            if failed and succeeded:
                word = f"{succeeded:,} succeeded, {failed:,} failed"
            elif failed:
                word = f"failed ({failed:,})"
            else:
                word = "succeeded"
            row.outcome = Outcome(word, latest[entry.task], failed=bool(failed))
