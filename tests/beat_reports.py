"""Beat reports as the hook sends them, for tests that need beats without
starting ``celery beat``."""

from __future__ import annotations

import json
import uuid
from typing import Any

from dashboard.broker.inbox import InboundMessage


def beat_report(
    process: str, seq: int, started: float, sends: list[float], **extra: Any
) -> dict[str, Any]:
    return {
        "type": "beat", "v": 1, "process": process, "seq": seq, "hostname": "host-a",
        "pid": 100 + seq, "scheduler": "celery.beat.PersistentScheduler",
        "database_scheduler": False, "started_at": started, "sent_at": max(sends, default=started),
        "interval": 10.0, "stopping": False,
        "entries": [{"name": "acme-tick", "task": "acme.tick", "schedule": "every 1 minute",
                     "args": [], "kwargs": {}, "options": {}, "queue": "celery",
                     "lossy": False, "enabled": True, "last_run_at": max(sends, default=started),
                     "next_due": max(sends, default=started) + 60, "total_run_count": 1}],
        "sends": [["acme-tick", "acme.tick", at, uuid.uuid4().hex] for at in sends],
        **extra,
    }  # fmt: skip


def message(body: Any) -> InboundMessage:
    raw = json.dumps(body).encode()
    return InboundMessage(raw, "application/json", "utf-8", raw, {"x_ops_report": "beat"})
