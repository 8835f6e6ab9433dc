"""The demo team's Celery app: an ordinary app with the one-line hook.

It mirrors the habits of the playbooks in ``shared/seeds``: acks_late,
retries with backoff and jitter, time limits, and a manual dead-letter path.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

# The whole integration: one import, in the module that creates the app, so
# that producers stamp what they publish and workers report what fails.
import deadletters.hook  # noqa: F401

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")

app = Celery(
    "demo",
    broker=BROKER_URL,
    # Results let the demo (and the tests) see that a requeued task succeeded.
    backend=os.environ.get("CELERY_RESULT_BACKEND", BROKER_URL),
    include=["demo.tasks"],
)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    # A task that kills its pool child would otherwise be redelivered forever.
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    task_routes={
        "demo.tasks.send_welcome_email": {"queue": "emails"},
        "demo.tasks.send_webhook": {"queue": "emails"},
        "demo.tasks.build_report": {"queue": "reports"},
    },
    task_time_limit=60,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    # What the demo's beat sends: the periodic page shows these.
    beat_schedule={
        "add-every-30s": {"task": "demo.tasks.add", "schedule": 30.0, "args": (2, 2)},
        "nightly-report": {
            "task": "demo.tasks.build_report",
            "schedule": crontab(minute=0, hour=4),
            "args": (1,),
            "kwargs": {"seconds": 0.1},
        },
    },
)
