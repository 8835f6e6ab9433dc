"""/metrics is a drop-in for celery-exporter: celery-mixin's dashboards and alerts,
unchanged (tests/data/celery-mixin), against a real Prometheus scraping the live
site while a real worker runs tasks that succeed and a task that always fails."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from dashboard.models import WorkerSnapshot
from dashboard.monitor.jobs import broker_sampler
from dashboard.queues.sampling import WorkerSampler
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import ROOT, ingest, sample_until, start_worker, stop_worker, wait_until
from tests.prometheus_server import JOB, Prometheus, running_prometheus
from tests.test_metrics import TOKEN

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MIXIN = ROOT / "tests" / "data" / "celery-mixin"
DASHBOARDS = ("celery-tasks-overview.json", "celery-tasks-by-task.json")
ADD, RESIZE = "demo.tasks.add", "demo.tasks.resize_image"
# Grafana's built-in variables: $__rate_interval is at least four scrape
# intervals (Prometheus scrapes every second here); $__range is the
# dashboards' default time range.
BUILT_IN = {"__rate_interval": "4s", "__range": "1d"}


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, target) for every query of every panel, rows included."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for index, target in enumerate(panel.get("targets", []), start=1):
                found.append((f"{dashboard['title']} / {panel['title']} #{index}", target))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return found


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation; a variable we have no value for is an error."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], text)


def resolve_variables(dashboard: dict[str, Any], prometheus: Prometheus) -> dict[str, str]:
    """The dashboard's variables as Grafana resolves them: each ``label_values``
    query asked of Prometheus in order, multi-value ones as a regex of all values
    (plain names here, no regex metacharacters to escape)."""
    values = dict(BUILT_IN)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = substitute(query["query"] if isinstance(query, dict) else query, values)
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query, re.S)
        assert match, f"not a label_values query: {query}"
        selector, label = match.groups()
        found = prometheus.api(f"label/{label}/values", **{"match[]": selector})
        values[variable["name"]] = "|".join(found) if variable.get("multi") else "".join(found[:1])
    return values


def has_data(prometheus: Prometheus, target: dict[str, Any], expr: str, since: float) -> bool:
    """Whether the panel would draw something: an instant query answers now,
    a graph has a point since ``since``; NaN (0/0) draws nothing."""
    if target.get("instant"):
        values = [series["value"] for series in prometheus.query(expr)]
    else:
        now = time.time()
        values = [v for s in prometheus.query_range(expr, since, now) for v in s["values"]]
    return any(not math.isnan(float(value)) for _, value in values)


def firing(prometheus: Prometheus, alertname: str) -> list[dict[str, str]]:
    alerts = prometheus.api("alerts")["alerts"]
    return [a["labels"] for a in alerts
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"]  # fmt: skip


def traffic(worker_sampler: Callable[[], object]) -> Callable[[], None]:
    """One round of work and of the monitor: tasks that succeed and one that
    always fails, the hook's reports added up, queues and workers sampled."""
    from demo import tasks

    last_worker_sample = time.monotonic()

    def round_() -> None:
        nonlocal last_worker_sample
        for n in range(3):
            tasks.add.delay(n, 1)
        tasks.resize_image.delay(42, [64])  # fails unless requeued
        ingest()
        broker_sampler()()
        # Inspect rounds cost a broadcast: every few seconds, as the monitor does,
        # so that the worker stays online.
        if time.monotonic() - last_worker_sample > 5:
            worker_sampler()
            last_worker_sample = time.monotonic()

    return round_


def test_celery_mixin_dashboards_have_data_and_its_fail_rate_alert_fires(
    live_server: Any, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any,
    tmp_path: Any,
) -> None:  # fmt: skip
    settings.METRICS_TOKEN = TOKEN
    # The vendored rule waits `for: 1m` before it fires; the same rule with
    # `for: 3s` in a copy, so that the test takes seconds, not minutes.
    alerts = (MIXIN / "prometheus_alerts.yaml").read_text()
    assert alerts.count('"for": "1m"') == 1, "CeleryTaskHighFailRate is no longer the 1m rule"
    rules = tmp_path / "celery-mixin-alerts.yaml"
    rules.write_text(alerts.replace('"for": "1m"', '"for": "3s"'))
    dashboards = [json.loads((MIXIN / name).read_text()) for name in DASHBOARDS]

    worker = start_worker(redis_server.url, "mixin", env={"OPS_OUTCOMES_INTERVAL": "0.3"})
    try:
        sampler = WorkerSampler()
        sample_until(sampler, lambda: WorkerSnapshot.objects.filter(online=True).exists(),
                     timeout=30)  # fmt: skip
        work = traffic(sampler)
        with running_prometheus(tmp_path, live_server.url, TOKEN, rule_files=[rules]) as prom:
            started = time.time()

            def both_tasks_known() -> bool:
                work()
                tasks = resolve_variables(dashboards[1], prom)["task"].split("|")
                return {ADD, RESIZE} <= set(tasks)

            wait_until(both_tasks_known, timeout=45, interval=0.5)
            variables = [resolve_variables(dashboard, prom) for dashboard in dashboards]
            for values in variables:
                assert (values["cluster"], values["namespace"], values["job"]) == ("", "", JOB)
                assert values["queue_name"] == "default"
            queries = {
                where: (target, substitute(target["expr"], values))
                for dashboard, values in zip(dashboards, variables, strict=True)
                for where, target in panel_queries(dashboard)
            }
            assert len(queries) > 60, "the dashboards lost their panels"

            empty = dict(queries)
            fired: list[dict[str, str]] = []
            deadline = time.monotonic() + 60
            while (empty or not fired) and time.monotonic() < deadline:
                work()
                empty = {where: query for where, query in empty.items()
                         if not has_data(prom, *query, since=started)}  # fmt: skip
                fired = firing(prom, "CeleryTaskHighFailRate")
                time.sleep(0.5)  # polling Prometheus, which evaluates every second
    finally:
        stop_worker(worker)

    assert not empty, "panels without data:\n" + "\n".join(
        f"{where}: {expr}" for where, (_, expr) in empty.items()
    )
    assert {(a["name"], a["queue_name"], a["job"]) for a in fired} == {(RESIZE, "default", JOB)}
