"""Where is task X? with the database backend of django-celery-results
(``CELERY_RESULT_BACKEND=django-db``): the team's table in its own SQLite file,
made by the app's own migrations, written through Celery's backend as the
team's workers write it, and read by the lookup through the ``results`` alias.

The alias is added to this process's connections for the test (as
``RESULTS_DATABASE_URL`` adds it at start-up, which the settings tests check in
a fresh process); nothing else is stood in for."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dj_database_url
import pytest
from celery import Celery
from celery.app.task import Context
from django.db import connection, connections, router
from django.test import Client
from django.urls import reverse
from django_celery_results.models import TaskResult

from dashboard.celery import app as site_app
from dashboard.dbrouters import RESULTS, RESULTS_APP
from tests.helpers import ROOT, start_worker, stop_worker, wait_until

pytestmark = pytest.mark.django_db


# The tests that read the team's table, in a transaction on both databases.
WITH_RESULTS = pytest.mark.django_db(databases=["default", RESULTS])


@pytest.fixture(scope="module")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The team's results database: a SQLite file with django-celery-results'
    tables, made by the team's own ``migrate``; added to this process as
    ``RESULTS_DATABASE_URL`` adds it. Module-scoped: the alias must exist before
    a test's transactions open on it."""
    path = tmp_path_factory.mktemp("team") / "results.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(TEAM_RESULTS_DB=str(path), DJANGO_SETTINGS_MODULE="tests.results_db_settings")
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--verbosity", "0"],
        cwd=ROOT, env=env, check=True, timeout=120,
    )  # fmt: skip
    parsed = dj_database_url.parse(f"sqlite:///{path}")
    configured = connections.configure_settings(
        {"default": {"ENGINE": "django.db.backends.dummy"}, RESULTS: parsed}
    )
    connections.settings[RESULTS] = configured[RESULTS]
    try:
        yield path
    finally:
        connections[RESULTS].close()
        del connections[RESULTS]
        del connections.settings[RESULTS]


@pytest.fixture
def team(results_db: Path, monkeypatch: pytest.MonkeyPatch) -> Celery:
    """The team's app, storing results with django-db; the dashboard's app set the
    same way (as CELERY_RESULT_BACKEND=django-db sets it)."""
    monkeypatch.setenv("CELERY_RESULT_BACKEND", "django-db")
    monkeypatch.setitem(site_app.conf, "result_backend", "django-db")
    # Built afresh from the setting (Celery keeps it per app, or per thread).
    monkeypatch.setattr(site_app, "_backend_cache", None)
    monkeypatch.delattr(site_app._local, "backend", raising=False)  # type: ignore[attr-defined]
    app = Celery("team", backend="django-db")
    app.conf.result_extended = True
    return app


def lookup(client: Client, task_id: str) -> str:
    response = client.get(reverse("task_lookup", args=[task_id]))
    assert response.status_code == 200
    page = re.sub(r"\s+", " ", html.unescape(response.content.decode()))
    return page.split('id="source-backend"', 1)[1].split("</section>", 1)[0]


@WITH_RESULTS
def test_a_result_in_the_teams_table_is_shown_redacted_with_its_date(
    viewer_client: Client, team: Celery
) -> None:
    task_id = str(uuid.uuid4())
    team.backend.store_result(task_id, {"password": "hunter2", "rows": 3}, "SUCCESS")
    row = TaskResult.objects.using(RESULTS).get(task_id=task_id)
    backend = lookup(viewer_client, task_id)
    assert "Read from the result backend (django-db) at" in backend
    assert ">SUCCESS</span>" in backend
    assert "hunter2" not in backend
    assert '"password": "[redacted]"' in backend
    assert '"rows": 3' in backend
    assert f'<dt>Done</dt><dd><time datetime="{row.date_done.isoformat()}">' in backend


