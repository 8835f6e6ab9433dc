"""Redaction of sensitive values for display and for the audit.

The stored args and kwargs stay intact, so that a requeue is faithful; what a
person reads (the page, the audit, a copy button) says ``[redacted]`` instead.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from django.conf import settings

from dashboard import jsonio

REDACTED = "[redacted]"
# A raw message larger than this is not parsed for display (its bytes are
# shown to those who may read them, as for anything that is not JSON).
RAW_PARSE_LIMIT = 1_000_000


@lru_cache(maxsize=8)
def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    # One search in C instead of a loop over the words for every key.
    return re.compile("|".join(re.escape(word.lower()) for word in words))


def _words() -> tuple[str, ...]:
    return tuple(settings.DEADLETTERS_REDACT_KEYS)


def _sensitive(key: object, words: tuple[str, ...]) -> bool:
    return bool(words) and _pattern(words).search(str(key).lower()) is not None


def redact(value: Any, words: tuple[str, ...] | None = None) -> Any:
    """A copy of ``value`` with the values of sensitive keys replaced, at any depth."""
    if words is None:
        words = _words()
    if isinstance(value, dict):
        return {
            key: REDACTED if _sensitive(key, words) else redact(item, words)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, words) for item in value]
    return value


def redacted_json(value: Any) -> str:
    """Compact JSON of ``value`` as a viewer reads it, redacted.

    Most arguments hold no sensitive key; their JSON holds none of the words
    then, and is the answer as it is: one search of the text instead of a walk
    of the value (ingest does this for every dead letter).
    """
    text = jsonio.dumps(value)
    words = _words()
    if words and (not _found_in_json(words) or _pattern(words).search(text.lower())):
        return jsonio.dumps(redact(value, words))
    return text


@lru_cache(maxsize=8)
def _found_in_json(words: tuple[str, ...]) -> bool:
    """Whether a key holding one of ``words`` shows it verbatim in JSON text:
    not when JSON escapes one of its characters."""
    return all(word.isprintable() and '"' not in word and "\\" not in word for word in words)


def redacted_raw(raw: bytes | memoryview | None) -> str | None:
    """A raw message as anyone who may read dead letters may see it: parsed as
    JSON (never as anything else) and redacted; None when it is not JSON, and so
    cannot be redacted: its bytes are then for those with ``view_raw_deadletter``.
    """
    if not raw or len(raw) > RAW_PARSE_LIMIT:
        return None
    try:
        value = json.loads(bytes(raw).decode("utf-8"))
        return json.dumps(redact(value), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return None


def restore(edited: Any, original: Any) -> Any:
    """Put the original values back where an edit kept the ``[redacted]`` marker.

    An operator edits the redacted view; the secrets they never saw must
    survive the edit unchanged.
    """
    if edited == REDACTED:
        return original
    if isinstance(edited, dict) and isinstance(original, dict):
        return {key: restore(item, original.get(key)) for key, item in edited.items()}
    if isinstance(edited, list) and isinstance(original, list):
        return [
            restore(item, original[i] if i < len(original) else None)
            for i, item in enumerate(edited)
        ]
    return edited
