"""Queues and workers on a real RabbitMQ: depths, a real worker, a pause, a kill, an outage."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import amqp
import pytest
from celery import Celery
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from kombu import Connection, Exchange, Queue

from dashboard.broker.depths import RabbitManagementDepths, RabbitPassiveDepths
from dashboard.models import CollectorStatus, QueuePause, QueueSnapshot, WorkerSnapshot
from dashboard.monitor.jobs import broker_sampler
from dashboard.queues.sampling import WorkerSampler
from demo.embedded_redis import EmbeddedRedis, free_port
from tests.helpers import (
    HOST,
    ROOT,
    WorkerProcess,
    make_user,
    need,
    sample_until,
    start_worker,
    stop_worker,
    subprocess_env,
    wait_until,
)
from tests.testenv import DATA_DIR

pytestmark = pytest.mark.rabbitmq


@pytest.fixture(scope="module")
def management_url(rabbitmq_url: str) -> str:
    """The management API next to the test broker (its plugin must be enabled)."""
    host = urlsplit(rabbitmq_url).hostname or "127.0.0.1"
    url = os.environ.get("TEST_RABBITMQ_MANAGEMENT_URL", f"http://{host}:15672")
    try:
        with urllib.request.urlopen(f"{url}/api/", timeout=3):
            pass
    except urllib.error.HTTPError:
        pass  # it answers: 401 without credentials is fine
    except OSError as exc:
        need(False, f"no RabbitMQ management API at {url} (rabbitmq_management plugin): {exc}")
    return url


@pytest.fixture
def on_rabbitmq(rabbitmq_url: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the site at RabbitMQ; Celery prefers the environment to its own config."""
    monkeypatch.setenv("CELERY_BROKER_URL", rabbitmq_url)
    settings.CELERY_BROKER_URL = rabbitmq_url
    settings.RABBITMQ_MANAGEMENT_URL = ""
    return rabbitmq_url


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def queues(rabbitmq_url: str) -> Iterator[list[str]]:
    """Names for this test's queues; each is deleted afterwards."""
    names: list[str] = []
    yield names
    with Connection(rabbitmq_url) as conn:
        for name in names:
            channel: Any = conn.channel()
            channel.queue_delete(name)
            channel.exchange_delete(name)


def declare(url: str, name: str, **arguments: Any) -> Queue:
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name, durable=True, **arguments)
    with Connection(url) as conn:
        queue(conn.default_channel).declare()
    return queue


def publish(url: str, queue: Queue, count: int, **properties: Any) -> None:
    with Connection(url) as conn:
        producer = conn.Producer()
        for n in range(count):
            producer.publish(
                {"n": n},
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                serializer="json",
                **properties,
            )


# --- depths ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_management_api_counts_ready_unacked_and_priority_messages(
    rabbitmq_url: str, management_url: str, queues: list[str]
) -> None:
    name = unique("mgmt")
    queues.append(name)
    queue = declare(rabbitmq_url, name, max_priority=10)
    for priority in (0, 3, 9, 9, 5, 1):
        publish(rabbitmq_url, queue, 1, priority=priority)
    with Connection(rabbitmq_url) as conn:
        held: Any = conn.channel()
        assert held.basic_get(name, no_ack=False) is not None  # two taken, not acked
        assert held.basic_get(name, no_ack=False) is not None
        reader = RabbitManagementDepths(management_url, rabbitmq_url)

        def counted() -> Any:
            reader._listed_at = float("-inf")  # the API refreshes its figures every few s
            depth = reader.sample([name, "no-such-queue"])
            # The API may list a queue before its consumer count: wait for all four.
            figures = (depth[name].depth, depth[name].ready, depth[name].unacked)
            return depth if figures == (6, 4, 2) and depth[name].consumers is not None else None

        depth = wait_until(counted, timeout=30, interval=0.5)
        assert depth[name].consumers == 0
        assert depth[name].oldest_sent_at is None  # no message carries a timestamp
        assert depth["no-such-queue"].exists is False
        found = reader.discover()
    assert name in found
    assert not [q for q in found if "pidbox" in q or q.startswith("celeryev")]


