"""Task outcomes: counted by the hook in real workers of every pool, reported as
deltas, added up by the monitor once each, and what became of each requeue."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db.models import Sum
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.broker.inbox import InboundMessage
from dashboard.models import (
    BUCKET_COLUMNS,
    OUTCOME_BUCKETS,
    OutcomeReporter,
    TaskFailureTotal,
    TaskMinute,
    TaskTotal,
)
from dashboard.tasks import outcomes
from dashboard.tasks.events import EventCounter
from deadletters import hook
from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    WorkerProcess,
    empty_queues,
    ingest,
    start_worker,
    stop_worker,
    wait_until,
)

pytestmark = pytest.mark.django_db

FAST = {"OPS_OUTCOMES_INTERVAL": "0.3"}


def total(task: str, column: str, queue: str | None = None) -> int:
    """A counter of the task summed over workers (and queues, unless one is named);
    ``runtime`` and ``wait`` are the observations of that histogram."""
    if column in BUCKET_COLUMNS:
        return sum(total(task, bucket, queue) for bucket in BUCKET_COLUMNS[column])
    rows = TaskTotal.objects.filter(task=task)
    if queue is not None:
        rows = rows.filter(queue=queue)
    return int(rows.aggregate(n=Sum(column))["n"] or 0)


def counted(expected: dict[tuple[str, str], int], queue: str, timeout: float = 60) -> None:
    """Ingest until every (task, column) on ``queue`` adds up to what is expected."""

    def done() -> bool:
        ingest()
        return all(total(task, column, queue) >= n for (task, column), n in expected.items())

    try:
        wait_until(done, timeout=timeout, interval=0.3)
    finally:
        assert {key: total(*key, queue) for key in expected} == expected


@pytest.fixture
def queue() -> str:
    """A queue of this test's own: the session's worker, and reports of earlier
    tests' tasks still on their way, are elsewhere."""
    return f"outcomes-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pool_worker(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, queue: str
) -> Iterator[str]:
    pool = request.param
    worker = start_worker(redis_server.url, f"outcomes-{pool}", "-Q", queue, pool=pool, env=FAST)
    yield pool
    stop_worker(worker)


def test_the_hook_and_the_dashboard_agree_on_the_report() -> None:
    assert hook.BUCKETS == OUTCOME_BUCKETS
    assert hook.OUTCOMES_VERSION == outcomes.REPORT_VERSION
    assert tuple(e for e in hook.OUTCOME_EVENTS) == hook.OUTCOME_EVENTS


@pytest.mark.parametrize("pool_worker", ["prefork", "threads", "solo", "gevent"], indirect=True)
def test_every_pool_counts_successes_failures_retries_and_times(
    broker: redis.Redis, pool_worker: str, queue: str
) -> None:
    from demo import tasks

    for n in range(5):
        tasks.add.apply_async((n, 1), queue=queue)
    tasks.resize_image.apply_async((7, [64]), queue=queue)
    tasks.send_webhook.apply_async(("https://example.invalid/hook", {}), queue=queue)
    counted(
        {
            ("demo.tasks.add", "succeeded"): 5,
            ("demo.tasks.add", "started"): 5,
            ("demo.tasks.add", "received"): 5,
            ("demo.tasks.resize_image", "failed"): 1,
            ("demo.tasks.send_webhook", "retried"): 2,
            ("demo.tasks.send_webhook", "failed"): 1,
            # Every run is timed, and every start measured against its publish stamp.
            ("demo.tasks.add", "runtime"): 5,
            ("demo.tasks.add", "wait"): 5,
            ("demo.tasks.send_webhook", "runtime"): 3,
        },
        queue,
    )
    (failure,) = TaskFailureTotal.objects.filter(task="demo.tasks.resize_image", queue=queue)
    assert (failure.exception, failure.count) == ("ValueError", 1)
    host = TaskTotal.objects.filter(task="demo.tasks.add", queue=queue).exclude(started=0).first()
    assert host is not None and host.hostname.startswith(f"outcomes-{pool_worker}@")
    # The same counts by minute, for the pages.
    minutes = TaskMinute.objects.filter(task="demo.tasks.add", queue=queue).aggregate(
        n=Sum("succeeded")
    )
    assert minutes["n"] == 5


