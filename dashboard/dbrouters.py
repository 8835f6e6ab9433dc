"""The team's result backend in its own database.

With ``CELERY_RESULT_BACKEND=django-db`` the lookup ("where is task X?") reads
the team's django-celery-results rows through Celery's backend; those rows live
in the team's database, the ``results`` alias (``RESULTS_DATABASE_URL``). The
team owns that table: the dashboard reads it and never migrates it, there or in
its own database.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

RESULTS = "results"
RESULTS_APP = "django_celery_results"


def _results_model(model: Any) -> bool:
    return bool(model._meta.app_label == RESULTS_APP)


class ResultsRouter:
    """django-celery-results' models to the ``results`` alias when it is configured;
    no migration of them anywhere, and of nothing else in the team's database."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return RESULTS if _results_model(model) and RESULTS in connections.settings else None

    # The dashboard never writes there; a worker sharing these settings would.
    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        if app_label == RESULTS_APP or db == RESULTS:
            return False
        return None
