"""Cursor pagination, newest first by id: each page reads its rows and one more, never a COUNT.

The cursor is opaque to callers (a version and the last id they saw, in
URL-safe base64), so that its form can change without breaking them.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

from django.conf import settings
from django.db.models import Model, QuerySet
from ninja.errors import ValidationError

from dashboard.http import MAX_ID

M = TypeVar("M", bound=Model)

MAX_LIMIT = 500
_VERSION = "v1:"


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_VERSION}{last_id}".encode()).decode().rstrip("=")


class InvalidCursor(ValueError):
    pass


def decode_cursor(cursor: str) -> int:
    """The id a page starts below; InvalidCursor for anything ``encode_cursor`` never made."""
    if not cursor or len(cursor) > 40 or not cursor.isascii():
        raise InvalidCursor("not a cursor this API gave out")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor this API gave out") from None
    number = text.removeprefix(_VERSION)
    if number == text or not (number.isdigit() and len(number) <= 19):
        raise InvalidCursor("not a cursor this API gave out")
    last_id = int(number)
    if not 1 <= last_id <= MAX_ID:
        raise InvalidCursor("not a cursor this API gave out")
    return last_id


def page_size(limit: int | None) -> int:
    return limit or settings.API_PAGE_SIZE


def page(rows: QuerySet[M], *, cursor: str | None, limit: int | None) -> tuple[list[M], str | None]:
    """One page of ``rows`` newest first by id (``limit`` of them, by default
    API_PAGE_SIZE), and the cursor of the next (None: no more)."""
    limit = page_size(limit)
    if cursor is not None:
        try:
            rows = rows.filter(pk__lt=decode_cursor(cursor))
        except InvalidCursor as exc:
            raise ValidationError(
                [{"loc": ["query", "cursor"], "msg": str(exc), "type": "cursor"}]
            ) from None
    found = list(rows.order_by("-pk")[: limit + 1])
    more = len(found) > limit
    found = found[:limit]
    return found, encode_cursor(found[-1].pk) if more else None
