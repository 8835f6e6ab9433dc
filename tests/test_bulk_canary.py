"""Requeue you can trust: a canary first, a stop on the same error, pause, resume,
cancel, a second operator, and a report of what became of every row."""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from kombu import Connection

from dashboard.models import AuditEvent
from deadletters import bulk, bulk_runner, selectors
from deadletters.models import BulkAction, DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    WorkerProcess,
    ingest,
    make_dead_letters,
    make_user,
    start_monitor,
    start_worker,
    stop_worker,
    wait_until,
)

TASK = "demo.tasks.sync_inventory"
FIXED = "demo:inventory-fixed"


def broken_syncs(count: int, queue: str = "default") -> list[DeadLetter]:
    """Dead letters as the real task leaves them while the service is down."""
    return [
        make_dead_letters(
            1,
            task=TASK,
            args=[f"SKU-{n}"],
            kwargs={},
            queue=queue,
            routing_key=queue,
            exception_type="ConnectionError",
            exception_message=f"inventory service unavailable for SKU-{n}",
        )[0]
        for n in range(count)
    ]


def unique_queue() -> str:
    return f"inventory-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def inventory_queue() -> str:
    """The inventory tasks' own queue: the session's worker consumes the demo's."""
    return unique_queue()


@pytest.fixture
def inventory_worker(
    redis_server: EmbeddedRedis, broker: redis.Redis, inventory_queue: str
) -> Iterator[WorkerProcess]:
    broker.delete(FIXED)
    worker = start_worker(
        redis_server.url, "inventory", "-Q", inventory_queue,
        env={"OPS_OUTCOMES_INTERVAL": "0.3"},
    )  # fmt: skip
    yield worker
    stop_worker(worker)
    broker.delete(FIXED)


def carry_on(action: BulkAction, until: Any, timeout: float = 90) -> BulkAction:
    """Run the action and ingest what the worker reports, as the monitor does."""

    def step() -> bool:
        bulk_runner.run(action, seconds=2)
        ingest()
        action.refresh_from_db()
        return bool(until(action))

    wait_until(step, timeout=timeout, interval=0.2)
    return action


