"""/metrics: protected, computed from stored state, valid for promtool and Prometheus."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu import Connection, Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from dashboard.models import (
    OUTCOME_BUCKETS,
    BeatProcess,
    PeriodicEntry,
    PeriodicSend,
    QueueSnapshot,
    TaskFailureTotal,
    TaskTotal,
    WorkerSnapshot,
)
from dashboard.monitor.jobs import broker_sampler
from deadletters.services import deadletter_discard, deadletter_requeue
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import ROOT, make_dead_letters, need

pytestmark = pytest.mark.django_db

TOKEN = "t0ken-for-the-tests"
ADD = "demo.tasks.add"


@pytest.fixture
def scraper(settings: Any) -> Client:
    settings.METRICS_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def scrape(client: Client) -> str:
    response = client.get("/metrics", secure=True)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def value(text: str, series: str, /, **labels: str) -> float | None:
    """The value of the sample ``series`` with exactly these labels, if exposed."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == series and sample.labels == labels:
                return float(sample.value)
    return None


def publish(url: str, queue: str, *, priority: int | None = None, stamped: bool = True) -> None:
    from demo.celery_app import app  # imports deadletters.hook, which stamps x_sent_at

    if stamped:
        app.send_task("demo.tasks.add", args=[1, 2], queue=queue, priority=priority)
        return
    with Connection(url) as conn:  # a producer without the hook: no x_sent_at
        target = Queue(queue, Exchange(queue), routing_key=queue, max_priority=9)
        conn.Producer().publish(
            {"x": 1}, exchange=target.exchange, routing_key=queue, declare=[target],
            serializer="json", priority=priority or 0,
        )  # fmt: skip


def task_total(hostname: str, **columns: float) -> TaskTotal:
    """demo.tasks.add's totals on the default queue and one worker, as the monitor adds them up."""
    return TaskTotal.objects.create(task=ADD, queue="default", hostname=hostname,
                                    last_seen=timezone.now(), **columns)  # fmt: skip


def beat_schedule(now: datetime) -> BeatProcess:
    """One live beat and two entries as the monitor stores their reports:
    acme-tick two hours overdue, acme-invoice on time with 3 duplicate sends."""
    beat = BeatProcess.objects.create(process="312-a1", hostname="host-a", pid=312,
                                      first_seen_at=now, last_report_at=now,
                                      interval=10)  # fmt: skip
    PeriodicEntry.objects.create(name="acme-tick", task=ADD, enabled=True, reported_at=now,
                                 next_due=now - timedelta(hours=2),
                                 last_sent_at=now - timedelta(hours=3))  # fmt: skip
    PeriodicEntry.objects.create(name="acme-invoice", task="demo.tasks.invoice", reported_at=now,
                                 next_due=now + timedelta(hours=1), last_sent_at=now,
                                 duplicate_sends=3)  # fmt: skip
    PeriodicSend.objects.create(entry="acme-invoice", process=beat.process, sends=7,
                                last_sent_at=now)  # fmt: skip
    return beat


# --- access ---------------------------------------------------------------------


