from __future__ import annotations

import logging
import signal
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.monitor.loop import Monitor, heartbeat_age

logger = logging.getLogger("dashboard.monitor")


class Command(BaseCommand):
    help = (
        "The monitor: ingest dead letters from the broker, sample queues and workers, "
        "run bulk actions and prune, as the leader of its replicas."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--until-empty",
            action="store_true",
            help="Drain the dead-letter queue once and exit when it is empty.",
        )
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument(
            "--check",
            action="store_true",
            help="Liveness: exit 0 when this replica's ingest loop touched its heartbeat "
            "file (MONITOR_HEARTBEAT_FILE) within MONITOR_HEARTBEAT_MAX_AGE seconds, else 1.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            age = heartbeat_age()
            limit = settings.MONITOR_HEARTBEAT_MAX_AGE
            if age is None or age > limit:
                said = "no heartbeat file" if age is None else f"last heartbeat {age:.0f}s ago"
                raise CommandError(f"the monitor's loop is stuck or not running: {said}")
            self.stdout.write(f"alive: last heartbeat {age:.0f}s ago")
            return
        monitor = Monitor()
        if options["batch_size"]:
            monitor.batch_size = options["batch_size"]

        def request_stop(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: finishing the current batch and stopping", signum)
            monitor.stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info(
            "monitor started: queues %s, batches of %d",
            ", ".join(monitor.queues),
            monitor.batch_size,
        )
        totals = monitor.run(until_empty=options["until_empty"])
        logger.info(
            "monitor stopped: %d received, %d stored, %d duplicates, %d quarantined",
            totals.received,
            totals.stored,
            totals.duplicates,
            totals.quarantined,
        )
