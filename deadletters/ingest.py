"""Storing batches of dead letters: one transaction a batch, one row a failure.

The aggregates that pages and /metrics read (groups, hourly counts, counters
per task and queue) are updated in the same transaction, from exactly the rows
that the batch inserted: a redelivery, or a row another monitor stored first,
counts nothing.

The insert is written by hand, not with ``bulk_create``: Django prepares every
value of every column one by one, and that, not the database, was where a batch
spent its time (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import (
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.db.models.expressions import DatabaseDefault, Value
from django.utils import timezone

from dashboard import jsonio
from dashboard.broker.inbox import InboundMessage
from deadletters.aggregates import count_received
from deadletters.envelope import parse, quarantined
from deadletters.models import DeadLetter
from deadletters.redact import redacted_json
from deadletters.search import queue_for_index

logger = logging.getLogger("deadletters.ingest")

# Errors that say "the database is away", as opposed to "this row is bad".
UNAVAILABLE = (OperationalError, InterfaceError)

TABLE = DeadLetter._meta.db_table


@dataclass
class BatchResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0


def store_batch(messages: list[InboundMessage]) -> BatchResult:
    """Insert the batch in one transaction; redeliveries are counted, not stored.

    Every message ends as one row (or as the duplicate of one). Raises an
    ``UNAVAILABLE`` error when the database cannot be reached, so the caller
    keeps the batch unacked and tries again; any other error is a row that the
    database refused, found by splitting the batch and stored quarantined.
    """
    result = BatchResult(received=len(messages))
    now = timezone.now()
    rows: dict[str, tuple[dict[str, Any], InboundMessage]] = {}
    for message in messages:
        row = parse(message)
        if row["dedupe_key"] in rows:
            result.duplicates += 1
        else:
            rows[row["dedupe_key"]] = (_complete(row, now), message)
    try:
        with transaction.atomic():
            _store([row for row, _ in rows.values()], result)
    except UNAVAILABLE:
        raise
    except Exception as exc:
        # One bad row must not hold the queue: split until it is found.
        logger.warning("batch insert failed (%r); looking for the refused rows", exc)
        result = BatchResult(received=len(messages), duplicates=result.duplicates)
        with transaction.atomic():
            _store_halves(list(rows.values()), result, now)
    return result


def _store_halves(
    pairs: list[tuple[dict[str, Any], InboundMessage]], result: BatchResult, now: datetime
) -> None:
    """Store ``pairs`` half by half; a single row the database refuses is stored
    quarantined instead, with its raw bytes and the database's reason."""
    if len(pairs) > 1:
        middle = len(pairs) // 2
        for half in (pairs[:middle], pairs[middle:]):
            try:
                with transaction.atomic():
                    _store([row for row, _ in half], result)
            except UNAVAILABLE:
                raise
            except Exception:
                _store_halves(half, result, now)
        return
    ((row, message),) = pairs
    try:
        with transaction.atomic():
            _store([row], result)
    except UNAVAILABLE:
        raise
    except Exception as exc:
        logger.warning("a dead letter was refused by the database (%r); quarantined", exc)
        refused = quarantined(message, f"could not be stored: {exc!r}")
        with transaction.atomic():
            _store([_complete(refused, now)], result)


