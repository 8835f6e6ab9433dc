"""Queue depths and ages, read from the broker: the one place that does it.

Redis: one server-side script reads, for every queue, the length of each of its
priority lists and the publish stamp (``x_sent_at``) of the oldest message at
the consumer end of each list: one round trip for all queues, however many.
RabbitMQ: the management API when ``RABBITMQ_MANAGEMENT_URL`` is set (ready,
unacknowledged, consumers, the head message's timestamp), otherwise a passive
``queue_declare`` per queue (ready and consumers only).

A figure the broker does not give is ``None``, never 0.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from amqp.exceptions import NotFound
from django.conf import settings
from kombu import Connection

from dashboard import broker

logger = logging.getLogger("dashboard.depths")

# Celery's own plumbing, never a task queue: the remote-control mailboxes,
# their reply queues and the event queues.
_PLUMBING_SUFFIXES = (".pidbox",)
_PLUMBING_PREFIXES = ("celeryev.",)
_PLUMBING_EXCHANGES = {"celeryev"}


class DepthError(Exception):
    """The broker answered, but not in a way we can read."""


@dataclass(frozen=True)
class QueueDepth:
    name: str
    # False when the broker says there is no such queue (RabbitMQ).
    exists: bool = True
    depth: int | None = None
    ready: int | None = None
    unacked: int | None = None
    # Consumers as the broker counts them; Redis does not know.
    consumers: int | None = None
    # Epoch seconds of the oldest stamped message, where a stamp was found.
    oldest_sent_at: float | None = None


class DepthReader(Protocol):
    # True when discover() costs no more than a sample (it is done every round).
    cheap_discovery: bool

    def discover(self) -> set[str]: ...
    def sample(self, names: Collection[str]) -> dict[str, QueueDepth]: ...
    def close(self) -> None: ...


def open_reader() -> DepthReader:
    if broker.is_redis():
        return RedisDepths()
    if broker.is_amqp():
        if settings.RABBITMQ_MANAGEMENT_URL:
            return RabbitManagementDepths(settings.RABBITMQ_MANAGEMENT_URL, broker.broker_url())
        return RabbitPassiveDepths(broker.broker_url())
    raise DepthError(f"cannot read queue depths from a {broker.broker_scheme()!r} broker")


def is_plumbing(queue: str, exchange: str = "") -> bool:
    """Queues of Celery's and the dashboard's own machinery, not a team's work
    (the outcome reports' queue is drained by the monitor like the events)."""
    return (
        not queue
        or queue == settings.OPS_OUTCOMES_QUEUE
        or queue.endswith(_PLUMBING_SUFFIXES)
        or queue.startswith(_PLUMBING_PREFIXES)
        or exchange.endswith(_PLUMBING_SUFFIXES)
        or exchange in _PLUMBING_EXCHANGES
    )


# --- Redis ---------------------------------------------------------------------------

# ARGV: key prefix, separator, priority steps (comma-separated), and the queue
# names as one JSON array. Returns a JSON array of [depth, oldest stamp or
# false] per queue, in order: one bulk string each way costs far less, in
# Python, than thousands of RESP items.
#
# The keys are built here from the names rather than passed as KEYS, which
# would multiply what the client sends. A Redis Cluster would refuse that, but
# kombu's Redis transport does not run on a cluster either.
#
# Kombu LPUSHes a message and its consumers RPOP, so the oldest message of a
# list is at index -1. A message is JSON with the body first (base64, any size)
# and the headers after it; the stamp is looked for near the end, then in the
# last 64 KiB. An unescaped "x_sent_at" followed by a colon can only be a key:
# quotes inside JSON strings are always escaped.
_SAMPLE_SCRIPT = """
local call, find, match, tonumber = redis.call, string.find, string.match, tonumber
local prefix, sep = ARGV[1], ARGV[2]
local suffixes = {}
for step in string.gmatch(ARGV[3], '[^,]+') do
  suffixes[#suffixes + 1] = step == '0' and '' or sep .. step
end
local names = cjson.decode(ARGV[4])
local function stamp(message)
  local size, last, _ = #message, nil, nil
  if size > 512 then _, last = find(message, '"x_sent_at"', size - 512, true) end
  if not last then
    _, last = find(message, '"x_sent_at"', math.max(1, size - 65536), true)
  end
  return last and match(message, '^%s*:%s*(-?[%d%.eE+-]+)', last + 1)
end
local out = {}
for i = 1, #names do
  local base = prefix .. names[i]
  local depth, oldest, oldest_text = 0, nil, false
  for s = 1, #suffixes do
    local key = base .. suffixes[s]
    local n = call('LLEN', key)
    if n > 0 then
      depth = depth + n
      local text = stamp(call('LINDEX', key, -1))
      local value = text and tonumber(text)
      if value and (oldest == nil or value < oldest) then
        oldest, oldest_text = value, text
      end
    end
  end
  out[i] = {depth, oldest_text}
end
return cjson.encode(out)
"""


class RedisDepths:
    cheap_discovery = False

    def __init__(self) -> None:
        self.client = broker.redis_client()
        self.prefix = broker.redis_key_prefix()
        self.sep, steps = broker.redis_priority_layout()
        self.steps = ",".join(map(str, steps))
        self._script = self.client.register_script(_SAMPLE_SCRIPT)

    def sample(self, names: Collection[str]) -> dict[str, QueueDepth]:
        ordered = list(names)
        if not ordered:
            return {}
        raw = self._script(args=[self.prefix, self.sep, self.steps, json.dumps(ordered)])
        try:
            rows = json.loads(raw)
        except ValueError as exc:
            raise DepthError(f"the sampling script returned {raw[:200]!r}") from exc
        depths = {}
        for name, (depth, oldest) in zip(ordered, rows, strict=True):
            # redis-py may hand back bytes or str depending on decode_responses.
            sent_at = float(oldest) if oldest else None
            depths[name] = QueueDepth(
                name, depth=int(depth), ready=int(depth), oldest_sent_at=sent_at
            )
        return depths

    def discover(self) -> set[str]:
        """Queues bound to an exchange, from kombu's ``_kombu.binding.<exchange>`` sets.

        Each member is ``routing_key + sep + pattern + sep + queue``.
        """
        table_prefix = f"{self.prefix}_kombu.binding."
        tables = [
            key.decode() if isinstance(key, bytes) else str(key)
            for key in self.client.scan_iter(match=_glob_escape(table_prefix) + "*", count=1000)
        ]
        if not tables:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for table in tables:
            pipe.smembers(table)
        queues = set()
        for table, members in zip(tables, pipe.execute(), strict=True):
            exchange = table.removeprefix(table_prefix)
            for member in members:
                text = member.decode("utf-8", "replace") if isinstance(member, bytes) else member
                queue = text.split(self.sep)[-1]
                if not is_plumbing(queue, exchange):
                    queues.add(queue)
        return queues

    def close(self) -> None:
        self.client.close()


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


# --- RabbitMQ ----------------------------------------------------------------------


class RabbitManagementDepths:
    """Through the management API: one GET lists every queue of the vhost."""

    cheap_discovery = True
    # A listing fetched this recently serves both discover() and sample().
    REUSE_SECONDS = 1.0
    COLUMNS = (
        "name,messages_ready,messages_unacknowledged,consumers,"
        "head_message_timestamp,auto_delete,exclusive"
    )

    def __init__(self, api_url: str, broker_url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(api_url)
        amqp = Connection(broker_url)
        user = unquote(parts.username) if parts.username else amqp.userid
        password = unquote(parts.password) if parts.password else amqp.password
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc += f":{parts.port}"
        self.base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self.vhost = amqp.virtual_host or "/"
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self.timeout = timeout
        self._listing: list[dict[str, Any]] = []
        self._listed_at = float("-inf")

    def _queues(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._listed_at < self.REUSE_SECONDS:
            return self._listing
        url = f"{self.base}/api/queues/{quote(self.vhost, safe='')}?columns={self.COLUMNS}"
        # The operator's own configured URL, http or https: S310 is about file:// and such.
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            try:
                payload = json.load(response)
            except ValueError as exc:
                raise DepthError(f"the management API did not answer JSON: {exc}") from exc
        if not isinstance(payload, list):
            raise DepthError(f"the management API answered {str(payload)[:200]}")
        self._listing = payload
        self._listed_at = time.monotonic()
        return payload

    def discover(self) -> set[str]:
        # Task queues are durable and shared; Celery's reply, event and
        # mailbox queues are auto-deleted or exclusive.
        return {
            str(q.get("name"))
            for q in self._queues()
            if not q.get("auto_delete")
            and not q.get("exclusive")
            and not is_plumbing(str(q.get("name")))
        }

    def sample(self, names: Collection[str]) -> dict[str, QueueDepth]:
        listed = {str(q.get("name")): q for q in self._queues()}
        depths = {}
        for name in names:
            q = listed.get(name)
            if q is None:
                depths[name] = QueueDepth(name, exists=False)
                continue
            ready = _int_or_none(q.get("messages_ready"))
            unacked = _int_or_none(q.get("messages_unacknowledged"))
            depth = None if ready is None else ready + (unacked or 0)
            stamp = q.get("head_message_timestamp")
            depths[name] = QueueDepth(
                name,
                depth=depth,
                ready=ready,
                unacked=unacked,
                consumers=_int_or_none(q.get("consumers")),
                oldest_sent_at=float(stamp) if isinstance(stamp, int | float) else None,
            )
        return depths

    def close(self) -> None:
        self._listing = []


class RabbitPassiveDepths:
    """A passive ``queue_declare`` per queue, on a channel of its own.

    RabbitMQ closes a channel that declares a missing queue, so the channel is
    opened again after each miss. Unacked counts and ages are not available.
    """

    cheap_discovery = True

    def __init__(self, broker_url: str) -> None:
        self.connection = Connection(
            broker_url, connect_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT, heartbeat=0
        )
        self.channel: Any = None

    def discover(self) -> set[str]:
        return set()  # AMQP has no way to list queues

    def sample(self, names: Collection[str]) -> dict[str, QueueDepth]:
        depths = {}
        for name in names:
            if self.channel is None:
                self.connection.ensure_connection(max_retries=1)
                self.channel = self.connection.channel()
            try:
                _, ready, consumers = self.channel.queue_declare(queue=name, passive=True)
            except NotFound:
                self.channel = None
                depths[name] = QueueDepth(name, exists=False)
                continue
            depths[name] = QueueDepth(
                name, depth=int(ready), ready=int(ready), consumers=int(consumers)
            )
        return depths

    def close(self) -> None:
        self.channel = None
        self.connection.release()


def _int_or_none(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