@pytest.mark.django_db
def test_the_management_api_gives_the_head_message_timestamp(
    rabbitmq_url: str, management_url: str, queues: list[str]
) -> None:
    name = unique("stamped")
    queues.append(name)
    queue = declare(rabbitmq_url, name)
    sent = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with Connection(rabbitmq_url) as conn:
        # The AMQP timestamp property, as a producer that sets it publishes.
        channel: Any = conn.channel()
        channel.basic_publish(amqp.Message(b"{}", timestamp=int(sent.timestamp())), name, name)
    publish(rabbitmq_url, queue, 1)
    reader = RabbitManagementDepths(management_url, rabbitmq_url)

    def stamped() -> Any:
        reader._listed_at = float("-inf")
        return reader.sample([name])[name].oldest_sent_at

    assert wait_until(stamped, timeout=30, interval=0.5) == sent.timestamp()


def test_passive_declare_reads_ready_and_reopens_its_channel_after_a_missing_queue(
    rabbitmq_url: str, queues: list[str]
) -> None:
    first, second = unique("passive"), unique("passive")
    queues += [first, second]
    publish(rabbitmq_url, declare(rabbitmq_url, first), 3)
    publish(rabbitmq_url, declare(rabbitmq_url, second, max_priority=5), 2, priority=4)
    reader = RabbitPassiveDepths(rabbitmq_url)
    try:
        depths = reader.sample(["missing-a", first, "missing-b", second])
    finally:
        reader.close()
    assert depths["missing-a"].exists is False
    assert depths["missing-b"].exists is False
    assert (depths[first].depth, depths[first].ready, depths[first].consumers) == (3, 3, 0)
    assert depths[second].depth == 2
    assert depths[second].unacked is None  # a passive declare does not say


# --- a real worker ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit_worker(
    rabbitmq_url: str, redis_server: EmbeddedRedis
) -> Iterator[tuple[WorkerProcess, str, list[str]]]:
    """A demo worker on RabbitMQ, on queues of its own (others may share the broker)."""
    name = unique("rabbit")
    consumed = [unique("rq-a"), unique("rq-b")]
    handle = start_worker(
        rabbitmq_url, name, "-P", "solo", "-Q", ",".join(consumed), backend=redis_server.url
    )
    yield handle, f"{name}@{HOST}", consumed
    stop_worker(handle)
    with Connection(rabbitmq_url) as conn:
        for queue in consumed:
            channel: Any = conn.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


def passive_depth(url: str, queue: str) -> int | None:
    reader = RabbitPassiveDepths(url)
    try:
        return reader.sample([queue])[queue].depth
    finally:
        reader.close()


@pytest.mark.django_db
def test_a_worker_on_rabbitmq_is_sampled_paused_and_resumed(
    on_rabbitmq: str,
    rabbit_worker: tuple[WorkerProcess, str, list[str]],
    redis_server: EmbeddedRedis,
    operator_client: Client,
) -> None:
    _, hostname, (paused, other) = rabbit_worker
    workers = WorkerSampler()
    row = sample_until(
        workers, lambda: WorkerSnapshot.objects.filter(hostname=hostname).first(), timeout=30
    )
    assert sorted(row.queues) == sorted([paused, other])
    assert row.pool == "solo"
    broker_sampler()()
    snapshot = QueueSnapshot.objects.get(name=paused)
    assert (snapshot.depth, snapshot.broker_consumers) == (0, 1)

    response = operator_client.post(reverse("queue_pause", args=[paused]), HTTP_HX_REQUEST="true")
    team = Celery("team", broker=on_rabbitmq, backend=redis_server.url)
    try:
        assert response.status_code == 200
        assert hostname in response.content.decode()
        assert QueuePause.objects.get(queue=paused).workers == [hostname]
        sample_until(
            workers, lambda: paused not in WorkerSnapshot.objects.get(hostname=hostname).queues
        )
        held = team.send_task("demo.tasks.add", args=(2, 3), queue=paused)
        assert team.send_task("demo.tasks.add", args=(1, 1), queue=other).get(timeout=30) == 2
        # The worker took a later task from its other queue, not this one.
        assert passive_depth(on_rabbitmq, paused) == 1
    finally:
        response = operator_client.post(reverse("queue_resume", args=[paused]))
    assert response.status_code == 302
    assert held.get(timeout=30) == 5
    team.close()


