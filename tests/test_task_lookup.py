"""Where is task X? Each story told from the real parts: the session's worker,
the test Redis as broker and result backend, the monitor's samplers and ingest.

A task that succeeded, one waiting in a queue nobody consumes, one running, one
that failed, became a dead letter, was requeued and then succeeded; and what
the page cannot know without a result backend."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.result import AsyncResult
from django.test import Client
from django.urls import reverse

from dashboard.broker import waiting
from dashboard.celery import app as site_app
from dashboard.models import AuditEvent, WorkerSnapshot
from dashboard.queues.sampling import WorkerSampler
from deadletters.models import DeadLetter
from tests.helpers import SESSION_WORKER, ingest_until, sample_until, wait_until

pytestmark = pytest.mark.django_db


def lookup(client: Client, task_id: str) -> str:
    response = client.get(reverse("task_lookup", args=[task_id]))
    assert response.status_code == 200
    return re.sub(r"\s+", " ", html.unescape(response.content.decode()))


def section(page: str, name: str) -> str:
    """One source's part of the page."""
    return page.split(f'id="source-{name}"', 1)[1].split("</section>", 1)[0]


def summary(page: str) -> str:
    return page.split('<p class="lead" id="summary"><b>', 1)[1].split("</b>", 1)[0]


def state(task_id: str) -> str:
    from demo.celery_app import app

    return str(AsyncResult(task_id, app=app).state)


@pytest.fixture
def nobody_queue(broker: redis.Redis, settings: Any) -> Iterator[str]:
    """A queue no worker consumes, known to the dashboard as the monitor knows queues."""
    name = f"lookup-{uuid.uuid4().hex[:8]}"
    settings.MONITOR_QUEUES = [name]
    yield name
    for key in broker.scan_iter(match=f"*{name}*"):
        broker.delete(key)


def test_a_task_that_succeeded_is_told_by_the_result_backend(
    viewer_client: Client, sampled: WorkerSampler
) -> None:
    from demo import tasks

    task_id = tasks.add.delay(2, 3).id
    wait_until(lambda: state(task_id) == "SUCCESS", timeout=30)
    page = lookup(viewer_client, task_id)
    assert summary(page).startswith("Succeeded at ")
    assert summary(page).endswith(", says the result backend.")
    backend = section(page, "backend")
    assert "Read from the result backend (redis) at" in backend
    assert ">SUCCESS</span>" in backend
    assert '<pre class="json" id="result">5</pre>' in backend
    assert "None: it never failed for good" in section(page, "deadletters")
    assert "Not running, reserved or scheduled on any worker" in section(page, "workers")
    assert "Not found in what was read." in section(page, "queues")
    assert 'action="/workers/revoke/"' not in page, "nothing to revoke"


def test_a_result_is_shown_redacted(viewer_client: Client, broker: redis.Redis) -> None:
    from demo.celery_app import app

    task_id = str(uuid.uuid4())
    # As a worker stores it: the team's own backend, written by Celery.
    app.backend.store_result(task_id, {"password": "hunter2", "rows": 3}, "SUCCESS")
    backend = section(lookup(viewer_client, task_id), "backend")
    assert "hunter2" not in backend
    assert '"password": "[redacted]"' in backend
    assert '"rows": 3' in backend


def test_a_pickled_result_is_never_loaded(viewer_client: Client, redis_server: Any) -> None:
    from celery import Celery

    # A team whose workers store results with pickle, in the same backend.
    team = Celery("team", backend=redis_server.url)
    team.conf.update(result_serializer="pickle", accept_content=["pickle", "json"])
    task_id = str(uuid.uuid4())
    team.backend.store_result(task_id, {"password": "hunter2"}, "SUCCESS")
    backend = section(lookup(viewer_client, task_id), "backend")
    assert "The result backend could not be read: stored as something other than JSON" in backend
    assert "hunter2" not in backend


def test_a_task_waiting_in_a_queue_nobody_consumes_is_found_there_and_can_be_revoked(
    operator_client: Client, viewer_client: Client, nobody_queue: str, sampled: WorkerSampler
) -> None:
    from demo import tasks

    waiting_id = tasks.add.apply_async((1, 2), queue=nobody_queue).id
    for n in range(3):
        tasks.add.apply_async((n, n), queue=nobody_queue)
    page = lookup(viewer_client, waiting_id)
    assert summary(page) == f"Waiting in queue {nobody_queue}, 0 messages ahead of it."
    queues = section(page, "queues")
    assert f"{nobody_queue}: all 4 messages read" in queues
    assert "unknown to the backend" in section(page, "backend").lower()
    assert 'action="/workers/revoke/"' not in page, "a viewer is not offered the revoke"
    assert viewer_client.post(reverse("task_revoke"), {"task_id": waiting_id}).status_code == 403

    operator_page = lookup(operator_client, waiting_id)
    assert 'action="/workers/revoke/"' in operator_page
    assert f'name="task_id" value="{waiting_id}"' in operator_page
    assert 'name="terminate"' not in operator_page, "terminate is for a running task"
    response = operator_client.post(reverse("task_revoke"), {"task_id": waiting_id})
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="task_revoke")
    assert event.target_ids == [waiting_id]
    assert event.username == "olivia"


