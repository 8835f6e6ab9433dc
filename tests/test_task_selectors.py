"""Task figures from the stored outcomes: percentiles from the histogram buckets,
windows from the minute or the hour table, and the steps of a chart."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from dashboard.models import OUTCOME_BUCKETS, TaskHour, TaskMinute
from dashboard.tasks import outcomes
from dashboard.tasks.selectors import (
    WINDOWS,
    histogram_quantile,
    series,
    task_detail,
    task_figures,
    window_named,
)
from tests.outcome_reports import bucket, fold, runs

EMPTY = [0] * (len(OUTCOME_BUCKETS) + 1)


def counts(**at: int) -> list[int]:
    """Per-bucket counts, e.g. counts(b0=4, b9=2); ``inf`` for the +Inf bucket."""
    found = list(EMPTY)
    for key, n in at.items():
        found[len(OUTCOME_BUCKETS) if key == "inf" else int(key[1:])] = n
    return found


# --- the percentile -----------------------------------------------------------------


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    # Ten runs between 0.1 and 0.25 s: the 95th is 9.5 tenths of the way through.
    assert histogram_quantile(0.95, counts(b6=10)) == pytest.approx(0.1 + 0.15 * 0.95)
    # The first bucket starts at zero.
    assert histogram_quantile(0.5, counts(b0=4)) == pytest.approx(0.0025)


def test_a_quantile_finds_the_bucket_its_rank_falls_in() -> None:
    spread = counts(b0=10, b9=10)  # ten at most 5 ms, ten between 0.75 and 1 s
    assert histogram_quantile(0.5, spread) == pytest.approx(0.005)
    assert histogram_quantile(0.75, spread) == pytest.approx(0.875)
    assert histogram_quantile(0.99, spread) == pytest.approx(0.75 + 0.25 * 0.98)


def test_a_quantile_in_the_infinite_bucket_is_the_highest_bound() -> None:
    """As Prometheus: all that is known is "at least 10 s"."""
    assert histogram_quantile(0.5, counts(inf=3)) == OUTCOME_BUCKETS[-1]
    assert histogram_quantile(0.99, counts(b0=90, inf=10)) == OUTCOME_BUCKETS[-1]


def test_no_observations_have_no_quantile() -> None:
    assert histogram_quantile(0.5, EMPTY) is None


@pytest.mark.parametrize(("q", "given_counts"), [(-0.1, EMPTY), (1.5, EMPTY), (0.5, [1, 2])])
def test_a_quantile_or_histogram_that_cannot_be_is_refused(
    q: float, given_counts: list[int]
) -> None:
    with pytest.raises(ValueError, match=r"quantile|bounds need"):
        histogram_quantile(q, given_counts)


@given(
    st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=200),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_the_estimate_lies_in_the_bucket_of_the_true_quantile(
    samples: list[float], q: float
) -> None:
    histogram = list(EMPTY)
    for sample in samples:
        histogram[bucket(sample)] += 1
    estimate = histogram_quantile(q, histogram)
    assert estimate is not None
    # The nearest-rank quantile of the samples themselves, and its bucket's bounds.
    truth = sorted(samples)[max(math.ceil(q * len(samples)), 1) - 1]
    index = bucket(truth)
    lower = OUTCOME_BUCKETS[index - 1] if index else 0.0
    upper = OUTCOME_BUCKETS[index] if index < len(OUTCOME_BUCKETS) else OUTCOME_BUCKETS[-1]
    assert lower - 1e-9 <= estimate <= upper + 1e-9
    assert histogram_quantile(q / 2, histogram) <= estimate  # type: ignore[operator]


# --- windows ------------------------------------------------------------------------


def test_an_unknown_window_is_the_default_hour() -> None:
    assert window_named("15m").label == "15 min"
    assert window_named("30d") == window_named(None) == WINDOWS["1h"]


@pytest.mark.django_db
def test_a_window_adds_up_only_its_own_minutes() -> None:
    now = timezone.now()
    fold(
        runs("t.recent", at=now, succeeded=8, failed={"KeyError": 2}, runtimes=[0.2] * 10),
        runs("t.recent", at=now - timedelta(minutes=40), succeeded=90, runtimes=[3.0] * 90),
        runs("t.yesterday", at=now - timedelta(hours=20), succeeded=5),
    )
    figures = {f.name: f for f in task_figures(WINDOWS["15m"], now)}
    recent = figures["t.recent"]
    assert (recent.outcomes.succeeded, recent.outcomes.failed) == (8, 2)
    assert recent.failure_ratio == pytest.approx(0.2)
    minutes = (now - WINDOWS["15m"].start(now)).total_seconds() / 60
    assert recent.rate == pytest.approx(10 / minutes)
    assert 0.1 < recent.runtime_p95 <= 0.25  # type: ignore[operator]
    # Seen, but not in this window: listed without figures.
    assert figures["t.yesterday"].rate is None
    assert figures["t.yesterday"].runtime_p50 is None

    hour = {f.name: f for f in task_figures(WINDOWS["1h"], now)}
    assert hour["t.recent"].outcomes.succeeded == 98
    assert 2.5 < hour["t.recent"].runtime_p95 <= 5.0  # type: ignore[operator]
    day = {f.name: f for f in task_figures(WINDOWS["24h"], now)}
    assert day["t.yesterday"].outcomes.succeeded == 5


@pytest.mark.django_db
def test_beyond_the_minutes_kept_a_window_reads_the_hours(settings: object) -> None:
    settings.OUTCOMES_MINUTES_DAYS = 1  # type: ignore[attr-defined]
    settings.MONITOR_WORKER_FORGET_AFTER = 30 * 86400  # type: ignore[attr-defined]
    now = timezone.now()
    fold(runs("t.old", at=now - timedelta(hours=3), succeeded=6, runtimes=[0.04] * 6))
    # Two days on, retention has dropped the minutes; the hours remain.
    outcomes.prune(now=now + timedelta(days=1, hours=1))
    assert not TaskMinute.objects.exists()
    assert TaskHour.objects.exists()

    assert WINDOWS["7d"].by_hour and not WINDOWS["24h"].by_hour
    (old,) = task_figures(WINDOWS["7d"], now)
    assert old.outcomes.succeeded == 6
    assert 0.025 < old.runtime_p50 <= 0.05  # type: ignore[operator]
    detail = task_detail("t.old", WINDOWS["7d"], now)
    assert detail is not None and detail.figures.outcomes.succeeded == 6
    # Its hour shows on the chart, one point an hour.
    assert sum(p.outcomes.succeeded for p in detail.series.points) == 6
    assert len(detail.series.points) == 7 * 24


@pytest.mark.django_db
def test_a_chart_has_one_point_per_step_and_leaves_out_the_step_under_way() -> None:
    now = timezone.now()
    fold(
        runs("t.a", at=now - timedelta(minutes=5), succeeded=30, waits=[0.3] * 30),
        runs("t.b", at=now - timedelta(minutes=5), failed={"E": 6}),
        runs("t.a", at=now, succeeded=1000),
    )
    hour = series(WINDOWS["1h"], now=now)
    assert len(hour.points) == 60
    assert hour.points[-1].at == hour.span == 3600
    assert sum(p.outcomes.succeeded for p in hour.points) == 30, "not the minute under way"
    assert max(v for _, v in hour.per_minute_failed) == 6
    (wait,) = hour.wait_p95
    assert 0.25 < wait[1] <= 0.5
    only_b = series(WINDOWS["1h"], task="t.b", now=now)
    assert sum(p.outcomes.succeeded for p in only_b.points) == 0
    assert only_b.has_outcomes


@pytest.mark.django_db
def test_a_task_no_worker_reported_has_no_detail() -> None:
    assert task_detail("t.never", WINDOWS["1h"]) is None
