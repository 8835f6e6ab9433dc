"""The workers round against real workers: what it stores, dead workers, silence, rates."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from datetime import timedelta

import celery
import pytest
import redis

from dashboard.broker import control
from dashboard.models import CollectorStatus, QueueSnapshot, WorkerSnapshot
from dashboard.monitor.jobs import broker_sampler
from dashboard.queues.sampling import WorkerSampler
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    HOST,
    SESSION_WORKER,
    WorkerProcess,
    sample_until,
    start_worker,
    stop_worker,
    wait_until,
)

pytestmark = pytest.mark.django_db


def sampled(sampler: WorkerSampler, hostname: str, **expected: object) -> WorkerSnapshot | None:
    """Run a round; the worker's row when it matches ``expected``."""
    sampler()
    row = WorkerSnapshot.objects.filter(hostname=hostname).first()
    if row is None:
        return None
    return row if all(getattr(row, k) == v for k, v in expected.items()) else None


def test_a_round_stores_each_worker_with_pool_queues_and_tasks(
    broker: redis.Redis, worker: WorkerProcess
) -> None:
    sampler = WorkerSampler()
    row = wait_until(lambda: sampled(sampler, SESSION_WORKER), timeout=30)
    assert row.online
    assert row.pool == "prefork"
    assert row.pool_size == 2
    assert row.concurrency == 2
    assert sorted(row.queues) == ["default", "emails", "reports"]
    assert "demo.tasks.resize_image" in row.registered
    assert not [name for name in row.registered if name.startswith("celery.")]
    assert row.sw_ver == celery.__version__
    assert len(row.loadavg) == 3
    assert row.uptime is not None
    assert row.pid == worker.process.pid
    assert CollectorStatus.objects.get(name="workers").failing_since is None


def test_tasks_show_with_short_safe_reprs(broker: redis.Redis, worker: WorkerProcess) -> None:
    from demo import tasks

    running = tasks.long_running.apply_async((7,), {"seconds": 3})
    # Held by the worker until its ETA; it runs then, so that the worker holds
    # no unacknowledged message once the test is over.
    later = tasks.add.apply_async(("<script>" + "x" * 5000, "y"), countdown=4)
    sampler = WorkerSampler()

    def both_listed() -> WorkerSnapshot | None:
        sampler()
        return WorkerSnapshot.objects.filter(
            hostname=SESSION_WORKER, active_count__gte=1, scheduled_count__gte=1
        ).first()

    row = wait_until(both_listed, timeout=30)
    active = next(t for t in row.active if t["id"] == running.id)
    assert active["name"] == "demo.tasks.long_running"
    assert active["args"] == "(7,)"
    assert active["started"] is not None
    scheduled = next(t for t in row.scheduled if t["id"] == later.id)
    assert scheduled["eta"]
    assert scheduled["args"].startswith("('<script>xxx")
    assert len(scheduled["args"]) <= control.ARG_REPR_LIMIT
    assert running.get(timeout=30) == 7
    assert later.get(timeout=30).endswith("xy")


