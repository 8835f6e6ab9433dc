"""Worker controls against real workers: pool size, autoscale, revoke; each audited.

What every control shares (Operators only, CSRF, the broker down) is in
test_queue_controls.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditEvent, WorkerSnapshot
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


def test_the_pool_grows_and_shrinks(operator_client: Client, sampled: WorkerSampler) -> None:
    url = reverse("worker_pool", args=[SESSION_WORKER])
    response = operator_client.post(url, {"action": "grow", "n": "1"}, HTTP_HX_REQUEST="true")
    try:
        assert response.status_code == 200
        assert f"1 worker replied; {SESSION_WORKER}: pool will grow" in response.content.decode()
        sample_until(
            sampled, lambda: WorkerSnapshot.objects.get(hostname=SESSION_WORKER).concurrency == 3
        )
    finally:
        response = operator_client.post(url, {"action": "shrink", "n": "1"})
    assert response.status_code == 302
    sample_until(
        sampled, lambda: WorkerSnapshot.objects.get(hostname=SESSION_WORKER).concurrency == 2
    )
    nonsense = operator_client.post(url, {"action": "explode"}, HTTP_HX_REQUEST="true")
    assert nonsense.status_code == 422
    assert list(AuditEvent.objects.order_by("id").values_list("action", "target_ids", "count")) == [
        ("worker_pool_grow", [SESSION_WORKER], 1),
        ("worker_pool_shrink", [SESSION_WORKER], 1),
    ]


def test_a_worker_says_so_when_autoscale_is_not_enabled(
    operator_client: Client, sampled: WorkerSampler
) -> None:
    response = operator_client.post(
        reverse("worker_autoscale", args=[SESSION_WORKER]),
        {"max": "4", "min": "1"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Autoscale not enabled" in response.content.decode()


@pytest.fixture
def autoscaling(redis_server: EmbeddedRedis) -> Iterator[WorkerProcess]:
    handle = start_worker(redis_server.url, "scaled", "--autoscale", "3,1", "-Q", "scaled")
    yield handle
    stop_worker(handle)


def test_autoscale_where_enabled(
    operator_client: Client, broker: redis.Redis, autoscaling: WorkerProcess
) -> None:
    hostname = f"scaled@{HOST}"
    sampler = WorkerSampler()
    sample_until(
        sampler,
        lambda: WorkerSnapshot.objects.filter(hostname=hostname, autoscale_max=3).exists(),
        timeout=30,
    )
    page = operator_client.get(reverse("worker_detail", args=[hostname])).content.decode()
    assert 'name="max" type="number" min="1" value="3"' in page
    response = operator_client.post(
        reverse("worker_autoscale", args=[hostname]),
        {"max": "5", "min": "2"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "autoscale now max=5 min=2" in response.content.decode()
    sample_until(
        sampler,
        lambda: WorkerSnapshot.objects.filter(
            hostname=hostname, autoscale_max=5, autoscale_min=2
        ).exists(),
    )
    bad = operator_client.post(
        reverse("worker_autoscale", args=[hostname]),
        {"max": "1", "min": "4"},
        HTTP_HX_REQUEST="true",
    )
    assert bad.status_code == 422
    assert AuditEvent.objects.filter(action="worker_autoscale").count() == 1


def test_revoke_reaches_the_workers_and_the_task_never_runs(
    operator_client: Client, sampled: WorkerSampler, operator: User
) -> None:
    from demo import tasks

    later = tasks.add.apply_async((40, 2), countdown=2)
    response = operator_client.post(
        reverse("task_revoke"), {"task_id": later.id}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith('<section id="revoke"')
    assert f"Revoked {later.id}: 1 worker replied; ok: {SESSION_WORKER}" in text
    wait_until(lambda: later.state == "REVOKED", timeout=30)
    event = AuditEvent.objects.get(action="task_revoke")
    assert (event.user, event.target_ids) == (operator, [later.id])
    assert event.details["terminate"] is False

    empty = operator_client.post(reverse("task_revoke"), {"task_id": " "}, HTTP_HX_REQUEST="true")
    assert empty.status_code == 422
