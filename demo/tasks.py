"""Sample tasks that succeed, and fail for good in each way the hook captures."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celery import Task
from celery.exceptions import MaxRetriesExceededError
from celery.utils.log import get_task_logger

from deadletters.hook import send_dead_letter
from demo.celery_app import app

logger = get_task_logger(__name__)


def _was_requeued(task: Task) -> bool:
    return bool((task.request.headers or {}).get("x_requeued_from"))


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def send_welcome_email(user_id: int, template: str = "welcome") -> str:
    return f"sent {template} to user {user_id}"


@app.task(bind=True)
def resize_image(self: Task, image_id: int, sizes: list[int]) -> str:
    """Fails for good on the first run (a bug); runs fine once requeued after 'the fix'."""
    if not _was_requeued(self):
        raise ValueError(f"image {image_id} has an unsupported colour profile")
    # What the demo's console shows of a requeue that worked (Celery's own
    # "succeeded" lines are left out there, one for every task).
    logger.info("resize_image %s succeeded after a requeue", image_id)
    return f"resized {image_id} to {sizes}"


@app.task(
    bind=True,
    autoretry_for=(ConnectionError,),
    retry_backoff=1,
    retry_backoff_max=2,
    retry_jitter=True,
    max_retries=2,
)
def send_webhook(self: Task, url: str, payload: dict[str, Any]) -> None:
    """Retries with backoff, then fails for good with the original exception."""
    raise ConnectionError(f"POST {url} failed: connection refused (attempt {self.request.retries})")


@app.task(time_limit=1)
def build_report(report_id: int, seconds: float = 5.0) -> None:
    """Runs past its hard time limit: the pool child is killed."""
    time.sleep(seconds)


@app.task
def long_running(job_id: int, seconds: float = 5.0) -> int:
    """Takes its time: shows up as an active task on the workers page."""
    time.sleep(seconds)
    return job_id


@app.task
def crash_worker(job_id: int) -> None:
    """Kills its own pool child, like an out-of-memory kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(bind=True, max_retries=1)
def charge_invoice(self: Task, invoice_id: int, amount_cents: int) -> str:
    """The playbooks' pattern: the task catches its final error itself."""
    try:
        raise TimeoutError(f"payment gateway timed out for invoice {invoice_id}")
    except TimeoutError as exc:
        try:
            raise self.retry(exc=exc, countdown=0.1)
        except MaxRetriesExceededError:
            send_dead_letter(self, exc)
            return "gave up"


@app.task
def flaky_sum(numbers: list[int]) -> int:
    """Succeeds; present so that requeue-from-the-browser has a happy path."""
    return sum(numbers)


@app.task
def import_upload(directory: str) -> None:
    """Fails on a file name that is not valid UTF-8, as ``os.listdir`` hands it over:
    the exception message holds a lone surrogate, which no database stores."""
    name = os.fsdecode(b"upload-\xff.csv")
    raise FileNotFoundError(f"cannot open {directory}/{name}")


# Set in Redis by "the fix" (the tests, or by hand in the demo):
#   redis-cli SET demo:inventory-fixed 1
INVENTORY_FIXED_KEY = "demo:inventory-fixed"


@app.task
def sync_inventory(sku: str) -> str:
    """Fails while the inventory service is "down", i.e. until the fix is deployed.

    The switch lives in the Redis of the result backend (the broker's, on Redis).
    """
    import redis

    client = redis.Redis.from_url(os.environ.get("CELERY_RESULT_BACKEND") or app.conf.broker_url)
    try:
        if not client.exists(INVENTORY_FIXED_KEY):
            raise ConnectionError(f"inventory service unavailable for {sku}")
    finally:
        client.close()
    return f"synced {sku}"
