"""Failures in a real prefork worker arrive as dead letters, once each, whole."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from deadletters.models import DeadLetter
from tests.helpers import WorkerProcess, ingest, ingest_until, publish_raw

pytestmark = pytest.mark.django_db


def only(task_name: str) -> DeadLetter:
    (row,) = DeadLetter.objects.filter(task_name=task_name)
    return row


def settle_and_ingest() -> None:
    """Give a duplicate the chance to arrive before we say 'exactly once'."""
    time.sleep(1.5)
    ingest()


def test_an_exception_arrives_once_with_its_real_arguments(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks

    big = "x" * 5000  # Flower's events would cut this to 1,024 characters
    result = tasks.resize_image.apply_async(
        (7, [64, 128]), {}, queue="default", headers={"tenant": big}
    )
    ingest_until(1)
    settle_and_ingest()
    row = only("demo.tasks.resize_image")
    assert row.task_id == result.id
    assert row.kind == "exception"
    assert row.args == [7, [64, 128]]
    assert row.kwargs == {}
    assert row.queue == "default"
    assert row.exception_type == "ValueError"
    assert row.exception_message == "image 7 has an unsupported colour profile"
    assert "resize_image" in row.traceback
    assert row.headers["tenant"] == big
    assert row.worker.startswith("tests@")
    assert row.state == DeadLetter.State.OPEN


def test_exhausted_retries_arrive_once_with_the_original_exception(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks

    tasks.send_webhook.delay("https://hooks.example.com/1", payload={"order": 1})
    ingest_until(1)
    settle_and_ingest()
    row = only("demo.tasks.send_webhook")
    assert DeadLetter.objects.count() == 1, "a non-final retry arrived as a dead letter"
    assert row.exception_type == "ConnectionError"
    assert row.retries == 2
    assert row.queue == "emails"
    assert row.args == ["https://hooks.example.com/1"]
    assert row.kwargs == {"payload": {"order": 1}}


def test_a_hard_time_limit_arrives_once(broker: redis.Redis, worker: WorkerProcess) -> None:
    """Celery 5.7 fires task_failure twice on a hard time limit."""
    from demo import tasks

    result = tasks.build_report.delay(11, seconds=4)
    ingest_until(1)
    settle_and_ingest()
    row = only("demo.tasks.build_report")
    assert row.task_id == result.id
    assert row.kind == "time_limit"
    assert row.queue == "reports"
    assert row.args == [11]
    assert row.kwargs == {"seconds": 4}


def test_a_lost_pool_child_arrives_with_its_arguments(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks

    result = tasks.crash_worker.delay(13)
    ingest_until(1)
    settle_and_ingest()
    row = only("demo.tasks.crash_worker")
    assert row.task_id == result.id
    assert row.kind == "worker_lost"
    assert row.args == [13]
    assert row.queue == "default"


def test_an_unregistered_task_arrives_as_unknown_task(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo.celery_app import app

    result = app.send_task(
        "demo.tasks.removed_in_last_deploy", args=[5], kwargs={"a": 1}, queue="default"
    )
    ingest_until(1)
    settle_and_ingest()
    row = only("demo.tasks.removed_in_last_deploy")
    assert row.task_id == result.id
    assert row.kind == "unknown_task"
    assert row.args == [5]
    assert row.kwargs == {"a": 1}
    assert row.exception_type == "celery.exceptions.NotRegistered"


def test_a_pickled_message_is_rejected_kept_and_never_loaded(
    broker: redis.Redis, worker: WorkerProcess, redis_server: object, tmp_path: Path
) -> None:
    import pickle

    witness = tmp_path / "pickle-was-loaded"

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (f"open({str(witness)!r}, 'w').close()",))

    # What a producer app configured with the pickle serializer sends to a
    # worker that accepts only JSON.
    payload = pickle.dumps(Boom())
    publish_raw(
        redis_server.url,  # type: ignore[attr-defined]
        payload,
        content_type="application/x-python-serialize",
        content_encoding="binary",
        queue="default",
        headers={"id": "poison-1", "task": "demo.tasks.add", "lang": "py"},
    )
    (row,) = ingest_until(1)
    assert row.kind == "rejected"
    assert row.task_id == "poison-1"
    assert bytes(row.raw_body or b"") == payload
    assert row.content_type == "application/x-python-serialize"
    assert not row.is_requeueable
    assert not witness.exists(), "somebody unpickled the message"


def test_a_task_that_catches_its_final_error_can_send_it_explicitly(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks

    result = tasks.charge_invoice.delay(77, amount_cents=1999)
    ingest_until(1)
    settle_and_ingest()
    row = only("demo.tasks.charge_invoice")
    assert row.task_id == result.id
    assert row.exception_type == "TimeoutError"
    assert row.args == [77]
    assert row.kwargs == {"amount_cents": 1999}
    assert row.retries == 1


def test_a_task_that_succeeds_sends_nothing(broker: redis.Redis, worker: WorkerProcess) -> None:
    from demo import tasks

    assert tasks.add.delay(2, 3).get(timeout=20) == 5
    settle_and_ingest()
    assert DeadLetter.objects.count() == 0
