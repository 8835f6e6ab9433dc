"""Logs: one line per event, JSON on request, with the request or batch id, never args."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import Client
from django.urls import reverse

from dashboard.logs import ContextFilter, JsonFormatter, PlainFormatter
from demo.embedded_redis import EmbeddedRedis, free_port
from tests.helpers import (
    ROOT,
    make_dead_letter,
    make_envelope,
    publish_envelope,
    subprocess_env,
    wait_until,
)
from tests.testenv import DATA_DIR

SECRET_ARG = "card-4111-1111-1111-1111"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line, parsed; a line that is not JSON fails the test."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- the web, as gunicorn runs it in the image ----------------------------------------


@pytest.fixture
def gunicorn() -> Iterator[tuple[str, Any]]:
    port = free_port()
    log = DATA_DIR / f"gunicorn-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "dashboard.wsgi", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=subprocess_env(LOG_FORMAT="json", WEB_CONCURRENCY="1"),
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(up, timeout=60, interval=0.2)
        yield base, log
    finally:
        process.terminate()
        process.wait(30)


def get(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    return urllib.request.urlopen(request, timeout=10)


@pytest.mark.django_db(transaction=True)
def test_a_request_logs_one_json_line_with_its_request_id(gunicorn: tuple[str, Any]) -> None:
    base, log = gunicorn
    with get(f"{base}/login/", {"X-Request-ID": "req-from-the-proxy-42"}) as response:
        assert response.headers["X-Request-ID"] == "req-from-the-proxy-42"
    with get(f"{base}/login/") as response:
        made = response.headers["X-Request-ID"]
    with get(f"{base}/login/", {"X-Request-ID": 'forged" "level": "ERROR'}) as response:
        replaced = response.headers["X-Request-ID"]

    def logged() -> list[dict[str, Any]]:
        return [e for e in json_lines(log.read_text()) if e.get("path") == "/login/"]

    wait_until(lambda: len(logged()) == 3, timeout=10)
    first, second, third = logged()
    assert first["request_id"] == "req-from-the-proxy-42"
    assert first["status"] == 200
    assert first["method"] == "GET"
    assert first["logger"] == "dashboard.request"
    assert len(made) == 32
    assert second["request_id"] == made
    assert replaced != 'forged" "level": "ERROR'
    assert third["request_id"] == replaced
    # Gunicorn's own lines are JSON too: json_lines() parsed every line.
    assert any(e["logger"].startswith("gunicorn") for e in json_lines(log.read_text()))


# --- the monitor ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_ingestion_lines_carry_the_batch_id_and_no_arguments(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    for _ in range(3):
        publish_envelope(redis_server.url, make_envelope(args=[SECRET_ARG], kwargs={}))
    publish_envelope(redis_server.url, {"v": 1, "args": [SECRET_ARG]})  # quarantined
    result = subprocess.run(
        [sys.executable, "manage.py", "monitor", "--until-empty"],
        cwd=ROOT,
        env=subprocess_env(LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stderr + result.stdout)
    batches = [e for e in lines if e.get("message", "").startswith("batch of")]
    assert batches
    assert all(len(e["batch_id"]) == 16 for e in batches)
    assert sum(int(e["message"].split()[2]) for e in batches) == 4
    assert any("unreadable" in e.get("message", "") and "batch_id" in e for e in lines)
    assert SECRET_ARG not in result.stderr + result.stdout


# --- what operators' actions log ------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger's lines as the JSON handler of the settings writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.mark.django_db
def test_a_requeue_logs_ids_not_arguments(
    operator_client: Client, broker: redis.Redis, captured: io.StringIO
) -> None:
    dead_letter = make_dead_letter(
        queue="requeue-target", args=[SECRET_ARG], kwargs={"card": SECRET_ARG}
    )
    response = operator_client.post(
        reverse("deadletters:requeue", args=[dead_letter.pk]), HTTP_X_REQUEST_ID="req-requeue-1"
    )
    assert response.status_code == 302
    lines = json_lines(captured.getvalue())
    (requeue,) = [e for e in lines if e.get("event") == "audit" and e["action"] == "requeue"]
    assert requeue["target_ids"] == [str(dead_letter.pk)]
    assert requeue["user"] == "olivia"
    assert requeue["request_id"] == "req-requeue-1"
    assert SECRET_ARG not in captured.getvalue()


# --- the formatters -----------------------------------------------------------------


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            exc_info = sys.exc_info()
    return logging.LogRecord("x", logging.ERROR, __file__, 1, message, args, exc_info)


def test_a_traceback_stays_on_one_line_in_both_formats() -> None:
    for formatter in (JsonFormatter(), PlainFormatter()):
        line = formatter.format(record("failed %s", "here", exc=True))
        assert "\n" not in line
        assert "line two" in line


def test_json_lines_keep_their_own_fields_first() -> None:
    line = JsonFormatter().format(record('{"event": "audit", "level": "forged"}'))
    entry = json.loads(line)
    assert entry["event"] == "audit"
    assert entry["level"] == "ERROR"


def test_plain_lines_name_the_ids() -> None:
    entry = record("stored")
    entry.batch_id = "b-1"
    assert PlainFormatter().format(entry).endswith("stored [batch_id=b-1]")
