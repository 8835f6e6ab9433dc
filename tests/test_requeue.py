"""Requeue and discard: one click, one message, a clear answer when it cannot be done."""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import WorkerProcess, ingest_until, make_dead_letter, make_user, wait_until

pytestmark = pytest.mark.django_db


def queued(client: redis.Redis, queue: str) -> list[dict]:
    """The messages waiting in a queue, oldest first, with decoded bodies."""
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        message["decoded"] = json.loads(base64.b64decode(message["body"]))
        messages.append(message)
    return messages


def test_it_requeues_with_a_new_task_id_to_the_original_queue(
    operator_client: Client, operator: User, broker: redis.Redis
) -> None:
    dead_letter = make_dead_letter(
        queue="requeue-target",
        retries=3,
        priority=None,
        root_id="root-1",
        eta="2020-01-01T00:00:00+00:00",
        expires="2020-01-02T00:00:00+00:00",
        headers={"x_sent_at": 1.0, "x_queue": "requeue-target", "tenant": "acme"},
    )
    response = operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 302

    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.REQUEUED
    assert dead_letter.requeued_by == operator
    assert dead_letter.requeued_at is not None
    (message,) = queued(broker, "requeue-target")
    headers = message["headers"]
    assert headers["id"] == dead_letter.requeue_task_id != dead_letter.task_id
    assert headers["task"] == dead_letter.task_name
    assert headers["parent_id"] == dead_letter.task_id
    assert headers["root_id"] == "root-1"
    assert headers["retries"] == 0
    assert headers["eta"] is None
    assert headers["expires"] is None
    assert headers["x_requeued_from"] == dead_letter.task_id
    assert headers["tenant"] == "acme"
    assert headers["x_sent_at"] > 1.0
    args, kwargs, _ = message["decoded"]
    assert args == dead_letter.args
    assert kwargs == dead_letter.kwargs


def test_a_second_requeue_answers_409_with_who_and_when(
    operator_client: Client, broker: redis.Redis
) -> None:
    dead_letter = make_dead_letter(queue="requeue-target")
    url = reverse("deadletters:requeue", args=[dead_letter.pk])
    operator_client.post(url)
    response = operator_client.post(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 409
    assert b"Already requeued by olivia at" in response.content
    assert b"<html" not in response.content
    assert len(queued(broker, "requeue-target")) == 1


def test_discarding_a_requeued_row_answers_409(
    operator_client: Client, broker: redis.Redis
) -> None:
    dead_letter = make_dead_letter(queue="requeue-target")
    operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    response = operator_client.post(reverse("deadletters:discard", args=[dead_letter.pk]))
    assert response.status_code == 409
    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.REQUEUED


def test_discard_closes_the_row_and_publishes_nothing(
    operator_client: Client, operator: User, broker: redis.Redis
) -> None:
    dead_letter = make_dead_letter(queue="requeue-target")
    response = operator_client.post(
        reverse("deadletters:discard", args=[dead_letter.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Trigger"] == "ops-changed"
    assert b"Discarded" in response.content
    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.DISCARDED
    assert dead_letter.discarded_by == operator
    assert queued(broker, "requeue-target") == []


def test_with_the_broker_down_the_row_stays_open_and_the_operator_is_told(
    operator_client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    dead_letter = make_dead_letter(queue="requeue-target")
    redis_server.stop()
    try:
        response = operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    finally:
        redis_server.start()
    assert response.status_code == 503
    assert b"Not requeued" in response.content
    assert b"still open" in response.content
    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.OPEN
    assert dead_letter.requeue_task_id == ""


def test_a_quarantined_row_cannot_be_requeued(operator_client: Client, broker: redis.Redis) -> None:
    dead_letter = make_dead_letter(args=["a\x00b"])  # stored lossy
    response = operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 409
    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.OPEN


def test_viewer_gets_403_from_every_action(viewer_client: Client, broker: redis.Redis) -> None:
    dead_letter = make_dead_letter(queue="requeue-target")
    for name in ("deadletters:requeue", "deadletters:discard"):
        response = viewer_client.post(reverse(name, args=[dead_letter.pk]))
        assert response.status_code == 403
    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.OPEN
    assert queued(broker, "requeue-target") == []


def test_actions_are_post_only(operator_client: Client) -> None:
    dead_letter = make_dead_letter()
    response = operator_client.get(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 405


def test_an_anonymous_visitor_is_sent_to_log_in(client: Client, broker: redis.Redis) -> None:
    dead_letter = make_dead_letter(queue="requeue-target")
    response = client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    assert queued(broker, "requeue-target") == []


def test_requeue_without_a_csrf_token_is_refused(operator: User, broker: redis.Redis) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    dead_letter = make_dead_letter(queue="requeue-target")
    response = client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 403
    assert queued(broker, "requeue-target") == []


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_requeues_publish_exactly_one_message(
    live_server: object, broker: redis.Redis
) -> None:
    make_user("olivia", group="Operator")
    dead_letter = make_dead_letter(queue="requeue-target")
    base = str(live_server.url)  # type: ignore[attr-defined]

    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_page = opener.open(f"{base}/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)  # type: ignore[union-attr]
    opener.open(
        f"{base}/login/",
        urllib.parse.urlencode(
            {
                "username": "olivia",
                "password": "correct horse battery staple",
                "csrfmiddlewaretoken": token,
            }
        ).encode(),
    )
    csrf = next(str(c.value) for c in jar if c.name == "csrftoken")

    url = f"{base}{reverse('deadletters:requeue', args=[dead_letter.pk])}"
    statuses: list[int] = []
    barrier = threading.Barrier(20)

    def click() -> None:
        request = urllib.request.Request(
            url,
            data=b"",
            method="POST",
            headers={"X-CSRFToken": csrf, "HX-Request": "true", "Referer": base + "/"},
        )
        barrier.wait()
        try:
            statuses.append(opener.open(request, timeout=60).status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)

    threads = [threading.Thread(target=click) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [409] * 19
    assert len(queued(broker, "requeue-target")) == 1


def test_the_worker_runs_the_requeued_task_under_its_new_id(
    operator_client: Client, broker: redis.Redis, worker: WorkerProcess
) -> None:
    """resize_image fails on its first run and succeeds once requeued."""
    from demo import tasks
    from demo.celery_app import app

    original = tasks.resize_image.delay(99, [32])
    (dead_letter,) = ingest_until(1)
    assert dead_letter.task_id == original.id

    operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    dead_letter.refresh_from_db()
    rerun = app.AsyncResult(dead_letter.requeue_task_id)
    assert rerun.get(timeout=30) == "resized 99 to [32]"
    assert rerun.id != original.id
    # The worker's log says so: what the demo's console shows of a requeue.
    said = f"resize_image[{rerun.id}]: resize_image 99 succeeded after a requeue"
    wait_until(lambda: said in worker.log_text(), timeout=10)


def test_a_requeued_task_that_fails_again_is_chained_to_its_origin(
    operator_client: Client, broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks

    tasks.send_webhook.delay("https://hooks.example.com/2", payload={})
    (first,) = ingest_until(1)
    operator_client.post(reverse("deadletters:requeue", args=[first.pk]))
    first.refresh_from_db()
    wait_until(lambda: ingest_until(2), timeout=60)
    second = DeadLetter.objects.exclude(pk=first.pk).get()
    assert second.task_id == first.requeue_task_id
    assert second.requeued_from == first
    assert second.requeued_from_task_id == first.task_id

    page = operator_client.get(reverse("deadletters:detail", args=[second.pk])).content.decode()
    assert first.task_id in page
    assert second.task_id in page
    assert "requeued as" in page
