"""The outcomes benchmark's worker app: one task that does nothing.

    celery -A bench.outcomes_app worker ...

``BENCH_HOOK=on`` in the environment imports the hook as a team's app module
does (and ``OPS_OUTCOMES`` then turns its outcome counting on or off);
otherwise the app is plain Celery. Nothing else differs, so what a worker of
it spends per task beyond the plain one is the hook's cost. No result backend,
and no Django: a team's worker needs neither.
"""

from __future__ import annotations

import importlib
import os

from celery import Celery

if os.environ.get("BENCH_HOOK") == "on":
    # The one-line integration, as `import deadletters.hook` in a team's app module.
    importlib.import_module("deadletters.hook")

app = Celery("bench_outcomes", broker=os.environ.get("CELERY_BROKER_URL"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # Acked once it has run: an empty queue and no unacked message mean every
    # task of a round is done, which the benchmark reads from Redis.
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
)


@app.task
def noop() -> None:
    """Nothing: what a worker spends on it is the worker's own cost per task."""
