"""Where is task X? beyond the page's bounded read: an operator asks for a full
scan of the queues, the monitor's job reads them a slice a turn, and the page
says where the task waits.

Real parts: the test Redis as broker (a queue nobody consumes), the monitor's
own job list, the real database. The page's bound is lowered to 10 messages a
queue, the job's slices to a few messages, so that 30 messages are "deep"."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from dashboard.broker import waiting
from dashboard.models import AuditEvent, TaskSearch
from dashboard.monitor.jobs import broker_sampler, scheduled_jobs
from dashboard.tasks import queue_scan

pytestmark = pytest.mark.django_db

SCAN = "/tasks/queue-scan/"
BUTTON = "Search the whole queue in the background"


def text(response: Any) -> str:
    return re.sub(r"\s+", " ", html.unescape(response.content.decode()))


def queues_section(page: str) -> str:
    return page.split('id="source-queues"', 1)[1].split("</section>", 1)[0]


@pytest.fixture
def deep_queue(
    broker: redis.Redis, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A queue nobody consumes, known to the dashboard as the monitor knows queues,
    with the page's bound lowered to 10 messages a queue."""
    name = f"scan-{uuid.uuid4().hex[:8]}"
    # What earlier tests left in the queues the monitor knows would be scanned
    # (and counted) too: the figures below are this queue's alone.
    for key in broker.scan_iter(_type="list"):
        broker.delete(key)
    settings.MONITOR_QUEUES = [name]
    monkeypatch.setattr(waiting, "PER_QUEUE", 10)
    yield name
    for key in broker.scan_iter(match=f"*{name}*"):
        broker.delete(key)


def publish(queue: str, before: int, after: int) -> str:
    """``before`` messages, the task's, then ``after`` more: it has ``before`` ahead of it."""
    from demo import tasks

    for n in range(before):
        tasks.add.apply_async((n, n), queue=queue)
    task_id = tasks.add.apply_async((100, 1), queue=queue).id
    for n in range(after):
        tasks.add.apply_async((n, n), queue=queue)
    broker_sampler()()  # the monitor learns of the queue
    return task_id


