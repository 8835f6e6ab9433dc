from __future__ import annotations

import logging
import signal
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand

from dashboard.monitor import Monitor

logger = logging.getLogger("dashboard.monitor")


class Command(BaseCommand):
    help = "Ingest dead letters from the broker (and, later, sample queues and workers)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--until-empty",
            action="store_true",
            help="Drain the dead-letter queue once and exit when it is empty.",
        )
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        monitor = Monitor()
        if options["batch_size"]:
            monitor.batch_size = options["batch_size"]

        def request_stop(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: finishing the current batch and stopping", signum)
            monitor.stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        logger.info("monitor started: queue %r, batches of %d", monitor.queue, monitor.batch_size)
        totals = monitor.run(until_empty=options["until_empty"])
        logger.info(
            "monitor stopped: %d received, %d stored, %d duplicates, %d quarantined",
            totals.received,
            totals.stored,
            totals.duplicates,
            totals.quarantined,
        )
