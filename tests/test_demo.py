"""The demo teaches: it says how to get in (and how to scrape /metrics) until
someone does, its worker writes one line an event, and each request is logged once."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_SUCCESS
from django.contrib.auth.models import User
from django.utils import timezone

from demo.console import OneLineConsole
from demo.embedded_redis import free_port
from demo.run import logged_in_since, metrics_token, way_in
from tests.helpers import ROOT, wait_until

# --- the worker's console ----------------------------------------------------------------


@pytest.fixture
def console() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the demo worker's console filter, as Celery's would."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(OneLineConsole())
    logger = logging.getLogger("celery.app.trace.test-demo-console")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def test_a_failed_task_is_one_line_without_its_traceback(
    console: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = console
    try:
        raise ValueError("image 1002 has an unsupported colour profile")
    except ValueError as exc:
        # As celery.app.trace logs a failure: its context as the arguments and in ``data``.
        context = {
            "id": "49d2efe0", "name": "demo.tasks.resize_image", "exc": repr(exc),
            "description": "raised unexpected", "args": "[1002]", "kwargs": "{}",
        }  # fmt: skip
        logger.error(LOG_FAILURE, context, exc_info=True, extra={"data": context})
    assert out.getvalue() == (
        "ERROR task demo.tasks.resize_image[49d2efe0] failed: "
        "ValueError: image 1002 has an unsupported colour profile\n"
    )


def test_an_error_with_a_long_message_keeps_its_first_line(
    console: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = console
    logger.error(
        "Received unregistered task of type %r.\nThe message has been ignored and discarded.\n\n"
        "The full contents of the message body was: ...",
        "demo.tasks.removed_in_last_deploy",
    )
    assert out.getvalue() == (
        "ERROR Received unregistered task of type 'demo.tasks.removed_in_last_deploy'.\n"
    )


def test_the_per_task_chatter_is_left_out_and_the_rest_kept(
    console: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = console
    context = {"id": "1", "name": "demo.tasks.add", "runtime": 0.01, "return_value": 3}
    logger.info(LOG_RECEIVED, context)
    logger.info(LOG_SUCCESS, context)
    logger.info("Task demo.tasks.send_webhook[2] retry: Retry in 1s: ConnectionError('x')")
    assert (
        out.getvalue()
        == "INFO Task demo.tasks.send_webhook[2] retry: Retry in 1s: ConnectionError('x')\n"
    )


# --- the way in --------------------------------------------------------------------------


def test_the_metrics_token_is_made_once_and_kept(tmp_path: Path) -> None:
    token = metrics_token(tmp_path)
    assert len(token) >= 30
    assert metrics_token(tmp_path) == token
    kept = tmp_path / "demo-metrics-token.txt"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_the_way_in_says_the_url_the_login_and_how_to_scrape() -> None:
    said = way_in(8765, "admin", "s3cret", "tok")
    assert "http://127.0.0.1:8765/\n" in said
    assert "log in as admin / s3cret" in said
    assert 'curl -H "Authorization: Bearer tok" http://127.0.0.1:8765/metrics' in said


@pytest.mark.django_db
def test_a_login_is_noticed_from_the_users_last_login() -> None:
    started = timezone.now()
    user = User.objects.create_user("admin")
    assert not logged_in_since("admin", started)
    user.last_login = started - timedelta(days=1)  # from an earlier run of the demo
    user.save()
    assert not logged_in_since("admin", started)
    user.last_login = timezone.now()
    user.save()
    assert logged_in_since("admin", started)


# --- the demo, for real ------------------------------------------------------------------


def log_in(port: int, username: str, password: str) -> None:
    """As a person does: the form (for its CSRF token), then the POST."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    url = f"http://127.0.0.1:{port}/login/"
    with opener.open(url, timeout=10) as response:
        form = response.read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    data = urllib.parse.urlencode(
        {"username": username, "password": password, "csrfmiddlewaretoken": token[1]}
    ).encode()
    with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
        assert response.url == f"http://127.0.0.1:{port}/"


class Output:
    """The demo's output, line by line, as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, fragment: str, timeout: float = 60) -> None:
        wait_until(lambda: fragment in self.text, timeout=timeout, interval=0.2)


@pytest.mark.slow
def test_the_demo_says_how_to_get_in_until_someone_does_and_writes_one_line_an_event(
    tmp_path: Path,
) -> None:
    port = free_port()
    # As a newcomer starts it: none of the tests' settings, a Redis of its own.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "DATA_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.run", "--port", str(port), "--interval", "1", "--remind", "3"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its children too can be stopped as one
    )
    output = Output(process)
    try:
        output.wait_for("  metrics: curl", timeout=90)
        password = (tmp_path / "demo-login.txt").read_text().split(":", 1)[1]
        token = (tmp_path / "demo-metrics-token.txt").read_text()
        assert f"Celery Ops Dashboard: http://127.0.0.1:{port}/" in output.text
        assert f"log in as admin / {password}" in output.text
        curl = f'curl -H "Authorization: Bearer {token}" http://127.0.0.1:{port}/metrics'
        assert curl in output.text
        scrape = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(scrape, timeout=10) as response:
            assert response.status == 200

        # The failures whose tracebacks buried the login before: an exception,
        # a hard time limit, an unregistered task.
        output.wait_for("] failed: ValueError: image ")
        output.wait_for("Hard time limit (1s) exceeded for demo.tasks.build_report")
        output.wait_for("Received unregistered task of type 'demo.tasks.removed_in_last_deploy'.")
        assert "Traceback" not in output.text
        assert "superuser privileges" not in output.text
        assert "SecurityWarning" not in output.text

        # Said again until someone logs in, then no more.
        wait_until(lambda: output.text.count(curl) >= 2, timeout=30, interval=0.2)
        log_in(port, "admin", password)
        output.wait_for("  admin has logged in.")
        # One line a request: the site's, with its request id; not runserver's too.
        logins = [line for line in output.lines if re.search(r"(GET|POST) /login/", line)]
        assert len(logins) == 2, logins  # the form, then the POST
        assert all(" INFO dashboard.request " in line for line in logins), logins
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: it stops what it started
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