def fragment(client: Client, task_id: str) -> str:
    response = client.get(SCAN, {"task_id": task_id}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "<html" not in response.content.decode()
    return text(response)


def test_a_task_deeper_than_the_page_reads_is_found_by_the_monitors_scan(
    operator_client: Client, deep_queue: str
) -> None:
    task_id = publish(deep_queue, before=2, after=27)
    page = text(operator_client.get(reverse("task_lookup", args=[task_id])))
    queues = queues_section(page)
    assert f"{deep_queue}: not among the newest 10 of 30 messages" in queues
    assert BUTTON in queues
    assert 'hx-trigger="every 2s"' not in queues, "nothing to poll before it is asked for"

    # A double click: two posts, one request, one audit event.
    for _ in range(2):
        response = operator_client.post(SCAN, {"task_id": task_id}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        assert response["HX-Trigger"] == "ops-changed"
    scan = TaskSearch.objects.get()
    assert (scan.task_id, scan.username, scan.state) == (task_id, "olivia", "pending")
    assert "already under way" in text(response)
    event = AuditEvent.objects.get(action="task_queue_scan")
    assert (event.target_ids, event.username) == ([task_id], "olivia")

    pending = fragment(operator_client, task_id)
    assert "waiting for the monitor to start it" in pending
    assert 'hx-trigger="every 2s" data-poll-while-visible' in pending
    assert BUTTON not in pending

    # Slices of 7 messages: the scan resumes where it stopped, turn after turn.
    queue_scan.run_pending(messages=7, page=3)
    scanning = fragment(operator_client, task_id)
    assert "Scanning the whole queues in the monitor: 7 of about 30 messages read" in scanning
    assert 'hx-trigger="every 2s"' in scanning
    for _ in range(2):
        queue_scan.run_pending(messages=7, page=3)
    assert TaskSearch.objects.get().state == "scanning"

    # The rest as the monitor's scheduler runs it, with its own slice.
    (job,) = [job for job in scheduled_jobs() if job.name == "task-queue-scans"]
    job.run()
    scan.refresh_from_db()
    assert (scan.state, scan.found_in_queue, scan.position) == ("found", deep_queue, 2)
    assert scan.scanned == 28, "newest first: 27 messages, then the task's"

    done = fragment(operator_client, task_id)
    assert 'hx-trigger="every 2s"' not in done, "the poll stops with the scan"
    page = text(operator_client.get(reverse("task_lookup", args=[task_id])))
    assert (
        f'<b>Found by the full scan in <a href="/queues/{deep_queue}/">{deep_queue}</a></b>, '
        "2 messages ahead of it" in queues_section(page)
    )


def test_a_scan_that_does_not_find_it_says_how_much_it_read(
    operator_client: Client, deep_queue: str
) -> None:
    publish(deep_queue, before=0, after=30)
    missing = str(uuid.uuid4())
    response = operator_client.post(SCAN, {"task_id": missing})
    assert response.status_code == 302, "without htmx: back to the task's page"
    assert response["Location"] == reverse("task_lookup", args=[missing])
    queue_scan.run_pending()
    scan = TaskSearch.objects.get()
    assert scan.state == "not_found"
    assert scan.scanned >= 30
    said = fragment(operator_client, missing)
    assert f"did not find it in the {scan.scanned:,} messages of" in said
    assert "Search the whole queues again" in said


def test_a_viewer_is_not_offered_the_scan_and_gets_403(
    viewer_client: Client, deep_queue: str
) -> None:
    task_id = publish(deep_queue, before=0, after=29)
    page = text(viewer_client.get(reverse("task_lookup", args=[task_id])))
    assert "not among the newest 10 of 30 messages" in page
    assert BUTTON not in page
    assert viewer_client.post(SCAN, {"task_id": task_id}).status_code == 403
    assert not TaskSearch.objects.exists()
    assert not AuditEvent.objects.exists()


def test_on_rabbitmq_the_scan_says_it_cannot(
    operator_client: Client, settings: Any, broker: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    response = operator_client.post(SCAN, {"task_id": task_id}, HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert "cannot be searched without consuming, so they are not." in text(response)
    assert not TaskSearch.objects.exists()
    # A request stored before the broker changed: the monitor says the same.
    TaskSearch.objects.create(task_id=task_id)
    queue_scan.run_pending()
    scan = TaskSearch.objects.get()
    assert scan.state == "error"
    assert "cannot be searched without consuming" in fragment(operator_client, task_id)


def test_one_open_request_per_id_even_past_the_check(operator: Any) -> None:
    TaskSearch.objects.create(task_id="abcdefgh-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        TaskSearch.objects.create(task_id="abcdefgh-1")
    TaskSearch.objects.filter(task_id="abcdefgh-1").update(finished_at=timezone.now())
    scan, made = queue_scan.request_scan(task_id="abcdefgh-1", user=operator)
    assert made, "a finished scan may be asked for again"
    assert queue_scan.request_scan(task_id="abcdefgh-1", user=operator) == (scan, False)


def test_requests_are_forgotten_after_a_day(db: None) -> None:
    old = TaskSearch.objects.create(task_id="old-one-1", finished_at=timezone.now())
    TaskSearch.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(days=2))
    TaskSearch.objects.create(task_id="new-one-1")
    (job,) = [job for job in scheduled_jobs() if job.name == "task-queue-scans-retention"]
    job.run()
    assert list(TaskSearch.objects.values_list("task_id", flat=True)) == ["new-one-1"]


def test_without_htmx_the_state_url_opens_the_tasks_page(viewer_client: Client) -> None:
    response = viewer_client.get(SCAN, {"task_id": "abcdefgh/1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("task_lookup", args=["abcdefgh/1"])
    response = viewer_client.get(SCAN)
    assert response.status_code == 400
    assert "task_id: give a task id" in response.content.decode()


@examples(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(task_id=st.one_of(st.text(max_size=300), st.text(alphabet="\x00\n /%é", max_size=20)))
def test_any_task_id_is_an_answer_or_a_4xx_never_a_500(
    operator_client: Client, settings: Any, task_id: str
) -> None:
    # RabbitMQ: a valid id is refused with a 409 and nothing stored, whatever it is.
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    safe = task_id.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    posted = operator_client.post(SCAN, {"task_id": safe}, HTTP_HX_REQUEST="true")
    assert posted.status_code in (400, 409), posted.status_code
    if posted.status_code == 400:
        assert "task_id: " in posted.content.decode()
    polled = operator_client.get(SCAN, {"task_id": safe}, HTTP_HX_REQUEST="true")
    assert polled.status_code in (200, 400), polled.status_code
