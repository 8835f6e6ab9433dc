"""Where is task X? through the API: the lookup page's story as JSON, and the ids a
prefix matches, under the page's role (Viewer reads)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest
import redis
from celery.result import AsyncResult
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard import broker as site_broker
from dashboard.broker import waiting
from dashboard.models import QueueSnapshot, WorkerSnapshot
from tests.helpers import WorkerProcess, make_dead_letter, make_user, wait_until
from tests.test_api_auth import API, bearer, token_for

pytestmark = pytest.mark.django_db

# The user fixture serves every example alike; each example makes its own token,
# as the lookup's rate limit counts per token.
FIXTURES = [HealthCheck.function_scoped_fixture]


@pytest.fixture
def reader(viewer: User) -> dict[str, Any]:
    return bearer(token_for(viewer, "chat-bot"))


def get(path: str, headers: dict[str, Any], **params: Any) -> Any:
    return Client().get(f"{API}{path}", params, **headers)


def story(task_id: str, headers: dict[str, Any]) -> dict[str, Any]:
    response = get(f"/tasks/{task_id}", headers)
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def test_a_task_that_ran_on_a_real_worker_is_answered_by_the_result_backend(
    reader: dict[str, Any], broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks
    from demo.celery_app import app

    task_id = tasks.add.delay(2, 3).id
    wait_until(lambda: AsyncResult(task_id, app=app).state == "SUCCESS", timeout=30)
    found = story(task_id, reader)
    assert found["task_id"] == task_id
    assert found["summary"].startswith("Succeeded at ")
    assert found["summary"].endswith(", says the result backend.")
    assert found["page"] == f"/tasks/id/{task_id}/"
    backend = found["backend"]
    assert (backend["configured"], backend["read"], backend["known"]) == (True, True, True)
    assert (backend["backend"], backend["state"], backend["result"]) == ("redis", "SUCCESS", "5")
    assert backend["date_done"] is not None
    assert found["dead_letters"]["chain"] == []
    assert found["dead_letters"]["requeued_from"] is None
    assert (found["running"], found["waiting"]) == (False, False)
    assert found["queues"]["searchable"] is True
    assert found["queues"]["found"] == []


def test_a_result_is_redacted_as_the_page_shows_it(
    reader: dict[str, Any], broker: redis.Redis
) -> None:
    from demo.celery_app import app

    task_id = str(uuid.uuid4())
    # As a worker stores it: the team's own backend, written by Celery.
    app.backend.store_result(task_id, {"password": "hunter2", "rows": 3}, "SUCCESS")
    response = get(f"/tasks/{task_id}", reader)
    assert b"hunter2" not in response.content
    assert '"password": "[redacted]"' in response.json()["backend"]["result"]


def test_a_dead_letters_id_returns_its_row_and_its_requeue_is_followed(
    operator: User, reader: dict[str, Any], broker: redis.Redis
) -> None:
    row = make_dead_letter(queue="requeue-target")
    found = story(row.task_id, reader)
    assert found["summary"] == "Failed for good (ValueError): open dead letter."
    (step,) = found["dead_letters"]["chain"]
    assert (step["id"], step["task_id"], step["state"]) == (row.pk, row.task_id, "open")
    assert step["is_this_task"] is True
    assert step["page"] == row.get_absolute_url()
    assert step["exception_message"] == "image 42 has an unsupported colour profile"
    assert step["requeueable"] is True

    requeued = Client().post(
        f"{API}/deadletters/{row.pk}/requeue", {}, "application/json", **bearer(token_for(operator))
    )
    new_id = requeued.json()["new_task_id"]
    before = story(row.task_id, reader)
    assert before["summary"] == f"Failed for good (ValueError); requeued as {new_id}."
    (step,) = before["dead_letters"]["chain"]
    assert (step["state"], step["requeue_task_id"], step["requeued_by"]) == (
        "requeued", new_id, "olivia",
    )  # fmt: skip
    # Nobody consumes requeue-target: the requeue is found waiting there.
    after = story(new_id, reader)
    assert after["dead_letters"]["requeued_from"]["id"] == row.pk
    assert after["summary"] == "Waiting in queue requeue-target, 0 messages ahead of it."
    (waiting,) = after["queues"]["found"]
    assert (waiting["queue"], waiting["ahead"]) == ("requeue-target", 0)
    assert after["waiting"] is True
    assert after["queues"]["cut_short"] is False


def test_a_search_cut_short_says_so(reader: dict[str, Any], broker: redis.Redis) -> None:
    name = f"api-lookup-{uuid.uuid4().hex[:8]}"
    QueueSnapshot.objects.create(name=name, sampled_at=timezone.now(), depth=0)
    # One message more than a lookup reads of a queue: the rest is not searched.
    key = site_broker.redis_priority_keys(name)[0]
    pipe = broker.pipeline(transaction=False)
    for _ in range(waiting.PER_QUEUE + 1):
        pipe.lpush(key, b"{}")
    pipe.execute()
    try:
        found = story(str(uuid.uuid4()), reader)
    finally:
        broker.delete(key)
    queues = found["queues"]
    (read,) = [q for q in queues["queues"] if q["queue"] == name]
    assert read == {
        "queue": name, "total": waiting.PER_QUEUE + 1, "read": waiting.PER_QUEUE,
        "complete": False,
    }  # fmt: skip
    assert (queues["found"], queues["complete"], queues["cut_short"]) == ([], False, True)
    assert queues["per_queue"] == waiting.PER_QUEUE


def test_a_snapshot_sighting_is_told(reader: dict[str, Any], broker: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    WorkerSnapshot.objects.create(
        hostname="w1@host",
        first_seen_at="2026-01-01T00:00:00Z",
        last_seen_at="2026-01-01T00:00:00Z",
        active=[{"id": task_id, "name": "demo.tasks.long_running", "started": 1767225600.0}],
        active_count=1,
    )
    found = story(task_id, reader)
    (seen,) = found["snapshot"]["sightings"]
    assert (seen["worker"], seen["kind"], seen["name"]) == (
        "w1@host", "active", "demo.tasks.long_running",
    )  # fmt: skip
    assert seen["started"].startswith("2026-01-01T00:00:00")
    assert found["running"] is True
    assert found["summary"] == "Running on w1@host (as of the last worker snapshot)."


# --- ids by prefix ------------------------------------------------------------------------


def test_a_prefix_lists_the_ids_it_starts(reader: dict[str, Any]) -> None:
    row = make_dead_letter(id="0123abcd-feed-4bad-8000-000000000001", task="payments.charge")
    make_dead_letter(id="0123abcd-feed-4bad-8000-000000000002")
    make_dead_letter(id="99999999-feed-4bad-8000-000000000003")
    body = get("/tasks", reader, q="0123abcd").json()
    assert sorted(item["task_id"] for item in body["items"]) == [
        "0123abcd-feed-4bad-8000-000000000001",
        "0123abcd-feed-4bad-8000-000000000002",
    ]
    assert body["limited"] is False
    one = get("/tasks", reader, q="0123abcd-feed-4bad-8000-000000000001").json()["items"]
    assert one == [
        {
            "task_id": row.task_id,
            "name": "payments.charge",
            "source": "dead letter",
            "seen_at": one[0]["seen_at"],
            "url": f"{API}/tasks/{row.task_id}",
            "page": f"/tasks/id/{row.task_id}/",
        }
    ]
    limited = get("/tasks", reader, q="0123abcd", limit=1).json()
    assert (len(limited["items"]), limited["limited"]) == (1, True)


@pytest.mark.parametrize("q", ["", "0123abc", "   0123abc  ", "x" * 256, "0123abcd\x00"])
def test_a_short_or_unreadable_prefix_is_a_422_naming_q(reader: dict[str, Any], q: str) -> None:
    response = get("/tasks", reader, q=q)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [["query", "q"]]


def test_no_prefix_at_all_is_a_422_naming_q(reader: dict[str, Any]) -> None:
    response = get("/tasks", reader)
    assert response.status_code == 422
    assert ["query", "q"] in [e["loc"] for e in response.json()["detail"]]


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(q=st.text(max_size=300))
def test_any_prefix_is_a_list_or_a_422_naming_q(viewer: User, q: str) -> None:
    response = Client(raise_request_exception=False).get(
        f"{API}/tasks", {"q": q}, **bearer(token_for(viewer, uuid.uuid4().hex))
    )
    assert response.status_code in (200, 422), response.content
    if response.status_code == 422:
        assert [e["loc"] for e in response.json()["detail"]] == [["query", "q"]]


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES)
@given(task_id=st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=300))
def test_any_task_id_in_the_path_is_a_story_or_a_422_naming_it(
    viewer: User, broker: redis.Redis, task_id: str
) -> None:
    response = Client(raise_request_exception=False).get(
        f"{API}/tasks/{quote(task_id, safe='')}", **bearer(token_for(viewer, uuid.uuid4().hex))
    )
    assert response.status_code in (200, 422), response.content
    if response.status_code == 422:
        assert [e["loc"] for e in response.json()["detail"]] == [["path", "task_id"]]
    else:
        assert response.json()["task_id"] == task_id.strip()


# --- who may ask ----------------------------------------------------------------------------


def test_a_user_in_no_group_gets_403_and_no_token_401(broker: redis.Redis) -> None:
    nobody = bearer(token_for(make_user("nadia")))
    task_id = str(uuid.uuid4())
    for path, params in ((f"/tasks/{task_id}", {}), ("/tasks", {"q": task_id[:8]})):
        assert get(path, nobody, **params).status_code == 403, path
        response = get(path, {}, **params)
        assert response.status_code == 401, path
        assert response["Content-Type"].startswith("application/json")


def test_an_operator_reads_it_too(operator: User, broker: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    found = story(task_id, bearer(token_for(operator)))
    assert found["summary"] == "Nothing known about this id."


def test_the_lookup_is_rate_limited_per_token(viewer: User, settings: Any) -> None:
    """It reads the result backend and up to IN_ALL queued messages: an expensive call."""
    settings.API_RATE_LIMIT = "2/min"
    cache.clear()
    headers = bearer(token_for(viewer))
    codes = [get("/tasks", headers, q="abcdefgh").status_code for _ in range(3)]
    assert codes == [200, 200, 429]
