"""What ``/readyz`` checks: the database, the broker, and that snapshots are fresh.

Each check answers in a bounded time and never raises: a part that is away is
a failing check, not an error page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from dashboard import broker
from dashboard.models import CollectorStatus

logger = logging.getLogger("dashboard.readiness")


@dataclass
class Check:
    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Readiness:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "unavailable",
            "failing": [check.name for check in self.checks if not check.ok],
            "checks": {check.name: {"ok": check.ok, **check.detail} for check in self.checks},
        }


def readiness() -> Readiness:
    database = check_database()
    checks = [database, check_broker()]
    # Without a database there is nothing to say about the snapshots.
    checks.append(check_snapshots() if database.ok else Check("snapshots", False))
    return Readiness(checks)


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True)
    except DatabaseError as exc:
        return _failed("database", exc)


def check_broker() -> Check:
    try:
        broker.ping(settings.READYZ_BROKER_TIMEOUT)
        return Check("broker", True)
    except Exception as exc:  # any client library's error means "not reachable"
        return _failed("broker", exc)


def check_snapshots() -> Check:
    """Every collector of the monitor succeeded recently, each by its own threshold."""
    now = timezone.now()
    collectors: dict[str, dict[str, Any]] = {}
    try:
        statuses = list(CollectorStatus.objects.order_by("name"))
    except DatabaseError as exc:
        return _failed("snapshots", exc)
    for status in statuses:
        max_age = settings.READYZ_MAX_AGE_BY_COLLECTOR.get(
            status.name, settings.READYZ_MAX_AGE_SECONDS
        )
        age = status.age_seconds(now)
        collectors[status.name] = {
            "ok": age is not None and age <= max_age,
            "age_seconds": None if age is None else round(age, 1),
            "max_age_seconds": max_age,
        }
    if not collectors:
        # A fresh install whose monitor never ran serves nothing but empty pages.
        reason = "no collector has reported; is a monitor running?"
        return Check("snapshots", False, {"reason": reason})
    ok = all(entry["ok"] for entry in collectors.values())
    return Check("snapshots", ok, {"collectors": collectors})


def _failed(name: str, exc: BaseException) -> Check:
    # The endpoint is public: the reason goes to the log, only its kind to the caller.
    logger.warning("readiness: %s unreachable: %s", name, exc)
    return Check(name, False, {"error": type(exc).__name__})
