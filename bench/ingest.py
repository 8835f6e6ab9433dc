"""The dead-letter ingest benchmark: the monitor against a naive consumer.

    python3 dev.py bench ingest [--count 50000] [--naive-count 5000] [--batch-size N]

One run starts its own Redis, fills the ``deadletters`` queue with envelopes in
the hook's own format, and times how fast ``Monitor().run(until_empty=True)``
moves them into the database. For reference it times a naive consumer on the
same engine: a kombu ``Consumer`` that parses, inserts and acks one message at
a time. SQLite always; PostgreSQL too when ``DATABASE_URL`` names a PostgreSQL
server (a throwaway database is created there and dropped afterwards).

Django reads its settings once per process, so every database is measured in
a child process (``--worker URL``) that prints its figures as one JSON line.
It fails only when the ingestion is wrong (a row lost, duplicated or
quarantined); a missed target is reported, never an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "deadletters"
DEFAULT_COUNT = 50_000
DEFAULT_NAIVE_COUNT = 5_000
# Targets from the issue; reported, never asserted.
TARGET_POSTGRES_RATE = 5_000
TARGET_RATIO = 10
# Redis commands kombu buffers in one pipeline while the queue is filled.
PUBLISH_PIPELINE = 1_000


class IngestError(RuntimeError):
    """The ingestion stored something other than the messages it was given."""


# --- the parent: one Redis, one child per database, the report -----------------------


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker, args)
    return _run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench ingest",
        description="Dead letters per second: the monitor against a naive consumer.",
    )
    parser.add_argument(
        "--count",
        type=_positive,
        default=DEFAULT_COUNT,
        help=f"dead letters the monitor ingests (default {DEFAULT_COUNT:,})",
    )
    parser.add_argument(
        "--naive-count",
        type=_positive,
        default=DEFAULT_NAIVE_COUNT,
        help=f"dead letters the naive consumer ingests (default {DEFAULT_NAIVE_COUNT:,})",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        help="the monitor's batch size (default: DEADLETTERS_BATCH_SIZE, 500)",
    )
    # Internal: measure one database in this process and print a JSON line.
    parser.add_argument("--worker", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _run(args: argparse.Namespace) -> int:
    # Read before anything of ours sets it: the PostgreSQL server to measure, if any.
    server_url = os.environ.get("DATABASE_URL", "")
    from dashboard.embedded_redis import EmbeddedRedis

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp:
        directory = Path(tmp)
        redis_server = EmbeddedRedis(directory / "redis")
        broker_url = redis_server.start()
        try:
            sqlite_url = f"sqlite:///{directory / 'bench.sqlite3'}"
            results.append(_measure("SQLite", sqlite_url, broker_url, directory, args))
            if server_url.startswith("postgres"):
                with ThrowawayDatabase(server_url) as database_url:
                    results.append(
                        _measure("PostgreSQL", database_url, broker_url, directory, args)
                    )
        finally:
            redis_server.stop()
    print(_report(results, postgres_skipped=not server_url.startswith("postgres")))
    return 0


def _measure(
    label: str, database_url: str, broker_url: str, directory: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run one database's measurement in a child process and return its figures."""
    print(
        f"{label}: measuring (monitor {args.count:,}, naive {args.naive_count:,}) ...",
        file=sys.stderr,
        flush=True,
    )
    env = dict(os.environ)
    env.pop("SECRET_KEY_FILE", None)
    env.update(
        CELERY_BROKER_URL=broker_url,
        SECRET_KEY=secrets.token_urlsafe(32),
        DEBUG="false",
        DATA_DIR=str(directory / "data"),
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="dashboard.settings",
    )
    command = [
        sys.executable,
        "-m",
        "bench.ingest",
        "--worker",
        database_url,
        "--count",
        str(args.count),
        "--naive-count",
        str(args.naive_count),
    ]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    child = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        sys.stdout.write(child.stdout)
        raise SystemExit(f"{label}: the measurement failed (exit status {child.returncode})")
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["label"] = label
    return figures