@pytest.mark.django_db
def test_a_worker_on_rabbitmq_killed_with_kill_9_goes_offline_then_is_forgotten(
    on_rabbitmq: str, rabbit_worker: tuple[WorkerProcess, str, list[str]], settings: Any
) -> None:
    handle, hostname, _ = rabbit_worker
    workers = WorkerSampler()
    sample_until(
        workers,
        lambda: WorkerSnapshot.objects.filter(hostname=hostname, online=True).exists(),
        timeout=30,
    )
    handle.process.send_signal(signal.SIGKILL)
    handle.process.wait()

    settings.MONITOR_WORKER_OFFLINE_AFTER = 3600
    workers()
    assert WorkerSnapshot.objects.get(hostname=hostname).online, "within the grace period"
    settings.MONITOR_WORKER_OFFLINE_AFTER = 1
    sample_until(
        workers, lambda: not WorkerSnapshot.objects.get(hostname=hostname).online, timeout=30
    )
    settings.MONITOR_WORKER_FORGET_AFTER = 2
    sample_until(
        workers, lambda: not WorkerSnapshot.objects.filter(hostname=hostname).exists(), timeout=30
    )


# --- an outage while the monitor runs -----------------------------------------------------


class TcpProxy:
    """A port in front of the broker that can be cut and restored, like a broker restart.

    The shared RabbitMQ itself is never stopped: other suites use it.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(32)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                if self._server is not server:
                    return
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        with self._lock:
            cut, self._open = self._open, []
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@pytest.mark.django_db(transaction=True)
def test_the_monitor_lives_through_a_rabbitmq_outage(rabbitmq_url: str, queues: list[str]) -> None:
    name, dead_letters = unique("outage"), unique("deadletters-test")
    queues += [name, dead_letters]
    publish(rabbitmq_url, declare(rabbitmq_url, name), 4)
    parts = urlsplit(rabbitmq_url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    proxy.start()
    via_proxy = rabbitmq_url.replace(f":{parts.port or 5672}/", f":{proxy.port}/", 1)
    assert via_proxy != rabbitmq_url

    client = Client()
    client.force_login(make_user("olivia", group="Operator"))
    log = DATA_DIR / f"monitor-rabbitmq-{time.monotonic_ns()}.log"
    monitor = subprocess.Popen(
        [sys.executable, "manage.py", "monitor"],
        cwd=ROOT,
        env=subprocess_env(
            CELERY_BROKER_URL=via_proxy,
            DEADLETTERS_QUEUE=dead_letters,
            MONITOR_QUEUES=name,
            MONITOR_BROKER_INTERVAL="0.5",
            MONITOR_WORKERS_INTERVAL="1",
            RABBITMQ_MANAGEMENT_URL="",
        ),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: QueueSnapshot.objects.filter(name=name, depth=4).exists(), timeout=60)
        proxy.stop()
        failing = wait_until(
            lambda: CollectorStatus.objects.filter(
                name="broker", failing_since__isnull=False
            ).first(),
            timeout=60,
        )
        stamp = timezone.localtime(failing.failing_since).strftime("%H:%M")
        for url in ("/", "/queues/", "/workers/"):
            response = client.get(url)
            assert response.status_code == 200
            text = response.content.decode()
            assert re.search(rf"Broker unreachable since <time[^>]*>{stamp}</time>", text), url
        assert monitor.poll() is None, log.read_text()

        publish(rabbitmq_url, Queue(name, Exchange(name, type="direct"), routing_key=name), 1)
        proxy.start()
        wait_until(
            lambda: CollectorStatus.objects.filter(name="broker", failing_since=None).exists(),
            timeout=60,
        )
        wait_until(lambda: QueueSnapshot.objects.filter(name=name, depth=5).exists(), timeout=30)
        assert "Broker unreachable" not in client.get("/queues/").content.decode()
    finally:
        monitor.terminate()
        code = monitor.wait(30)
        proxy.stop()
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()
