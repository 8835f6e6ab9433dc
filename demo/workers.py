"""The command line of a real ``celery worker`` of the demo app, as the demo,
the tests and the benchmarks start it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

DEMO_QUEUES = ("default", "emails", "reports")


def worker_command(
    name: str,
    *,
    app: str = "demo.celery_app",
    queues: Sequence[str] = DEMO_QUEUES,
    pool: str = "prefork",
    concurrency: int = 2,
    loglevel: str = "INFO",
    quiet: bool = True,
    console: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """``celery worker`` for node ``name@<host>``; ``extra`` options override these.

    ``quiet``: without mingle and gossip, which only slow a start by a second
    and chatter between workers that a single test or demo does not need.
    ``console``: a line an event on the console, no tracebacks (``demo.console``).
    """
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-P",
        pool,
        "-c",
        str(concurrency),
        "-Q",
        ",".join(queues),
        "-n",
        f"{name}@%h",
        "--loglevel",
        loglevel,
        *(("--without-mingle", "--without-gossip") if quiet else ()),
        *(("--include", "demo.console") if console else ()),
        *extra,
    ]
