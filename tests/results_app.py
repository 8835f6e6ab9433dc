"""A team's Celery app whose workers store results in django-celery-results' table
(``result_backend="django-db"``, with ``result_extended``), as a Django project
sets it up; the table is in the SQLite file ``TEAM_RESULTS_DB``."""

from __future__ import annotations

import os

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.results_db_settings"

import django

django.setup()

from celery import Celery  # noqa: E402

app = Celery(
    "resultsteam", broker=os.environ.get("CELERY_BROKER_URL", "memory://"), backend="django-db"
)
app.conf.update(result_extended=True, task_track_started=True)


@app.task
def charge(order: int, card: str) -> dict[str, object]:
    return {"order": order, "card": card, "charged": True}
