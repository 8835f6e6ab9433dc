"""Beat supervision: real ``celery beat`` processes report themselves and their
schedule; two beats sending one entry, a stopped beat and late entries are
caught; run now makes a real worker run the entry's task."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.broker.inbox import InboundMessage
from dashboard.models import AuditEvent, BeatProcess, PeriodicEntry
from dashboard.periodic import reports
from dashboard.periodic.selectors import beat_state
from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests import testenv
from tests.beat_reports import beat_report, message
from tests.helpers import ROOT, ingest, publish_raw, start_worker, stop_worker, wait_until

pytestmark = pytest.mark.django_db

# Beats report twice a second here (ten seconds by default).
REPORT_INTERVAL = "0.5"


@dataclass
class BeatProcessHandle:
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_beat(
    queue: str, name: str, *extra: str, env: dict[str, str] | None = None
) -> BeatProcessHandle:
    """A real ``celery beat`` of the team's app (tests/beat_app.py), started."""
    home = testenv.DATA_DIR / f"beat-{name}-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    log = home / "beat.log"
    # A team's beat: none of the dashboard's Django settings.
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.beat_app", "beat", "-l", "INFO",
         "-s", str(home / "schedule"), *extra],
        cwd=ROOT,
        env={**inherited, "BEAT_TEST_QUEUE": queue, "OPS_OUTCOMES_INTERVAL": REPORT_INTERVAL,
             **(env or {})},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    handle = BeatProcessHandle(process, log)

    def started() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"beat exited:\n{handle.log_text()[-3000:]}")
        return "beat: Starting" in handle.log_text()

    wait_until(started, timeout=60)
    return handle


