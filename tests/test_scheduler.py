"""The monitor's periodic jobs: each on its interval, a failing one never stops the rest."""

from __future__ import annotations

import threading
import time

import pytest

from dashboard.scheduler import Job, Scheduler


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
    time.sleep(0.6)
    stop.set()
    scheduler.join(5)
    assert not scheduler.is_alive()
    assert runs.count("broken") >= 2
    assert runs.count("sampler") >= 2
    assert "job broken failed" in caplog.text


def test_a_job_waits_for_its_interval() -> None:
    runs: list[float] = []
    stop = threading.Event()
    scheduler = Scheduler([Job("slow", 10.0, lambda: runs.append(time.monotonic()))], stop)
    scheduler.start()
    time.sleep(0.5)
    stop.set()
    scheduler.join(5)
    assert len(runs) == 1