def test_a_restarted_worker_resets_nothing(
    redis_server: EmbeddedRedis, broker: redis.Redis, queue: str
) -> None:
    from demo import tasks

    for runs, expected in ((3, 3), (2, 5)):
        worker = start_worker(redis_server.url, "restarted", "-Q", queue, env=FAST)
        try:
            for n in range(runs):
                tasks.add.apply_async((n, 1), queue=queue)
            counted({("demo.tasks.add", "succeeded"): expected}, queue)
        finally:
            stop_worker(worker)
    ingest()
    assert total("demo.tasks.add", "succeeded", queue) == 5
    assert OutcomeReporter.objects.count() >= 2, "each process life reports as itself"


@pytest.fixture
def worker_with_outcomes(redis_server: EmbeddedRedis, queue: str) -> Iterator[WorkerProcess]:
    worker = start_worker(redis_server.url, "requeues", "-Q", queue, env=FAST)
    yield worker
    stop_worker(worker)


@pytest.mark.django_db(transaction=True)
def test_what_became_of_a_requeue_is_on_its_dead_letter(
    broker: redis.Redis, worker_with_outcomes: WorkerProcess, operator_client: Client, queue: str
) -> None:
    from demo import tasks

    tasks.resize_image.apply_async((11, [64]), queue=queue)
    wait_until(lambda: ingest() >= 0 and DeadLetter.objects.exists(), timeout=60)
    dead_letter = DeadLetter.objects.get()
    response = operator_client.post(f"/deadletters/{dead_letter.pk}/requeue/")
    assert response.status_code == 302
    dead_letter.refresh_from_db()

    def outcome() -> str:
        ingest()
        dead_letter.refresh_from_db()
        return dead_letter.requeue_outcome

    wait_until(lambda: outcome() == "succeeded", timeout=60)
    assert dead_letter.requeue_outcome_at is not None
    assert dead_letter.requeue_runtime is not None and dead_letter.requeue_runtime >= 0


# --- the report, untrusted ----------------------------------------------------------


def report_message(**overrides: Any) -> InboundMessage:
    now_minute = int(__import__("time").time() // 60)
    report: dict[str, Any] = {
        "type": "outcomes",
        "v": 1,
        "process": "123-abcdef",
        "seq": 1,
        "hostname": "w1@host",
        "pid": 123,
        "sent_at": now_minute * 60.0,
        "buckets": list(OUTCOME_BUCKETS),
        "counts": [[now_minute, "t.ok", "default", "succeeded", "", 4]],
        "histograms": [
            [now_minute, "t.ok", "default", "runtime", [4] + [0] * len(OUTCOME_BUCKETS), 0.01]
        ],
        "requeues": [],
        "dropped": 0,
    }
    report.update(overrides)
    body = json.dumps(report).encode()
    return InboundMessage(
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        raw=body,
        headers={"x_ops_report": "outcomes"},
    )


def test_a_report_delivered_twice_is_added_once() -> None:
    message = report_message()
    assert outcomes.fold([message]).applied == 1
    again = outcomes.fold([message, report_message(seq=2)])
    assert (again.applied, again.duplicates) == (1, 1)
    assert total("t.ok", "succeeded") == 8
    assert total("t.ok", "runtime_0") == 8


def test_a_report_that_cannot_be_read_is_kept_as_a_dead_letter_and_the_rest_added(
    broker: redis.Redis,
) -> None:
    from dashboard.monitor.jobs import store_outcomes

    result = store_outcomes(
        [report_message(buckets=[1, 2, 3]), report_message(process="456-x", seq=1)]
    )
    assert result.quarantined == 1
    (kept,) = DeadLetter.objects.all()
    assert "unreadable outcome report" in kept.quarantine_reason
    assert "buckets" in kept.quarantine_reason
    assert total("t.ok", "succeeded") == 4


anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)
FIELDS = ("v", "process", "seq", "hostname", "pid", "buckets", "counts", "histograms", "requeues")


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.dictionaries(st.sampled_from(FIELDS), anything, max_size=4), st.booleans())
def test_any_report_is_added_up_or_kept_never_raises(
    broker: redis.Redis, replaced: dict[str, Any], as_bytes: bool
) -> None:
    from django.db import transaction

    from dashboard.monitor.jobs import store_outcomes

    with transaction.atomic():
        message = report_message(**replaced)
        if as_bytes:
            message = InboundMessage(
                body=message.body[:40], content_type="", content_encoding="", raw=message.body[:40]
            )
        result = store_outcomes([message])
        kept = DeadLetter.objects.count()
        assert kept in (0, 1)
        assert result.quarantined == kept
        if not kept:
            assert OutcomeReporter.objects.exists()
        transaction.set_rollback(True)


