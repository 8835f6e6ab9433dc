"""A real Prometheus server for the tests: Debian's ``prometheus`` scraping the live site."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from demo.embedded_redis import free_port
from tests.helpers import need, wait_until

# The scrape job's name; celery-mixin's alerts select job=~".*celery.*".
JOB = "celery-ops"


class Prometheus:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.log = log

    def api(self, path: str, **params: str | float) -> Any:
        """The ``data`` of an answer of the HTTP API (``/api/v1/<path>``)."""
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited:\n{self.log.read_text()[-3000:]}")
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            return json.load(response)["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("query", query=expr)["result"])

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        return list(self.api("query_range", query=expr, start=start, end=end, step=1)["result"])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


@contextmanager
def running_prometheus(
    tmp_path: Path, site_url: str, token: str, *, rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """Prometheus scraping ``site_url``/metrics with ``token`` as job ``celery-ops``,
    every second, and evaluating ``rule_files`` every second. Skips the test where
    Prometheus is not installed (a failure under OPS_REQUIRE_ALL)."""
    binary = shutil.which("prometheus")
    need(binary is not None, "Prometheus is not installed here (apt-get install prometheus)")
    (tmp_path / "token").write_text(token)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: {json.dumps([str(path) for path in rule_files])}\n"
        "scrape_configs:\n"
        f"  - job_name: {JOB}\n"
        "    metrics_path: /metrics\n"
        f"    authorization: {{type: Bearer, credentials_file: {tmp_path / 'token'}}}\n"
        f"    static_configs: [{{targets: ['{urlsplit(site_url).netloc}']}}]\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            prometheus = Prometheus(port, process, log)
            wait_until(prometheus.ready, timeout=60, interval=0.2)
            yield prometheus
        finally:
            process.terminate()
            process.wait(20)