def test_no_reply_is_no_reply_not_zero_workers(
    broker: redis.Redis,
    redis_server: EmbeddedRedis,
    settings: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A database of the same Redis where no worker listens.
    silent = redis_server.url.rsplit("/", 1)[0] + "/7"
    monkeypatch.setenv("CELERY_BROKER_URL", silent)
    settings.CELERY_BROKER_URL = silent  # type: ignore[attr-defined]
    settings.MONITOR_WORKER_OFFLINE_AFTER = 60  # type: ignore[attr-defined]
    from django.utils import timezone

    WorkerSnapshot.objects.create(
        hostname="busy@elsewhere", first_seen_at=timezone.now(), last_seen_at=timezone.now()
    )
    assert control.snapshot_round(limit=None) is None

    WorkerSampler()()
    row = WorkerSnapshot.objects.get(hostname="busy@elsewhere")
    assert row.online, "one silent round does not make a worker offline"
    assert CollectorStatus.objects.get(name="workers").failing_since is None

    settings.MONITOR_WORKER_OFFLINE_AFTER = 1  # type: ignore[attr-defined]
    WorkerSnapshot.objects.update(last_seen_at=timezone.now() - timedelta(seconds=5))
    WorkerSampler()()
    assert not WorkerSnapshot.objects.get(hostname="busy@elsewhere").online


def test_an_unreachable_broker_is_a_failure_with_a_since(
    broker: redis.Redis, settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demo.embedded_redis import free_port

    gone = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", gone)
    settings.CELERY_BROKER_URL = gone  # type: ignore[attr-defined]
    sampler = WorkerSampler()
    sampler()
    first = CollectorStatus.objects.get(name="workers")
    assert first.failing_since is not None
    assert first.last_error
    sampler()
    assert CollectorStatus.objects.get(name="workers").failing_since == first.failing_since


def test_a_worker_killed_with_kill_9_goes_offline_then_is_forgotten(
    broker: redis.Redis, redis_server: EmbeddedRedis, worker: WorkerProcess, settings: object
) -> None:
    # solo: no pool children outlive the kill.
    doomed = start_worker(redis_server.url, "doomed", "-P", "solo", "-c", "1")
    hostname = f"doomed@{HOST}"
    sampler = WorkerSampler()
    try:
        wait_until(lambda: sampled(sampler, hostname, online=True), timeout=30)
    finally:
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait()

    settings.MONITOR_WORKER_OFFLINE_AFTER = 3600  # type: ignore[attr-defined]
    sampler()
    assert WorkerSnapshot.objects.get(hostname=hostname).online, "within the grace period"

    settings.MONITOR_WORKER_OFFLINE_AFTER = 1  # type: ignore[attr-defined]
    wait_until(lambda: sampled(sampler, hostname, online=False), timeout=30)
    assert WorkerSnapshot.objects.get(hostname=SESSION_WORKER).online

    settings.MONITOR_WORKER_FORGET_AFTER = 2  # type: ignore[attr-defined]
    sample_until(sampler, lambda: not WorkerSnapshot.objects.filter(hostname=hostname).exists())
    assert WorkerSnapshot.objects.filter(hostname=SESSION_WORKER).exists()


@pytest.fixture
def plain_worker(redis_server: EmbeddedRedis) -> Iterator[WorkerProcess]:
    handle = start_worker(
        redis_server.url, "plain", "-P", "solo", "-Q", "plain", app="tests.plain_worker_app"
    )
    yield handle
    stop_worker(handle)


def test_a_worker_without_the_hook_is_read_with_the_standard_commands(
    broker: redis.Redis, worker: WorkerProcess, plain_worker: WorkerProcess
) -> None:
    sampler = WorkerSampler()
    row = wait_until(lambda: sampled(sampler, f"plain@{HOST}"), timeout=30)
    assert row.queues == ["plain"]
    assert row.pool == "solo"
    assert row.registered == ["tests.plain_worker_app.boom", "tests.plain_worker_app.ping"]
    assert row.sw_ver == ""  # only the hook reports it
    assert WorkerSnapshot.objects.get(hostname=SESSION_WORKER).sw_ver == celery.__version__


@pytest.fixture
def idle_queue(broker: redis.Redis, settings: object) -> Iterator[str]:
    name = f"idle-{uuid.uuid4().hex[:8]}"
    settings.MONITOR_QUEUES = [name]  # type: ignore[attr-defined]
    yield name
    for key in broker.scan_iter(match=f"*{name}*"):
        broker.delete(key)


def test_rates_come_from_the_workers_counts_and_the_depth_change(
    broker: redis.Redis, worker: WorkerProcess, idle_queue: str
) -> None:
    from demo import tasks

    queues, workers = broker_sampler(), WorkerSampler()
    queues()
    workers()
    assert QueueSnapshot.objects.get(name="emails").out_rate is None, "one round has no rate"
    start = workers._depths_at
    assert start is not None

    results = [tasks.send_welcome_email.delay(n) for n in range(5)]
    for result in results:
        result.get(timeout=30)
    for n in range(3):
        tasks.add.apply_async((n, n), queue=idle_queue)  # nobody consumes it
    queues()
    workers()
    window = workers._depths_at - start  # type: ignore[operator]

    emails = QueueSnapshot.objects.get(name="emails")
    assert emails.out_rate is not None
    assert emails.out_rate * window == pytest.approx(5)
    assert emails.in_rate == pytest.approx(emails.out_rate)
    idle = QueueSnapshot.objects.get(name=idle_queue)
    assert idle.out_rate == 0
    assert idle.in_rate is not None
    assert idle.in_rate * window == pytest.approx(3)
