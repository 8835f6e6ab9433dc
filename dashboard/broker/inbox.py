"""Draining the dead-letter queue, for Redis and for RabbitMQ.

An inbox hands out a batch, and forgets it only on ``ack``, which the caller
sends after the batch is committed to the database. A monitor that dies between
the two leaves the batch to be delivered again; the inserts are idempotent.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from kombu import Connection, Consumer, Exchange, Queue
from kombu.message import Message

from dashboard import broker, jsonio


@dataclass(frozen=True)
class InboundMessage:
    """One message as the broker delivered it, not yet trusted."""

    body: bytes
    content_type: str
    content_encoding: str
    raw: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    # Set when the transport could not even unwrap the message.
    transport_error: str = ""


class Inbox(Protocol):
    # True when a fetch that does not wait still sees every waiting message
    # (a Redis list); False when messages arrive only while one waits (AMQP).
    polls: bool

    def fetch(self, limit: int, wait: float) -> list[InboundMessage]: ...
    def ack(self) -> None: ...
    def heartbeat(self) -> None: ...
    def recover(self) -> int: ...
    def close(self) -> None: ...


def open_inbox(queue: str, *, lease_seconds: int) -> Inbox:
    if broker.is_redis():
        return RedisInbox(queue, lease_seconds=lease_seconds)
    return AmqpInbox(queue)


# Move up to ARGV[1] messages from the queue's lists into this consumer's
# in-flight list, and renew its lease. A batch still in flight (never acked)
# is handed out again first.
_FETCH = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
local held = redis.call('LRANGE', KEYS[1], 0, -1)
if #held > 0 then return held end
local out = {}
local limit = tonumber(ARGV[1])
for i = 3, #KEYS do
  while #out < limit do
    local v = redis.call('RPOP', KEYS[i])
    if not v then break end
    redis.call('RPUSH', KEYS[1], v)
    out[#out + 1] = v
  end
end
return out
"""

# Give an in-flight list back to the consumer end of the queue, oldest last so
# that it is delivered first, unless its owner's lease is still alive.
_RESTORE = """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local n = 0
while true do
  local v = redis.call('RPOP', KEYS[1])
  if not v then break end
  redis.call('RPUSH', KEYS[3], v)
  n = n + 1
end
redis.call('DEL', KEYS[2])
return n
"""


class RedisInbox:
    """Reliable draining of a kombu queue on Redis, a batch per round trip."""

    polls = True

    def __init__(self, queue: str, *, lease_seconds: int) -> None:
        self.queue = queue
        self.client = broker.redis_client()
        self.lease_ms = lease_seconds * 1000
        prefix = broker.redis_key_prefix()
        self.consumer_id = f"{socket.gethostname()}.{uuid.uuid4().hex[:12]}"
        self.list_keys = broker.redis_priority_keys(queue)
        self.inflight_pattern = f"{prefix}{queue}.inflight."
        self.lease_pattern = f"{prefix}{queue}.consumer."
        self.inflight_key = self.inflight_pattern + self.consumer_id
        self.lease_key = self.lease_pattern + self.consumer_id
        self._fetch = self.client.register_script(_FETCH)
        self._restore = self.client.register_script(_RESTORE)

    def fetch(self, limit: int, wait: float) -> list[InboundMessage]:
        deadline = time.monotonic() + wait
        while True:
            raw = self._fetch(
                keys=[self.inflight_key, self.lease_key, *self.list_keys],
                args=[limit, self.lease_ms],
            )
            if raw or time.monotonic() >= deadline:
                return [_unwrap_kombu(item) for item in raw]
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def ack(self) -> None:
        self.client.delete(self.inflight_key)

    def heartbeat(self) -> None:
        self.client.set(self.lease_key, "1", px=self.lease_ms)

    def recover(self) -> int:
        """Return the batches of consumers whose lease ran out to the queue."""
        restored = 0
        for key in self.client.scan_iter(match=self.inflight_pattern + "*", count=100):
            name = key.decode() if isinstance(key, bytes) else str(key)
            owner = name.removeprefix(self.inflight_pattern)
            if owner == self.consumer_id:
                continue
            n = self._restore(
                keys=[name, self.lease_pattern + owner, self.list_keys[0]], args=["1"]
            )
            restored += max(0, int(n))
        return restored

    def close(self) -> None:
        """Give back what this consumer holds and drop its lease."""
        try:
            self._restore(keys=[self.inflight_key, self.lease_key, self.list_keys[0]], args=["0"])
        finally:
            self.client.close()


def _unwrap_kombu(raw: bytes) -> InboundMessage:
    """Kombu stores a message on Redis as JSON with a base64 body."""
    try:
        payload = jsonio.loads(raw)
        properties = payload.get("properties") or {}
        body = payload["body"]
        if properties.get("body_encoding") == "base64":
            body_bytes = base64.b64decode(body)
        else:
            body_bytes = body.encode(payload.get("content-encoding") or "utf-8")
        headers = payload.get("headers") or {}
        return InboundMessage(
            body=body_bytes,
            content_type=str(payload.get("content-type") or ""),
            content_encoding=str(payload.get("content-encoding") or "utf-8"),
            raw=raw,
            headers=headers if isinstance(headers, dict) else {},
        )
    except Exception as exc:  # any bytes at all: kept, and quarantined by the caller
        return InboundMessage(
            body=raw,
            content_type="",
            content_encoding="",
            raw=raw,
            transport_error=f"not a kombu message: {exc!r}",
        )


class AmqpInbox:
    """Draining through a kombu consumer with a prefetch of one batch."""

    polls = False

    def __init__(self, queue: str) -> None:
        self.connection = Connection(
            broker.broker_url(), transport_options=broker.transport_options(), heartbeat=0
        )
        self.connection.ensure_connection(max_retries=1)
        exchange = Exchange(queue, type="direct", durable=True)
        self.queue = Queue(queue, exchange, routing_key=queue, durable=True)
        self.channel = self.connection.channel()
        self._buffer: list[Message] = []
        self._unacked: list[Message] = []
        # on_message, not callbacks: kombu would otherwise decode the body,
        # and a pickle must never be loaded.
        self.consumer = Consumer(self.channel, [self.queue], on_message=self._buffer.append)
        self._prefetch = 0

    def fetch(self, limit: int, wait: float) -> list[InboundMessage]:
        if self._unacked:  # delivered before, not acked: hand out again
            return [_from_amqp(m) for m in self._unacked]
        if self._prefetch != limit:
            self.consumer.qos(prefetch_count=limit)
            self._prefetch = limit
            self.consumer.consume()
        deadline = time.monotonic() + wait
        while len(self._buffer) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.connection.drain_events(
                    timeout=min(remaining, 0.05 if self._buffer else remaining)
                )
            except TimeoutError:
                if self._buffer:
                    break
        self._unacked, self._buffer[:] = list(self._buffer[:limit]), self._buffer[limit:]
        return [_from_amqp(m) for m in self._unacked]

    def ack(self) -> None:
        if self._unacked:
            self._unacked[-1].ack(multiple=True)
            self._unacked = []

    def heartbeat(self) -> None:
        self.connection.heartbeat_check()

    def recover(self) -> int:
        return 0  # RabbitMQ returns unacked messages of a closed channel itself

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection
            self.connection.release()


def _from_amqp(message: Message) -> InboundMessage:
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    headers = message.headers or {}
    return InboundMessage(
        body=body,
        content_type=str(message.content_type or ""),
        content_encoding=str(message.content_encoding or "utf-8"),
        raw=body,
        headers=dict(headers) if isinstance(headers, dict) else {},
    )
