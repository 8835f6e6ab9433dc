"""What ``/readyz`` checks: that this web process can serve a page.

That is the database, reachable and migrated, and nothing else. The broker and
the monitor are not the web's readiness: an orchestrator that took the web out
of service during a broker outage would hide the banner that says so. Pages
show them as banners, ``/metrics`` exposes them for alerts, and the monitor has
its own liveness check (``manage.py monitor --check``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

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
    # Without a database there is nothing to say about its migrations.
    migrations = check_migrations() if database.ok else Check("migrations", False)
    return Readiness([database, migrations])


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True)
    except DatabaseError as exc:
        return _failed("database", exc)


# Once migrated, a database stays so for the life of this process (new code,
# with new migrations, comes with a new process): the plan is not worked out again.
_migrated = False


def check_migrations() -> Check:
    global _migrated
    if _migrated:
        return Check("migrations", True)
    try:
        executor = MigrationExecutor(connection)
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return _failed("migrations", exc)
    if pending:
        return Check("migrations", False, {"pending": len(pending)})
    _migrated = True
    return Check("migrations", True)


def _failed(name: str, exc: BaseException) -> Check:
    # The endpoint is public: the reason goes to the log, only its kind to the caller.
    logger.warning("readiness: %s unreachable: %s", name, exc)
    return Check(name, False, {"error": type(exc).__name__})
