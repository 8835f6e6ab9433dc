"""One leader among the monitor's replicas: a lease in Redis or the database."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from dashboard.models import CollectorStatus, MonitorLeader
from dashboard.monitor.leader import DatabaseLease, Lease, RedisLease, open_lease
from dashboard.monitor.scheduler import Job, Scheduler
from tests.helpers import start_monitor, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = 2


@pytest.fixture(params=["redis", "database"])
def lease_kind(request: pytest.FixtureRequest, broker: redis.Redis) -> str:
    """Each store of the lease, empty (the database is emptied after each test)."""
    keys = list(broker.scan_iter(match="celery-ops-dashboard:leader:*"))
    if keys:
        broker.delete(*keys)
    return str(request.param)


def make_lease(kind: str, holder: str) -> Lease:
    if kind == "redis":
        return RedisLease(holder=holder, seconds=LEASE_SECONDS)
    return DatabaseLease(holder=holder, seconds=LEASE_SECONDS)


def test_one_holder_at_a_time_and_the_holder_renews(lease_kind: str) -> None:
    first, second = make_lease(lease_kind, "a"), make_lease(lease_kind, "b")
    assert first.acquire()
    assert not second.acquire()
    assert first.acquire(), "renewing one's own lease"
    assert not second.acquire()


def test_a_lease_left_behind_is_taken_over_once_it_runs_out(lease_kind: str) -> None:
    first, second = make_lease(lease_kind, "a"), make_lease(lease_kind, "b")
    assert first.acquire()
    # "a" stops renewing, as a killed process would.
    wait_until(second.acquire, timeout=LEASE_SECONDS * 3, interval=0.2)
    assert not first.acquire(), "the old holder must not take it back while b renews"


def test_a_released_lease_is_free_at_once(lease_kind: str) -> None:
    first, second = make_lease(lease_kind, "a"), make_lease(lease_kind, "b")
    assert first.acquire()
    first.release()
    assert second.acquire()


def count_tries(lease: Lease, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each try of ``lease`` to take (or renew) the lease, as it turned out."""
    tries: list[bool] = []
    acquire = lease.acquire

    def counted() -> bool:
        held = acquire()
        tries.append(held)
        return held

    monkeypatch.setattr(lease, "acquire", counted)
    return tries


def test_only_the_leading_scheduler_runs_the_jobs(
    lease_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: dict[str, int] = {"a": 0, "b": 0}
    stops = {"a": threading.Event(), "b": threading.Event()}
    leases = {name: make_lease(lease_kind, name) for name in ("a", "b")}
    b_tries = count_tries(leases["b"], monkeypatch)

    def job(name: str) -> Job:
        return Job("sample", 0.05, lambda: runs.__setitem__(name, runs[name] + 1))

    schedulers = {
        name: Scheduler([job(name)], stops[name], lease=leases[name]) for name in ("a", "b")
    }
    schedulers["a"].start()
    wait_until(lambda: runs["a"] >= 3, timeout=10)
    schedulers["b"].start()
    wait_until(lambda: len(b_tries) >= 3, timeout=LEASE_SECONDS * 5)  # b tries several times
    assert runs["b"] == 0
    assert schedulers["a"].leading
    assert not schedulers["b"].leading

    # A clean stop hands over at once; b takes the lead at its next try.
    stops["a"].set()
    schedulers["a"].join(10)
    wait_until(lambda: runs["b"] >= 3, timeout=LEASE_SECONDS * 3)
    stops["b"].set()
    schedulers["b"].join(10)
    assert not schedulers["b"].is_alive()


# --- real monitor processes ------------------------------------------------------


def start_leader_candidate(
    kind: str, seconds: int = LEASE_SECONDS
) -> tuple[subprocess.Popen[bytes], Path]:
    return start_monitor(MONITOR_LEADER_LEASE=kind, MONITOR_LEADER_LEASE_SECONDS=str(seconds))


def leader_pid() -> int | None:
    row = MonitorLeader.objects.filter(name="monitor").first()
    if row is None or not row.holder:
        return None
    return int(row.holder.split(":")[1])


def test_another_monitor_takes_over_when_the_leader_is_killed(lease_kind: str) -> None:
    monitors = dict(start_leader_candidate(lease_kind) for _ in range(2))
    by_pid = {process.pid: process for process in monitors}
    try:
        first = wait_until(leader_pid, timeout=30)
        assert first in by_pid
        # Both run; for several renewals the lead stays where it is.
        renewals: set[object] = set()

        def renewed_again() -> bool:
            assert leader_pid() == first
            renewals.add(MonitorLeader.objects.get(name="monitor").renewed_at)
            return len(renewals) > 3

        wait_until(renewed_again, timeout=LEASE_SECONDS * 10)
        assert all(process.poll() is None for process in monitors)

        leader = by_pid.pop(first)
        (survivor,) = by_pid.values()
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed_at = time.time()

        # Within the lease (and a renewal period), the survivor leads.
        wait_until(lambda: leader_pid() == survivor.pid, timeout=LEASE_SECONDS * 3)
        row = MonitorLeader.objects.get(name="monitor")
        assert row.since is not None
        assert row.since.timestamp() >= killed_at - 1
        assert CollectorStatus.objects.get(name="leader").failing_since is None
        assert "leads the periodic jobs now" in monitors[survivor].read_text()
    finally:
        for process in monitors:
            if process.poll() is None:
                process.terminate()
                process.wait(15)
    logs = [log.read_text() for log in monitors.values()]
    assert sum("another monitor leads the periodic jobs; standing by" in log for log in logs) >= 1


def test_a_stopped_leader_hands_over_without_waiting_for_expiry(lease_kind: str) -> None:
    long_lease = 120  # a handover that waited for expiry would miss the wait below
    monitors = dict(start_leader_candidate(lease_kind, seconds=long_lease) for _ in range(2))
    by_pid = {process.pid: process for process in monitors}
    try:
        first = wait_until(leader_pid, timeout=30)
        leader = by_pid.pop(first)
        (survivor,) = by_pid.values()
        leader.send_signal(signal.SIGTERM)
        assert leader.wait(15) == 0
        wait_until(lambda: leader_pid() == survivor.pid, timeout=long_lease / 4)
        assert "released the leader lease" in monitors[leader].read_text()
    finally:
        for process in monitors:
            if process.poll() is None:
                process.terminate()
                process.wait(15)


def test_the_lease_follows_the_broker_unless_told(settings: Any) -> None:
    settings.MONITOR_LEADER_LEASE = "auto"
    settings.CELERY_BROKER_URL = "amqp://guest:guest@rabbitmq:5672//"
    assert isinstance(open_lease(), DatabaseLease)
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    assert isinstance(open_lease(), RedisLease)
    settings.MONITOR_LEADER_LEASE = "database"
    assert isinstance(open_lease(), DatabaseLease)