def test_a_search_cut_short_says_how_much_it_read(nobody_queue: str, broker: redis.Redis) -> None:
    from demo import tasks

    oldest = tasks.add.apply_async((0, 0), queue=nobody_queue).id
    for n in range(4):
        tasks.add.apply_async((n, n), queue=nobody_queue)
    cut = waiting.find_waiting(oldest, [nobody_queue], per_queue=3, page=2)
    assert cut.found == []
    assert cut.queues == [waiting.QueueRead(nobody_queue, total=5, read=3, complete=False)]
    assert not cut.complete
    whole = waiting.find_waiting(oldest, [nobody_queue], page=2)
    assert [(w.queue, w.ahead, w.name) for w in whole.found] == [
        (nobody_queue, 0, "demo.tasks.add")
    ]
    assert whole.complete
    over = waiting.find_waiting(oldest, ["default", nobody_queue], in_all=0)
    assert over.unread == ["default", nobody_queue]


def test_a_running_task_is_told_by_the_snapshot_and_terminated_from_the_page(
    operator_client: Client, sampled: WorkerSampler
) -> None:
    from demo import tasks

    task_id = tasks.long_running.apply_async((11,), {"seconds": 60}).id

    def running() -> bool:
        row = WorkerSnapshot.objects.get(hostname=SESSION_WORKER)
        return any(task["id"] == task_id for task in row.active)

    sample_until(sampled, running, timeout=30)
    page = lookup(operator_client, task_id)
    assert summary(page) == f"Running on {SESSION_WORKER} (as of the last worker snapshot)."
    workers = section(page, "workers")
    assert f'Running on <a href="/workers/{SESSION_WORKER}/">{SESSION_WORKER}</a>' in workers
    assert "since <time" in workers
    assert 'name="terminate"' in page

    response = operator_client.post(reverse("task_revoke"), {"task_id": task_id, "terminate": "on"})
    assert response.status_code == 302
    wait_until(lambda: state(task_id) == "REVOKED", timeout=30)
    sample_until(sampled, lambda: not running(), timeout=30)
    page = lookup(operator_client, task_id)
    assert summary(page).startswith("Revoked at ")
    assert "<b>TaskRevokedError</b>" in section(page, "backend")


def test_a_task_held_for_its_eta_is_told_with_its_eta(
    viewer_client: Client, operator_client: Client, sampled: WorkerSampler
) -> None:
    from demo import tasks

    task_id = tasks.add.apply_async((4, 4), countdown=60).id

    def scheduled() -> bool:
        row = WorkerSnapshot.objects.get(hostname=SESSION_WORKER)
        return any(task["id"] == task_id for task in row.scheduled)

    sample_until(sampled, scheduled, timeout=30)
    (held,) = [
        task
        for task in WorkerSnapshot.objects.get(hostname=SESSION_WORKER).scheduled
        if task["id"] == task_id
    ]
    page = lookup(viewer_client, task_id)
    assert summary(page) == f"Held by {SESSION_WORKER} until its eta {held['eta']}."
    assert f"with eta {held['eta']}" in section(page, "workers")
    # Revoked, the worker drops it at its eta instead of running it.
    assert operator_client.post(reverse("task_revoke"), {"task_id": task_id}).status_code == 302


def test_a_task_that_failed_was_requeued_and_then_succeeded_tells_both_stories(
    operator_client: Client, viewer_client: Client, sampled: WorkerSampler
) -> None:
    from demo import tasks

    failed_id = tasks.resize_image.delay(7, [64]).id
    (dead_letter,) = ingest_until(1)
    assert dead_letter.task_id == failed_id
    page = lookup(operator_client, failed_id)
    assert summary(page) == "Failed for good (ValueError): open dead letter."
    assert f'action="/deadletters/{dead_letter.pk}/requeue/"' in page
    assert f'action="/deadletters/{dead_letter.pk}/discard/"' in page
    assert f'action="/deadletters/{dead_letter.pk}/requeue/"' not in lookup(
        viewer_client, failed_id
    )

    response = operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 302
    dead_letter.refresh_from_db()
    new_id = dead_letter.requeue_task_id
    wait_until(lambda: state(new_id) == "SUCCESS", timeout=30)

    before = lookup(viewer_client, failed_id)
    assert summary(before) == f"Failed for good (ValueError); requeued as {new_id}."
    backend = section(before, "backend")
    assert ">FAILURE</span>" in backend
    assert "<b>ValueError</b> image 7 has an unsupported colour profile" in backend
    assert "Traceback (most recent call last)" in backend
    chain = section(before, "deadletters")
    assert f'requeued as <a href="/tasks/id/{new_id}/"><code>{new_id}</code></a> by olivia' in chain
    assert 'class="current" aria-current="true"' in chain

    after = lookup(viewer_client, new_id)
    assert summary(after).startswith("Succeeded at ")
    assert '<pre class="json" id="result">"resized 7 to [64]"</pre>' in section(after, "backend")
    assert (
        f'This task is the requeue of dead letter <a href="{dead_letter.get_absolute_url()}">'
        f"<code>{failed_id}</code></a>" in section(after, "deadletters")
    )
    assert DeadLetter.objects.count() == 1, "it did not fail again"


def test_without_a_result_backend_the_page_says_what_it_cannot_know(
    viewer_client: Client, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seam: the site app's configuration, as CELERY_RESULT_BACKEND unset leaves it
    # (Celery reads the variable before the settings).
    monkeypatch.delenv("CELERY_RESULT_BACKEND")
    monkeypatch.setitem(site_app.conf, "result_backend", None)
    page = lookup(viewer_client, str(uuid.uuid4()))
    backend = section(page, "backend")
    assert "No result backend is configured on the dashboard (CELERY_RESULT_BACKEND)" in backend
    assert "whether the task ran, and what it returned, cannot be known here" in backend
    assert summary(page) == "Nothing known about this id."
