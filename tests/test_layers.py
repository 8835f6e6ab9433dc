"""The rooms of the code and which may import which: a crossing fails here,
naming the module and the import.

    dashboard.broker   the only code that talks to the broker; imports no models
    deadletters        imports only the dashboard's foundation (broker, audit,
                       http, models, roles), never the monitor or the pages
    deadletters.hook   runs in the teams' workers: celery, kombu and the
                       standard library only
    dashboard.monitor  the process; only its job list (jobs.py) reaches into
                       the apps (deadletters, the queue pages' samplers)
    dashboard.queues   the queue and worker pages; of the monitor, only the
                       collector status it records; of deadletters, only its
                       selectors, and only in its own selectors: a queue's page
                       counts the queue's open dead letters
    dashboard.tasks    the task outcomes and their pages; nothing of the
                       monitor, and of deadletters only its selectors: a task's
                       page lists the task's open failure groups; the lookup
                       ("where is task X?") also reads the dead-letter rows of
                       an id and redacts as the dead letters do
    dashboard.periodic the beat page and its reports; nothing of the monitor,
                       and of deadletters only its selectors: an entry's last
                       outcome is its task's dead letter
    dashboard.tables   the audit's table; of deadletters only its selectors:
                       it names the failure groups that events acted on
    dashboard.api      the JSON API: the pages' actions for programs, so it calls
                       what the pages call (deadletters' selectors, services,
                       bulk, and the forms and filters that validate them; the
                       rooms' selectors and services), never views or the monitor
    who imports deadletters: itself, the monitor's job list, the overview,
                       the task, beat and queue pages and the audit's table
                       (selectors only), the urls and metrics, and the
                       command line (`manage.py ops`, like the views)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("dashboard", "deadletters", "metrics")
OURS = (*PACKAGES, "demo", "tests", "bench")

# Who may import deadletters, besides deadletters itself.
DEADLETTERS_IMPORTERS = (
    "dashboard.api",
    "dashboard.monitor.jobs",
    "dashboard.overview",
    "dashboard.periodic",
    # A queue's open dead letters; the samplers still get theirs from the job list.
    "dashboard.queues.selectors",
    # The audit's table names the failure groups its events acted on.
    "dashboard.tables",
    "dashboard.tasks",
    "dashboard.urls",
    # `manage.py ops`: the console's actions in a terminal, through the same
    # selectors, services and bulk requests as its views (docs/cli.md).
    "dashboard.cli",
    "metrics",
)
# What the API may import of deadletters: what the pages call, and what validates for them.
API_MAY = tuple(
    f"deadletters.{name}"
    for name in ("selectors", "services", "bulk", "filters", "forms", "models", "redact")
)
# What the broker room may import of ours.
BROKER_MAY = ("dashboard.broker", "dashboard.celery", "dashboard.jsonio")
# What deadletters may import of the dashboard.
FOUNDATION = (
    "dashboard.broker",
    "dashboard.audit",
    "dashboard.jsonio",
    "dashboard.http",
    "dashboard.models",
    "dashboard.roles",
)


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str) -> Iterator[tuple[int, str]]:
    """Every module that ``source`` imports, anywhere in it, with the line."""
    package = module if module.endswith("__init__") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                # ``from dashboard import broker`` imports dashboard.broker.
                yield node.lineno, f"{base}.{alias.name}" if base in PACKAGES else base


def crossing(module: str, imported: str) -> str | None:
    """Why ``module`` may not import ``imported``, or None when it may."""
    if within(module, "deadletters.hook"):
        allowed = {*sys.stdlib_module_names, "celery", "kombu", "__future__"}
        if imported.split(".")[0] not in allowed:
            return "the hook runs in the teams' workers: celery, kombu and the standard library"
        return None
    rules = [
        (
            within(imported, "demo", "tests", "bench"),
            "production code does not import the demo, the tests or the benchmarks",
        ),
        (
            within(module, "dashboard.broker")
            and (
                within(imported, "django.db")
                or (within(imported, *OURS) and not within(imported, *BROKER_MAY))
            ),
            "the broker room imports no models and nothing of the rooms above it",
        ),
        (
            within(imported, "deadletters")
            and not within(module, "deadletters", *DEADLETTERS_IMPORTERS),
            "only the monitor's job list, the overview, the urls and metrics import deadletters",
        ),
        (
            within(module, "deadletters")
            and within(imported, "dashboard")
            and not within(imported, *FOUNDATION),
            "deadletters imports only the dashboard's foundation: " + ", ".join(FOUNDATION),
        ),
        (
            within(module, "dashboard.queues")
            and within(imported, "dashboard.monitor")
            and not within(imported, "dashboard.monitor.status"),
            "the queue pages know of the monitor only the collector status",
        ),
        (
            within(module, "dashboard.queues")
            and within(imported, "deadletters")
            and not within(imported, "deadletters.selectors"),
            "the queue pages read of deadletters only its selectors (a queue's open count)",
        ),
        (
            within(module, "dashboard.tables")
            and within(imported, "deadletters")
            and not within(imported, "deadletters.selectors"),
            "the audit's table reads of deadletters only its selectors (a group's name)",
        ),
        (
            within(module, "dashboard.tasks")
            and within(imported, "deadletters")
            and not within(imported, "deadletters.selectors")
            # The lookup finds an id's rows (by id, requeue id, prefix) and redacts them.
            and not (
                module == "dashboard.tasks.lookup"
                and within(imported, "deadletters.models", "deadletters.redact")
            ),
            "the task pages read of deadletters only its selectors (a task's failure groups)",
        ),
        (
            within(module, "dashboard.tasks") and within(imported, "dashboard.monitor"),
            "the task room knows nothing of the monitor: its job list calls the task room",
        ),
        (
            within(module, "dashboard.periodic")
            and within(imported, "deadletters")
            and not within(imported, "deadletters.selectors"),
            "the beat pages read of deadletters only its selectors (an entry's dead letter)",
        ),
        (
            within(module, "dashboard.periodic") and within(imported, "dashboard.monitor"),
            "the beat room knows nothing of the monitor: its job list calls the beat room",
        ),
        (
            within(module, "dashboard.cli")
            and within(
                imported, "deadletters.bulk_runner", "deadletters.ingest", "dashboard.monitor"
            ),
            "the command line asks as the pages ask; the monitor carries bulk actions out",
        ),
        (
            within(module, "dashboard.api")
            and (
                (within(imported, "deadletters") and not within(imported, *API_MAY))
                or within(imported, "dashboard.monitor", "dashboard.views", "metrics")
                or imported.endswith(".views")
            ),
            "the API calls what the pages call (selectors, services, bulk, their forms),"
            " never views or the monitor",
        ),
        (
            within(imported, "dashboard.api")
            and not within(
                module,
                "dashboard.api",
                "dashboard.urls",
                "dashboard.admin",
                "dashboard.management.commands.api_token",
            ),
            "only the urls, the admin and the api_token command use the API package",
        ),
        (
            within(module, "dashboard.monitor")
            and not within(module, "dashboard.monitor.jobs")
            and within(imported, "dashboard.queues", "dashboard.views", "metrics"),
            "the monitor reaches the apps through its job list (dashboard.monitor.jobs)",
        ),
    ]
    return next((why for broken, why in rules if broken), None)


def crossings(source: str, module: str) -> list[str]:
    return [
        f"{module}:{line} imports {imported}: {why}"
        for line, imported in imports(source, module)
        if (why := crossing(module, imported))
    ]


def production_modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield module_name(path), path


def test_no_module_crosses_a_layer() -> None:
    found = [
        line
        for module, path in production_modules()
        for line in crossings(path.read_text(), module)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("dashboard.broker.depths", "from dashboard.models import QueueSnapshot", "no models"),
        ("dashboard.broker.inbox", "from django.db import connection", "no models"),
        ("dashboard.broker.inbox", "from deadletters.ingest import store_batch", "no models"),
        ("deadletters.views", "from dashboard.queues import selectors", "foundation"),
        ("deadletters.bulk", "from dashboard.monitor.leader import open_lease", "foundation"),
        ("dashboard.queues.sampling", "from deadletters.models import DeadLetter", "job list"),
        ("dashboard.monitor.loop", "from deadletters import ingest", "job list"),
        ("dashboard.monitor.loop", "from dashboard.queues import sampling", "job list"),
        ("dashboard.queues.views", "from dashboard.monitor.leader import Lease", "status"),
        ("dashboard.queues.views", "from deadletters.selectors import Count", "job list"),
        (
            "dashboard.queues.selectors",
            "from deadletters.models import DeadLetter",
            "only its selectors",
        ),
        ("dashboard.health", "import demo.embedded_redis", "demo"),
        (
            "dashboard.tasks.views",
            "from deadletters.models import DeadLetter",
            "only its selectors",
        ),
        ("dashboard.tasks.selectors", "from deadletters import bulk", "only its selectors"),
        ("dashboard.tables", "from deadletters.models import DeadLetterGroup", "a group's name"),
        ("dashboard.views", "from deadletters.selectors import group_names", "only the monitor"),
        (
            "dashboard.tasks.outcomes",
            "from dashboard.monitor import jobs",
            "nothing of the monitor",
        ),
        (
            "dashboard.periodic.selectors",
            "from deadletters.models import DeadLetter",
            "only its selectors",
        ),
        ("dashboard.periodic.reports", "from dashboard.monitor import jobs", "the beat room"),
        ("dashboard.api.deadletters", "from deadletters import views", "never views"),
        ("dashboard.api.queues", "from dashboard.queues.views import queues", "never views"),
        ("dashboard.api.site", "from dashboard.monitor.loop import Monitor", "the monitor"),
        ("dashboard.queues.views", "from dashboard.api.tokens import digest", "the API package"),
        ("deadletters.hook", "import django", "standard library"),
        ("dashboard.cli.bulk", "from deadletters import bulk_runner", "the monitor carries"),
        ("deadletters.hook", "def f():\n    import redis", "standard library"),
    ],
)
def test_a_crossing_fails_naming_the_import(module: str, source: str, why: str) -> None:
    (found,) = crossings(source, module)
    assert found.startswith(f"{module}:")
    assert why in found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("dashboard.broker.control", "from dashboard.celery import app"),
        ("dashboard.monitor.jobs", "from deadletters import bulk_runner"),
        ("dashboard.queues.sampling", "from dashboard.monitor.status import record_success"),
        ("deadletters.services", "from dashboard.broker.publish import publish_task"),
        ("deadletters.hook", "from kombu import Connection\nimport json"),
        ("metrics.collector", "from deadletters.models import DeadLetterStats"),
        ("dashboard.tasks.views", "from deadletters.selectors import failure_groups"),
        ("dashboard.tasks.lookup", "from deadletters.redact import redact"),
        ("dashboard.tables", "from deadletters.selectors import group_names"),
        ("dashboard.queues.selectors", "from deadletters.selectors import open_in_queue"),
        ("dashboard.monitor.jobs", "from dashboard.tasks import outcomes"),
        ("dashboard.cli.deadletters", "from deadletters.services import deadletter_requeue"),
        ("dashboard.periodic.selectors", "from deadletters.selectors import dead_letters_of_tasks"),
        ("metrics.collector", "from dashboard.periodic.selectors import beat_state"),
        ("dashboard.api.deadletters", "from deadletters.services import deadletter_requeue"),
        ("dashboard.api.queues", "from dashboard.queues import services"),
        ("dashboard.admin", "from dashboard.api.tokens import revoke"),
    ],
)
def test_imports_within_the_layers_pass(module: str, source: str) -> None:
    assert crossings(source, module) == []