def requeue_all(user: User, **options: Any) -> BulkAction:
    return bulk.create(
        user=user, action="requeue", reason="the fix shipped",
        filter_query=f"task={TASK}&state=open", **options,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_fix_that_did_not_work_stops_at_the_canary_and_one_that_did_goes_through(
    operator: User,
    inventory_worker: WorkerProcess,
    inventory_queue: str,
    broker: redis.Redis,
    settings: Any,
) -> None:
    settings.DEADLETTERS_CANARY_ABOVE, settings.DEADLETTERS_CANARY_SIZE = 50, 5
    rows = broken_syncs(200, queue=inventory_queue)

    action = requeue_all(operator)
    assert action.total == 200
    action = carry_on(action, lambda a: a.is_finished)
    assert action.state == BulkAction.State.STOPPED
    # It stops at the first that fails again the same way: as many as were back by then.
    assert re.search(
        r"Stopped by the canary: [1-5] of 5 failed again with the same error", action.verdict
    ), action.verdict
    canary = set(action.canary_ids or [])
    assert len(canary) == 5
    spread = sorted(canary)
    assert spread[0] == rows[0].pk and spread[-1] == rows[-1].pk, "spread across the set"
    old = DeadLetter.objects.filter(pk__in=[r.pk for r in rows])
    assert old.filter(state=DeadLetter.State.OPEN).count() == 195
    assert set(old.exclude(state=DeadLetter.State.OPEN).values_list("pk", flat=True)) == canary
    # All five come back failed as dead letters, and their outcomes apart.
    again = DeadLetter.objects.filter(requeued_from_id__in=canary)
    wait_until(
        lambda: (
            ingest() >= 0 and again.count() == 5 and selectors.requeue_outcomes(action).failed == 5
        )
    )
    assert [g["n"] for g in selectors.failed_again_groups(action)] == [5]
    finished = AuditEvent.objects.get(action="bulk_requeue_finished")
    assert finished.details["failed"] == 0, "every canary message was published"
    assert "Stopped by the canary" in finished.details["verdict"]
    # The canary's outcomes as reported by the time it stopped: each of the 5 is
    # in one of them (its report may still have been on its way).
    assert sum(finished.details["requeue_outcomes"].values()) == 5

    broker.set(FIXED, "1")  # the real fix
    action = requeue_all(operator)
    assert action.total == 200, "195 untouched and the canary's 5 new failures"
    action = carry_on(
        action, lambda a: a.is_finished and selectors.requeue_outcomes(a).pending == 0
    )
    assert action.state == BulkAction.State.DONE
    assert "The canary passed: 5 of 5 succeeded" in action.verdict
    outcomes = selectors.requeue_outcomes(action)
    assert (outcomes.requeued, outcomes.succeeded, outcomes.failed) == (200, 200, 0)


@pytest.mark.django_db
def test_skipping_the_canary_is_a_choice_in_the_audit(operator: User, settings: Any) -> None:
    settings.DEADLETTERS_CANARY_ABOVE = 2
    broken_syncs(5)
    action = requeue_all(operator, skip_canary=True)
    action = bulk_runner.run(action)
    assert action.state == BulkAction.State.DONE
    assert action.canary_ids is None
    assert AuditEvent.objects.get(action="bulk_requeue").details["skip_canary"] is True


@pytest.mark.django_db
def test_pause_resume_and_cancel_mid_run(operator: User, broker: redis.Redis) -> None:
    broken_syncs(50)
    action = requeue_all(operator, skip_canary=True, rate=10.0)
    action = bulk_runner.run(action, seconds=0.5)
    assert action.state == BulkAction.State.RUNNING
    first = action.done
    assert 0 < first < 50, "the rate holds it to about ten a second"

    bulk.pause(action, user=operator)
    bulk_runner.run_pending()
    action.refresh_from_db()
    assert (action.state, action.done) == (BulkAction.State.PAUSED, first)

    bulk.resume(action, user=operator)
    action = bulk_runner.run(BulkAction.objects.get(pk=action.pk), seconds=0.5)
    assert action.state == BulkAction.State.RUNNING
    assert action.done > first

    action = bulk.cancel(action, user=operator)
    assert action.state == BulkAction.State.CANCELLED
    bulk_runner.run_pending()
    action.refresh_from_db()
    handled = action.done
    assert handled < 50
    assert DeadLetter.objects.filter(state=DeadLetter.State.OPEN).count() == 50 - handled
    assert [e.action for e in AuditEvent.objects.order_by("id")][-3:] == [
        "bulk_paused", "bulk_resumed", "bulk_cancelled",
    ]  # fmt: skip
    with pytest.raises(bulk.NotAllowedNow, match="cancelled"):
        bulk.resume(action, user=operator)


@pytest.mark.django_db
def test_a_very_large_action_waits_for_a_second_operator(operator: User, settings: Any) -> None:
    settings.DEADLETTERS_APPROVAL_ABOVE = 10
    broken_syncs(12)
    action = requeue_all(operator, skip_canary=True)
    assert action.state == BulkAction.State.APPROVAL
    bulk_runner.run_pending()
    action.refresh_from_db()
    assert action.state == BulkAction.State.APPROVAL, "nothing runs before the approval"
    with pytest.raises(bulk.SamePerson):
        bulk.approve(action, user=operator)
    second = make_user("sam", group="Operator")
    action = bulk.approve(action, user=second)
    assert (action.state, action.approved_by) == (BulkAction.State.PENDING, second)
    bulk_runner.run_pending()
    action.refresh_from_db()
    assert action.state == BulkAction.State.DONE
    asked, approved = AuditEvent.objects.filter(
        action__in=["bulk_requeue", "bulk_approved"]
    ).order_by("id")
    assert (asked.username, approved.username) == ("olivia", "sam")


@pytest.mark.django_db(transaction=True)
def test_a_monitor_killed_during_the_canary_neither_republishes_nor_loses_its_verdict(
    operator: User, inventory_worker: WorkerProcess, inventory_queue: str, broker: redis.Redis
) -> None:
    broken_syncs(60, queue=inventory_queue)
    action = requeue_all(operator)
    env = {"DEADLETTERS_CANARY_ABOVE": "50", "DEADLETTERS_CANARY_SIZE": "5"}
    monitor, _ = start_monitor(**env)
    try:
        # The canary is out (claimed, published, confirmed): the monitor waits for
        # what becomes of it when it is killed.
        wait_until(
            lambda: (
                (row := BulkAction.objects.get(pk=action.pk)).canary_ids is not None
                and row.pending_ids is None
            ),
            timeout=60,
        )
    finally:
        monitor.send_signal(signal.SIGKILL)
        monitor.wait()
    action.refresh_from_db()
    canary = list(action.canary_ids or [])
    published = set(
        DeadLetter.objects.filter(pk__in=canary).values_list("requeue_task_id", flat=True)
    )
    monitor, _ = start_monitor(**env)
    try:
        wait_until(lambda: BulkAction.objects.get(pk=action.pk).is_finished, timeout=90)
    finally:
        monitor.terminate()
        monitor.wait(20)
    action.refresh_from_db()
    assert action.state == BulkAction.State.STOPPED
    assert action.canary_ids == canary, "the same canary, not a second one"
    assert (
        set(DeadLetter.objects.filter(pk__in=canary).values_list("requeue_task_id", flat=True))
        == published
    )
    assert DeadLetter.objects.filter(requeued_from_id__in=canary).count() <= len(canary)
    assert DeadLetter.objects.filter(state=DeadLetter.State.OPEN, requeued_from=None).count() == (
        60 - len(canary)
    )


@pytest.mark.rabbitmq
@pytest.mark.django_db(transaction=True)
def test_the_canary_on_rabbitmq_stops_then_goes_through(
    operator: User, rabbitmq_url: str, redis_server: EmbeddedRedis, broker: redis.Redis
) -> None:
    """The monitor and the worker on RabbitMQ: the canary's messages, the dead
    letters and the outcome reports all travel through it."""
    suffix = uuid.uuid4().hex[:8]
    queue, letters, outcomes = unique_queue(), f"dl-{suffix}", f"outcomes-{suffix}"
    routes = {"DEADLETTERS_QUEUE": letters, "OPS_OUTCOMES_QUEUE": outcomes}
    broker.delete(FIXED)
    rows = broken_syncs(60, queue=queue)
    worker = start_worker(
        rabbitmq_url, "inventory-rmq", "-Q", queue, backend=redis_server.url,
        env={"OPS_OUTCOMES_INTERVAL": "0.3", **routes},
    )  # fmt: skip
    env = {
        "CELERY_BROKER_URL": rabbitmq_url, "DEADLETTERS_CANARY_ABOVE": "50",
        "DEADLETTERS_CANARY_SIZE": "5", **routes,
    }  # fmt: skip
    monitor, log = start_monitor(**env)
    try:
        stopped = requeue_all(operator)
        wait_until(lambda: BulkAction.objects.get(pk=stopped.pk).is_finished, timeout=120)
        stopped.refresh_from_db()
        assert stopped.state == BulkAction.State.STOPPED, stopped.verdict
        assert DeadLetter.objects.filter(pk__in=[r.pk for r in rows], state="open").count() == 55

        broker.set(FIXED, "1")
        fixed = requeue_all(operator)
        wait_until(
            lambda: (
                BulkAction.objects.get(pk=fixed.pk).is_finished
                and selectors.requeue_outcomes(fixed).pending == 0
            ),
            timeout=120,
        )
        assert selectors.requeue_outcomes(fixed).succeeded == 60
    finally:
        monitor.terminate()
        monitor.wait(20)
        stop_worker(worker)
        broker.delete(FIXED)
        with Connection(rabbitmq_url) as conn:
            channel: Any = conn.channel()
            for name in (queue, letters, outcomes):
                channel.queue_delete(name)
                channel.exchange_delete(name)
    assert "broker unreachable" not in log.read_text(errors="replace")
