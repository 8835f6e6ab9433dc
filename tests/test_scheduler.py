"""The monitor's periodic jobs: each on its interval, a failing one never stops the rest."""

from __future__ import annotations

import threading

import pytest

from dashboard.monitor.scheduler import Job, Scheduler
from tests.helpers import wait_until


def test_a_failing_job_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[str] = []

    def broken() -> None:
        runs.append("broken")
        raise RuntimeError("the broker said no")

    stop = threading.Event()
    scheduler = Scheduler(
        [Job("broken", 0.1, broken), Job("sampler", 0.1, lambda: runs.append("sampler"))], stop
    )
    scheduler.start()
    try:
        wait_until(lambda: runs.count("broken") >= 2 and runs.count("sampler") >= 2)
    finally:
        stop.set()
        scheduler.join(5)
    assert not scheduler.is_alive()
    assert runs.count("broken") >= 2
    assert runs.count("sampler") >= 2
    assert "job broken failed" in caplog.text


def test_a_job_waits_for_its_interval() -> None:
    runs: list[str] = []
    stop = threading.Event()
    # "tick" is due at every round: the scheduler goes round again and again,
    # and the slow job, due again only after its interval, must not run again.
    scheduler = Scheduler(
        [
            Job("slow", 10.0, lambda: runs.append("slow")),
            Job("tick", 0.05, lambda: runs.append("tick")),
        ],
        stop,
    )
    scheduler.start()
    try:
        wait_until(lambda: runs.count("tick") >= 5)
    finally:
        stop.set()
        scheduler.join(5)
    assert runs.count("slow") == 1
