"""Turn a message from the dead-letter queue into the fields of a row.

Pure functions: no database, no broker. Anything that is not a valid envelope
becomes a quarantined row that keeps the raw bytes and says why; nothing here
ever loads pickle or raises on bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from dashboard import jsonio
from dashboard.broker.inbox import InboundMessage
from deadletters.hook import ENVELOPE_VERSION, KINDS

REQUIRED_FIELDS = ("id", "task", "args", "kwargs", "kind", "failed_at")


_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def normalise_message(message: str) -> str:
    """The exception message with ids, hex and numbers replaced by placeholders."""
    text = _UUID.sub("<id>", message[:2000])
    text = _HEX.sub("<hex>", text)
    return _NUMBER.sub("<n>", text)


def signature(task_name: str, exception_type: str, message: str) -> str:
    key = "\0".join((task_name, exception_type, normalise_message(message)))
    return hashlib.sha1(key.encode("utf-8", "replace"), usedforsecurity=False).hexdigest()


# Deeper than this, a message is quarantined: its structure is not a task's
# arguments, and walking it would cost the monitor its stack (docs/ingest.md).
MAX_DEPTH = 100
# The largest ``retries`` both databases store (PositiveIntegerField).
MAX_RETRIES = 2**31 - 1
# Lone surrogates: valid in a Python str (and in JSON as an escape), refused
# by UTF-8 and so by both databases.
_SURROGATE = re.compile("[\ud800-\udfff]")


class TooDeep(ValueError):
    pass


def _clean_text(text: str) -> tuple[str, bool]:
    """NUL characters and lone surrogates replaced by U+FFFD; whether any was."""
    if text.isascii() and "\x00" not in text:
        return text, False  # most text: no surrogate is ASCII
    cleaned = _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))
    return cleaned, cleaned != text


def _clean(value: Any, depth: int = 0) -> tuple[Any, bool]:
    """The value as both databases can store it as JSON, and whether it changed.

    Strings lose NULs and lone surrogates, non-finite numbers (JSON has none;
    Python reads ``1e400`` as infinity) become their names as strings, and
    nesting beyond ``MAX_DEPTH`` raises ``TooDeep``.
    """
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value), True
    if isinstance(value, list | dict):
        if depth >= MAX_DEPTH:
            raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            items = [_clean(v, depth + 1) for v in value]
            return [v for v, _ in items], any(c for _, c in items)
        pairs = [(_clean_text(str(k)), _clean(v, depth + 1)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in pairs}, any(ck or cv for (_, ck), (_, cv) in pairs)
    return value, False


def _text(value: Any, limit: int | None = None) -> str:
    text = _clean_text("" if value is None else str(value))[0]
    return text[:limit] if limit else text


def _parse_time(value: Any) -> datetime | None:
    """A datetime, or None when empty; ``ValueError`` when it is not a time both
    databases can store (a number that no calendar holds, text that is no date)."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError("a boolean is not a time")
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"{_text(repr(value), 80)} is not a time ({exc})") from exc


def _failed_at(value: Any) -> datetime:
    moment = _parse_time(value)
    if moment is None:
        raise ValueError("empty")
    return moment


def _retries(value: Any) -> int:
    """``retries`` as stored; ``ValueError`` when it is no count both databases hold."""
    if value in (None, "", False):
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES:
        return value
    raise ValueError(f"retries {_text(repr(value), 80)} is not a count from 0 to {MAX_RETRIES}")


def quarantined(message: InboundMessage, reason: str) -> dict[str, Any]:
    """A row that keeps the body the producer sent, and says why it is unreadable.

    The dedupe key hashes the message as the broker held it, so a redelivery is
    one row while two producers' identical bodies stay two.
    """
    digest = hashlib.sha256(message.raw).hexdigest()
    reason = _text(reason, 2000)
    try:
        headers = _clean(message.headers)[0] if _json_ok(message.headers) else {}
    except ValueError:  # nested too deep: the raw message keeps them
        headers = {}
    return {
        "dedupe_key": f"raw:{digest}",
        "kind": "quarantined",
        "quarantine_reason": reason,
        "content_type": _text(message.content_type, 255),
        "raw_body": message.body,
        "failed_at": datetime.now(UTC),
        "exception_type": "",
        "exception_message": reason,
        "signature": signature("", "quarantined", reason),
        "headers": headers,
    }


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError, RecursionError):
        return False


# What an envelope holds when its values need cleaning before they are stored:
# a NUL or a surrogate escape, a non-finite number (Infinity, NaN, or an
# exponent of three digits, which may overflow a float). Looked for once in the
# body, in C, so that ordinary envelopes skip the walk. When orjson could read
# the body, only a NUL is possible: it refuses the rest.
_NEEDS_CLEANING = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|Infinity|NaN|[eE][+-]?[0-9]{3}")
_NUL = b"\\u0000"


def _load(body: bytes, encoding: str) -> tuple[Any, bool]:
    """The envelope, and whether its values need cleaning; ``ValueError``,
    ``LookupError`` or ``RecursionError`` when it cannot be read."""
    if encoding.lower() in ("utf-8", "utf8"):
        value, exact = jsonio.loads_exact(body)
        if exact:
            return value, _NUL in body
    else:
        value = json.loads(body.decode(encoding))
    return value, bool(_NEEDS_CLEANING.search(body))