def _complete(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    row["received_at"] = now
    row["search_text"] = search_text(row)
    return row


# Every character costs the trigram index about one entry at insert time; this
# much covers the ids, the message and the head of the arguments.
SEARCH_TEXT_LIMIT = 512


def search_text(row: dict[str, Any]) -> str:
    """What the list's free-text search matches: task id, message, args, kwargs.

    The arguments as a viewer reads them, redacted: a search must never match
    a secret, or a viewer could guess it a character at a time.
    """
    parts = [
        row.get("task_id", ""),
        (row.get("exception_message") or "")[:200],
        redacted_json(row.get("args", []))[:300],
        redacted_json(row.get("kwargs", {}))[:300],
    ]
    return " ".join(parts).lower()[:SEARCH_TEXT_LIMIT]


def _store(rows: list[dict[str, Any]], result: BatchResult) -> None:
    _link_origins(rows)
    inserted = _insert_postgresql(rows) if connection.vendor == "postgresql" else _insert(rows)
    count_received(inserted)
    # Counted last: a statement that fails above leaves the result as it was.
    result.stored += len(inserted)
    result.duplicates += len(rows) - len(inserted)
    result.quarantined += sum(1 for row in inserted if row["kind"] == DeadLetter.Kind.QUARANTINED)


def _link_origins(rows: list[dict[str, Any]]) -> None:
    """Point a requeued task's new failure at the dead letter it came from."""
    origins = {row["requeued_from_task_id"] for row in rows if row.get("requeued_from_task_id")}
    if not origins:
        return
    ids = dict(
        DeadLetter.objects.filter(task_id__in=origins).order_by("id").values_list("task_id", "id")
    )
    for row in rows:
        row["requeued_from_id"] = ids.get(row.get("requeued_from_task_id") or "")


# --- the insert ---------------------------------------------------------------


@cache
def _columns() -> list[models.Field[Any, Any]]:
    return [field for field in DeadLetter._meta.concrete_fields if not field.primary_key]


Plan = tuple[tuple[tuple[str, Any], ...], tuple[tuple[int, Callable[[Any], Any]], ...]]


@cache
def _plan(vendor: str) -> Plan:
    """Each column's row key and default, and the columns that need adapting.

    Only JSON (and, on SQLite, datetimes) needs adapting; everything else goes to
    the driver as it is. Worked out once: per value, this was most of a batch.
    JSON goes as text on both databases (COPY's text format hands it to
    PostgreSQL's jsonb reader), written by orjson: psycopg's Jsonb would use
    the standard library's writer, three times slower.
    """
    keys: list[tuple[str, Any]] = []
    converts: list[tuple[int, Callable[[Any], Any]]] = []
    for index, field in enumerate(_columns()):
        if isinstance(field, models.JSONField):
            converts.append((index, jsonio.dumps))
        elif isinstance(field, models.DateTimeField) and vendor != "postgresql":
            converts.append((index, connection.ops.adapt_datetimefield_value))
        default = None if field.null and not field.has_default() else field.get_default()
        if isinstance(default, DatabaseDefault):
            # A database default (``db_default``): its value, sent as the others are.
            db_default = field.db_default
            if isinstance(db_default, Value):
                db_default = db_default.value
            # An expression (received_at's Now()) is always given in the row.
            default = None if hasattr(db_default, "resolve_expression") else db_default
        keys.append((field.attname, default))
    return tuple(keys), tuple(converts)


def _values(row: dict[str, Any]) -> list[Any]:
    keys, converts = _plan(connection.vendor)
    values = [row.get(key, default) for key, default in keys]
    for index, convert in converts:
        if values[index] is not None:
            values[index] = convert(values[index])
    return values


def _column_list() -> str:
    quote = connection.ops.quote_name
    return ", ".join(quote(str(field.column)) for field in _columns())


def _insert(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """SQLite: the transaction holds the only write lock, so a check then insert is exact."""
    keys = [row["dedupe_key"] for row in rows]
    existing = set(
        DeadLetter.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)
    )
    new = [row for row in rows if row["dedupe_key"] not in existing]
    if new:
        placeholders = ", ".join(["%s"] * len(_columns()))
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {TABLE} ({_column_list()}) VALUES ({placeholders}) "  # noqa: S608 - our own column names
                "ON CONFLICT (dedupe_key) DO NOTHING",
                [_values(row) for row in new],
            )
    return new


def _insert_postgresql(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """COPY into a temporary table, then one INSERT that says which rows were new.

    The new rows' ids go to the search outbox; the trigram index is kept up by
    the monitor's indexer (deadletters.search), not here.
    """
    columns = _column_list()
    with connection.cursor() as cursor:
        # Our own table and column names, never input.
        create = f"CREATE TEMPORARY TABLE IF NOT EXISTS deadletters_incoming ON COMMIT DELETE ROWS AS SELECT {columns} FROM {TABLE} WITH NO DATA"  # noqa: E501, S608
        cursor.execute(create)
        with cursor.cursor.copy(f"COPY deadletters_incoming ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(_values(row))
        cursor.execute(
            f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM deadletters_incoming "  # noqa: S608
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
        )
        inserted = dict(cursor.fetchall())
        cursor.execute("TRUNCATE deadletters_incoming")
    queue_for_index(list(inserted))
    keys = set(inserted.values())
    return [row for row in rows if row["dedupe_key"] in keys]