def test_without_a_token_it_answers_401(client: Client, settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    response = client.get("/metrics", secure=True, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", secure=True, HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401


def test_an_allowed_network_needs_no_token(client: Client, settings: Any) -> None:
    import ipaddress

    settings.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]
    assert client.get("/metrics", secure=True, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", secure=True, REMOTE_ADDR="10.2.0.1").status_code == 401


def test_an_open_endpoint_is_an_explicit_choice(client: Client, settings: Any) -> None:
    settings.METRICS_PUBLIC = True
    assert client.get("/metrics", secure=True).status_code == 200


# --- what it says -----------------------------------------------------------------


def test_queue_length_counts_every_priority_list(
    scraper: Client, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any
) -> None:
    settings.MONITOR_QUEUES = ["prio"]
    for priority in (None, 3, 6, 9, 9):
        publish(redis_server.url, "prio", priority=priority)
    in_redis = sum(int(broker.llen(key)) for key in broker.scan_iter(match="prio*")
                   if broker.type(key) == b"list")  # fmt: skip
    assert in_redis == 5
    broker_sampler()()
    text = scrape(scraper)
    assert value(text, "celery_queue_length", queue_name="prio") == 5
    assert value(text, "celery_queue_oldest_message_age_seconds", queue_name="prio") is not None
    assert value(text, "celery_ops_broker_up") == 1


def test_an_unknown_age_is_absent_not_zero(
    scraper: Client, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any
) -> None:
    settings.MONITOR_QUEUES = ["unstamped"]
    publish(redis_server.url, "unstamped", stamped=False)
    broker_sampler()()
    text = scrape(scraper)
    assert value(text, "celery_queue_length", queue_name="unstamped") == 1
    assert value(text, "celery_queue_oldest_message_age_seconds", queue_name="unstamped") is None


def test_dead_letter_counters_survive_pruning(scraper: Client, broker: redis.Redis) -> None:
    from deadletters.models import DeadLetter

    rows = make_dead_letters(3, queue="requeue-target")
    deadletter_requeue(dead_letter=rows[0], user=None)  # type: ignore[arg-type]
    deadletter_discard(dead_letter=rows[1], user=None)  # type: ignore[arg-type]
    task = rows[0].task_name
    where = {"name": task, "queue_name": "requeue-target"}
    text = scrape(scraper)
    assert value(text, "celery_deadletters_open", **where) == 1
    assert value(text, "celery_deadletters_received_total", **where) == 3
    assert value(text, "celery_deadletters_requeued_total", name=task) == 1
    assert value(text, "celery_deadletters_discarded_total", name=task) == 1
    DeadLetter.objects.exclude(state="open").delete()  # as retention would
    text = scrape(scraper)
    assert value(text, "celery_deadletters_received_total", **where) == 3
    assert value(text, "celery_deadletters_requeued_total", name=task) == 1


def test_worker_series_follow_the_snapshots(scraper: Client) -> None:
    now = timezone.now()
    for name, online in (("a@h", True), ("b@h", False)):
        WorkerSnapshot.objects.create(hostname=name, first_seen_at=now, last_seen_at=now,
                                      online=online, active_count=2, reserved_count=3)  # fmt: skip
    text = scrape(scraper)
    assert value(text, "celery_workers_online") == 1
    assert value(text, "celery_worker_up", hostname="a@h") == 1
    assert value(text, "celery_worker_up", hostname="b@h") == 0
    assert value(text, "celery_worker_tasks_active", hostname="a@h") == 2
    assert value(text, "celery_worker_reserved_tasks", hostname="a@h") == 3
    assert value(text, "celery_worker_tasks_active", hostname="b@h") is None
    WorkerSnapshot.objects.filter(hostname="b@h").delete()  # forgotten by the sampler
    assert 'hostname="b@h"' not in scrape(scraper)


def test_a_queue_counts_the_online_workers_that_consume_it(scraper: Client) -> None:
    now = timezone.now()
    QueueSnapshot.objects.create(name="emails", sampled_at=now, depth=4)
    for name, online, queues in (
        ("a@h", True, ["emails", "default"]),
        ("b@h", True, ["emails"]),
        ("c@h", False, ["emails"]),
    ):
        WorkerSnapshot.objects.create(hostname=name, first_seen_at=now, last_seen_at=now,
                                      online=online, queues=queues)  # fmt: skip
    text = scrape(scraper)
    assert value(text, "celery_queue_length", queue_name="emails") == 4
    assert value(text, "celery_active_consumer_count", queue_name="emails") == 2


def test_per_worker_off_sums_the_workers_under_one_hostname(scraper: Client, settings: Any) -> None:
    now = timezone.now()
    for name, online in (("pod-1@h", True), ("pod-2@h", True), ("pod-0@h", False)):
        WorkerSnapshot.objects.create(hostname=name, first_seen_at=now, last_seen_at=now,
                                      online=online, active_count=2, reserved_count=3)  # fmt: skip
        task_total(name, succeeded=5, failed=3, runtime_0=1, runtime_sum=0.5)
        TaskFailureTotal.objects.create(task=ADD, queue="default", hostname=name,
                                        exception="ValueError", count=2, last_seen=now)  # fmt: skip
    settings.METRICS_PER_WORKER = False
    text = scrape(scraper)
    assert "pod-" not in text, "no series names a worker"
    assert value(text, "celery_workers_online") == 2
    assert value(text, "celery_worker_up", hostname="all") == 2
    assert value(text, "celery_worker_tasks_active", hostname="all") == 4
    assert value(text, "celery_worker_reserved_tasks", hostname="all") == 6
    task = {"name": ADD, "hostname": "all", "queue_name": "default"}
    assert value(text, "celery_task_succeeded_total", **task) == 15
    assert value(text, "celery_task_failed_total", exception="ValueError", **task) == 6
    assert value(text, "celery_task_failed_total", exception="", **task) == 3
    assert value(text, "celery_task_runtime_bucket", le="0.005", **task) == 3
    assert value(text, "celery_task_runtime_sum", **task) == 1.5


def test_task_outcomes_are_celery_exporters_counters(scraper: Client) -> None:
    task_total("w1@h", received=7, started=7, succeeded=4, failed=3, retried=1)
    now = timezone.now()
    TaskFailureTotal.objects.create(task=ADD, queue="default", hostname="w1@h",
                                    exception="ValueError", count=2, last_seen=now)  # fmt: skip
    text = scrape(scraper)
    task = {"name": ADD, "hostname": "w1@h", "queue_name": "default"}
    expected = {"sent": 0, "received": 7, "started": 7, "succeeded": 4, "retried": 1,
                "rejected": 0, "revoked": 0}  # fmt: skip
    for event, n in expected.items():
        assert value(text, f"celery_task_{event}_total", **task) == n, event
    assert value(text, "celery_task_failed_total", exception="ValueError", **task) == 2
    # The failure without a known type, and the zero that a success ratio divides by.
    assert value(text, "celery_task_failed_total", exception="", **task) == 1


def test_histograms_are_cumulative_as_prometheus_counts_buckets(scraper: Client) -> None:
    # Stored per bucket: two runs within 5 ms, one within 50 ms, one over 10 s.
    task_total("w1@h", runtime_0=2, runtime_3=1, runtime_14=1, runtime_sum=12.5,
               wait_5=3, wait_sum=0.2)  # fmt: skip
    text = scrape(scraper)
    task = {"name": ADD, "hostname": "w1@h", "queue_name": "default"}
    bounds = [*(str(bound) for bound in OUTCOME_BUCKETS), "+Inf"]
    runtime = [value(text, "celery_task_runtime_bucket", le=le, **task) for le in bounds]
    assert runtime == [2] * 3 + [3] * 11 + [4]
    assert value(text, "celery_task_runtime_count", **task) == 4
    assert value(text, "celery_task_runtime_sum", **task) == 12.5
    wait = [value(text, "celery_task_queue_wait_time_bucket", le=le, **task) for le in bounds]
    assert wait == [0] * 5 + [3] * 10
    assert value(text, "celery_task_queue_wait_time_count", **task) == 3
    assert value(text, "celery_task_queue_wait_time_sum", **task) == 0.2


def test_beat_series_follow_what_the_beats_reported(scraper: Client) -> None:
    now = timezone.now()
    beat = beat_schedule(now)
    text = scrape(scraper)
    assert value(text, "celery_beat_instances") == 1
    sent = "celery_periodic_task_last_sent_timestamp_seconds"
    tick_sent = value(text, sent, entry="acme-tick", task=ADD)
    assert tick_sent == pytest.approx((now - timedelta(hours=3)).timestamp())
    assert value(text, sent, entry="acme-invoice", task="demo.tasks.invoice") is not None
    assert value(text, "celery_periodic_task_late", entry="acme-tick") == 1
    assert value(text, "celery_periodic_task_late", entry="acme-invoice") == 0
    duplicates = "celery_periodic_task_duplicate_sends_total"
    assert value(text, duplicates, entry="acme-invoice") == 3
    assert value(text, duplicates, entry="acme-tick") == 0
    assert "# TYPE celery_periodic_task_duplicate_sends_total counter" in text
    # The beat stops reporting: no instance left, its entries still known.
    BeatProcess.objects.filter(pk=beat.pk).update(last_report_at=now - timedelta(hours=1))
    text = scrape(scraper)
    assert re.search(r"^celery_beat_instances 0\.0$", text, re.M), text
    assert value(text, "celery_periodic_task_late", entry="acme-tick") == 1


def test_a_disabled_entry_has_no_late_series(scraper: Client) -> None:
    now = timezone.now()
    PeriodicEntry.objects.create(name="acme-off", task=ADD, enabled=False, reported_at=now,
                                 next_due=now - timedelta(hours=2))  # fmt: skip
    text = scrape(scraper)
    assert value(text, "celery_beat_instances") == 0
    assert value(text, "celery_periodic_task_late", entry="acme-off") is None
    assert value(text, "celery_periodic_task_last_sent_timestamp_seconds", entry="acme-off",
                 task=ADD) is None  # fmt: skip


@pytest.mark.parametrize("per_worker", [True, False])
def test_a_scrape_costs_the_same_queries_however_many_tasks(
    scraper: Client, settings: Any, per_worker: bool
) -> None:
    settings.METRICS_PER_WORKER = per_worker
    task_total("w1@h", succeeded=1)
    with CaptureQueriesContext(connection) as few:
        scrape(scraper)
    now = timezone.now()
    keys = [{"task": f"t{n}", "queue": "default", "hostname": f"w{n % 7}@h"} for n in range(300)]
    TaskTotal.objects.bulk_create(
        TaskTotal(**key, last_seen=now, succeeded=n) for n, key in enumerate(keys)
    )
    TaskFailureTotal.objects.bulk_create(
        TaskFailureTotal(**key, exception="KeyError", count=1, last_seen=now) for key in keys
    )
    with CaptureQueriesContext(connection) as many:
        text = scrape(scraper)
    assert len(many.captured_queries) == len(few.captured_queries)
    hostname = "w5@h" if per_worker else "all"
    task = {"name": "t299", "hostname": hostname, "queue_name": "default"}
    assert value(text, "celery_task_succeeded_total", **task) == 299
    assert value(text, "celery_task_failed_total", exception="KeyError", **task) == 1


def test_a_scrape_reads_stored_state_only(
    scraper: Client, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any
) -> None:
    settings.MONITOR_QUEUES = ["steady"]
    publish(redis_server.url, "steady")
    make_dead_letters(2)
    broker_sampler()()
    before = scrape(scraper)
    redis_server.stop()  # no broker round trip: the scrape does not notice
    try:
        with CaptureQueriesContext(connection) as queries:
            during = scrape(scraper)
    finally:
        redis_server.start()
    assert value(during, "celery_queue_length", queue_name="steady") == 1
    assert re.sub(r"celery_queue_oldest\S+ \S+", "", before) == re.sub(
        r"celery_queue_oldest\S+ \S+", "", during
    )
    tables = " ".join(q["sql"] for q in queries.captured_queries)
    assert '"deadletters_deadletter"' not in tables, "a scrape must not touch the big table"


def test_promtool_accepts_the_output(scraper: Client, redis_server: EmbeddedRedis) -> None:
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed here (apt-get install prometheus)")
    make_dead_letters(2)
    broker_sampler()()
    total = task_total("w1@h", succeeded=2, failed=1, runtime_0=2, runtime_sum=0.004)
    TaskFailureTotal.objects.create(task=ADD, queue="default", hostname="w1@h", count=1,
                                    exception="ValueError", last_seen=total.last_seen)  # fmt: skip
    beat_schedule(timezone.now())
    result = subprocess.run([str(promtool), "check", "metrics"], input=scrape(scraper),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    # celery-exporter's name, kept for celery-mixin and its users, is the one
    # finding of promtool's linter (exit code 3); anything else is a failure.
    tolerated = {
        "celery_active_consumer_count non-histogram and non-summary metrics should not have"
        ' "_count" suffix'
    }
    findings = set((result.stdout + result.stderr).splitlines())
    assert result.returncode in (0, 3) and findings <= tolerated, result.stdout + result.stderr


# --- the files that use the metrics -------------------------------------------------


def exposed_names(client: Client) -> set[str]:
    text = scrape(client)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\w+) (\w+)", text, re.M):
        names |= {name, *(name + suffix for suffix in suffixes.get(kind, ()))}
    return names


def test_the_alert_rules_check_and_pass_their_unit_tests() -> None:
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool is not installed here (apt-get install prometheus)")
    rules = ROOT / "deploy" / "prometheus"
    check = subprocess.run([str(promtool), "check", "rules", str(rules / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([str(promtool), "test", "rules", "alert-tests.yml"], cwd=rules,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_alerts_and_the_grafana_dashboard_use_only_metrics_we_expose(scraper: Client) -> None:
    import json

    exposed = exposed_names(scraper)
    rules = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/celery-ops.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = set(re.findall(r"\b(celery_\w+)", rules + " ".join(exprs)))
    assert used, "no metric found in the rules or the dashboard"
    assert used - exposed == set()