def parse(message: InboundMessage) -> dict[str, Any]:
    """The fields of a ``DeadLetter`` row for this message, quarantined if need be.

    Total: whatever the bytes are, the answer is a row that both databases can
    store. Values they cannot hold are made storable and noted (``ingest_notes``,
    with the original kept in ``raw_body``); what cannot be read at all is
    quarantined with its bytes and the reason.
    """
    if message.transport_error:
        return quarantined(message, message.transport_error)
    if message.content_type != "application/json":
        return quarantined(
            message,
            f"content type {message.content_type or '(none)'!r} is not JSON; "
            "the body was kept as bytes and never loaded",
        )
    try:
        envelope, clean = _load(message.body, message.content_encoding or "utf-8")
    except (ValueError, LookupError) as exc:
        return quarantined(message, f"the body is not valid JSON: {exc}")
    except RecursionError:
        return quarantined(message, f"the body nests deeper than {MAX_DEPTH} levels")
    if not isinstance(envelope, dict):
        return quarantined(message, "the envelope is not a JSON object")
    version = envelope.get("v")
    if version != ENVELOPE_VERSION:
        return quarantined(message, f"unknown envelope version {_text(repr(version), 80)}")
    missing = [name for name in REQUIRED_FIELDS if name not in envelope]
    if missing:
        return quarantined(message, f"the envelope lacks {', '.join(missing)}")
    try:
        return _row(envelope, message.body, clean=clean)
    except (TypeError, ValueError, binascii.Error) as exc:
        return quarantined(message, f"the envelope has a bad field: {exc}")
    except Exception as exc:  # a message must never stop ingestion
        return quarantined(message, f"the envelope could not be read: {exc!r}")


def _row(envelope: dict[str, Any], body: bytes, *, clean: bool) -> dict[str, Any]:
    args, kwargs = envelope["args"], envelope["kwargs"]
    if not isinstance(args, list):
        raise ValueError("args is not a list")
    if not isinstance(kwargs, dict):
        raise ValueError("kwargs is not an object")
    kind = envelope["kind"]
    if kind not in KINDS:
        raise ValueError(f"kind {_text(repr(kind), 80)} is not one of {', '.join(KINDS)}")
    headers = envelope.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers is not an object")
    priority = envelope.get("priority")
    if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 255):
        raise ValueError(f"priority {_text(repr(priority), 80)} is not 0..255")
    notes: list[str] = []
    args_changed = kwargs_changed = False
    if clean or body.count(b"[") + body.count(b"{") > MAX_DEPTH:
        args, args_changed = _clean(args)
        kwargs, kwargs_changed = _clean(kwargs)
        headers, _ = _clean(headers)
        if args_changed or kwargs_changed:
            notes.append("arguments: NULs, lone surrogates or non-finite numbers replaced")

    def stored(name: str, read: Any, value: Any, default: Any, shown: str = "") -> Any:
        """The field as read, or ``default`` and a note when it cannot be stored."""
        try:
            return read(value)
        except ValueError as exc:
            notes.append(f"{name}: {exc}; {shown or f'stored as {default!r}'}")
            return default

    failed_at = stored(
        "failed_at", _failed_at, envelope["failed_at"], None, "the time of ingestion is shown"
    ) or datetime.now(UTC)
    texts = {
        name: _clean_text("" if envelope.get(key) is None else str(envelope.get(key)))
        for name, key in (
            ("task_id", "id"), ("task_name", "task"), ("exception_type", "exception_type"),
            ("exception_message", "exception_message"), ("traceback", "traceback"),
        )
    }  # fmt: skip
    if any(changed for _, changed in texts.values()):
        notes.append("text: NULs or lone surrogates replaced")
    task_id = texts["task_id"][0][:255]
    task_name = texts["task_name"][0][:255]
    exception_type = texts["exception_type"][0][:255]
    exception_message = texts["exception_message"][0]
    raw_body = None
    if envelope.get("body_b64"):
        raw_body = base64.b64decode(envelope["body_b64"], validate=True)
    if not task_id:
        digest = hashlib.sha256(json.dumps(envelope, sort_keys=True).encode()).hexdigest()
        dedupe_key = "raw:" + digest
    elif len(task_id) > 190:  # the key holds 200 characters
        dedupe_key = "task:sha256:" + hashlib.sha256(task_id.encode()).hexdigest()
    else:
        dedupe_key = f"task:{task_id}"
    row = {
        "dedupe_key": dedupe_key,
        "envelope_version": envelope["v"],
        "task_id": task_id,
        "task_name": task_name,
        "args": args,
        "kwargs": kwargs,
        "lossy": bool(envelope.get("lossy")) or args_changed or kwargs_changed,
        "queue": _text(envelope.get("queue"), 255),
        "exchange": _text(envelope.get("exchange"), 255),
        "routing_key": _text(envelope.get("routing_key"), 255),
        "priority": priority,
        "retries": stored("retries", _retries, envelope.get("retries"), 0),
        "root_id": _text(envelope.get("root_id"), 255),
        "parent_id": _text(envelope.get("parent_id"), 255),
        "group_id": _text(envelope.get("group_id"), 255),
        "eta": stored("eta", _parse_time, envelope.get("eta"), None),
        "expires": stored("expires", _parse_time, envelope.get("expires"), None),
        "headers": headers,
        "worker": _text(envelope.get("hostname"), 255),
        "kind": kind,
        "exception_type": exception_type,
        "exception_message": exception_message,
        "traceback": texts["traceback"][0],
        "failed_at": failed_at,
        "signature": signature(task_name, exception_type, exception_message),
        "content_type": _text(envelope.get("content_type"), 255),
        "raw_body": raw_body,
        "requeued_from_task_id": _text(envelope.get("requeued_from"), 255),
    }
    if notes:
        row["ingest_notes"] = "; ".join(notes)
        # The envelope as it came, for whoever needs the values it had.
        if row["raw_body"] is None:
            row["raw_body"] = body
            row["content_type"] = row["content_type"] or "application/json"
    return row
