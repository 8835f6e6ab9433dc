"""Log lines: one per event, plain or JSON (``LOG_FORMAT``), with the request or batch id.

The ids travel in context variables, set by ``RequestIdMiddleware`` for a
request and by the monitor for a batch of dead letters; ``ContextFilter`` (on
the handler) copies them onto every record, whichever logger wrote it.

What goes into a line is only what the code put in its message: task
arguments never do (the audit and requeue lines carry ids), and there is no
catch-all that would dump ``extra`` or a request's body.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
batch_id: ContextVar[str | None] = ContextVar("batch_id", default=None)

CONTEXT = {"request_id": request_id, "batch_id": batch_id}

# An id from outside is copied into every line: keep it to characters that
# cannot forge a field or a line.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_id() -> str:
    return uuid.uuid4().hex


def safe_id(candidate: str | None) -> str | None:
    return candidate if candidate and _SAFE_ID.match(candidate) else None


@contextlib.contextmanager
def log_context(**values: str) -> Iterator[None]:
    """Set ``request_id`` / ``batch_id`` for the lines logged inside the block."""
    tokens = [(CONTEXT[name], CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def logging_config(
    log_format: str,
    *,
    root_level: str | None = None,
    loggers: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` with one console handler in ``log_format``
    ("plain" or "json") that adds the request and batch ids to every record.

    The site's ``LOGGING`` and gunicorn's ``logconfig_dict`` are both built here.
    """
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "dashboard.logs.ContextFilter"}},
        "formatters": {
            "plain": {"()": "dashboard.logs.PlainFormatter"},
            "json": {"()": "dashboard.logs.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # runserver's own line for each request, beside the one that
            # RequestIdMiddleware writes with its id and duration: each request
            # was logged twice. Its errors stay (a request the site never saw,
            # HTTPS spoken to it). Gunicorn never writes to this logger.
            "django.server": {"handlers": ["console"], "level": "ERROR", "propagate": False},
            **(loggers or {}),
        },
    }
    if root_level is not None:
        config["root"] = {"handlers": ["console"], "level": root_level}
    return config


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """Structured fields a caller passed as ``extra={"fields": {...}}``."""
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        event = _json_object(message)
        if event is None:
            entry["message"] = message
        else:
            # Audit and requeue lines are already JSON: merge their fields
            # instead of nesting a JSON string inside JSON.
            entry.update({k: v for k, v in event.items() if k not in entry})
        entry.update({k: v for k, v in _fields(record).items() if k not in entry})
        for name in CONTEXT:
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """Human-readable, still one line per event: a traceback's newlines are escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT if getattr(record, name, None)
        )
        if ids:
            text = f"{text} [{ids}]"
        return text.replace("\r", "").replace("\n", "\\n")


def _json_object(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
