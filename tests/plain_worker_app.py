"""A team's Celery app without the dashboard's hook, for the fallback round."""

from __future__ import annotations

import os

from celery import Celery

app = Celery("plain", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.update(task_default_queue="plain", worker_prefetch_multiplier=1)


@app.task
def ping() -> str:
    return "pong"


@app.task
def boom() -> None:
    raise RuntimeError("boom")
