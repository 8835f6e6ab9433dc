"""Storing batches of dead letters: one transaction a batch, one row a failure."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, transaction

from deadletters.envelope import InboundMessage, parse, quarantined
from deadletters.models import DeadLetter

logger = logging.getLogger("deadletters.ingest")

# Errors that say "the database is away", as opposed to "this row is bad".
UNAVAILABLE = (OperationalError, InterfaceError)


@dataclass
class BatchResult:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0


def store_batch(messages: list[InboundMessage]) -> BatchResult:
    """Insert the batch in one transaction; redeliveries are counted, not stored.

    Raises an ``UNAVAILABLE`` error when the database cannot be reached, so the
    caller keeps the batch unacked and tries again.
    """
    result = BatchResult(received=len(messages))
    rows: dict[str, tuple[dict[str, Any], InboundMessage]] = {}
    for message in messages:
        row = parse(message)
        if row["dedupe_key"] in rows:
            result.duplicates += 1
        else:
            rows[row["dedupe_key"]] = (row, message)
    try:
        with transaction.atomic():
            _insert([row for row, _ in rows.values()], result)
    except UNAVAILABLE:
        raise
    except DatabaseError as exc:
        # One bad row must not hold the queue: store row by row, and keep the
        # ones the database refuses as quarantined raw messages.
        logger.warning("batch insert failed (%s); storing row by row", exc)
        result = BatchResult(received=len(messages), duplicates=result.duplicates)
        with transaction.atomic():
            for row, message in rows.values():
                try:
                    with transaction.atomic():
                        _insert([row], result)
                except UNAVAILABLE:
                    raise
                except DatabaseError as row_exc:
                    with transaction.atomic():
                        _insert([quarantined(message, f"could not be stored: {row_exc}")], result)
    return result


def _insert(rows: list[dict[str, Any]], result: BatchResult) -> None:
    keys = [row["dedupe_key"] for row in rows]
    existing = set(
        DeadLetter.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)
    )
    new = [row for row in rows if row["dedupe_key"] not in existing]
    result.duplicates += len(rows) - len(new)
    origins = {row["requeued_from_task_id"] for row in new if row.get("requeued_from_task_id")}
    origin_ids = (
        dict(
            DeadLetter.objects.filter(task_id__in=origins)
            .order_by("id")
            .values_list("task_id", "id")
        )
        if origins
        else {}
    )
    objects = []
    for row in new:
        obj = DeadLetter(**row)
        obj.requeued_from_id = origin_ids.get(row.get("requeued_from_task_id") or "")
        objects.append(obj)
        if row["kind"] == DeadLetter.Kind.QUARANTINED:
            result.quarantined += 1
    # ignore_conflicts: another monitor may have stored the same failure
    # between our check and this insert.
    DeadLetter.objects.bulk_create(objects, ignore_conflicts=True)
    result.stored += len(objects)
