"""Queue controls against the real worker (pause, resume, purge), and what every
control shares: Operators only, POST with CSRF, audited, a 503 with the broker down.

The worker controls (pool, autoscale, revoke) are in test_worker_controls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.broker import control
from dashboard.models import AuditEvent, QueuePause, WorkerSnapshot
from dashboard.monitor.jobs import broker_sampler
from dashboard.queues.sampling import WorkerSampler
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import SESSION_WORKER, sample_until

pytestmark = pytest.mark.django_db


def redis_depth(client: redis.Redis, queue: str) -> int:
    return sum(
        int(client.llen(key))
        for key in client.scan_iter(match=f"{queue}*")
        if client.type(key) == b"list"
    )


def test_a_paused_queue_is_not_consumed_until_it_is_resumed(
    operator_client: Client, broker: redis.Redis, sampled: WorkerSampler, operator: User
) -> None:
    from demo import tasks

    response = operator_client.post(
        reverse("queue_pause", args=["reports"]), HTTP_HX_REQUEST="true"
    )
    try:
        assert response.status_code == 200
        assert response["HX-Trigger"] == "ops-changed"
        text = response.content.decode()
        assert "<html" not in text
        assert f"Paused reports: 1 worker replied; ok: {SESSION_WORKER}" in text
        assert 'id="control-result" hx-swap-oob="true"' in text
        assert "Resume</button>" in text
        pause = QueuePause.objects.get(queue="reports")
        assert pause.workers == [SESSION_WORKER]
        assert pause.username == "olivia"
        event = AuditEvent.objects.get(action="queue_pause")
        assert event.user == operator
        assert event.target_ids == ["reports"]
        assert event.details["replies"]["ok"] == {
            SESSION_WORKER: "no longer consuming from reports"
        }

        sample_until(
            sampled,
            lambda: "reports" not in WorkerSnapshot.objects.get(hostname=SESSION_WORKER).queues,
        )
        held = tasks.add.apply_async((2, 3), queue="reports")
        tasks.add.apply_async((1, 1), queue="default").get(timeout=30)
        # The worker has taken a later task from another queue, not this one.
        assert redis_depth(broker, "reports") == 1
    finally:
        response = operator_client.post(reverse("queue_resume", args=["reports"]))
    assert response.status_code == 302
    assert held.get(timeout=30) == 5
    assert not QueuePause.objects.filter(queue="reports").exists()
    resumed = AuditEvent.objects.get(action="queue_resume")
    assert resumed.details["asked"] == [SESSION_WORKER]
    assert SESSION_WORKER in resumed.details["replies"]["ok"]


def test_resuming_a_queue_that_is_not_paused_is_a_409(
    operator_client: Client, sampled: WorkerSampler
) -> None:
    response = operator_client.post(
        reverse("queue_resume", args=["emails"]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 409
    assert "is not paused" in response.content.decode()
    assert not AuditEvent.objects.filter(action="queue_resume").exists()


@pytest.fixture
def purge_queue(broker: redis.Redis, settings: object) -> Iterator[str]:
    name = f"purge-{uuid.uuid4().hex[:8]}"
    settings.MONITOR_QUEUES = [name]  # type: ignore[attr-defined]
    yield name
    for key in broker.scan_iter(match=f"*{name}*"):
        broker.delete(key)


def test_purge_needs_the_queue_name_typed(
    operator_client: Client, broker: redis.Redis, purge_queue: str, operator: User
) -> None:
    from demo import tasks

    for priority in (0, 4, 9, 9):
        tasks.add.apply_async((1, 2), queue=purge_queue, priority=priority)
    broker_sampler()()
    url = reverse("queue_purge", args=[purge_queue])
    page = operator_client.get(url).content.decode()
    assert f"Type <code>{purge_queue}</code> to confirm" in page
    assert "4 when last sampled" in page

    response = operator_client.post(url, {"confirm": "default"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert f"Type the queue name, {purge_queue}, to purge it." in response.content.decode()
    assert redis_depth(broker, purge_queue) == 4
    response = operator_client.post(url, {"confirm": "default"})
    assert response.status_code == 422
    assert "<html" in response.content.decode()

    response = operator_client.post(url, {"confirm": purge_queue}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Trigger"] == "ops-changed"
    assert f"Purged 4 messages from {purge_queue}." in response.content.decode()
    assert redis_depth(broker, purge_queue) == 0
    event = AuditEvent.objects.get(action="queue_purge")
    assert (event.user, event.target_ids, event.count) == (operator, [purge_queue], 4)


def test_purge_of_an_unknown_queue_is_404(operator_client: Client) -> None:
    assert operator_client.get(reverse("queue_purge", args=["nope"])).status_code == 404


def test_a_viewer_gets_403_from_every_control(
    viewer_client: Client, sampled: WorkerSampler, broker: redis.Redis
) -> None:
    posts = [
        (reverse("queue_pause", args=["emails"]), {}),
        (reverse("queue_resume", args=["emails"]), {}),
        (reverse("queue_purge", args=["emails"]), {"confirm": "emails"}),
        (reverse("worker_pool", args=[SESSION_WORKER]), {"action": "grow"}),
        (reverse("worker_autoscale", args=[SESSION_WORKER]), {"max": "3", "min": "1"}),
        (reverse("task_revoke"), {"task_id": str(uuid.uuid4())}),
    ]
    for url, data in posts:
        assert viewer_client.post(url, data).status_code == 403, url
        assert viewer_client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403, url
    assert viewer_client.get(reverse("queue_purge", args=["emails"])).status_code == 403
    assert not AuditEvent.objects.exists()
    assert not QueuePause.objects.exists()
    assert "emails" in WorkerSnapshot.objects.get(hostname=SESSION_WORKER).queues


def test_controls_are_post_only_and_need_csrf(operator: User, sampled: WorkerSampler) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.get(reverse("queue_pause", args=["emails"])).status_code == 405
    assert client.post(reverse("queue_pause", args=["emails"])).status_code == 403
    assert not QueuePause.objects.exists()


def test_with_the_broker_down_a_control_answers_503_and_changes_nothing(
    operator_client: Client, sampled: WorkerSampler, redis_server: EmbeddedRedis
) -> None:
    redis_server.stop()
    try:
        response = operator_client.post(
            reverse("queue_pause", args=["emails"]), HTTP_HX_REQUEST="true"
        )
        revoke = operator_client.post(reverse("task_revoke"), {"task_id": "x"})
    finally:
        redis_server.start()
    assert response.status_code == 503
    assert "Not paused: the broker cannot be reached" in response.content.decode()
    assert revoke.status_code == 503
    assert "<html" in revoke.content.decode()
    assert not QueuePause.objects.exists()
    assert not AuditEvent.objects.exists()


def test_replies_name_the_workers_that_answered() -> None:
    replies = control.Replies(
        "autoscale", ok={"a@h": "done"}, errors={"b@h": "Autoscale not enabled"}
    )
    assert replies.workers == ["a@h", "b@h"]
    assert replies.summary() == "2 workers replied; ok: a@h; b@h: Autoscale not enabled"
    assert control.Replies("revoke").summary() == "no worker replied"
