"""Ingestion keeps every message: valid ones as rows, once; the rest quarantined."""

from __future__ import annotations

import json
import pickle

import pytest
import redis

from deadletters.envelope import normalise_message, signature
from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    dead_letter_queue_length,
    ingest,
    make_envelope,
    publish_envelope,
    publish_raw,
)

pytestmark = pytest.mark.django_db


def test_a_valid_envelope_becomes_an_open_row(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    envelope = make_envelope(priority=6, eta="2026-01-01T00:00:00+00:00")
    publish_envelope(redis_server.url, envelope)
    assert ingest() == 1
    row = DeadLetter.objects.get()
    assert row.task_id == envelope["id"]
    assert row.args == envelope["args"]
    assert row.kwargs == envelope["kwargs"]
    assert row.priority == 6
    assert row.eta is not None
    assert row.eta.year == 2026
    assert row.state == DeadLetter.State.OPEN
    assert row.signature == signature(envelope["task"], "ValueError", envelope["exception_message"])
    assert dead_letter_queue_length(broker) == 0


def test_the_same_failure_delivered_twice_is_one_row(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    envelope = make_envelope()
    publish_envelope(redis_server.url, envelope)
    publish_envelope(redis_server.url, envelope)
    ingest()
    publish_envelope(redis_server.url, envelope)  # a redelivery in a later batch
    ingest()
    assert DeadLetter.objects.filter(task_id=envelope["id"]).count() == 1


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{not json", "application/json", "the body is not valid JSON"),
        (
            json.dumps({"v": 2, "id": "x"}).encode(),
            "application/json",
            "unknown envelope version 2",
        ),
        (json.dumps({"v": 1, "id": "x"}).encode(), "application/json", "the envelope lacks task"),
        (json.dumps([1, 2]).encode(), "application/json", "the envelope is not a JSON object"),
        (
            json.dumps({**make_envelope(), "kind": "sneeze"}).encode(),
            "application/json",
            "kind 'sneeze' is not one of",
        ),
        (b"<xml/>", "application/xml", "content type 'application/xml' is not JSON"),
    ],
)
def test_a_message_that_is_not_an_envelope_is_quarantined_with_its_bytes(
    broker: redis.Redis, redis_server: EmbeddedRedis, body: bytes, content_type: str, reason: str
) -> None:
    publish_raw(redis_server.url, body, content_type=content_type, content_encoding="utf-8")
    assert ingest() == 1
    row = DeadLetter.objects.get()
    assert row.kind == DeadLetter.Kind.QUARANTINED
    assert reason in row.quarantine_reason
    assert body in bytes(row.raw_body or b"")
    assert not row.is_requeueable


def test_a_pickle_is_quarantined_and_never_loaded(
    broker: redis.Redis, redis_server: EmbeddedRedis, tmp_path: object
) -> None:
    from pathlib import Path

    witness = Path(str(tmp_path)) / "unpickled"

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (f"open({str(witness)!r}, 'w').close()",))

    payload = pickle.dumps(Boom())
    publish_raw(
        redis_server.url,
        payload,
        content_type="application/x-python-serialize",
        content_encoding="binary",
    )
    assert ingest() == 1
    row = DeadLetter.objects.get()
    assert "application/x-python-serialize" in row.quarantine_reason
    assert "never loaded" in row.quarantine_reason
    assert not witness.exists()


def test_bytes_that_are_not_even_a_kombu_message_are_kept(broker: redis.Redis) -> None:
    broker.lpush("deadletters", b"\xff\xfegarbage")
    assert ingest() == 1
    row = DeadLetter.objects.get()
    assert "not a kombu message" in row.quarantine_reason
    assert bytes(row.raw_body or b"") == b"\xff\xfegarbage"


