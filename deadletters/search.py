"""The list's free-text search: task id, exception message, args and kwargs.

On PostgreSQL the text lives in a narrow table with a trigram index, filled by
the monitor's indexer from an outbox that each ingest transaction writes; rows
still in the outbox are matched by a scan, so a search never misses a stored
row. On SQLite the search scans ``search_text``.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL

INDEX_BATCH = 5_000

# The longest search the list accepts. A longer one is a paste gone wrong, not
# a search; SQLite refuses LIKE patterns past 50,000 characters, and each extra
# character is a trigram more for PostgreSQL to intersect.
MAX_LENGTH = 200


def uses_index() -> bool:
    return connection.vendor == "postgresql"


# Above this many indexed matches, walking the newest rows finds a page sooner
# than looking each match up by id: at a million rows, a page of a term in 1 %
# of them (10,000 ids) took 85 ms by id, and the walk reads some 5,000 rows
# (docs/benchmarks.md).
COMMON_TERM = 5_000


def matching(text: str) -> Q:
    """A filter for the rows whose task id, message or arguments contain ``text``."""
    raw = text.strip()
    needle = raw.lower()
    scan = Q(task_id=raw) | Q(requeue_task_id=raw) | Q(search_text__contains=needle)
    if not uses_index() or _is_common(needle):
        return scan
    # One id set, joined to the other filters with AND: an OR of subqueries
    # here made PostgreSQL scan the whole table (docs/benchmarks.md).
    return Q(pk__in=RawSQL(_MATCHING_IDS, _matching_params(raw)))  # noqa: S611 - our own SQL


# The ids of the rows that match: indexed, still in the outbox, or by task id.
_MATCHING_IDS = (
    "SELECT dead_letter_id FROM deadletters_deadlettersearch WHERE text LIKE %s"
    " UNION SELECT q.dead_letter_id FROM deadletters_deadlettersearchqueue q"
    " JOIN deadletters_deadletter d ON d.id = q.dead_letter_id WHERE d.search_text LIKE %s"
    " UNION SELECT id FROM deadletters_deadletter WHERE task_id = %s OR requeue_task_id = %s"
)


def _matching_params(raw: str) -> list[str]:
    pattern = f"%{_like_escape(raw.lower())}%"
    return [pattern, pattern, raw, raw]


def count(text: str, cap: int) -> int:
    """How many rows ``matching(text)`` holds, counted up to ``cap + 1`` on the
    index (PostgreSQL only), in one statement.

    Counting the rows of a common term through ``matching``'s scan read tens of
    thousands of rows' text (docs/benchmarks.md); the index says at once that
    there are more than ``cap``. The rest of a rarer term's rows are few: those
    still in the outbox, and those matched by a task id the text does not hold
    (a requeue's id).
    """
    raw = text.strip()
    pattern = f"%{_like_escape(raw.lower())}%"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM deadletters_deadlettersearch"
            " WHERE text LIKE %s LIMIT %s) AS hits),"
            " (SELECT count(*) FROM deadletters_deadlettersearchqueue q"
            " JOIN deadletters_deadletter d ON d.id = q.dead_letter_id WHERE d.search_text LIKE %s)"
            " + (SELECT count(*) FROM deadletters_deadletter"
            " WHERE (task_id = %s OR requeue_task_id = %s) AND search_text NOT LIKE %s)",
            [pattern, cap + 1, pattern, raw, raw, pattern],
        )
        indexed, others = cursor.fetchone() or (0, 0)
    return int(indexed) if indexed > cap else int(indexed) + int(others)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _is_common(needle: str) -> bool:
    """Whether the trigram index holds more than COMMON_TERM matches (counted up to there)."""
    return _indexed_matches(needle, COMMON_TERM + 1) > COMMON_TERM


def _indexed_matches(needle: str, limit: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT 1 FROM deadletters_deadlettersearch"
            " WHERE text LIKE %s LIMIT %s) AS hits",
            [f"%{_like_escape(needle)}%", limit],
        )
        (n,) = cursor.fetchone() or (0,)
    return int(n)


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
