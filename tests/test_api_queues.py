"""Queues, workers, periodic entries, the audit log and the overview through the
API: the same reads as the pages and the same controls, against the real worker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from dashboard.models import AuditEvent, PeriodicEntry, QueuePause, QueueSnapshot
from dashboard.monitor.jobs import broker_sampler
from dashboard.queues.sampling import WorkerSampler
from tests.helpers import SESSION_WORKER, make_dead_letter, sample_until
from tests.test_api_auth import API, bearer, token_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def op(operator: User) -> dict[str, Any]:
    return bearer(token_for(operator, "deploy-bot"))


def get(path: str, headers: dict[str, Any], **params: Any) -> Any:
    return Client().get(f"{API}{path}", params, **headers)


def post(path: str, headers: dict[str, Any], body: dict[str, Any] | None = None) -> Any:
    return Client().post(
        f"{API}{path}", json.dumps(body or {}), content_type="application/json", **headers
    )


def test_a_queue_is_paused_and_resumed_around_a_deploy(
    op: dict[str, Any], broker: redis.Redis, sampled: WorkerSampler
) -> None:
    from demo import tasks

    response = post("/queues/reports/pause", op)
    try:
        assert response.status_code == 200, response.content
        assert response.json()["ok"] == {SESSION_WORKER: "no longer consuming from reports"}
        assert QueuePause.objects.filter(queue="reports").exists()
        sample_until(sampled, lambda: True)
        broker_sampler()()
        held = tasks.add.apply_async((2, 3), queue="reports")
        queues = {q["name"]: q for q in get("/queues", op).json()["items"]}
        assert queues["reports"]["paused"] is True
        assert queues["reports"]["paused_by"] == "olivia"
    finally:
        resumed = post("/queues/reports/resume", op)
    assert resumed.status_code == 200, resumed.content
    assert held.get(timeout=30) == 5
    events = AuditEvent.objects.filter(action__in=["queue_pause", "queue_resume"])
    assert [e.details["api_token"] for e in events] == ["deploy-bot", "deploy-bot"]
    assert post("/queues/reports/resume", op).status_code == 409


@pytest.fixture
def purge_queue(broker: redis.Redis, settings: Any) -> Iterator[str]:
    name = f"purge-{uuid.uuid4().hex[:8]}"
    settings.MONITOR_QUEUES = [name]
    yield name
    for key in broker.scan_iter(match=f"*{name}*"):
        broker.delete(key)


def test_how_deep_is_a_queue_and_a_purge_needs_its_name_typed(
    op: dict[str, Any], broker: redis.Redis, purge_queue: str
) -> None:
    from demo import tasks

    for priority in (0, 9, 9):
        tasks.add.apply_async((1, 2), queue=purge_queue, priority=priority)
    broker_sampler()()
    queue = get(f"/queues/{purge_queue}", op).json()
    assert queue["depth"] == 3
    assert queue["oldest_age"] is not None

    missing = post(f"/queues/{purge_queue}/purge", op)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "confirm"]
    wrong = post(f"/queues/{purge_queue}/purge", op, {"confirm": "default"})
    assert wrong.status_code == 422
    assert f"Type the queue name, {purge_queue}" in wrong.json()["detail"][0]["msg"]
    done = post(f"/queues/{purge_queue}/purge", op, {"confirm": purge_queue})
    assert done.json() == {"queue": purge_queue, "purged": 3}
    assert AuditEvent.objects.get(action="queue_purge").details["api_token"] == "deploy-bot"
    assert get("/queues/no-such-queue", op).status_code == 404


def test_a_queue_name_may_hold_a_slash(op: dict[str, Any], broker: redis.Redis) -> None:
    QueueSnapshot.objects.create(name="team/emails", sampled_at=timezone.now(), depth=4)
    assert get("/queues/team/emails", op).json()["depth"] == 4
    response = post("/queues/team/emails/purge", op, {"confirm": "team/emails"})
    # Routed to the purge of "team/emails", not to a queue named "team/emails/purge".
    assert response.json() == {"queue": "team/emails", "purged": 0}


def test_workers_are_listed_and_their_pool_grown_and_shrunk(
    op: dict[str, Any], sampled: WorkerSampler
) -> None:
    listed = [w["hostname"] for w in get("/workers", op).json()["items"]]
    assert SESSION_WORKER in listed
    worker = get(f"/workers/{SESSION_WORKER}", op).json()
    assert worker["online"] is True
    assert "demo.tasks.add" in worker["registered"]
    grown = post(f"/workers/{SESSION_WORKER}/pool", op, {"action": "grow", "n": 1})
    assert grown.status_code == 200, grown.content
    assert SESSION_WORKER in grown.json()["ok"]
    shrunk = post(f"/workers/{SESSION_WORKER}/pool", op, {"action": "shrink", "n": 1})
    assert SESSION_WORKER in shrunk.json()["ok"]
    bad = post(f"/workers/{SESSION_WORKER}/pool", op, {"action": "grow", "n": 101})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "n"]
    bad = post(f"/workers/{SESSION_WORKER}/autoscale", op, {"max": 2, "min": 3})
    assert bad.status_code == 422
    revoked = post("/tasks/revoke", op, {"task_id": str(uuid.uuid4())})
    assert revoked.status_code == 200
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"worker_pool_grow", "worker_pool_shrink", "task_revoke"} <= actions


def test_periodic_entries_are_listed_and_run_now_once_per_token(
    op: dict[str, Any], broker: redis.Redis
) -> None:
    PeriodicEntry.objects.create(
        name="nightly", task="demo.tasks.add", args=[1, 2], queue="periodic-test",
        schedule="at 04:00 every day", reported_at=timezone.now(),
    )  # fmt: skip
    (entry,) = get("/periodic", op).json()["items"]
    assert (entry["name"], entry["schedule"]) == ("nightly", "at 04:00 every day")
    bad = post("/periodic/nightly/run", op, {"token": "x"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "token"]
    sent = post("/periodic/nightly/run", op, {"token": "deploy-0001"})
    assert sent.status_code == 200, sent.content
    again = post("/periodic/nightly/run", op, {"token": "deploy-0001"})
    assert again.status_code == 409
    assert "Already sent by olivia" in again.json()["detail"]
    assert broker.llen("periodic-test") == 1
    broker.delete("periodic-test")


def test_the_audit_log_pages_newest_first(op: dict[str, Any]) -> None:
    rows = [make_dead_letter() for _ in range(3)]
    for row in rows:
        post(f"/deadletters/{row.pk}/discard", op)
    first = get("/audit", op, limit=2).json()
    assert [e["target_ids"] for e in first["items"]] == [[str(rows[2].pk)], [str(rows[1].pk)]]
    rest = get("/audit", op, limit=2, cursor=first["next_cursor"]).json()
    assert [e["target_ids"] for e in rest["items"]] == [[str(rows[0].pk)]]
    assert rest["next_cursor"] is None


def test_the_overview_says_the_state_in_words(op: dict[str, Any]) -> None:
    make_dead_letter()
    QueueSnapshot.objects.create(name="default", sampled_at=timezone.now(), depth=1)
    state = get("/overview", op).json()
    assert state["level"] in ("healthy", "degraded", "failing")
    assert state["open_dead_letters"] == 1
    assert state["word"] == state["level"].capitalize()