class ThrowawayDatabase:
    """A fresh database on the PostgreSQL server of ``server_url``, dropped on exit."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"ops_bench_{secrets.token_hex(4)}"

    def _execute(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        # CREATE/DROP DATABASE cannot run in a transaction: autocommit.
        with psycopg.connect(self.server_url, autocommit=True) as connection:
            connection.execute(sql.SQL(statement).format(sql.Identifier(self.name)))

    def __enter__(self) -> str:
        self._execute("CREATE DATABASE {}")
        parts = urlsplit(self.server_url)
        return urlunsplit(parts._replace(path=f"/{self.name}"))

    def __exit__(self, *exc: object) -> None:
        # The child has exited, so nobody is connected; FORCE is for a child
        # that was killed and left a connection behind (PostgreSQL 13+).
        self._execute("DROP DATABASE IF EXISTS {} WITH (FORCE)")


# --- the report -----------------------------------------------------------------------


def _report(results: list[dict[str, Any]], *, postgres_skipped: bool) -> str:
    header = (
        "database",
        "implementation",
        "messages",
        "seconds",
        "dead letters/s",
        "monitor/naive",
    )
    rows: list[tuple[str, ...]] = []
    for r in results:
        database = f"{r['label']} {r['server_version']}"
        monitor, naive = r["monitor"], r["naive"]
        ratio = monitor["rate"] / naive["rate"]
        rows.append(
            (
                database,
                f"monitor, batches of {r['batch_size']}",
                f"{monitor['messages']:,}",
                f"{monitor['seconds']:.2f}",
                f"{monitor['rate']:,.0f}",
                f"{ratio:.1f}x",
            )
        )
        rows.append(
            (
                database,
                "naive, one insert + ack per message",
                f"{naive['messages']:,}",
                f"{naive['seconds']:.2f}",
                f"{naive['rate']:,.0f}",
                "",
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if index >= 2 else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = ["", "Dead-letter ingest", "", line(header), line(tuple("-" * w for w in widths))]
    out += [line(row) for row in rows]
    out += ["", f"machine: {machine()}"]
    if results:
        r = results[0]
        out.append(
            f"envelopes: {r['envelope_bytes']:,} bytes of JSON on average; "
            f"queue filled at {r['publish_rate']:,.0f}/s (not timed)"
        )
    out += ["", "targets (from the issue; reported, not asserted):"]
    for r in results:
        ratio = r["monitor"]["rate"] / r["naive"]["rate"]
        if r["label"] == "PostgreSQL":
            rate = r["monitor"]["rate"]
            out.append(
                f"  {_verdict(rate >= TARGET_POSTGRES_RATE)}  PostgreSQL at least "
                f"{TARGET_POSTGRES_RATE:,}/s: {rate:,.0f}/s"
            )
        out.append(
            f"  {_verdict(ratio >= TARGET_RATIO)}  {r['label']}: at least "
            f"{TARGET_RATIO}x the naive consumer: {ratio:.1f}x"
        )
    if postgres_skipped:
        out.append(
            f"  n/a   PostgreSQL at least {TARGET_POSTGRES_RATE:,}/s: not measured; "
            "set DATABASE_URL=postgres://... to include it"
        )
    return "\n".join(out)


def _verdict(met: bool) -> str:
    return "met " if met else "MISS"


def machine() -> str:
    model = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    return (
        f"{os.cpu_count()} CPUs ({model or 'unknown model'}), {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


# --- the child: one database, both implementations -------------------------------------


@dataclass
class Timing:
    messages: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "messages": self.messages,
            "seconds": self.seconds,
            "rate": self.messages / self.seconds,
        }


def _worker(database_url: str, args: argparse.Namespace) -> int:
    # The parent set CELERY_BROKER_URL, SECRET_KEY, DEBUG, DATA_DIR and
    # DATABASE_URL in our environment: settings read them at setup.
    if os.environ.get("DATABASE_URL") != database_url:
        raise SystemExit("--worker is internal: run `python -m bench ingest`")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    broker_url = str(settings.CELERY_BROKER_URL)
    batch_size = args.batch_size or int(settings.DEADLETTERS_BATCH_SIZE)

    _check_format(broker_url)

    _empty_table()
    _empty_queue()
    started = time.perf_counter()
    published, envelope_bytes = publish(broker_url, envelopes(args.count))
    publish_seconds = time.perf_counter() - started
    _progress(f"queued {published:,} in {publish_seconds:.1f}s; the monitor drains them")
    monitor = _time_monitor(args.count, batch_size)
    _progress(f"monitor: {monitor.messages / monitor.seconds:,.0f}/s")

    _empty_table()
    _empty_queue()
    publish(broker_url, envelopes(args.naive_count))
    _progress(f"queued {args.naive_count:,}; the naive consumer drains them")
    naive = _time_naive(broker_url, args.naive_count)
    _progress(f"naive: {naive.messages / naive.seconds:,.0f}/s")

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sqlite_version()" if connection.vendor == "sqlite" else "SHOW server_version"
        )
        server_version = str(cursor.fetchone()[0]).split()[0]
    print(
        json.dumps(
            {
                "vendor": connection.vendor,
                "server_version": server_version,
                "batch_size": batch_size,
                "envelope_bytes": envelope_bytes // max(published, 1),
                "publish_rate": published / publish_seconds,
                "monitor": monitor.as_dict(),
                "naive": naive.as_dict(),
            }
        ),
        flush=True,
    )
    return 0


def _progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def _time_monitor(count: int, batch_size: int) -> Timing:
    from dashboard.monitor import Monitor

    monitor = Monitor(batch_size=batch_size)
    started = time.perf_counter()
    # Includes the monitor's last, empty fetch: it waits 0.5 s for more.
    totals = monitor.run(until_empty=True)
    seconds = time.perf_counter() - started
    _check_stored(count)
    if totals.stored != count or totals.duplicates or totals.quarantined:
        raise IngestError(f"the monitor reported {totals}, expected {count} stored")
    return Timing(count, seconds)


def _time_naive(broker_url: str, count: int) -> Timing:
    """One message at a time: parse, one autocommitted INSERT, one ack."""
    from kombu import Connection, Consumer
    from kombu.message import Message

    from deadletters.envelope import InboundMessage, parse
    from deadletters.models import DeadLetter

    done = 0

    def on_message(message: Message) -> None:
        nonlocal done
        # on_message, not callbacks: the body stays bytes, as the monitor gets it.
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = message.headers or {}
        inbound = InboundMessage(
            body=body,
            content_type=str(message.content_type or ""),
            content_encoding=str(message.content_encoding or "utf-8"),
            raw=body,
            headers=dict(headers) if isinstance(headers, dict) else {},
        )
        DeadLetter.objects.create(**parse(inbound))
        message.ack()
        done += 1

    with Connection(broker_url, heartbeat=0) as connection:
        consumer = Consumer(connection.channel(), [_queue()], on_message=on_message)
        started = time.perf_counter()
        with consumer:
            while done < count:
                connection.drain_events(timeout=10)
        seconds = time.perf_counter() - started
    _check_stored(count)
    return Timing(count, seconds)


def _check_stored(count: int) -> None:
    """Exactly ``count`` rows, none quarantined, and nothing left in Redis."""
    from dashboard import broker
    from deadletters.models import DeadLetter

    stored = DeadLetter.objects.count()
    quarantined = DeadLetter.objects.filter(kind="quarantined").count()
    if stored != count or quarantined:
        raise IngestError(f"{stored} rows stored ({quarantined} quarantined), expected {count}")
    client = broker.redis_client()
    try:
        left = sum(int(client.llen(key)) for key in broker.redis_priority_keys(QUEUE))
        held = list(client.scan_iter(match=f"{QUEUE}.inflight.*"))
    finally:
        client.close()
    if left or held:
        raise IngestError(f"{left} messages left in the queue, {len(held)} batches in flight")


def _empty_table() -> None:
    from django.db import connection

    from deadletters.models import DeadLetter

    with connection.cursor() as cursor:
        table = connection.ops.quote_name(DeadLetter._meta.db_table)
        cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - our own table name, quoted
    if connection.vendor == "postgresql":
        # Dead tuples from the run before must not slow the next one down.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def _empty_queue() -> None:
    from dashboard import broker

    client = broker.redis_client()
    try:
        # The queue's lists and the monitor's leases, not kombu's bindings.
        keys = [*client.scan_iter(match=f"{QUEUE}*"), "unacked", "unacked_index"]
        client.delete(*keys)
    finally:
        client.close()


# --- envelopes, as the hook builds and publishes them -----------------------------------


def _queue() -> Any:
    from kombu import Exchange, Queue

    # The hook's declaration (deadletters.hook._Publisher.publish).
    exchange = Exchange(QUEUE, type="direct", durable=True)
    return Queue(QUEUE, exchange, routing_key=QUEUE, durable=True)


def _exception_class(module: str, name: str) -> type[Exception]:
    cls = type(name, (Exception,), {})
    cls.__module__ = module
    return cls


@dataclass(frozen=True)
class Failure:
    """One way a task of a team's app fails; many dead letters share it."""

    task: str
    queue: str
    exception: type[Exception]
    message: str
    frames: str


