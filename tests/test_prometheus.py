"""A real Prometheus server scrapes the running site with the token."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from dashboard.monitor.jobs import broker_sampler
from demo.embedded_redis import EmbeddedRedis, free_port
from tests.helpers import need, wait_until
from tests.test_metrics import TOKEN, publish

pytestmark = pytest.mark.django_db(transaction=True)


def test_prometheus_sees_the_depth_that_redis_holds(
    live_server: Any, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any,
    tmp_path: Any,
) -> None:  # fmt: skip
    binary = shutil.which("prometheus")
    need(binary is not None, "Prometheus is not installed here (apt-get install prometheus)")
    settings.METRICS_TOKEN = TOKEN
    settings.MONITOR_QUEUES = ["prio-scraped"]
    for priority in (None, 3, 9, 9):
        publish(redis_server.url, "prio-scraped", priority=priority)
    depth = sum(int(broker.llen(key)) for key in broker.scan_iter(match="prio-scraped*")
                if broker.type(key) == b"list")  # fmt: skip
    assert depth == 4
    broker_sampler()()

    target = urlsplit(live_server.url).netloc
    (tmp_path / "token").write_text(TOKEN)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: celery-ops\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{type: Bearer, credentials_file: {tmp_path / 'token'}}}\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [str(binary), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        query = urllib.parse.urlencode({"query": 'celery_queue_length{queue="prio-scraped"}'})

        def answer() -> list[Any]:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/query?{query}", timeout=5
                ) as response:
                    return list(json.load(response)["data"]["result"])
            except OSError:
                return []

        (series,) = wait_until(answer, timeout=90, interval=0.5)
        assert float(series["value"][1]) == depth
        assert series["metric"]["job"] == "celery-ops"
        up = urllib.parse.urlencode({"query": 'up{job="celery-ops"}'})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{up}") as response:
            assert json.load(response)["data"]["result"][0]["value"][1] == "1"
    finally:
        server.terminate()
        server.wait(20)