@pytest.fixture
def queue(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A queue of this test's own, emptied after it (beats fill it every second)."""
    name = f"beat-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_server.url)
    client.delete(name, f"beat-test:{name}")
    client.close()


@pytest.fixture
def beats() -> Iterator[list[BeatProcessHandle]]:
    started: list[BeatProcessHandle] = []
    yield started
    for beat in started:
        beat.stop()


def entry_known(name: str, sent: bool = False) -> PeriodicEntry | None:
    ingest()
    entry = PeriodicEntry.objects.filter(name=name).first()
    if entry is None or (sent and entry.last_sent_at is None):
        return None
    return entry


def test_a_beat_reports_itself_its_schedule_and_what_it_sends(
    queue: str, beats: list[BeatProcessHandle], operator_client: Client
) -> None:
    beats.append(beat := start_beat(queue, "one"))
    tick = wait_until(lambda: entry_known("acme-tick", sent=True), timeout=60, interval=0.3)
    process = BeatProcess.objects.get(pid=beat.pid)
    assert process.scheduler == "celery.beat.PersistentScheduler"
    assert not process.database_scheduler
    assert process.alive(timezone.now())
    assert (tick.task, tick.args, tick.queue, tick.schedule) == (
        "tests.beat_app.tick", [1], queue, "every 1 second",
    )  # fmt: skip
    nightly = PeriodicEntry.objects.get(name="acme-nightly")
    assert (nightly.args, nightly.kwargs, nightly.schedule) == (
        [7], {"note": "from beat"}, "cron 0 4 * * *",
    )  # fmt: skip
    assert nightly.next_due is not None and nightly.next_due.astimezone(UTC).hour == 4
    # The sent task names its entry.
    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    message = json.loads(client.lindex(queue, 0) or b"{}")
    assert message["headers"]["x_beat_entry"] == "acme-tick"
    page = operator_client.get(reverse("periodic")).content.decode()
    assert "acme-tick" in page and "every 1 second" in page and f"pid {beat.pid}" in page
    assert "Beat is down" not in page and "beat processes are sending" not in page


def test_two_beats_over_one_schedule_are_caught_and_stopping_one_clears_it(
    queue: str, beats: list[BeatProcessHandle], operator_client: Client
) -> None:
    beats.append(first := start_beat(queue, "first"))
    beats.append(second := start_beat(queue, "second"))

    def caught() -> list[Any]:
        ingest()
        return beat_state().duplicates

    [row] = wait_until(caught, timeout=60, interval=0.3)
    assert row.entry.name == "acme-tick"
    assert [beat.pid for beat in row.senders] == [first.pid, second.pid]  # oldest first
    wait_until(
        lambda: ingest() >= 0 and PeriodicEntry.objects.get(name="acme-tick").duplicate_sends
    )
    banner = f"2 beat processes are sending acme-tick: {row.senders_text()}"
    assert f"pid {first.pid}" in banner and f"pid {second.pid}" in banner
    assert banner in operator_client.get(reverse("periodic")).content.decode()
    assert banner in operator_client.get(reverse("overview")).content.decode()

    second.stop()  # SIGTERM: beat says goodbye as it exits

    def cleared() -> bool:
        ingest()
        return not beat_state().duplicates

    wait_until(cleared, timeout=30, interval=0.3)
    assert BeatProcess.objects.get(pid=second.pid).stopped_at is not None
    assert (
        "beat processes are sending"
        not in operator_client.get(reverse("periodic")).content.decode()
    )


@override_settings(PERIODIC_LATE_AFTER=0.5)
def test_a_killed_beat_makes_its_entries_late_and_beat_down(
    queue: str, beats: list[BeatProcessHandle], operator_client: Client
) -> None:
    beats.append(beat := start_beat(queue, "killed"))
    wait_until(lambda: entry_known("acme-tick", sent=True), timeout=60, interval=0.3)
    assert not beat_state().late and not beat_state().down
    beat.process.kill()  # no goodbye: the dashboard notices by itself
    beat.process.wait()

    def late() -> list[str]:
        ingest()
        return [row.entry.name for row in beat_state().late]

    assert wait_until(late, timeout=30, interval=0.3) == ["acme-tick"]  # not the nightly one
    wait_until(lambda: beat_state().down, timeout=30, interval=0.3)
    page = operator_client.get(reverse("periodic")).content.decode()
    assert "Beat is down" in page and "late" in page
    overview = operator_client.get(reverse("overview")).content.decode()
    assert "Beat is down" in overview and "Periodic task acme-tick is late" in overview


def test_run_now_makes_the_worker_run_the_entry_with_its_args_once(
    queue: str,
    beats: list[BeatProcessHandle],
    operator: User,
    operator_client: Client,
    viewer_client: Client,
    redis_server: EmbeddedRedis,
) -> None:
    beats.append(beat := start_beat(queue, "runnow"))
    wait_until(lambda: entry_known("acme-nightly"), timeout=60, interval=0.3)
    beat.stop()
    url = reverse("periodic_run", args=["acme-nightly"])
    page = operator_client.get(reverse("periodic")).content.decode()
    token = re.search(r'name="token" value="([^"]+)"', page)
    assert token is not None

    assert viewer_client.post(url, {"token": token[1]}).status_code == 403
    refused = operator_client.post(url, {"token": "x"}, headers={"HX-Request": "true"})
    assert refused.status_code == 400 and "token" in refused.content.decode()
    assert (
        operator_client.post(
            reverse("periodic_run", args=["no-such-entry"]), {"token": token[1]}
        ).status_code
        == 404
    )

    sent = operator_client.post(url, {"token": token[1]}, headers={"HX-Request": "true"})
    assert sent.status_code == 200, sent.content.decode()
    assert "Sent tests.beat_app.nightly for acme-nightly now" in sent.content.decode()
    assert "<html" not in sent.content.decode()
    again = operator_client.post(url, {"token": token[1]}, headers={"HX-Request": "true"})
    assert again.status_code == 409 and "Already sent" in again.content.decode()
    [event] = AuditEvent.objects.filter(action="periodic_run_now")
    assert event.username == operator.username and event.target_ids == ["acme-nightly"]

    worker = start_worker(
        redis_server.url, f"runnow-{queue}", "-Q", queue, app="tests.beat_app",
        env={"BEAT_TEST_QUEUE": queue},
    )  # fmt: skip
    try:
        client = redis.Redis.from_url(redis_server.url)
        wait_until(lambda: client.llen(f"beat-test:{queue}") >= 1, timeout=60)
        runs = [json.loads(item) for item in client.lrange(f"beat-test:{queue}", 0, -1)]
        assert runs == [{"n": 7, "note": "from beat", "entry": "acme-nightly"}]
        assert client.llen(queue) == 0  # the double click sent nothing
    finally:
        stop_worker(worker)


def test_the_database_scheduler_of_django_celery_beat_is_recognised(
    queue: str, beats: list[BeatProcessHandle]
) -> None:
    database = testenv.DATA_DIR / f"team-beat-{uuid.uuid4().hex[:6]}.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(TEAM_BEAT_DB=str(database), DJANGO_SETTINGS_MODULE="tests.beat_db_settings")
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        cwd=ROOT, env=env, check=True, timeout=120,
    )  # fmt: skip
    beats.append(
        beat := start_beat(
            queue, "database", "-S", "django_celery_beat.schedulers:DatabaseScheduler",
            env={"TEAM_BEAT_DB": str(database)},
        )
    )  # fmt: skip
    tick = wait_until(lambda: entry_known("acme-tick", sent=True), timeout=60, interval=0.3)
    process = BeatProcess.objects.get(pid=beat.pid)
    assert process.database_scheduler
    assert process.scheduler == "django_celery_beat.schedulers.DatabaseScheduler"
    assert (tick.task, tick.queue) == ("tests.beat_app.tick", queue)


