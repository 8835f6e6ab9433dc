"""The API's contract: every operation of /api/v1/openapi.json fuzzed from the
schema (schemathesis), as an operator's token. No answer is a 5xx, and every
answer is one the schema documents, in its shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from dashboard.models import QueueSnapshot, WorkerSnapshot
from tests.helpers import make_dead_letters
from tests.test_api_auth import token_for

pytestmark = pytest.mark.django_db

HEADERS: dict[str, str] = {}


@pytest.fixture
def api_schema(operator: User, broker: redis.Redis, settings: Any) -> Iterator[Any]:
    settings.ALLOWED_HOSTS = ["*"]
    settings.API_RATE_LIMIT = "100000/min"
    # Controls broadcast to workers that are not there: wait for no one long.
    settings.MONITOR_INSPECT_TIMEOUT = 0.1
    make_dead_letters(3)
    now = timezone.now()
    QueueSnapshot.objects.create(name="default", sampled_at=now, depth=3)
    WorkerSnapshot.objects.create(hostname="w1@host", first_seen_at=now, last_seen_at=now)
    HEADERS["Authorization"] = f"Bearer {token_for(operator, 'contract')}"
    # As Django's test client does: the app runs inside this test's transaction,
    # which closing "old" connections after each request would end.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
# Examples per operation and mode: the whole schema stays within about a minute.
EXAMPLES = 12


def test_every_operation_keeps_to_its_schema(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    statuses: dict[str, set[int]] = {}
    assert len(operations) >= 20
    for operation in operations:
        label = operation.label
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def call(case: Any) -> None:
            response = case.call_and_validate(headers=HEADERS, checks=CHECKS)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            call()
        except Exception as exc:
            raise AssertionError(f"{label}: {exc}") from exc
    # The token got through: each operation answered something besides a refusal.
    refused = {label for label, codes in statuses.items() if codes <= {401, 403}}
    assert refused == set()
    assert len(statuses) == len(operations)
