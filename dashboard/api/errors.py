"""Errors as the API answers them: a ``detail`` in words, or per-field for a 422."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ninja.errors import ValidationError

from dashboard.api.schemas import Conflict, Error, ValidationFailed


def field_errors(
    where: str, errors: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> ValidationError:
    """A 422 from a Django form's (or filter's) errors, each under the API's name
    of its field (``names`` maps form names to them); errors of the whole form
    go under ``where`` alone."""
    names = names or {}
    found = []
    for field, messages in errors.items():
        loc = [where] if field == "__all__" else [where, names.get(field, field)]
        for message in messages:
            found.append({"loc": loc, "msg": str(message), "type": "invalid"})
    return ValidationError(found)


def responses(ok: Any, *codes: int) -> dict[int, Any]:
    """The answers an operation documents: ``ok`` for 200 and the errors it can give.

    Every operation can answer 401 (no or a bad token), 403 (a role without
    the permission) and 422 (a field it cannot read).
    """
    shapes: dict[int, Any] = {
        400: Error, 401: Error, 403: Error, 404: Error, 409: Conflict,
        422: ValidationFailed, 429: Error, 503: Error,
    }  # fmt: skip
    return {200: ok} | {code: shapes[code] for code in (400, 401, 403, 422, *codes)}