# --- workers without the hook: Celery's events ----------------------------------------


@pytest.fixture
def event_counter() -> Iterator[EventCounter]:
    counter = EventCounter(grace=3.0)
    counter()  # listening before the workers start
    wait_until(counter.stream.listening.is_set, timeout=30)
    yield counter
    counter.close()


def test_a_worker_without_the_hook_is_counted_from_its_events_once(
    broker: redis.Redis, redis_server: EmbeddedRedis, event_counter: EventCounter, queue: str
) -> None:
    """A plain worker with -E is counted from its events; a worker with the hook and
    -E only from its reports."""
    from demo import tasks
    from tests import plain_worker_app

    plain = start_worker(
        redis_server.url, "evented", "-E", "-Q", "plain", app="tests.plain_worker_app"
    )
    hooked = start_worker(redis_server.url, "hooked", "-E", "-Q", queue, env=FAST)
    try:
        for _ in range(3):
            plain_worker_app.ping.delay()
        plain_worker_app.boom.delay()
        for n in range(4):
            tasks.add.apply_async((n, n), queue=queue)

        def done() -> bool:
            event_counter()
            ingest()
            return (
                total("tests.plain_worker_app.ping", "succeeded") >= 3
                and total("tests.plain_worker_app.boom", "failed") >= 1
                and total("demo.tasks.add", "succeeded", queue) >= 4
            )

        wait_until(done, timeout=60, interval=0.1)
        # The hooked worker's last events wait out their grace: counted they would be now.
        wait_until(lambda: event_counter() >= 0 and not event_counter.waiting, timeout=30)
        ingest()
    finally:
        stop_worker(plain)
        stop_worker(hooked)
    assert total("tests.plain_worker_app.ping", "succeeded") == 3
    assert total("tests.plain_worker_app.ping", "runtime") == 3
    (failure,) = TaskFailureTotal.objects.filter(task="tests.plain_worker_app.boom")
    assert failure.exception == "RuntimeError"
    assert failure.hostname.startswith("evented@")
    assert total("demo.tasks.add", "succeeded", queue) == 4, "counted once, from the reports"


def test_a_producer_counts_what_it_sends(broker: redis.Redis) -> None:
    """This test process imports the demo app, and with it the hook: a producer."""
    from demo import tasks

    hook.flush_outcomes()  # what earlier tests sent, out of the way
    empty_queues(broker)
    for n in range(3):
        tasks.send_welcome_email.delay(n)
    hook.flush_outcomes()
    ingest()
    (row,) = TaskTotal.objects.filter(task="demo.tasks.send_welcome_email", sent__gt=0).values_list(
        "sent", "queue", "hostname"
    )
    assert row[:2] == (3, "emails")
    assert row[2].startswith("producer@")
