"""A team's Celery app with a beat schedule, for the beat supervision tests.

Its queue comes from BEAT_TEST_QUEUE, so that each test has a queue of its
own. With TEAM_BEAT_DB set, it is a Django project's app whose beat runs
django-celery-beat's DatabaseScheduler on that SQLite file, as a team sets it up.
"""

from __future__ import annotations

import json
import os

from celery import Celery, Task
from celery.schedules import crontab

if os.environ.get("TEAM_BEAT_DB"):
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.beat_db_settings"
    import django

    django.setup()

import deadletters.hook  # noqa: F401

QUEUE = os.environ.get("BEAT_TEST_QUEUE", "beat-test")

app = Celery("beatteam", broker=os.environ.get("CELERY_BROKER_URL", "memory://"))
app.conf.update(
    task_default_queue=QUEUE,
    beat_max_loop_interval=1,
    timezone="UTC",
    beat_schedule={
        "acme-tick": {
            "task": "tests.beat_app.tick",
            "schedule": float(os.environ.get("BEAT_TICK", "1")),
            "args": [1],
        },
        # Never due in a test: run now is what sends it.
        "acme-nightly": {
            "task": "tests.beat_app.nightly",
            "schedule": crontab(minute=0, hour=4),
            "args": [7],
            "kwargs": {"note": "from beat"},
        },
    },
)


def _record(what: dict[str, object]) -> None:
    import redis

    client = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    client.rpush(f"beat-test:{QUEUE}", json.dumps(what))


@app.task
def tick(n: int) -> int:
    return n


@app.task(bind=True)
def nightly(self: Task, n: int, note: str = "") -> int:
    # Custom headers are on the request's headers, or on the request itself.
    headers = self.request.headers or {}
    entry = headers.get("x_beat_entry") or getattr(self.request, "x_beat_entry", None)
    _record({"n": n, "note": note, "entry": entry})
    return n
