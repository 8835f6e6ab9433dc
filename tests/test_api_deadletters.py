"""Dead letters through the API: the console's list, detail, requeue, discard,
edit and bulk actions, under the same rules as the pages."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.api.pagination import InvalidCursor, decode_cursor, encode_cursor
from dashboard.http import MAX_ID
from dashboard.models import AuditEvent
from deadletters.envelope import MAX_DEPTH
from deadletters.models import BulkAction, DeadLetter
from tests.helpers import WorkerProcess, ingest_until, make_dead_letter, make_dead_letters
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


# --- the list ----------------------------------------------------------------------


def test_cursor_pages_return_every_row_once_newest_first_without_a_count(
    op: dict[str, Any],
) -> None:
    rows = make_dead_letters(7)
    seen: list[int] = []
    cursor = None
    with CaptureQueriesContext(connection) as queries:
        while True:
            params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = get("/deadletters", op, **params).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == sorted((row.pk for row in rows), reverse=True)
    table = DeadLetter._meta.db_table
    counts = [
        q["sql"] for q in queries.captured_queries
        if table in q["sql"] and "COUNT(" in q["sql"].upper()
    ]  # fmt: skip
    assert counts == []


def test_the_list_takes_the_consoles_filters(op: dict[str, Any]) -> None:
    charge = make_dead_letter(task="payments.charge", queue="payments")
    make_dead_letter(task="emails.send", queue="emails")
    found = get("/deadletters", op, task="payments.charge", state="open").json()["items"]
    assert [item["id"] for item in found] == [charge.pk]
    found = get("/deadletters", op, queue="emails", since="2000-01-01T00:00:00Z").json()
    assert [item["task_name"] for item in found["items"]] == ["emails.send"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "lost"}, "state"),
        ({"range": "3y"}, "range"),
        ({"since": "yesterday"}, "since"),
        ({"q": "x" * 201}, "q"),
        ({"task": "a\x00b"}, "task"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_a_bad_filter_is_a_422_naming_the_field(
    op: dict[str, Any], params: dict[str, Any], field: str
) -> None:
    response = get("/deadletters", op, **params)
    assert response.status_code == 422, response.content
    assert field in [error["loc"][-1] for error in response.json()["detail"]]


@given(st.integers(min_value=1, max_value=MAX_ID))
def test_a_cursor_reads_back_as_its_id(last_id: int) -> None:
    assert decode_cursor(encode_cursor(last_id)) == last_id


@given(st.text(max_size=60))
def test_any_other_cursor_is_refused_cleanly(text: str) -> None:
    try:
        last_id = decode_cursor(text)
    except InvalidCursor:
        return
    assert encode_cursor(last_id).rstrip("=") == text.rstrip("=") or 1 <= last_id <= MAX_ID


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cursor=st.text(max_size=60))
def test_any_cursor_in_the_url_is_a_page_or_a_422(op: dict[str, Any], cursor: str) -> None:
    response = get("/deadletters", op, cursor=cursor)
    assert response.status_code in (200, 422)
    if response.status_code == 422:
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


# --- one dead letter ----------------------------------------------------------------------


def test_the_detail_is_redacted_as_the_page_is(op: dict[str, Any]) -> None:
    row = make_dead_letter(
        args=[{"password": "hunter2", "user": "ann"}],
        kwargs={"api_key": "sk_live_123", "amount": 5},
        headers={"x_sent_at": 1.0, "authorization": "Bearer abc"},
    )
    response = get(f"/deadletters/{row.pk}", op)
    assert response.status_code == 200
    body = response.json()
    assert body["args"] == [{"password": "[redacted]", "user": "ann"}]
    assert body["kwargs"] == {"api_key": "[redacted]", "amount": 5}
    assert body["headers"]["authorization"] == "[redacted]"
    for secret in ("hunter2", "sk_live_123", "Bearer abc"):
        assert secret not in response.content.decode()
    page = Client()
    page.force_login(User.objects.get(username="olivia"))
    assert "hunter2" not in page.get(row.get_absolute_url()).content.decode()


def test_a_missing_dead_letter_is_404_and_a_huge_id_is_422(op: dict[str, Any]) -> None:
    assert get("/deadletters/999999", op).status_code == 404
    assert get(f"/deadletters/{MAX_ID + 1}", op).status_code == 422
    assert get("/deadletters/abc", op).status_code == 422


# --- actions -----------------------------------------------------------------------------


def test_a_requeue_is_audited_naming_the_token_and_a_second_is_409(
    op: dict[str, Any], broker: redis.Redis
) -> None:
    row = make_dead_letter(queue="requeue-target")
    response = post(f"/deadletters/{row.pk}/requeue", op, {"reason": "fix deployed"})
    assert response.status_code == 200, response.content
    new_id = response.json()["new_task_id"]
    row.refresh_from_db()
    assert row.state == "requeued"
    assert row.requeue_task_id == new_id
    event = AuditEvent.objects.get(action="requeue")
    assert event.username == "olivia"
    assert event.reason == "fix deployed"
    assert event.details["api_token"] == "deploy-bot"
    assert event.details["via"] == "api"
    # The API's own audit log shows it too.
    audit = get("/audit", op).json()["items"][0]
    assert audit["details"]["api_token"] == "deploy-bot"

    again = post(f"/deadletters/{row.pk}/requeue", op)
    assert again.status_code == 409
    body = again.json()
    assert body["handled_by"] == "olivia"
    assert body["handled_at"] is not None
    assert "Already requeued by olivia at" in body["detail"]
    assert AuditEvent.objects.filter(action="requeue").count() == 1


def test_discard_then_requeue_is_409(op: dict[str, Any]) -> None:
    row = make_dead_letter()
    assert post(f"/deadletters/{row.pk}/discard", op).json()["state"] == "discarded"
    response = post(f"/deadletters/{row.pk}/requeue", op)
    assert response.status_code == 409
    assert response.json()["state"] == "discarded"


def test_edit_and_requeue_keeps_redacted_secrets_and_validates_as_the_page(
    op: dict[str, Any], broker: redis.Redis
) -> None:
    row = make_dead_letter(args=[1], kwargs={"token": "s3cret", "n": 1}, queue="default")
    bad = post(f"/deadletters/{row.pk}/edit", op, {"args": [], "kwargs": {}, "queue": ""})
    assert bad.status_code == 422
    assert ["body", "queue"] in [e["loc"] for e in bad.json()["detail"]]
    deep: Any = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    bad = post(f"/deadletters/{row.pk}/edit", op, {"args": deep, "kwargs": {}, "queue": "q"})
    assert bad.status_code == 422
    assert ["body", "args"] in [e["loc"] for e in bad.json()["detail"]]
    response = post(
        f"/deadletters/{row.pk}/edit",
        op,
        {"args": [2], "kwargs": {"token": "[redacted]", "n": 2}, "queue": "other"},
    )
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert (row.args, row.kwargs, row.queue) == ([2], {"token": "s3cret", "n": 2}, "other")
    event = AuditEvent.objects.get(action="edit_requeue")
    assert event.details["api_token"] == "deploy-bot"


def test_a_requeue_through_the_api_makes_a_real_worker_run_the_task(
    operator: User, broker: redis.Redis, worker: WorkerProcess
) -> None:
    """resize_image fails on its first run and succeeds once requeued."""
    from demo import tasks
    from demo.celery_app import app

    original = tasks.resize_image.delay(77, [16])
    (row,) = ingest_until(1)
    response = post(f"/deadletters/{row.pk}/requeue", bearer(token_for(operator)))
    assert response.status_code == 200, response.content
    rerun = app.AsyncResult(response.json()["new_task_id"])
    assert rerun.get(timeout=30) == "resized 77 to [16]"
    assert rerun.id != original.id


# --- groups and bulk actions ----------------------------------------------------------------


def test_groups_list_open_groups_by_name(op: dict[str, Any]) -> None:
    make_dead_letters(2, task="payments.charge", exception_type="CardDeclined")
    (group,) = get("/groups", op).json()["items"]
    assert group["open"] == 2
    assert group["name"].startswith("payments.charge · CardDeclined")
    bad = get("/groups", op, task="a\x00b")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "task"]


def test_a_bulk_requeue_by_filter_is_recorded_and_its_progress_read(
    op: dict[str, Any],
) -> None:
    make_dead_letters(3, task="payments.charge")
    make_dead_letter(task="emails.send")
    response = post(
        "/bulk", op,
        {"action": "requeue", "reason": "after the fix", "filter": {"task": "payments.charge"}},
    )  # fmt: skip
    assert response.status_code == 200, response.content
    created = response.json()
    assert (created["total"], created["state"]) == (3, "pending")
    assert "payments.charge" in created["scope"]
    action = BulkAction.objects.get(pk=created["id"])
    assert action.filter_query == "task=payments.charge"
    event = AuditEvent.objects.get(action="bulk_requeue")
    assert event.details["api_token"] == "deploy-bot"

    progress = get(f"/bulk/{action.pk}", op).json()
    assert progress["percent"] == 0
    assert progress["outcomes"] == {"succeeded": 0, "failed": 0, "retrying": 0, "not_run": 0}
    assert post(f"/bulk/{action.pk}/pause", op).json()["state"] == "paused"
    assert post(f"/bulk/{action.pk}/pause", op).status_code == 409
    assert post(f"/bulk/{action.pk}/resume", op).json()["state"] == "pending"
    assert post(f"/bulk/{action.pk}/cancel", op).json()["state"] == "cancelled"
    assert post(f"/bulk/{action.pk}/approve", op).status_code == 409


def test_a_big_bulk_action_needs_the_typed_count(op: dict[str, Any], settings: Any) -> None:
    settings.DEADLETTERS_CONFIRM_ABOVE = 2
    make_dead_letters(3)
    body: dict[str, Any] = {"action": "discard", "reason": "noise", "filter": {}}
    asked = post("/bulk", op, body)
    assert asked.status_code == 422
    (error,) = asked.json()["detail"]
    assert error["loc"] == ["body", "confirm"]
    assert error["ctx"]["total"] == 3
    done = post("/bulk", op, body | {"confirm": "3", "max_id": error["ctx"]["max_id"]})
    assert done.status_code == 200, done.content
    assert done.json()["total"] == 3


def test_bulk_by_ids_refuses_ids_and_a_filter_together(op: dict[str, Any]) -> None:
    row = make_dead_letter()
    both = {"action": "discard", "reason": "x", "ids": [row.pk], "filter": {"task": "a"}}
    response = post("/bulk", op, both)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "ids"]
    response = post("/bulk", op, {"action": "discard", "reason": "", "ids": [row.pk]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "reason"]
    assert (
        post("/bulk", op, {"action": "discard", "reason": "x", "ids": [row.pk]}).json()["total"]
        == 1
    )
