"""The dead-letter ingest benchmark: the monitor against a naive consumer and a floor.

    python3 dev.py bench ingest [--count 50000] [--naive-count 5000] [--batch-size N]

One run starts its own Redis, fills the ``deadletters`` queue with envelopes in
the hook's own format, and times how fast ``Monitor().run(until_empty=True)``
moves them into the database. For reference it times a naive consumer on the
same engine: a kombu ``Consumer`` that parses, inserts and acks one message at
a time; and the floor: the same number of messages popped from the same Redis,
parsed only as far as a row needs, and written in one transaction into a plain
table with the same columns (COPY on PostgreSQL, ``executemany`` on SQLite).
SQLite always; PostgreSQL too when ``DATABASE_URL`` names a PostgreSQL server
(a throwaway database is created there and dropped afterwards).

Every database is measured in a child process (see bench/_harness.py).
It fails only when the ingestion is wrong (a row lost, duplicated or
quarantined); a missed target is reported, never an error.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import _harness as harness

if TYPE_CHECKING:
    import redis
    from kombu import Queue

    from dashboard.monitor.loop import Monitor

QUEUE = "deadletters"
DEFAULT_COUNT = 50_000
DEFAULT_NAIVE_COUNT = 5_000
# Targets from the issue; reported, never asserted.
TARGET_POSTGRES_RATE = 5_000
TARGET_RATIO = 10
# Issue 15: ours at least half the floor.
TARGET_FLOOR_RATIO = 0.5
# Issue 15: the monitor's resident memory while it ingests a million dead
# letters: flat after the first 100,000, and at most this much.
TARGET_RSS_MB = 150.0
# Redis commands kombu buffers in one pipeline while the queue is filled.
PUBLISH_PIPELINE = 1_000


class IngestError(RuntimeError):
    """The ingestion stored something other than the messages it was given."""


# --- the parent: one Redis, one child per database, the report -----------------------


def main(argv: list[str]) -> int:
    return harness.main("ingest", argv, _parser(), parent=_run, child=_measure)


def _parser() -> argparse.ArgumentParser:
    parser = harness.parser(
        "ingest",
        "Dead letters per second: the monitor against a naive consumer and a floor.",
    )
    parser.add_argument(
        "--count",
        type=harness.positive,
        default=DEFAULT_COUNT,
        help=f"dead letters the monitor ingests (default {DEFAULT_COUNT:,})",
    )
    parser.add_argument(
        "--naive-count",
        type=harness.positive,
        default=DEFAULT_NAIVE_COUNT,
        help=f"dead letters the naive consumer ingests (default {DEFAULT_NAIVE_COUNT:,})",
    )
    parser.add_argument(
        "--batch-size",
        type=harness.positive,
        default=None,
        help="the monitor's batch size (default: DEADLETTERS_BATCH_SIZE, 500)",
    )
    parser.add_argument(
        "--memory-rounds",
        type=int,
        default=0,
        help="also measure the monitor's resident memory over this many rounds of "
        "--memory-round-size dead letters, one monitor throughout (default 0: not measured; "
        "10 rounds of 100,000 is the issue's million)",
    )
    parser.add_argument(
        "--memory-round-size",
        type=harness.positive,
        default=100_000,
        help="dead letters queued and ingested in each memory round (default 100,000)",
    )
    harness.add_profile(
        parser,
        "also run the monitor under cProfile, once more, and write "
        "DIR/ingest-<database>.prof (its time is not the figure)",
    )
    return parser


def _run(args: argparse.Namespace, child: harness.Child) -> int:
    # Read before anything of ours sets it: the PostgreSQL server to measure, if any.
    server_url = os.environ.get("DATABASE_URL", "")
    postgres = server_url.startswith("postgres")
    with harness.scratch() as directory, harness.embedded_redis(directory) as broker_url:

        def measure(label: str, database_url: str) -> dict[str, Any]:
            print(
                f"{label}: measuring (monitor and floor {args.count:,}, "
                f"naive {args.naive_count:,}) ...",
                file=sys.stderr,
                flush=True,
            )
            figures = child.run(database_url, directory, label=label, CELERY_BROKER_URL=broker_url)
            figures["label"] = label
            return figures

        results = [measure("SQLite", harness.sqlite_url(directory))]
        if postgres:
            with harness.ThrowawayDatabase(server_url) as database_url:
                results.append(measure("PostgreSQL", database_url))
    print(_report(results, postgres_skipped=not postgres))
    return 0


# --- the report -----------------------------------------------------------------------


def _report(results: list[dict[str, Any]], *, postgres_skipped: bool) -> str:
    header = (
        "database",
        "implementation",
        "messages",
        "seconds",
        "CPU s",
        "CPU µs/msg",
        "dead letters/s",
        "ours/naive",
        "ours/floor",
    )
    rows: list[tuple[str, ...]] = []
    for r in results:
        database = f"{r['label']} {r['server_version']}"
        monitor, naive, floor = r["monitor"], r["naive"], r["floor"]
        rows.append(
            _row(
                database,
                f"ours: monitor, batches of {r['batch_size']}",
                monitor,
                f"{monitor['rate'] / naive['rate']:.1f}x",
                f"{monitor['rate'] / floor['rate']:.2f}x",
            )
        )
        rows.append(_row(database, "naive: one insert + ack per message", naive))
        rows.append(_row(database, f"floor: pop, parse ({r['codec']}), {r['floor_write']}", floor))
    out = ["", "Dead-letter ingest", "", *harness.table(header, rows, right_from=2)]
    out += [
        "",
        "seconds: wall clock (ours: to the commit of the last batch, without the monitor's",
        "final, empty fetch, which waits 0.5 s for more);",
        "CPU s, CPU µs/msg: the ingesting process alone; the rest is waiting on the database",
        "and Redis; ratios are of dead letters/s",
        "floor: the same number of messages popped from the same Redis in batches of the",
        "monitor's size, parsed only as far as a row needs, and written in one transaction into",
        "a plain table with the dead-letter table's columns (no index, no constraint): no",
        "validation, no dedupe, no aggregates, no search outbox, no in-flight list or ack",
        "",
        f"machine: {harness.machine()}",
    ]
    if results:
        r = results[0]
        out.append(
            f"envelopes: {r['envelope_bytes']:,} bytes of JSON on average; "
            f"queue filled at {r['publish_rate']:,.0f}/s (not timed)"
        )
    out += ["", "targets (from the issues; reported, not asserted):"]
    for r in results:
        ratio = r["monitor"]["rate"] / r["naive"]["rate"]
        if r["label"] == "PostgreSQL":
            rate = r["monitor"]["rate"]
            out.append(
                f"  {harness.verdict(rate >= TARGET_POSTGRES_RATE)}  PostgreSQL at least "
                f"{TARGET_POSTGRES_RATE:,}/s: {rate:,.0f}/s"
            )
        out.append(
            f"  {harness.verdict(ratio >= TARGET_RATIO)}  {r['label']}: at least "
            f"{TARGET_RATIO}x the naive consumer: {ratio:.1f}x"
        )
        of_floor = r["monitor"]["rate"] / r["floor"]["rate"]
        out.append(
            f"  {harness.verdict(of_floor >= TARGET_FLOOR_RATIO)}  {r['label']}: at least "
            f"half the floor (issue 15): {of_floor:.2f}x"
        )
        if r["memory"]:
            points = r["memory"]
            first = next(((n, mb) for n, mb in points if n >= 100_000), points[1])
            last, peak = points[-1], max(mb for _, mb in points)
            growth = last[1] - first[1]
            flat = growth <= 0.05 * first[1]
            out.append(
                f"  {harness.verdict(flat and peak <= TARGET_RSS_MB)}  {r['label']}: monitor "
                f"resident memory flat after {first[0]:,} and at most {TARGET_RSS_MB:.0f} MB: "
                f"{first[1]:.0f} MB at {first[0]:,}, {last[1]:.0f} MB at {last[0]:,} "
                f"({growth:+.0f} MB), peak {peak:.0f} MB"
            )
    if postgres_skipped:
        out.append(
            f"  n/a   PostgreSQL at least {TARGET_POSTGRES_RATE:,}/s: not measured; "
            "set DATABASE_URL=postgres://... to include it"
        )
    return "\n".join(out)


def _row(
    database: str,
    implementation: str,
    timing: dict[str, float],
    of_naive: str = "",
    of_floor: str = "",
) -> tuple[str, ...]:
    return (
        database,
        implementation,
        f"{timing['messages']:,.0f}",
        f"{timing['seconds']:.2f}",
        f"{timing['cpu_seconds']:.2f}",
        f"{timing['cpu_seconds'] * 1e6 / timing['messages']:,.1f}",
        f"{timing['rate']:,.0f}",
        of_naive,
        of_floor,
    )


# --- the child: one database, both implementations -------------------------------------


@dataclass
class Timing:
    messages: int
    seconds: float
    # CPU time of this process alone: the rest of the wall clock is spent
    # waiting on the database and Redis.
    cpu_seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "messages": self.messages,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "rate": self.messages / self.seconds,
        }


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    broker_url = str(settings.CELERY_BROKER_URL)
    batch_size = args.batch_size or int(settings.DEADLETTERS_BATCH_SIZE)

    _check_format(broker_url)

    _empty_table()
    _empty_queue()
    started = time.perf_counter()
    published, envelope_bytes = publish(broker_url, envelopes(args.count))
    publish_seconds = time.perf_counter() - started
    harness.progress(f"queued {published:,} in {publish_seconds:.1f}s; the monitor drains them")
    monitor = _time_monitor(args.count, batch_size)
    harness.progress(f"monitor: {monitor.messages / monitor.seconds:,.0f}/s")

    if args.profile:
        profile_path = args.profile / f"ingest-{connection.vendor}.prof"
        _profile_monitor(broker_url, args.count, batch_size, profile_path)
    memory = (
        _measure_memory(broker_url, args.memory_rounds, args.memory_round_size, batch_size)
        if args.memory_rounds > 0
        else None
    )

    _empty_table()
    _empty_queue()
    publish(broker_url, envelopes(args.count))
    harness.progress(f"queued {args.count:,}; the floor drains them")
    floor = _time_floor(broker_url, args.count, batch_size)
    harness.progress(f"floor: {floor.messages / floor.seconds:,.0f}/s")

    _empty_table()
    _empty_queue()
    publish(broker_url, envelopes(args.naive_count))
    harness.progress(f"queued {args.naive_count:,}; the naive consumer drains them")
    naive = _time_naive(broker_url, args.naive_count)
    harness.progress(f"naive: {naive.messages / naive.seconds:,.0f}/s")
    return {
        "vendor": connection.vendor,
        "server_version": harness.server_version(),
        "batch_size": batch_size,
        "envelope_bytes": envelope_bytes // max(published, 1),
        "publish_rate": published / publish_seconds,
        "monitor": monitor.as_dict(),
        "naive": naive.as_dict(),
        "floor": floor.as_dict(),
        "memory": memory,
        "codec": _json_codec()[2],
        "floor_write": "COPY" if connection.vendor == "postgresql" else "executemany",
    }


def _measure_memory(
    broker_url: str, rounds: int, per_round: int, batch_size: int
) -> list[tuple[int, float]]:
    """(dead letters stored so far, the process's resident MB) after each round
    of one monitor, as a long-running monitor process holds them; the table
    keeps every round's rows."""
    import psutil

    from dashboard.monitor.loop import Monitor

    process = psutil.Process()
    _empty_table()
    _empty_queue()
    monitor = Monitor(batch_size=batch_size)
    points = [(0, process.memory_info().rss / 2**20)]
    for _ in range(rounds):
        publish(broker_url, envelopes(per_round))
        with _deadline(monitor, per_round):
            totals = monitor.run(until_empty=True)
        points.append((totals.stored, process.memory_info().rss / 2**20))
        harness.progress(f"memory: {totals.stored:,} stored, {points[-1][1]:.0f} MB resident")
    return points


def _time_monitor(count: int, batch_size: int) -> Timing:
    from dashboard.monitor.loop import Monitor

    monitor = Monitor(batch_size=batch_size)
    # Timed to the commit of the last batch: the monitor's final, empty fetch
    # (it waits 0.5 s for more) is no part of the work.
    last = {"wall": 0.0, "cpu": 0.0}

    def timed(store: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
        def storing(messages: list[Any]) -> Any:
            result = store(messages)
            if result.stored:
                last["wall"], last["cpu"] = time.perf_counter(), time.process_time()
            return result

        return storing

    monitor.streams = [dataclasses.replace(s, store=timed(s.store)) for s in monitor.streams]
    started, cpu_started = time.perf_counter(), time.process_time()
    with _deadline(monitor, count):
        totals = monitor.run(until_empty=True)
    seconds, cpu_seconds = last["wall"] - started, last["cpu"] - cpu_started
    _check_stored(count)
    if totals.stored != count or totals.duplicates or totals.quarantined:
        raise IngestError(f"the monitor reported {totals}, expected {count} stored")
    return Timing(count, seconds, cpu_seconds)


@contextmanager
def _deadline(monitor: Monitor, count: int) -> Iterator[None]:
    """Stop the monitor if it is still running long after any plausible rate.

    The monitor retries forever what it takes for an unreachable broker or
    database; here that would hang the run, and the row count then fails it.
    """
    timer = threading.Timer(60 + count / 100, monitor.stop.set)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _profile_monitor(broker_url: str, count: int, batch_size: int, path: Path) -> None:
    """Drain ``count`` more dead letters under cProfile and print where the time went."""
    from dashboard.monitor.loop import Monitor

    _empty_table()
    _empty_queue()
    publish(broker_url, envelopes(count))
    monitor = Monitor(batch_size=batch_size)
    pattern = r"deadletters|dashboard|django|kombu|redis"
    with _deadline(monitor, count * 5):
        harness.profile(path, pattern, monitor.run, until_empty=True)
    _check_stored(count)
    harness.progress(f"profile written to {path}")


def _time_naive(broker_url: str, count: int) -> Timing:
    """One message at a time: parse, one autocommitted INSERT, one ack."""
    from kombu import Connection, Consumer
    from kombu.message import Message

    from dashboard.broker.inbox import InboundMessage
    from deadletters.envelope import parse
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
        started, cpu_started = time.perf_counter(), time.process_time()
        with consumer:
            while done < count:
                connection.drain_events(timeout=10)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    _check_stored(count)
    return Timing(count, seconds, cpu_seconds)


# --- the floor: the least work that stores the same rows -------------------------------

FLOOR_TABLE = "bench_ingest_floor"
# The columns a row takes from its message, in the order _floor_row gives them.
FLOOR_COLUMNS = (
    "dedupe_key", "envelope_version", "task_id", "task_name", "args", "kwargs", "lossy",
    "queue", "exchange", "routing_key", "priority", "retries", "root_id", "parent_id",
    "group_id", "eta", "expires", "headers", "worker", "kind", "exception_type",
    "exception_message", "traceback", "failed_at", "received_at", "signature",
    "search_text", "requeued_from_task_id",
)  # fmt: skip
# The other columns of a readable envelope's row, the same on every row; those
# not named here are NULL.
FLOOR_CONSTANTS = {
    "content_type": "", "quarantine_reason": "", "ingest_notes": "", "state": "open",
    "requeue_task_id": "", "requeue_outcome": "",
}  # fmt: skip


def _json_codec() -> tuple[Callable[[bytes], Any], Callable[[Any], str], str]:
    """loads, dumps and the name: orjson when it is installed, else the standard library."""
    try:
        orjson = importlib.import_module("orjson")
    except ImportError:
        return json.loads, json.dumps, "json"
    return orjson.loads, lambda value: orjson.dumps(value).decode(), "orjson"


def _time_floor(broker_url: str, count: int, batch_size: int) -> Timing:
    """Pop ``count`` queued messages and store them as plainly as possible, in one transaction.

    A plain table with the dead-letter table's columns and no index; COPY on
    PostgreSQL, ``executemany`` of each popped batch on SQLite. Only what a row
    needs is parsed; the signature and the search text are computed by the
    functions that define them (``deadletters.envelope.signature``,
    ``deadletters.ingest.search_text``), as they are columns of the row.
    """
    from django.apps import apps
    from django.db import connection, transaction
    from django.utils import timezone

    from dashboard import broker
    from deadletters.envelope import signature
    from deadletters.ingest import search_text

    model = apps.get_model("deadletters", "DeadLetter")
    others = [
        str(field.column)
        for field in model._meta.concrete_fields
        if not field.primary_key and field.column not in FLOOR_COLUMNS
    ]
    constants = tuple(FLOOR_CONSTANTS.get(column) for column in others)
    columns = ", ".join(connection.ops.quote_name(column) for column in (*FLOOR_COLUMNS, *others))
    table = model._meta.db_table
    loads, dumps, _ = _json_codec()
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        cursor.execute(f"CREATE TABLE {FLOOR_TABLE} AS SELECT {columns} FROM {table} LIMIT 0")  # noqa: S608 - our own names

    def row(raw: bytes, received_at: str) -> tuple[Any, ...]:
        # Kombu's wrapper, then the envelope in its base64 body.
        e = loads(base64.b64decode(loads(raw)["body"]))
        args, kwargs, message = e["args"], e["kwargs"], e["exception_message"]
        text = {"task_id": e["id"], "exception_message": message, "args": args, "kwargs": kwargs}
        return (
            f"task:{e['id']}", e["v"], e["id"], e["task"], dumps(args), dumps(kwargs),
            e["lossy"], e["queue"], e["exchange"], e["routing_key"], e["priority"],
            e["retries"], e["root_id"] or "", e["parent_id"] or "", e["group_id"] or "",
            e["eta"], e["expires"], dumps(e["headers"]), e["hostname"], e["kind"],
            e["exception_type"], message, e["traceback"], e["failed_at"], received_at,
            signature(e["task"], e["exception_type"], message), search_text(text),
            e["requeued_from"] or "",
        )  # fmt: skip

    client = broker.redis_client(broker_url)
    keys = broker.redis_priority_keys(QUEUE)
    done = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {FLOOR_TABLE} ({columns}) FROM STDIN") as copy:
                for batch in _popped(client, keys, batch_size):
                    received_at = timezone.now().isoformat()
                    for raw in batch:
                        copy.write_row(row(raw, received_at) + constants)
                    done += len(batch)
        else:
            placeholders = ", ".join(["%s"] * (len(FLOOR_COLUMNS) + len(others)))
            insert = f"INSERT INTO {FLOOR_TABLE} ({columns}) VALUES ({placeholders})"  # noqa: S608
            for batch in _popped(client, keys, batch_size):
                received_at = timezone.now().isoformat()
                cursor.executemany(insert, [row(raw, received_at) + constants for raw in batch])
                done += len(batch)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    client.close()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {FLOOR_TABLE}")  # noqa: S608
        stored = cursor.fetchone()[0]
        cursor.execute(f"DROP TABLE {FLOOR_TABLE}")
    if done != count or stored != count:
        raise IngestError(f"the floor popped {done:,} and stored {stored:,}, expected {count:,}")
    return Timing(count, seconds, cpu_seconds)


def _popped(client: redis.Redis, keys: list[str], size: int) -> Iterator[list[bytes]]:
    """Batches of up to ``size`` messages from each of the queue's lists, oldest first."""
    while True:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.rpop(key, size)
        batch = [raw for popped in pipe.execute() if popped for raw in popped]
        if not batch:
            return
        yield batch


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
    """Empty every dead-letter table (rows, aggregates, search) between two runs."""
    from django.apps import apps
    from django.db import connection

    with connection.cursor() as cursor:
        for model in apps.get_app_config("deadletters").get_models():
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - the models' own tables
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


def _queue() -> Queue:
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
        # Producer.batch is new in kombu 5.7; its stubs do not know it yet.
        with producer.batch(PUBLISH_PIPELINE):  # type: ignore[attr-defined]
            for envelope in items:
                producer.publish(
                    envelope,
                    exchange=target.exchange,
                    routing_key=QUEUE,
                    serializer="json",
                    delivery_mode=2,
                    headers={
                        "x_deadletter_v": ENVELOPE_VERSION,
                        "x_sent_at": time.time(),
                        "x_queue": QUEUE,
                    },
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
    message["headers"].pop("x_sent_at")  # the time of the publish
    return message


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
