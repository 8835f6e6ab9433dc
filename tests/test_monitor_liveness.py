"""The monitor keeps going whatever it reads, says what is wrong when it cannot,
and answers its container's liveness check only while its loop runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.test import Client
from django.utils import timezone

from dashboard.models import CollectorStatus, QueueSnapshot
from dashboard.monitor.loop import Monitor
from dashboard.monitor.status import record_failure
from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    ROOT,
    WorkerProcess,
    dead_letter_queue_length,
    make_envelope,
    publish_envelope,
    start_monitor,
    subprocess_env,
    wait_until,
)

PAGES = ("/", "/queues/", "/deadletters/", "/audit/")


@pytest.mark.django_db(transaction=True)
def test_a_poison_failure_then_a_thousand_ordinary_ones_end_as_1001_rows(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks

    tasks.import_upload.delay("/srv/incoming")
    # The poison envelope waits first in line before the others are even sent.
    wait_until(lambda: dead_letter_queue_length(broker) == 1, timeout=60)
    for n in range(1_000):
        tasks.resize_image.delay(n, [64])
    monitor, log = start_monitor("--batch-size", "100")
    try:
        wait_until(lambda: DeadLetter.objects.count() >= 1_001, timeout=240, interval=0.5)
    finally:
        monitor.terminate()
        monitor.wait(20)
    assert DeadLetter.objects.count() == 1_001
    poisoned = DeadLetter.objects.get(task_name="demo.tasks.import_upload")
    assert poisoned.kind == DeadLetter.Kind.EXCEPTION
    assert "upload-\ufffd.csv" in poisoned.exception_message
    assert "lone surrogates" in poisoned.ingest_notes
    assert "broker unreachable" not in log.read_text(errors="replace")


@pytest.fixture
def refusing_every_row() -> Iterator[None]:
    """The database refuses every new dead letter, quarantined ones too, as a full
    disk or a broken constraint would, while the connection stays up."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_all() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'no new rows today'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_all BEFORE INSERT ON deadletters_deadletter "
                "FOR EACH ROW EXECUTE FUNCTION refuse_all()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_all BEFORE INSERT ON deadletters_deadletter "
                "BEGIN SELECT RAISE(ABORT, 'no new rows today'); END"
            )
    try:
        yield
    finally:
        drop_refusal()


def drop_refusal() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("DROP TRIGGER IF EXISTS refuse_all ON deadletters_deadletter")
            cursor.execute("DROP FUNCTION IF EXISTS refuse_all()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS refuse_all")


@pytest.mark.django_db(transaction=True)
def test_an_error_that_is_not_the_broker_is_named_shown_and_outlived(
    broker: redis.Redis,
    redis_server: EmbeddedRedis,
    operator_client: Client,
    refusing_every_row: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    envelope = make_envelope()
    publish_envelope(redis_server.url, envelope)
    monitor = Monitor()
    thread = threading.Thread(target=monitor.run, kwargs={"until_empty": True}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: monitor.totals.errors >= 1, timeout=30)
        status = CollectorStatus.objects.get(name="ingest")
        assert status.failing_since is not None
        assert status.last_error.startswith("ingestion failed")
        assert "no new rows today" in status.last_error
        for url in PAGES:
            page = operator_client.get(url).content.decode()
            assert "Dead-letter ingestion failing since" in page, url
        assert "broker unreachable" not in caplog.text
        drop_refusal()
        # The envelope waited in the broker, and is stored once the database takes it.
        wait_until(lambda: DeadLetter.objects.filter(task_id=envelope["id"]).exists())
    finally:
        monitor.stop.set()
        thread.join(20)
    assert not thread.is_alive()


@pytest.mark.django_db
def test_envelopes_waiting_too_long_are_a_banner_on_every_page(
    operator_client: Client, settings: object
) -> None:
    settings.DEADLETTERS_INGEST_STUCK_AFTER = 120  # type: ignore[attr-defined]
    QueueSnapshot.objects.create(
        name="deadletters", sampled_at=timezone.now(), depth=37, oldest_age=600.0
    )
    for url in PAGES:
        page = operator_client.get(url).content.decode()
        assert "Dead letters are not being ingested: 37 waiting" in page, url
    QueueSnapshot.objects.filter(name="deadletters").update(oldest_age=30.0)
    assert "not being ingested" not in operator_client.get("/").content.decode()


@pytest.mark.django_db
def test_a_failing_ingest_is_a_banner_with_its_reason(operator_client: Client) -> None:
    record_failure("ingest", "ingestion failed: DataError('value too long')")
    page = operator_client.get("/deadletters/").content.decode()
    assert "Dead-letter ingestion failing since" in page
    assert "value too long" in page


# --- manage.py monitor --check ------------------------------------------------------


def check(heartbeat: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "monitor", "--check"],
        cwd=ROOT,
        env=subprocess_env(MONITOR_HEARTBEAT_FILE=str(heartbeat), MONITOR_HEARTBEAT_MAX_AGE="3"),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_the_check_passes_while_the_loop_runs_and_fails_when_it_is_stuck(
    broker: redis.Redis, tmp_path: Path
) -> None:
    heartbeat = tmp_path / "monitor.heartbeat"
    never_started = check(heartbeat)
    assert never_started.returncode != 0
    assert "no heartbeat file" in never_started.stderr

    monitor, _ = start_monitor(MONITOR_HEARTBEAT_FILE=str(heartbeat))
    try:
        wait_until(lambda: check(heartbeat).returncode == 0, timeout=60, interval=0.5)
        monitor.send_signal(signal.SIGSTOP)  # a loop that no longer turns
        try:
            stuck = wait_until(lambda: (r := check(heartbeat)).returncode != 0 and r, timeout=30)
            assert "stuck or not running" in stuck.stderr
        finally:
            monitor.send_signal(signal.SIGCONT)
        wait_until(lambda: check(heartbeat).returncode == 0, timeout=30, interval=0.5)
    finally:
        monitor.terminate()
        monitor.wait(20)


@pytest.mark.django_db
def test_the_ingest_lag_is_known_from_the_envelopes_stamp(
    broker: redis.Redis, worker: WorkerProcess, client: Client, settings: object
) -> None:
    """The hook stamps its envelopes as it stamps tasks, so the age of the oldest one
    waiting for the monitor is measured, and exposed for the lag alert."""
    from dashboard.monitor.jobs import broker_sampler
    from demo import tasks

    tasks.resize_image.delay(1, [64])
    wait_until(lambda: dead_letter_queue_length(broker) == 1, timeout=60)
    broker_sampler()()
    snapshot = QueueSnapshot.objects.get(name="deadletters")
    assert snapshot.depth == 1
    assert snapshot.oldest_age is not None
    settings.METRICS_PUBLIC = True  # type: ignore[attr-defined]
    text = client.get("/metrics", secure=True).content.decode()
    (line,) = [x for x in text.splitlines() if x.startswith("celery_ops_ingest_lag_seconds ")]
    assert float(line.split()[1]) == pytest.approx(snapshot.oldest_age)
