"""Bulk requeue and discard: fixed at the click, run by the monitor, counted honestly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.embedded_redis import EmbeddedRedis
from dashboard.models import AuditEvent
from deadletters import bulk
from deadletters.models import BulkAction, DeadLetter, DeadLetterGroup, DeadLetterStats
from deadletters.services import deadletter_discard
from tests.conftest import ROOT, make_dead_letters, make_user, subprocess_env, wait_until
from tests.testenv import DATA_DIR

pytestmark = pytest.mark.django_db

TARGET = "requeue-target"


def published_ids(client: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(TARGET, 0, -1)]


def ask(client: Client, **data: object) -> BulkAction:
    response = client.post(reverse("deadletters:bulk_create"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    return BulkAction.objects.get(pk=int(response["Location"].rstrip("/").split("/")[-1]))


def test_requeue_all_matching_a_filter(
    operator_client: Client, operator: User, broker: redis.Redis
) -> None:
    rows = make_dead_letters(30, queue=TARGET)
    make_dead_letters(5, queue="elsewhere")
    action = ask(operator_client, action="requeue", scope="filter", reason="fix shipped",
                 filter_query=f"queue={TARGET}&state=open")  # fmt: skip
    assert action.total == 30
    assert action.filter_description == f"queue {TARGET!r}"

    action = bulk.run(action)
    assert action.state == BulkAction.State.DONE
    assert (action.done, action.skipped, action.failed, action.unconfirmed) == (30, 0, 0, 0)
    requeued = DeadLetter.objects.filter(pk__in=[r.pk for r in rows])
    assert set(requeued.values_list("state", flat=True)) == {"requeued"}
    assert sorted(published_ids(broker)) == sorted(
        requeued.values_list("requeue_task_id", flat=True)
    )
    assert DeadLetter.objects.filter(queue="elsewhere", state="open").count() == 5
    assert requeued.first().requeued_by == operator  # type: ignore[union-attr]
    group = DeadLetterGroup.objects.get(signature=rows[0].signature)
    assert group.open == 5  # the five elsewhere share the signature
    stats = DeadLetterStats.objects.get(queue=TARGET)
    assert (stats.open, stats.requeued_total) == (0, 30)
    audit = list(AuditEvent.objects.order_by("id").values_list("action", "count", "reason"))
    assert audit == [
        ("bulk_requeue", 30, "fix shipped"),
        ("bulk_requeue_finished", 30, "fix shipped"),
    ]


def test_requeue_only_the_ticked_rows(operator_client: Client, broker: redis.Redis) -> None:
    rows = make_dead_letters(5, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="selected", reason="these",
                 ids=[rows[0].pk, rows[3].pk])  # fmt: skip
    bulk.run(action)
    assert sorted(DeadLetter.objects.filter(state="requeued").values_list("pk", flat=True)) == [
        rows[0].pk, rows[3].pk,
    ]  # fmt: skip
    assert len(published_ids(broker)) == 2


def test_a_reason_is_required(operator_client: Client) -> None:
    make_dead_letters(2)
    response = operator_client.post(
        reverse("deadletters:bulk_create"),
        {"action": "discard", "scope": "filter", "filter_query": "", "reason": ""},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    assert b"Say why" in response.content
    assert not BulkAction.objects.exists()


def test_a_big_batch_asks_for_the_number_typed(operator_client: Client, settings: object) -> None:
    settings.DEADLETTERS_CONFIRM_ABOVE = 5  # type: ignore[attr-defined]
    make_dead_letters(8)
    data = {"action": "discard", "scope": "filter", "filter_query": "", "reason": "noise"}
    response = operator_client.post(
        reverse("deadletters:bulk_create"), data, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 422
    assert b"Type <b>8</b> to confirm" in response.content
    wrong = operator_client.post(reverse("deadletters:bulk_create"), {**data, "confirm": "80"},
                                 HTTP_HX_REQUEST="true")  # fmt: skip
    assert wrong.status_code == 422
    assert not BulkAction.objects.exists()
    right = operator_client.post(reverse("deadletters:bulk_create"), {**data, "confirm": "8"},
                                 HTTP_HX_REQUEST="true")  # fmt: skip
    assert right.status_code == 200
    assert right["HX-Redirect"] == BulkAction.objects.get().get_absolute_url()


def test_rows_handled_by_someone_else_meanwhile_are_skipped(
    operator_client: Client, broker: redis.Redis
) -> None:
    rows = make_dead_letters(10, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    someone = make_user("sam", group="Operator")
    for row in rows[:2]:
        deadletter_discard(dead_letter=row, user=someone)
    action = bulk.run(action)
    assert (action.done, action.skipped) == (8, 2)
    assert len(published_ids(broker)) == 8


def test_failures_that_arrive_after_the_click_are_not_swept_in(
    operator_client: Client, broker: redis.Redis
) -> None:
    make_dead_letters(3, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    (late,) = make_dead_letters(1, queue=TARGET)
    action = bulk.run(action)
    assert action.done == 3
    late.refresh_from_db()
    assert late.state == DeadLetter.State.OPEN


def test_discard_all_of_a_group(operator_client: Client) -> None:
    rows = make_dead_letters(4)
    action = ask(operator_client, action="discard", scope="filter", reason="known noise",
                 filter_query=f"signature={rows[0].signature}&state=open")  # fmt: skip
    action = bulk.run(action)
    assert action.done == 4
    assert DeadLetterGroup.objects.get(signature=rows[0].signature).open == 0
    assert DeadLetterStats.objects.get().discarded_total == 4


def test_with_the_broker_down_the_rest_stays_open_and_counts_as_failed(
    operator_client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    make_dead_letters(20, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    redis_server.stop()
    try:
        action = bulk.run(action)
    finally:
        redis_server.start()
    assert action.state == BulkAction.State.FAILED
    assert (action.done, action.failed) == (0, 20)
    assert "broker" in action.last_error
    assert DeadLetter.objects.filter(state="open").count() == 20
    assert DeadLetterStats.objects.get().open == 20


def test_a_viewer_cannot_start_a_bulk_action(viewer_client: Client) -> None:
    make_dead_letters(2)
    response = viewer_client.post(
        reverse("deadletters:bulk_create"),
        {"action": "requeue", "scope": "filter", "filter_query": "", "reason": "r"},
    )
    assert response.status_code == 403
    assert not BulkAction.objects.exists()


def test_the_progress_page_polls_until_done(operator_client: Client, broker: redis.Redis) -> None:
    make_dead_letters(3, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    page = operator_client.get(action.get_absolute_url()).content.decode()
    assert "<html" in page and "data-poll-while-visible" in page
    bulk.run(action)
    fragment = operator_client.get(action.get_absolute_url(), HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert "<html" not in html
    assert "hx-trigger" not in html
    assert "<dd data-done>3</dd>" in html
    assert 'value="3"' in html


@pytest.mark.django_db(transaction=True)
def test_a_monitor_killed_mid_requeue_resumes_without_publishing_twice(
    broker: redis.Redis,
) -> None:
    operator = make_user("olivia", group="Operator")
    make_dead_letters(3_000, queue=TARGET)
    action = bulk.create(
        user=operator, action="requeue", reason="r", filter_query=f"queue={TARGET}"
    )

    def monitor() -> subprocess.Popen[bytes]:
        log = (DATA_DIR / f"monitor-bulk-{time.monotonic_ns()}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "manage.py", "monitor"],
            cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    first = monitor()
    try:
        wait_until(lambda: BulkAction.objects.get(pk=action.pk).done >= 500, timeout=120)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert BulkAction.objects.get(pk=action.pk).state == BulkAction.State.RUNNING

    second = monitor()
    try:
        wait_until(lambda: BulkAction.objects.get(pk=action.pk).is_finished, timeout=180)
    finally:
        second.terminate()
        second.wait(15)
    action.refresh_from_db()
    ids = published_ids(broker)
    assert len(ids) == len(set(ids)), "a message was published twice"
    assert action.done + action.skipped + action.failed + action.unconfirmed == 3_000
    assert action.skipped == action.failed == 0
    assert action.done <= len(ids) <= action.done + action.unconfirmed
    requeued = set(
        DeadLetter.objects.filter(state="requeued").values_list("requeue_task_id", flat=True)
    )
    assert set(ids) <= requeued
    assert len(requeued) == 3_000
    assert not DeadLetter.objects.filter(requeue_pending=True).exists()