def test_a_bad_message_does_not_stop_the_good_ones_around_it(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    first, last = make_envelope(), make_envelope()
    publish_envelope(redis_server.url, first)
    publish_raw(
        redis_server.url,
        b"\x00\x01",
        content_type="application/octet-stream",
        content_encoding="binary",
    )
    publish_envelope(redis_server.url, last)
    assert ingest() == 3
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) >= {first["id"], last["id"]}
    assert DeadLetter.objects.filter(kind="quarantined").count() == 1


def test_nul_characters_are_stored_and_flag_the_row_as_not_faithful(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    """PostgreSQL refuses NUL in text and jsonb; the row must still be kept."""
    publish_envelope(redis_server.url, make_envelope(args=["a\x00b"], exception_message="x\x00y"))
    assert ingest() == 1
    row = DeadLetter.objects.get()
    assert row.args == ["a\ufffdb"]
    assert row.lossy
    assert not row.is_requeueable


def test_a_requeued_task_that_fails_again_links_to_its_origin(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    origin = make_envelope()
    publish_envelope(redis_server.url, origin)
    ingest()
    again = make_envelope(requeued_from=origin["id"], parent_id=origin["id"])
    publish_envelope(redis_server.url, again)
    ingest()
    row = DeadLetter.objects.get(task_id=again["id"])
    assert row.requeued_from == DeadLetter.objects.get(task_id=origin["id"])


def test_messages_in_priority_lists_are_drained_too(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Kombu keeps priority N of queue q in 'q\\x06\\x16N'."""
    from kombu import Connection, Exchange, Queue

    with Connection(redis_server.url) as c:
        queue = Queue(
            "deadletters",
            Exchange("deadletters", type="direct"),
            routing_key="deadletters",
            max_priority=9,
        )
        c.Producer().publish(
            make_envelope(),
            exchange=queue.exchange,
            routing_key="deadletters",
            declare=[queue],
            serializer="json",
            priority=9,
        )
    assert broker.llen("deadletters\x06\x169") == 1
    assert ingest() == 1


def test_signatures_ignore_numbers_ids_and_hex() -> None:
    a = "user 123 not found in shard 0x1f (request 6f1c3a5e-1b2c-4d5e-8f90-1234567890ab)"
    b = "user 98 not found in shard 0xa0 (request 0b0c3a5e-1b2c-4d5e-8f90-ba9876543210)"
    assert (
        normalise_message(a)
        == normalise_message(b)
        == ("user <n> not found in shard <hex> (request <id>)")
    )
    assert signature("t", "KeyError", a) == signature("t", "KeyError", b)
    assert signature("t", "KeyError", a) != signature("t", "ValueError", a)
    assert signature("t", "KeyError", a) != signature("u", "KeyError", a)


def test_groups_and_counters_count_each_stored_failure_once(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    from deadletters.models import DeadLetterGroup, DeadLetterGroupHour, DeadLetterStats

    first = make_envelope(exception_message="image 1 has an unsupported colour profile")
    second = make_envelope(exception_message="image 2 has an unsupported colour profile")
    other = make_envelope(exception_type="KeyError", exception_message="'x'", queue="emails")
    for envelope in (first, second, other, first):  # the last is a redelivery
        publish_envelope(redis_server.url, envelope)
    ingest()
    publish_envelope(redis_server.url, second)  # a redelivery in a later batch
    ingest()

    group = DeadLetterGroup.objects.get(
        signature=DeadLetter.objects.get(task_id=first["id"]).signature
    )
    assert group.total == 2
    assert group.open == 2
    assert group.exception_type == "ValueError"
    assert group.first_seen <= group.last_seen
    assert DeadLetterGroup.objects.count() == 2
    assert sum(DeadLetterGroupHour.objects.values_list("count", flat=True)) == 3
    stats = {
        (s.task_name, s.queue): (s.received_total, s.open) for s in DeadLetterStats.objects.all()
    }
    assert stats == {
        ("demo.tasks.resize_image", "default"): (2, 2),
        ("demo.tasks.resize_image", "emails"): (1, 1),
    }
