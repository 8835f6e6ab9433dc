"""Two teams' Celery apps for the fleet configuration checks, each with the hook.

``careless`` makes two of the mistakes every playbook warns about: tasks are
acknowledged before they run, and pickle is accepted. Everything else is as the
playbooks say, so that only those two are flagged. ``careful`` does everything
as they say. Start one with ``-A tests.fleet_apps:careless`` (as root, with
``C_FORCE_ROOT``: Celery refuses pickle as root otherwise). Neither becomes the
current app of a process that imports this module, nor shares its tasks.
"""

from __future__ import annotations

import os

from celery import Celery

import deadletters.hook  # noqa: F401

BROKER_URL = os.environ.get("CELERY_BROKER_URL", "memory://")
BACKEND_URL = os.environ.get("CELERY_RESULT_BACKEND")

# What both do right: limits, prefetch 1 for a fair share, results that
# expire, retry on startup, the slow work on a queue of its own.
GOOD = {
    "task_serializer": "json",
    "task_time_limit": 30,
    "task_soft_time_limit": 25,
    "worker_prefetch_multiplier": 1,
    "result_expires": 3600,
    "broker_connection_retry_on_startup": True,
    "task_default_queue": "default",
}

careless = Celery("careless", broker=BROKER_URL, backend=BACKEND_URL, set_as_current=False)
careless.conf.update(
    GOOD,
    task_acks_late=False,
    accept_content=["json", "pickle"],
    # Short, so that one countdown of a few minutes outlasts it.
    broker_transport_options={"visibility_timeout": 60},
    task_routes={"fleet.careless.slow": {"queue": "fleet-careless-slow"}},
)


@careless.task(name="fleet.careless.ping", shared=False)
def careless_ping() -> str:
    return "pong"


@careless.task(name="fleet.careless.slow", shared=False)
def careless_slow() -> str:
    return "done"


careful = Celery("careful", broker=BROKER_URL, backend=BACKEND_URL, set_as_current=False)
careful.conf.update(
    GOOD,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    accept_content=["json"],
    task_routes={"fleet.careful.*": {"queue": "fleet-careful"}},
)


@careful.task(name="fleet.careful.ping", shared=False)
def careful_ping() -> str:
    return "pong"


@careful.task(name="fleet.careful.report", shared=False)
def careful_report() -> str:
    return "report"
