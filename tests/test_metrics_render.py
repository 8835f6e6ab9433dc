"""/metrics writes the task and queue series straight from their rows: byte for
byte what prometheus-client's generate_latest writes from the same families."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import transaction
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from dashboard.models import (
    COUNTER_COLUMNS,
    QueueSnapshot,
    TaskFailureTotal,
    TaskTotal,
    WorkerSnapshot,
)
from metrics.collector import StoredStateCollector

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
# Names as a team may write them, and what the text format must escape; stored
# as the monitor stores them, without NULs (PostgreSQL keeps none in text).
names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00")
    | st.sampled_from('"\\\n'),
    min_size=1,
    max_size=12,
)
counts = st.integers(min_value=0, max_value=2**53)
rows = st.lists(
    st.tuples(names, names, names, st.lists(counts, min_size=len(COUNTER_COLUMNS),
                                            max_size=len(COUNTER_COLUMNS))),
    max_size=6,
    unique_by=lambda row: row[:3],
)  # fmt: skip
queues = st.lists(
    st.tuples(
        names,
        st.none() | counts,
        st.none() | st.floats(min_value=0, max_value=1e9),
        st.none() | st.integers(min_value=0, max_value=1000),
    ),
    max_size=5,
    unique_by=lambda queue: queue[0],
)
failures = st.lists(st.tuples(st.sampled_from(["", "ValueError", 'Odd"\\Error\n']), counts),
                    max_size=3, unique_by=lambda f: f[0])  # fmt: skip


def generated(collector: StoredStateCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows, failures=failures, queues=queues, per_worker=st.booleans())
def test_the_fast_text_is_generate_latests_text(
    rows: list[tuple[str, str, str, list[int]]],
    failures: list[tuple[str, int]],
    queues: list[tuple[str, int | None, float | None, int | None]],
    per_worker: bool,
) -> None:
    with transaction.atomic(), override_settings(METRICS_PER_WORKER=per_worker):
        for name, depth, age, consumers in queues:
            QueueSnapshot.objects.create(name=name, sampled_at=NOW, depth=depth, oldest_age=age,
                                         broker_consumers=consumers)  # fmt: skip
        # A worker consuming every queue: counted where the broker does not count.
        consumed = [name for name, *_ in queues]
        WorkerSnapshot.objects.create(hostname="celery@w1", first_seen_at=NOW, last_seen_at=NOW,
                                      online=True, queues=consumed)  # fmt: skip
        for task, queue, hostname, values in rows:
            TaskTotal.objects.create(task=task, queue=queue, hostname=hostname, last_seen=NOW,
                                     **dict(zip(COUNTER_COLUMNS, values, strict=True)))  # fmt: skip
            for exception, count in failures:
                TaskFailureTotal.objects.create(
                    task=task, queue=queue, hostname=hostname, exception=exception, count=count,
                    last_seen=NOW,
                )  # fmt: skip
        collector = StoredStateCollector(now=NOW)
        assert collector.render() == generated(collector)
        transaction.set_rollback(True)
