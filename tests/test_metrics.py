"""/metrics: protected, computed from stored state, valid for promtool and Prometheus."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import redis
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from kombu import Connection, Exchange, Queue

from dashboard.models import WorkerSnapshot
from dashboard.monitor.jobs import broker_sampler
from deadletters.services import deadletter_discard, deadletter_requeue
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import ROOT, make_dead_letters, need

pytestmark = pytest.mark.django_db

TOKEN = "t0ken-for-the-tests"


@pytest.fixture
def scraper(settings: Any) -> Client:
    settings.METRICS_TOKEN = TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def scrape(client: Client) -> str:
    response = client.get("/metrics", secure=True)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def value(text: str, series: str) -> float | None:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


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
    assert value(text, 'celery_queue_length{queue="prio"}') == 5
    assert value(text, 'celery_queue_oldest_message_age_seconds{queue="prio"}') is not None
    assert value(text, "celery_ops_broker_up") == 1


def test_an_unknown_age_is_absent_not_zero(
    scraper: Client, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any
) -> None:
    settings.MONITOR_QUEUES = ["unstamped"]
    publish(redis_server.url, "unstamped", stamped=False)
    broker_sampler()()
    text = scrape(scraper)
    assert value(text, 'celery_queue_length{queue="unstamped"}') == 1
    assert 'celery_queue_oldest_message_age_seconds{queue="unstamped"}' not in text


def test_dead_letter_counters_survive_pruning(scraper: Client, broker: redis.Redis) -> None:
    from deadletters.models import DeadLetter

    rows = make_dead_letters(3, queue="requeue-target")
    deadletter_requeue(dead_letter=rows[0], user=None)  # type: ignore[arg-type]
    deadletter_discard(dead_letter=rows[1], user=None)  # type: ignore[arg-type]
    task = rows[0].task_name
    received = f'celery_deadletters_received_total{{queue="requeue-target",task="{task}"}}'
    text = scrape(scraper)
    assert value(text, f'celery_deadletters_open{{queue="requeue-target",task="{task}"}}') == 1
    assert value(text, received) == 3
    assert value(text, f'celery_deadletters_requeued_total{{task="{task}"}}') == 1
    assert value(text, f'celery_deadletters_discarded_total{{task="{task}"}}') == 1
    DeadLetter.objects.exclude(state="open").delete()  # as retention would
    text = scrape(scraper)
    assert value(text, received) == 3
    assert value(text, f'celery_deadletters_requeued_total{{task="{task}"}}') == 1


def test_worker_series_follow_the_snapshots_and_can_be_turned_off(
    scraper: Client, settings: Any
) -> None:
    from django.utils import timezone

    now = timezone.now()
    for name, online in (("a@h", True), ("b@h", False)):
        WorkerSnapshot.objects.create(hostname=name, first_seen_at=now, last_seen_at=now,
                                      online=online, active_count=2, reserved_count=3)  # fmt: skip
    text = scrape(scraper)
    assert value(text, "celery_workers_online") == 1
    assert value(text, 'celery_worker_up{worker="a@h"}') == 1
    assert value(text, 'celery_worker_up{worker="b@h"}') == 0
    assert value(text, 'celery_worker_active_tasks{worker="a@h"}') == 2
    assert value(text, 'celery_worker_reserved_tasks{worker="a@h"}') == 3
    WorkerSnapshot.objects.filter(hostname="b@h").delete()  # forgotten by the sampler
    assert 'worker="b@h"' not in scrape(scraper)
    settings.METRICS_PER_WORKER = False
    text = scrape(scraper)
    assert "celery_worker_up" not in text
    assert value(text, "celery_workers_online") == 1


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
    assert value(during, 'celery_queue_length{queue="steady"}') == 1
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
    result = subprocess.run([str(promtool), "check", "metrics"], input=scrape(scraper),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# --- the files that use the metrics -------------------------------------------------


def exposed_names(client: Client) -> set[str]:
    text = scrape(client)
    return set(re.findall(r"^# TYPE (\w+) ", text, re.M)) | {
        f"{name}_total" for name in re.findall(r"^# TYPE (\w+) counter", text, re.M)
    }


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
