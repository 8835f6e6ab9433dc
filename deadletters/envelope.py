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
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deadletters.hook import ENVELOPE_VERSION, KINDS

REQUIRED_FIELDS = ("id", "task", "args", "kwargs", "kind", "failed_at")


@dataclass(frozen=True)
class InboundMessage:
    """One message as the broker delivered it, not yet trusted."""

    body: bytes
    content_type: str
    content_encoding: str
    raw: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    # Set when the transport could not even unwrap the message.
    transport_error: str = ""


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


def _clean(value: Any) -> tuple[Any, bool]:
    """Strip NUL characters, which PostgreSQL text and jsonb refuse.

    Returns the value and whether anything was changed.
    """
    if isinstance(value, str):
        return (value.replace("\x00", "\ufffd"), True) if "\x00" in value else (value, False)
    if isinstance(value, list):
        items = [_clean(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(value, dict):
        pairs = [(_clean(k), _clean(v)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in pairs}, any(ck or cv for (_, ck), (_, cv) in pairs)
    return value, False


def _text(value: Any, limit: int | None = None) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\x00", "\ufffd")
    return text[:limit] if limit else text


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def quarantined(message: InboundMessage, reason: str) -> dict[str, Any]:
    """A row that keeps the body the producer sent, and says why it is unreadable.

    The dedupe key hashes the message as the broker held it, so a redelivery is
    one row while two producers' identical bodies stay two.
    """
    digest = hashlib.sha256(message.raw).hexdigest()
    return {
        "dedupe_key": f"raw:{digest}",
        "kind": "quarantined",
        "quarantine_reason": reason[:2000],
        "content_type": _text(message.content_type, 255),
        "raw_body": message.body,
        "failed_at": datetime.now(UTC),
        "exception_type": "",
        "exception_message": reason[:2000],
        "signature": signature("", "quarantined", reason),
        "headers": _clean(message.headers)[0] if _json_ok(message.headers) else {},
    }


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def parse(message: InboundMessage) -> dict[str, Any]:
    """The fields of a ``DeadLetter`` row for this message, quarantined if need be."""
    if message.transport_error:
        return quarantined(message, message.transport_error)
    if message.content_type != "application/json":
        return quarantined(
            message,
            f"content type {message.content_type or '(none)'!r} is not JSON; "
            "the body was kept as bytes and never loaded",
        )
    try:
        envelope = json.loads(message.body.decode(message.content_encoding or "utf-8"))
    except (ValueError, LookupError) as exc:
        return quarantined(message, f"the body is not valid JSON: {exc}")
    if not isinstance(envelope, dict):
        return quarantined(message, "the envelope is not a JSON object")
    version = envelope.get("v")
    if version != ENVELOPE_VERSION:
        return quarantined(message, f"unknown envelope version {version!r}")
    missing = [name for name in REQUIRED_FIELDS if name not in envelope]
    if missing:
        return quarantined(message, f"the envelope lacks {', '.join(missing)}")
    try:
        # JSON can carry a NUL only as this escape: skip the walk when it is absent.
        return _row(envelope, strip_nul=b"\\u0000" in message.body)
    except (TypeError, ValueError, binascii.Error) as exc:
        return quarantined(message, f"the envelope has a bad field: {exc}")


def _row(envelope: dict[str, Any], *, strip_nul: bool) -> dict[str, Any]:
    args, kwargs = envelope["args"], envelope["kwargs"]
    if not isinstance(args, list):
        raise ValueError("args is not a list")
    if not isinstance(kwargs, dict):
        raise ValueError("kwargs is not an object")
    kind = envelope["kind"]
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    failed_at = _parse_time(envelope["failed_at"])
    if failed_at is None:
        raise ValueError("failed_at is empty")
    args_changed = kwargs_changed = False
    if strip_nul:
        args, args_changed = _clean(args)
        kwargs, kwargs_changed = _clean(kwargs)
    headers = envelope.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("headers is not an object")
    if strip_nul:
        headers, _ = _clean(headers)
    priority = envelope.get("priority")
    if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 255):
        raise ValueError(f"priority {priority!r} is not 0..255")

    task_id = _text(envelope["id"], 255)
    task_name = _text(envelope["task"], 255)
    exception_type = _text(envelope.get("exception_type"), 255)
    exception_message = _text(envelope.get("exception_message"))
    raw_body = None
    if envelope.get("body_b64"):
        raw_body = base64.b64decode(envelope["body_b64"], validate=True)
    if task_id:
        dedupe_key = f"task:{task_id}"
    else:
        dedupe_key = (
            "raw:" + hashlib.sha256(json.dumps(envelope, sort_keys=True).encode()).hexdigest()
        )
    return {
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
        "retries": max(0, int(envelope.get("retries") or 0)),
        "root_id": _text(envelope.get("root_id"), 255),
        "parent_id": _text(envelope.get("parent_id"), 255),
        "group_id": _text(envelope.get("group_id"), 255),
        "eta": _parse_time(envelope.get("eta")),
        "expires": _parse_time(envelope.get("expires")),
        "headers": headers,
        "worker": _text(envelope.get("hostname"), 255),
        "kind": kind,
        "exception_type": exception_type,
        "exception_message": exception_message,
        "traceback": _text(envelope.get("traceback")),
        "failed_at": failed_at,
        "signature": signature(task_name, exception_type, exception_message),
        "content_type": _text(envelope.get("content_type"), 255),
        "raw_body": raw_body,
        "requeued_from_task_id": _text(envelope.get("requeued_from"), 255),
    }