_CELERY_FRAME = (
    '  File "/srv/app/.venv/lib/python3.11/site-packages/celery/app/trace.py", '
    "line 453, in trace_task\n    R = retval = fun(*args, **kwargs)\n"
)

FAILURES = (
    Failure(
        "shop.tasks.charge_order",
        "payments",
        _exception_class("shop.payments", "PaymentDeclined"),
        "card declined for order {n} (code 51)",
        '  File "/srv/app/shop/tasks.py", line 88, in charge_order\n'
        "    receipt = gateway.charge(order, amount_cents)\n"
        '  File "/srv/app/shop/payments.py", line 41, in charge\n'
        '    raise PaymentDeclined(f"card declined for order {order.id} (code {code})")\n',
    ),
    Failure(
        "mail.tasks.send_receipt",
        "emails",
        ConnectionRefusedError,
        "[Errno 111] Connection refused",
        '  File "/srv/app/mail/tasks.py", line 23, in send_receipt\n'
        "    smtp = smtplib.SMTP(settings.EMAIL_HOST, settings.EMAIL_PORT, timeout=10)\n"
        '  File "/usr/lib/python3.11/socket.py", line 836, in create_connection\n'
        "    sock.connect(sa)\n",
    ),
    Failure(
        "reports.tasks.build_report",
        "reports",
        KeyError,
        "'region'",
        '  File "/srv/app/reports/tasks.py", line 140, in build_report\n'
        '    rows = [row for row in source if row["region"] in filters["regions"]]\n',
    ),
    Failure(
        "sync.tasks.push_inventory",
        "default",
        TimeoutError,
        "request to https://erp.example.com/api/v2/stock/{sku} timed out after 30.0s",
        '  File "/srv/app/sync/tasks.py", line 57, in push_inventory\n'
        "    response = session.put(url, json=payload, timeout=30)\n"
        '  File "/srv/app/sync/client.py", line 19, in put\n'
        '    raise TimeoutError(f"request to {url} timed out after {timeout}s")\n',
    ),
)