# --- the reports, as the monitor reads them ------------------------------------------


def test_a_second_beat_is_caught_with_one_report_of_each_whichever_comes_first() -> None:
    now = timezone.now().timestamp()
    # The older beat's report of this minute's send arrives after the younger's.
    reports.fold([message(beat_report("old", 7, now - 3600, [now - 60]))])
    reports.fold([message(beat_report("young", 1, now - 30, [now - 1]))])
    assert not beat_state().duplicates  # the old one has not sent since the young one started
    reports.fold([message(beat_report("old", 8, now - 3600, [now]))])
    [row] = beat_state().duplicates
    assert [beat.process for beat in row.senders] == ["old", "young"]
    assert PeriodicEntry.objects.get(name="acme-tick").duplicate_sends == 1
    # Applied twice, counted once.
    reports.fold([message(beat_report("old", 8, now - 3600, [now]))])
    assert PeriodicEntry.objects.get(name="acme-tick").duplicate_sends == 1


def test_a_restarted_beat_is_no_duplicate() -> None:
    now = timezone.now().timestamp()
    reports.fold([message(beat_report("before", 9, now - 3600, [now - 40]))])
    reports.fold([message(beat_report("after", 1, now - 20, [now]))])
    assert not beat_state().duplicates
    assert PeriodicEntry.objects.get(name="acme-tick").duplicate_sends == 0


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mutation=st.dictionaries(
        st.sampled_from(["process", "seq", "pid", "interval", "entries", "sends", "started_at",
                         "hostname", "stopping", "v", "type"]),
        JSONISH, max_size=3,
    ),
    raw=st.binary(max_size=64),
)  # fmt: skip
def test_any_beat_report_is_applied_or_kept_never_raised(
    mutation: dict[str, Any], raw: bytes
) -> None:
    now = datetime.now(UTC).timestamp()
    body = {**beat_report("fuzz", 1, now - 10, [now]), **mutation}
    messages = [
        message(body),
        InboundMessage(raw, "application/json", "utf-8", raw, {"x_ops_report": "beat"}),
    ]
    folded = reports.fold(messages)
    assert folded.applied + folded.duplicates + len(folded.unreadable) == len(messages)
    assert all(why for _, why in folded.unreadable)


def test_an_unreadable_beat_report_on_the_broker_is_kept_as_a_dead_letter(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    now = timezone.now().timestamp()
    good = beat_report("good", 1, now - 10, [now])
    publish_raw(redis_server.url, json.dumps({**good, "process": "bad", "seq": "one"}),
                content_type="application/json", content_encoding="utf-8",
                queue="ops.outcomes", headers={"x_ops_report": "beat"})  # fmt: skip
    publish_raw(redis_server.url, good, serializer="json", queue="ops.outcomes",
                headers={"x_ops_report": "beat"})  # fmt: skip
    ingest()
    (kept,) = DeadLetter.objects.all()
    assert "unreadable beat report" in kept.quarantine_reason and "one" in kept.quarantine_reason
    assert BeatProcess.objects.filter(process="good").exists()
    assert PeriodicEntry.objects.get(name="acme-tick").last_sent_at is not None


def test_beats_and_entries_not_heard_of_for_a_day_are_forgotten() -> None:
    now = timezone.now()
    reports.fold([message(beat_report("old", 1, now.timestamp() - 10, [now.timestamp()]))])
    later = now + timedelta(seconds=86400 + 60)
    assert reports.prune(later) == 3  # the beat, its sends, its entry
    assert not BeatProcess.objects.exists() and not PeriodicEntry.objects.exists()
