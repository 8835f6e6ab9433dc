"""The list's free-text search: task id, exception message, args and kwargs.

On PostgreSQL the text lives in a narrow table with a trigram index, filled by
the monitor's indexer from an outbox that each ingest transaction writes; rows
still in the outbox are matched by a scan, so a search never misses a stored
row. On SQLite the search scans ``search_text``.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import Q

from deadletters.models import DeadLetterSearch, DeadLetterSearchQueue

INDEX_BATCH = 5_000


def uses_index() -> bool:
    return connection.vendor == "postgresql"


def matching(text: str) -> Q:
    """A filter for the rows whose task id, message or arguments contain ``text``."""
    needle = text.strip().lower()
    exact_id = Q(task_id=text.strip()) | Q(requeue_task_id=text.strip())
    if not uses_index():
        return exact_id | Q(search_text__contains=needle)
    indexed = DeadLetterSearch.objects.filter(text__contains=needle).values("dead_letter_id")
    waiting = DeadLetterSearchQueue.objects.values("dead_letter_id")
    return exact_id | Q(pk__in=indexed) | (Q(pk__in=waiting) & Q(search_text__contains=needle))


def queue_for_index(ids: list[int]) -> None:
    """Called inside the ingest transaction with the ids it inserted."""
    if ids and uses_index():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO deadletters_deadlettersearchqueue (dead_letter_id) "
                "SELECT unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
                [ids],
            )


def index_pending(limit: int = INDEX_BATCH) -> int:
    """Move up to ``limit`` queued rows into the indexed table; returns how many."""
    if not uses_index():
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH moved AS (
                DELETE FROM deadletters_deadlettersearchqueue
                WHERE dead_letter_id IN (
                    SELECT dead_letter_id FROM deadletters_deadlettersearchqueue
                    ORDER BY dead_letter_id LIMIT %s FOR UPDATE SKIP LOCKED
                )
                RETURNING dead_letter_id
            )
            INSERT INTO deadletters_deadlettersearch (dead_letter_id, text)
            SELECT d.id, d.search_text FROM deadletters_deadletter d
            JOIN moved ON moved.dead_letter_id = d.id
            ON CONFLICT DO NOTHING
            """,
            [limit],
        )
        return int(cursor.rowcount)


def index_all_pending() -> int:
    """The indexer job: drain the outbox in batches."""
    total = 0
    while True:
        moved = index_pending()
        total += moved
        if moved < INDEX_BATCH:
            return total


def pending_count() -> int:
    return DeadLetterSearchQueue.objects.count() if uses_index() else 0