def envelopes(count: int) -> Iterator[dict[str, Any]]:
    """``count`` envelopes, each a distinct failure, built by the hook's own code."""
    from celery.app.task import Context

    from deadletters.hook import _envelope

    for n in range(count):
        failure = FAILURES[n % len(FAILURES)]
        task_id = str(uuid.uuid4())
        order, sku = 100_000 + n, f"SKU-{n % 977:05d}"
        exc = failure.exception(failure.message.format(n=order, sku=sku))
        ctx = Context(
            id=task_id,
            delivery_info={
                "exchange": "",
                "routing_key": failure.queue,
                "priority": 0,
                "redelivered": False,
            },
            headers={
                "x_sent_at": time.time() - 5,
                "x_queue": failure.queue,
                "tenant": f"t{n % 13}",
            },
            properties={"correlation_id": task_id, "priority": 0},
            retries=3 if n % 3 == 0 else 0,
            root_id=task_id if n % 5 else str(uuid.uuid4()),
            parent_id=None if n % 5 else str(uuid.uuid4()),
            hostname=f"celery@worker-{n % 8}",
        )
        traceback = (
            "Traceback (most recent call last):\n"
            + _CELERY_FRAME
            + failure.frames
            + f"{exc.__class__.__module__}.{exc.__class__.__qualname__}: {exc}\n"
        )
        yield _envelope(
            task_id=task_id,
            task_name=failure.task,
            args=[order, {"sku": sku, "quantity": n % 7 + 1, "price": "19.90"}],
            kwargs={
                "amount_cents": 1990 * (n % 7 + 1),
                "currency": "EUR",
                "idempotency_key": str(uuid.uuid4()),
                "notify": n % 2 == 0,
            },
            ctx=ctx,
            kind="exception",
            exc=exc,
            traceback=traceback,
        )


def publish(broker_url: str, items: Iterator[dict[str, Any]]) -> tuple[int, int]:
    """Publish as the hook does, pipelined; returns (messages, bytes of JSON bodies).

    ``producer.batch`` only buffers the Redis commands kombu's own publish path
    produces, so every stored message is byte for byte what the hook stores.
    """
    from kombu import Connection, Producer

    from deadletters.hook import ENVELOPE_VERSION

    target = _queue()
    count = size = 0
    with Connection(broker_url, heartbeat=0) as connection:
        channel = connection.channel()
        target(channel).declare()
        producer = Producer(channel)
        with producer.batch(PUBLISH_PIPELINE):  # type: ignore[attr-defined]  # newer than the stubs
            for envelope in items:
                producer.publish(
                    envelope,
                    exchange=target.exchange,
                    routing_key=QUEUE,
                    serializer="json",
                    delivery_mode=2,
                    headers={"x_deadletter_v": ENVELOPE_VERSION},
                )
                count += 1
                size += len(json.dumps(envelope))
    return count, size


def _check_format(broker_url: str) -> None:
    """The stored bytes of our publish match those of the hook's real publisher."""
    import redis
    from celery import Celery

    from deadletters import hook

    _empty_queue()
    envelope = next(envelopes(1))
    app = Celery("bench", broker=broker_url, set_as_current=False)
    publisher = hook._Publisher()
    publisher.publish(app, envelope)
    publish(broker_url, iter([envelope]))
    client = redis.Redis.from_url(broker_url)
    try:
        theirs, ours = (_comparable(item) for item in client.lrange(QUEUE, 0, -1)[::-1])
    finally:
        client.close()
        if publisher._connection is not None:
            publisher._connection.release()
    if theirs != ours:
        raise IngestError(f"the bench publishes\n{ours}\nbut the hook publishes\n{theirs}")
    _empty_queue()


def _comparable(raw: bytes | str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["properties"].pop("delivery_tag")  # a fresh uuid every time
    return message


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