@pytest.mark.django_db(transaction=True, databases=["default", RESULTS])
def test_a_task_run_by_the_teams_worker_is_read_from_their_table(
    viewer_client: Client, team: Celery, results_db: Path, redis_server: Any
) -> None:
    queue = f"results-{uuid.uuid4().hex[:8]}"
    worker = start_worker(
        redis_server.url, queue, "-Q", queue, app="tests.results_app", backend="django-db",
        env={"TEAM_RESULTS_DB": str(results_db)},
    )  # fmt: skip
    try:
        sent = site_app.send_task(
            "tests.results_app.charge", (42,), {"card": "4111 1111"}, queue=queue
        )
        rows = TaskResult.objects.using(RESULTS)
        wait_until(lambda: rows.filter(task_id=sent.id, status="SUCCESS").exists(), timeout=30)
    finally:
        stop_worker(worker)
    backend = lookup(viewer_client, sent.id)
    assert ">SUCCESS</span>" in backend
    assert "<dt>Task</dt><dd>tests.results_app.charge</dd>" in backend
    assert f"<dt>Worker</dt><dd>{queue}@" in backend
    assert '"charged": true' in backend
    assert '"card": "[redacted]"' in backend
    # The worker stored its repr of the kwargs: read back, and redacted too.
    assert "4111" not in backend, "neither in the result nor in the arguments"
    assert '<pre class="json">[ 42 ]</pre>' in backend
    assert "<dt>Done</dt>" in backend


@WITH_RESULTS
def test_a_failure_in_the_teams_table_shows_its_exception_and_traceback(
    viewer_client: Client, team: Celery
) -> None:
    task_id = str(uuid.uuid4())
    # As the team's worker stores a failure: with its request (result_extended).
    request = Context(
        id=task_id, task="billing.charge", hostname="w1@team", args=[7], kwargs={"card": "4111"}
    )
    team.backend.mark_as_failure(
        task_id,
        ValueError("bad row 7"),
        traceback="Traceback (most recent call last): boom",
        request=request,
    )
    backend = lookup(viewer_client, task_id)
    assert ">FAILURE</span>" in backend
    assert "<b>ValueError</b> bad row 7" in backend
    assert "Traceback (most recent call last): boom" in backend
    assert "<dt>Task</dt><dd>billing.charge</dd>" in backend
    assert "<dt>Worker</dt><dd>w1@team</dd>" in backend
    assert '"card": "[redacted]"' in backend
    assert "4111" not in backend


@WITH_RESULTS
def test_an_id_the_table_does_not_hold_is_unknown_to_the_backend(
    viewer_client: Client, team: Celery
) -> None:
    assert "Unknown to the backend" in lookup(viewer_client, str(uuid.uuid4()))


def test_the_dashboard_never_migrates_the_teams_table() -> None:
    assert "django_celery_results_taskresult" not in connection.introspection.table_names()
    assert router.allow_migrate("default", RESULTS_APP) is False
    assert router.allow_migrate(RESULTS, "dashboard") is False
    assert router.allow_migrate("default", "dashboard") is True


def settings_of(**env: str) -> subprocess.CompletedProcess[str]:
    """The settings as a fresh process reads them from ``env``."""
    environment = {**os.environ, "DEBUG": "true", **env}
    script = (
        "import json, dashboard.settings as s; "
        "print(json.dumps({a: d['ENGINE'] for a, d in s.DATABASES.items()}))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_results_database_url_adds_the_results_alias(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    found = settings_of(RESULTS_DATABASE_URL=url, CELERY_RESULT_BACKEND="django-db")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[RESULTS] == "django.db.backends.sqlite3"


def test_django_db_without_its_database_or_a_url_that_is_none_is_an_error() -> None:
    found = settings_of(CELERY_RESULT_BACKEND="django-db")
    assert found.returncode != 0
    assert "CELERY_RESULT_BACKEND=django-db reads the team's" in found.stderr
    assert "set RESULTS_DATABASE_URL" in found.stderr
    found = settings_of(RESULTS_DATABASE_URL="nonsense")
    assert found.returncode != 0
    assert "RESULTS_DATABASE_URL is not a database URL" in found.stderr
