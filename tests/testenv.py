"""Loaded with ``-p tests.testenv`` before Django reads its settings.

The tests always run against a Redis of their own, never a broker the
environment points at: they purge queues and stop the server. The database
comes from ``DATABASE_URL`` when it is set (CI points it at PostgreSQL), else a
SQLite file in a fresh directory.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

DATA_DIR = Path(tempfile.mkdtemp(prefix="ops-tests-"))
(DATA_DIR / "static").mkdir()
os.environ["DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("SECRET_KEY", "tests-" + secrets.token_hex(16))
os.environ["DEBUG"] = "false"
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
# The tests talk plain HTTP to the site (the test client, a live server, urllib):
# no redirect to HTTPS, and cookies that a client sends over HTTP.
os.environ["SECURE_SSL_REDIRECT"] = "false"
os.environ["SECURE_COOKIES"] = "false"
os.environ["DEADLETTERS_LEASE_SECONDS"] = "2"
# This process publishes the demo's tasks too: it counts them, as a producer does.
os.environ["OPS_OUTCOMES"] = "on"
# Every page judges the cluster's state afresh: a cached one would leak between
# tests, and make a page's query count depend on what an earlier request cached.
os.environ["STATE_CACHE_SECONDS"] = "0"

from demo.embedded_redis import EmbeddedRedis  # noqa: E402

REDIS = EmbeddedRedis(DATA_DIR / "redis")
os.environ["CELERY_BROKER_URL"] = REDIS.start()
os.environ["CELERY_RESULT_BACKEND"] = REDIS.url


@atexit.register
def _cleanup() -> None:
    REDIS.stop()
    shutil.rmtree(DATA_DIR, ignore_errors=True)


# CI sets this: a test that would skip for a missing part (Chromium,
# PostgreSQL, RabbitMQ) fails instead, so that nothing is skipped there.
REQUIRE_ALL = os.environ.get("OPS_REQUIRE_ALL", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but OPS_REQUIRE_ALL forbids skips: {reason}"
