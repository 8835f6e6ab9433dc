"""Keeps the demo alive: sends a mix of tasks, most succeed, some fail for good."""

from __future__ import annotations

import itertools
import random
import signal
import sys
import time
from types import FrameType

from kombu import Connection, Exchange, Queue

from demo import tasks
from demo.celery_app import app

_running = True


def _stop(signum: int, frame: FrameType | None) -> None:
    global _running
    _running = False


def send_poison_message() -> None:
    """A pickled message: the worker refuses it and the hook reports it as rejected."""
    with Connection(app.conf.broker_url) as conn:
        queue = Queue("default", Exchange("default"), routing_key="default")
        conn.Producer().publish(
            {"not": "for json workers"},
            serializer="pickle",
            exchange=queue.exchange,
            routing_key="default",
            declare=[queue],
            headers={"id": "poison-" + str(random.randint(1, 10**9)), "task": "demo.tasks.add"},
        )


def one_round(n: int) -> None:
    # Steady traffic that succeeds, in bursts of varying size and runtime, so
    # that the throughput and runtime charts move.
    for i in range(random.randint(3, 12)):
        tasks.add.delay(n, i)
    tasks.long_running.delay(n, seconds=random.choice([0.02, 0.05, 0.2, 0.4, 1.2]))
    tasks.send_welcome_email.delay(n)
    tasks.flaky_sum.delay([n, n, n])
    if n % 2 == 0:
        tasks.resize_image.delay(1000 + n, [64, 128])
    if n % 3 == 0:
        tasks.send_webhook.delay(f"https://hooks.example.com/{n}", {"order": n})
    if n % 5 == 0:
        tasks.build_report.delay(n, seconds=3)
    if n % 7 == 0:
        tasks.crash_worker.delay(n)
    if n % 4 == 0:
        tasks.charge_invoice.delay(5000 + n, amount_cents=1999)
    if n % 6 == 0:
        app.send_task("demo.tasks.removed_in_last_deploy", args=[n], queue="default")
    if n % 9 == 0:
        send_poison_message()


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    for n in itertools.count(1):
        if not _running:
            break
        try:
            one_round(n)
        except Exception as exc:  # the broker may be restarting; keep going
            print(f"producer: {exc}", file=sys.stderr)
        time.sleep(interval)


if __name__ == "__main__":
    main()
