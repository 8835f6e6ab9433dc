"""Queue depth and age on a real Redis: every priority list, every key prefix."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from dashboard.broker.depths import RedisDepths, is_plumbing
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import WorkerProcess


@pytest.fixture
def queue_name(broker: redis.Redis) -> Iterator[str]:
    """A queue of this test's own; its lists and bindings are deleted afterwards."""
    name = f"depth-{uuid.uuid4().hex[:8]}"
    yield name
    keys = [*broker.scan_iter(match=f"*{name}*")]
    if keys:
        broker.delete(*keys)


def publish(
    url: str,
    queue: str,
    count: int,
    *,
    priority: int = 0,
    headers: dict[str, object] | None = None,
    transport_options: dict[str, Any] | None = None,
) -> None:
    """Publish through kombu, the way Celery producers reach Redis."""
    target = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
    with Connection(url, transport_options=transport_options or {}) as conn:
        producer = conn.Producer()
        for n in range(count):
            producer.publish(
                {"n": n},
                exchange=target.exchange,
                routing_key=queue,
                declare=[target],
                serializer="json",
                priority=priority,
                headers=headers,
            )


def test_depth_is_the_sum_over_every_priority_list(
    redis_server: EmbeddedRedis, broker: redis.Redis, queue_name: str
) -> None:
    publish(redis_server.url, queue_name, 3)
    publish(redis_server.url, queue_name, 2, priority=5)
    publish(redis_server.url, queue_name, 4, priority=9)
    lists = [key for key in broker.scan_iter(match=f"{queue_name}*") if broker.type(key) == b"list"]
    assert len(lists) == 3, "kombu spread the messages over three priority lists"

    reader = RedisDepths()
    try:
        depth = reader.sample([queue_name])[queue_name]
    finally:
        reader.close()
    assert depth.depth == 9
    assert depth.ready == 9
    assert depth.unacked is None  # Redis does not tell
    assert depth.consumers is None


def test_it_honours_global_keyprefix_and_custom_priority_steps(
    redis_server: EmbeddedRedis, broker: redis.Redis, queue_name: str, settings: object
) -> None:
    options: dict[str, Any] = {"global_keyprefix": "team1:", "priority_steps": [0, 5]}
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {  # type: ignore[attr-defined]
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,  # type: ignore[attr-defined]
        **options,
    }
    publish(redis_server.url, queue_name, 2, transport_options=options)
    publish(redis_server.url, queue_name, 3, priority=7, transport_options=options)
    assert broker.llen(f"team1:{queue_name}") == 2
    assert broker.llen(f"team1:{queue_name}\x06\x165") == 3

    reader = RedisDepths()
    try:
        assert reader.sample([queue_name])[queue_name].depth == 5
        assert queue_name in reader.discover()
    finally:
        reader.close()
    for key in broker.scan_iter(match="team1:*"):
        broker.delete(key)


def test_the_oldest_message_age_comes_from_its_x_sent_at_stamp(
    redis_server: EmbeddedRedis, broker: redis.Redis, queue_name: str
) -> None:
    sent = time.time() - 300
    publish(redis_server.url, queue_name, 1, priority=9, headers={"x_sent_at": sent + 100})
    # The oldest, with a big header after its stamp: not near the end of the message.
    publish(redis_server.url, queue_name, 1, headers={"x_sent_at": sent, "trace": "t" * 3000})
    publish(redis_server.url, queue_name, 1, headers={"x_sent_at": sent + 200})

    reader = RedisDepths()
    try:
        depth = reader.sample([queue_name])[queue_name]
    finally:
        reader.close()
    assert depth.oldest_sent_at == pytest.approx(sent, abs=1e-3)


def test_without_a_stamp_the_age_is_unknown_not_zero(
    redis_server: EmbeddedRedis, broker: redis.Redis, queue_name: str
) -> None:
    publish(redis_server.url, queue_name, 2, headers={"tenant": "acme"})
    reader = RedisDepths()
    try:
        depth = reader.sample([queue_name, "never-declared"])
    finally:
        reader.close()
    assert depth[queue_name].depth == 2
    assert depth[queue_name].oldest_sent_at is None
    assert depth["never-declared"].depth == 0
    assert depth["never-declared"].oldest_sent_at is None


def test_a_stamp_in_the_arguments_is_not_taken_for_the_header(
    redis_server: EmbeddedRedis, broker: redis.Redis, queue_name: str
) -> None:
    """A kwargsrepr header quoting "x_sent_at" is a JSON string, escaped: not a key."""
    publish(
        redis_server.url,
        queue_name,
        1,
        headers={"kwargsrepr": "{'x_sent_at': 1}", "note": '"x_sent_at": 2'},
    )
    reader = RedisDepths()
    try:
        assert reader.sample([queue_name])[queue_name].oldest_sent_at is None
    finally:
        reader.close()


def test_the_hook_stamps_what_the_age_is_read_from(
    broker: redis.Redis, redis_server: EmbeddedRedis, queue_name: str
) -> None:
    from demo import tasks

    before = time.time()
    tasks.add.apply_async((1, 2), queue=queue_name, priority=6)  # nobody consumes it
    after = time.time()
    reader = RedisDepths()
    try:
        depth = reader.sample([queue_name])[queue_name]
    finally:
        reader.close()
    assert depth.depth == 1
    assert depth.oldest_sent_at is not None
    assert before <= depth.oldest_sent_at <= after


def test_queues_are_discovered_from_kombu_bindings_without_celery_plumbing(
    broker: redis.Redis, worker: WorkerProcess, queue_name: str, redis_server: EmbeddedRedis
) -> None:
    publish(redis_server.url, queue_name, 1)
    reader = RedisDepths()
    try:
        found = reader.discover()
    finally:
        reader.close()
    assert {queue_name, "default", "emails", "reports"} <= found
    assert not [name for name in found if is_plumbing(name)]
    assert not [name for name in found if "pidbox" in name or name.startswith("celeryev")]


def test_one_round_trip_reads_every_queue(
    redis_server: EmbeddedRedis,
    broker: redis.Redis,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"{queue_name}-{n}" for n in range(50)]
    for n, name in enumerate(names):
        publish(redis_server.url, name, 1 + n % 3, priority=n % 10)
    reader = RedisDepths()
    try:
        reader.sample(names[:1])  # loads the script into Redis
        calls: list[object] = []
        send = reader.client.execute_command

        def counted(*args: object, **kwargs: object) -> object:
            calls.append(args[0])
            return send(*args, **kwargs)

        monkeypatch.setattr(reader.client, "execute_command", counted)
        depths = reader.sample(names)
    finally:
        reader.close()
    assert calls == ["EVALSHA"]
    assert [depths[name].depth for name in names] == [1 + n % 3 for n in range(50)]
    for name in names:
        for key in broker.scan_iter(match=f"*{name}*"):
            broker.delete(key)
