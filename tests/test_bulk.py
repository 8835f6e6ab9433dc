"""Bulk requeue and discard: fixed at the click, run by the monitor, counted honestly."""

from __future__ import annotations

import json
import signal
import uuid
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dashboard.broker import publish as site_publish
from dashboard.broker import redis_priority_keys
from dashboard.models import AuditEvent
from deadletters import bulk, bulk_runner
from deadletters.models import BulkAction, DeadLetter, DeadLetterGroup, DeadLetterStats
from deadletters.services import deadletter_discard, deadletter_requeue
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    make_dead_letter,
    make_dead_letters,
    make_user,
    start_monitor,
    wait_until,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_canary(settings: Any) -> None:
    """These tests are about chunks, claims and confirmations; the canary that a
    large requeue starts with has its own module (test_bulk_canary.py)."""
    settings.DEADLETTERS_CANARY_ABOVE = 10**9


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

    action = bulk_runner.run(action)
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
    bulk_runner.run(action)
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
    action = bulk_runner.run(action)
    assert (action.done, action.skipped) == (8, 2)
    assert len(published_ids(broker)) == 8


def test_failures_that_arrive_after_the_click_are_not_swept_in(
    operator_client: Client, broker: redis.Redis
) -> None:
    make_dead_letters(3, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    (late,) = make_dead_letters(1, queue=TARGET)
    action = bulk_runner.run(action)
    assert action.done == 3
    late.refresh_from_db()
    assert late.state == DeadLetter.State.OPEN


def test_discard_all_of_a_group(operator_client: Client) -> None:
    rows = make_dead_letters(4)
    action = ask(operator_client, action="discard", scope="filter", reason="known noise",
                 filter_query=f"signature={rows[0].signature}&state=open")  # fmt: skip
    action = bulk_runner.run(action)
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
        action = bulk_runner.run(action)
    finally:
        redis_server.start()
    assert action.state == BulkAction.State.FAILED
    assert (action.done, action.failed) == (0, 20)
    assert "broker" in action.last_error
    assert DeadLetter.objects.filter(state="open").count() == 20
    assert DeadLetterStats.objects.get().open == 20


def on_publishing(number: int, then: Any) -> Any:
    """A ``before_task_publish`` receiver that calls ``then()`` as message ``number`` is built."""
    built = 0

    def receiver(**_: object) -> None:
        nonlocal built
        built += 1
        if built == number:
            then()

    return receiver


def test_a_broker_lost_mid_chunk_gives_back_exactly_the_rows_it_was_never_handed(
    operator_client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    pipeline = site_publish.PIPELINE
    rows = make_dead_letters(2 * pipeline + 50, queue=TARGET)
    assert len(rows) <= settings.DEADLETTERS_BULK_CHUNK
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    # The first pipeline has gone out; the broker stops while the second fills.
    receiver = on_publishing(pipeline + pipeline // 2, redis_server.stop)
    before_task_publish.connect(receiver)
    try:
        action = bulk_runner.run(action)
    finally:
        before_task_publish.disconnect(receiver)
        redis_server.start()
    assert action.state == BulkAction.State.FAILED
    assert "broker" in action.last_error
    assert (action.done, action.failed, action.unconfirmed) == (pipeline, len(rows) - pipeline, 0)
    requeued = DeadLetter.objects.filter(state="requeued")
    assert list(requeued.order_by("pk").values_list("pk", flat=True)) == [
        r.pk for r in rows[:pipeline]
    ]
    assert sorted(published_ids(broker)) == sorted(
        requeued.values_list("requeue_task_id", flat=True)
    )
    given_back = DeadLetter.objects.filter(pk__in=[r.pk for r in rows[pipeline:]])
    assert set(given_back.values_list("state", "requeue_task_id", "bulk_action")) == {
        ("open", "", None)
    }
    stats = DeadLetterStats.objects.get(queue=TARGET)
    assert (stats.open, stats.requeued_total) == (len(rows) - pipeline, pipeline)
    assert BulkAction.objects.get(pk=action.pk).pending_ids is None


def test_a_pipeline_the_broker_never_answers_is_unconfirmed_not_given_back(
    operator_client: Client, broker: redis.Redis
) -> None:
    """Redis holds the second pipeline's writes past the client's socket timeout:
    they may or may not be queued, so those rows are not offered again."""
    pipeline = site_publish.PIPELINE
    rows = make_dead_letters(2 * pipeline + 50, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    # PING still answers in a write pause; LPUSH waits (socket timeout: 5 s).
    receiver = on_publishing(pipeline + 1, lambda: broker.client_pause(20_000, all=False))
    before_task_publish.connect(receiver)
    try:
        action = bulk_runner.run(action)
    finally:
        before_task_publish.disconnect(receiver)
        broker.client_unpause()
    assert action.state == BulkAction.State.FAILED
    assert (action.done, action.unconfirmed, action.failed) == (pipeline, pipeline, 50)
    requeued = DeadLetter.objects.filter(state="requeued")
    assert list(requeued.order_by("pk").values_list("pk", flat=True)) == [
        r.pk for r in rows[: 2 * pipeline]
    ]
    assert DeadLetter.objects.filter(state="open").count() == 50
    ids = published_ids(broker)
    assert len(ids) == len(set(ids))
    assert set(ids) <= set(requeued.values_list("requeue_task_id", flat=True))
    assert pipeline <= len(ids) <= 2 * pipeline
    assert DeadLetterStats.objects.get(queue=TARGET).open == 50


def claimed_before_a_crash(action: BulkAction, rows: list[DeadLetter]) -> None:
    """What a claim commit leaves: the rows requeued by the action, new task ids."""
    for row in rows:
        DeadLetter.objects.filter(pk=row.pk).update(
            state=DeadLetter.State.REQUEUED, requeue_task_id=str(uuid.uuid4()),
            requeued_at=timezone.now(), bulk_action=action,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("left", "unconfirmed"),
    [("handed to the broker", 3), ("claimed, not handed yet", 0)],
)
def test_a_run_resumes_after_a_crash_between_claim_and_confirmation(
    operator_client: Client, broker: redis.Redis, left: str, unconfirmed: int
) -> None:
    rows = make_dead_letters(6, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    crashed = rows[:3]
    ids = [r.pk for r in crashed]
    # What the claim commit left: the cursor past the chunk, its ids on the action.
    progress: dict[str, Any] = {"cursor": crashed[-1].pk}
    if left == "handed to the broker":
        claimed_before_a_crash(action, crashed)
        progress["pending_ids"] = ids
    else:
        claimed_before_a_crash(action, crashed)
        progress["claimed_ids"] = ids
    BulkAction.objects.filter(pk=action.pk).update(state=BulkAction.State.RUNNING, **progress)
    action.refresh_from_db()

    action = bulk_runner.run(action)
    assert (action.done, action.unconfirmed, action.skipped, action.failed) == (
        6 - unconfirmed, unconfirmed, 0, 0,
    )  # fmt: skip
    assert action.pending_ids is None
    assert action.claimed_ids is None
    published = DeadLetter.objects.filter(pk__in=[r.pk for r in rows[unconfirmed:]])
    assert sorted(published_ids(broker)) == sorted(
        published.values_list("requeue_task_id", flat=True)
    )
    stats = DeadLetterStats.objects.get(queue=TARGET)
    assert (stats.open, stats.requeued_total) == (0, 6)


def test_across_many_chunks_each_row_is_counted_and_published_once(
    operator_client: Client, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "DEADLETTERS_BULK_CHUNK", 4)
    rows = make_dead_letters(30, queue=TARGET)
    make_dead_letter(queue=TARGET, args=["a\x00b"])  # stored lossy: cannot be requeued
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    someone = make_user("sam", group="Operator")
    for row in rows[4:8]:  # a whole chunk, handled meanwhile
        deadletter_discard(dead_letter=row, user=someone)
    action = bulk_runner.run(action)
    assert action.state == BulkAction.State.DONE
    assert (action.done, action.skipped, action.failed, action.unconfirmed) == (26, 4, 1, 0)
    ids = published_ids(broker)
    assert len(ids) == len(set(ids)) == 26
    assert set(ids) == set(
        DeadLetter.objects.filter(state="requeued").values_list("requeue_task_id", flat=True)
    )
    assert (action.pending_ids, action.claimed_ids) == (None, None)


def test_with_the_broker_down_the_chunk_claimed_meanwhile_is_given_back_too(
    operator_client: Client,
    broker: redis.Redis,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "DEADLETTERS_BULK_CHUNK", 20)
    make_dead_letters(50, queue=TARGET)
    action = ask(operator_client, action="requeue", scope="filter", reason="r",
                 filter_query=f"queue={TARGET}")  # fmt: skip
    redis_server.stop()
    try:
        action = bulk_runner.run(action)
    finally:
        redis_server.start()
    assert action.state == BulkAction.State.FAILED
    assert (action.done, action.failed, action.unconfirmed) == (0, 50, 0)
    assert set(DeadLetter.objects.values_list("state", "requeue_task_id", "bulk_action")) == {
        ("open", "", None)
    }
    assert (action.pending_ids, action.claimed_ids) == (None, None)
    assert DeadLetterStats.objects.get(queue=TARGET).open == 50


def test_a_bulk_requeue_publishes_what_a_single_requeue_publishes(
    operator_client: Client, operator: User, broker: redis.Redis
) -> None:
    single, bulked = make_dead_letters(
        2, queue=TARGET, priority=5, args=["a", {"b": [1, 2.5, None]}], kwargs={"c": True},
        headers={"x_sent_at": 1.0, "x_queue": TARGET, "tenant": "acme"},
    )  # fmt: skip
    deadletter_requeue(dead_letter=single, user=operator)
    bulk_runner.run(ask(operator_client, action="requeue", scope="selected", reason="r",
                 ids=[bulked.pk]))  # fmt: skip
    single.refresh_from_db()
    bulked.refresh_from_db()

    def comparable(raw: bytes | str, dead_letter: DeadLetter) -> str:
        message = json.loads(raw)
        del message["properties"]["delivery_tag"]  # random
        # Celery's id of the publishing thread; the bulk publishes from a thread of its own.
        assert message["properties"].pop("reply_to")
        assert message["headers"].pop("x_sent_at") > 1.0
        text = json.dumps(message, sort_keys=True)
        text = text.replace(dead_letter.requeue_task_id, "<new id>")
        return text.replace(dead_letter.task_id, "<old id>")

    # Priority 5 is kept in one of the queue's priority lists, not in the queue's own.
    first, second = [
        raw for key in redis_priority_keys(TARGET) for raw in broker.lrange(key, 0, -1)[::-1]
    ]
    assert comparable(second, bulked) == comparable(first, single)


def test_a_chunk_costs_the_same_queries_whatever_its_size(
    operator_client: Client, broker: redis.Redis
) -> None:
    def queries(count: int) -> int:
        rows = make_dead_letters(count, queue=TARGET)
        action = ask(operator_client, action="requeue", scope="selected", reason="r",
                     ids=[r.pk for r in rows])  # fmt: skip
        with CaptureQueriesContext(connection) as captured:
            assert bulk_runner.run(action).done == count
        return len(captured.captured_queries)

    assert queries(2) == queries(40)


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
    bulk_runner.run(action)
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

    # Small chunks: the run takes hundreds of them, so the kill lands while it goes on.
    chunk = {"DEADLETTERS_BULK_CHUNK": "10", "DEADLETTERS_CANARY_ABOVE": str(10**9)}

    def some_done_but_not_all() -> bool:
        row = BulkAction.objects.get(pk=action.pk)
        assert not row.is_finished, "the run ended before the monitor could be killed"
        return row.done > 0

    first, _ = start_monitor(**chunk)
    try:
        wait_until(some_done_but_not_all, timeout=120, interval=0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert BulkAction.objects.get(pk=action.pk).state == BulkAction.State.RUNNING

    second, _ = start_monitor(**chunk)
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


def test_a_stored_action_with_a_filter_the_list_refuses_fails_and_holds_up_nothing(
    operator_client: Client, broker: redis.Redis
) -> None:
    make_dead_letters(3, queue=TARGET)
    broken = BulkAction.objects.create(
        action="discard", reason="r", filter_query="until=2000-13-01", max_id=10**6, total=0
    )
    following = ask(operator_client, action="discard", scope="filter", reason="r",
                    filter_query=f"queue={TARGET}")  # fmt: skip
    bulk_runner.run_pending()
    broken.refresh_from_db()
    assert broken.state == BulkAction.State.FAILED
    assert "invalid filter" in broken.last_error
    bulk_runner.run_pending()
    following.refresh_from_db()
    assert following.state == BulkAction.State.DONE
    assert following.done == 3
