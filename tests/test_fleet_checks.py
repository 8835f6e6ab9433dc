"""Fleet configuration checks: real workers report their settings through the
hook, the monitor's round stores them, and the worker pages, the overview and
/metrics say which of the playbooks' warnings apply; an operator silences one
for a worker or a queue, with a reason, audited."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dashboard.http import CHANGED
from dashboard.models import AuditEvent, CheckSilence, TaskTotal, WorkerSnapshot
from dashboard.queues.checks import NOT_REPORTED, RULES, Check, clean_config, worker_checks
from dashboard.queues.sampling import WorkerSampler, worker_fields
from dashboard.queues.selectors import fleet_checks
from deadletters import hook
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import HOST, ROOT, WorkerProcess, sample_until, start_worker, stop_worker

pytestmark = pytest.mark.django_db

CARELESS = f"fleet-careless@{HOST}"
CAREFUL = f"fleet-careful@{HOST}"
TOKEN = "t0ken-for-the-fleet-checks"
# Celery refuses to accept pickle as root unless told to; the tests may run as root.
PICKLE_AS_ROOT = {"C_FORCE_ROOT": "1"}


# --- the workers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def careless_worker(redis_server: EmbeddedRedis) -> Iterator[WorkerProcess]:
    """acks early and accepts pickle; everything else as the playbooks say."""
    handle = start_worker(
        redis_server.url,
        "fleet-careless",
        "-Q",
        "fleet-careless",
        app="tests.fleet_apps:careless",
        env=PICKLE_AS_ROOT,
    )
    yield handle
    stop_worker(handle)


@pytest.fixture(scope="module")
def careful_worker(redis_server: EmbeddedRedis) -> Iterator[WorkerProcess]:
    handle = start_worker(
        redis_server.url, "fleet-careful", "-Q", "fleet-careful", app="tests.fleet_apps:careful"
    )
    yield handle
    stop_worker(handle)


def sampled(hostname: str, until: Any = None) -> WorkerSnapshot:
    """Run the monitor's workers round until ``hostname`` reported its settings
    (and ``until(row)`` holds); its stored row."""

    def reported() -> WorkerSnapshot | None:
        row = WorkerSnapshot.objects.filter(hostname=hostname).first()
        if row is None or not row.config or (until is not None and not until(row)):
            return None
        return row

    return sample_until(WorkerSampler(), reported, timeout=30)


def checks_of(row: WorkerSnapshot) -> dict[str, Check]:
    return {check.key: check for check in fleet_checks([row])[row.hostname]}


def flagged(row: WorkerSnapshot) -> set[str]:
    return {key for key, check in checks_of(row).items() if check.open}


# --- what is flagged ------------------------------------------------------------------


def test_a_worker_that_acks_early_and_accepts_pickle_is_flagged_for_both(
    broker: redis.Redis, careless_worker: WorkerProcess, viewer_client: Client
) -> None:
    row = sampled(CARELESS)
    assert flagged(row) == {"acks_late", "pickle"}
    # Its page says why and what to change, in words.
    page = viewer_client.get(reverse("worker_detail", args=[CARELESS])).content.decode()
    assert "Configuration checks" in page
    assert "task_acks_late is off: a worker that crashes mid-task loses the task." in page
    assert "Fix: set task_acks_late=True and task_reject_on_worker_lost=True" in page
    assert "accept_content includes pickle" in page
    assert "Fix: set accept_content=[&#x27;json&#x27;]" in page
    assert page.count('<span class="badge badge-warn">flagged</span>') == 2
    assert 'name="reason"' not in page, "a viewer cannot silence"
    # The list of workers, and the overview.
    workers = viewer_client.get(reverse("workers")).content.decode()
    assert "2 flagged</span></a> task_acks_late off, pickle accepted" in workers
    overview = viewer_client.get(reverse("overview")).content.decode()
    assert f"1 worker flagged: task_acks_late off ({CARELESS})." in overview
    assert f"1 worker flagged: pickle accepted ({CARELESS})." in overview


def test_a_well_configured_worker_passes_every_check(
    broker: redis.Redis, careful_worker: WorkerProcess, viewer_client: Client
) -> None:
    row = sampled(CAREFUL)
    states = {key: check.state for key, check in checks_of(row).items()}
    assert states == dict.fromkeys((rule.key for rule in RULES), "passed")
    assert row.config["tasks"] == [
        {"name": "fleet.careful.ping", "queue": "fleet-careful", "acks_late": True,
         "reject_on_worker_lost": True, "time_limit": 30.0, "soft_time_limit": 25.0},
        {"name": "fleet.careful.report", "queue": "fleet-careful", "acks_late": True,
         "reject_on_worker_lost": True, "time_limit": 30.0, "soft_time_limit": 25.0},
    ]  # fmt: skip
    page = viewer_client.get(reverse("worker_detail", args=[CAREFUL])).content.decode()
    assert page.count('<span class="badge badge-online">passed</span>') == len(RULES)
    assert "badge-warn" not in page
    workers = viewer_client.get(reverse("workers")).content.decode()
    (careful_row,) = re.findall(rf"<tr\b(?:(?!</tr>).)*>{CAREFUL}</a>.*?</tr>", workers, re.S)
    assert '<span class="badge badge-online">all passed</span>' in careful_row


def test_a_countdown_longer_than_the_redis_visibility_timeout_is_flagged(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    from tests.fleet_apps import careless_ping

    handle = start_worker(
        redis_server.url,
        "fleet-eta",
        "-Q",
        "fleet-eta",
        app="tests.fleet_apps:careless",
        env=PICKLE_AS_ROOT,
    )
    hostname = f"fleet-eta@{HOST}"
    try:
        row = sampled(hostname)
        assert checks_of(row)["visibility_timeout"].state == "passed"
        # Held by the worker, unacknowledged, for five minutes: Redis gives it
        # to another worker after the careless app's 60 s.
        careless_ping.apply_async(countdown=300, queue="fleet-eta")
        row = sampled(hostname, until=lambda r: r.config.get("longest_eta_seconds"))
        assert 240 < row.config["longest_eta_seconds"] <= 300
        check = checks_of(row)["visibility_timeout"]
        assert check.open
        assert check.reason.startswith("the Redis visibility timeout is 1 min but a task waited 4")
    finally:
        stop_worker(handle)
        # The worker gave the message back as it stopped: nobody will take it.
        broker.delete(*broker.keys("fleet-eta*") or ["fleet-eta"])


def test_a_worker_without_the_hook_is_unknown_never_flagged(viewer_client: Client) -> None:
    now = timezone.now()
    row = WorkerSnapshot.objects.create(hostname="plain@host", first_seen_at=now, last_seen_at=now)
    checks = checks_of(row)
    assert {check.state for check in checks.values()} == {"unknown"}
    assert checks["acks_late"].reason == NOT_REPORTED
    page = viewer_client.get(reverse("worker_detail", args=["plain@host"])).content.decode()
    assert "not reported: the worker does not import deadletters.hook" in page
    workers = viewer_client.get(reverse("workers")).content.decode()
    assert ">not reported</span>" in workers


def test_prefetch_above_one_is_flagged_only_with_long_tasks() -> None:
    now = timezone.now()
    config: dict[str, Any] = {
        "worker_prefetch_multiplier": 4,
        "tasks": [
            {"name": "reports.build", "time_limit": 600, "soft_time_limit": None},
            {"name": "emails.send", "time_limit": 30, "soft_time_limit": None},
        ],
        "task_time_limit": 30,
    }
    row = WorkerSnapshot.objects.create(
        hostname="w@host", first_seen_at=now, last_seen_at=now, config=config
    )
    check = checks_of(row)["prefetch_long_tasks"]
    assert check.open
    assert "long tasks run here (reports.build)" in check.reason
    # Runs over 10 s measured on this worker make a task long too.
    row.config = {**config, "tasks": config["tasks"][1:]}
    row.save()
    assert not checks_of(row)["prefetch_long_tasks"].flagged
    TaskTotal.objects.create(
        task="emails.send", queue="default", hostname="w@host", last_seen=now, runtime_14=1
    )
    TaskTotal.objects.create(
        task="other.host", queue="default", hostname="x@host", last_seen=now, runtime_14=1
    )
    check = checks_of(row)["prefetch_long_tasks"]
    assert check.open
    assert "(emails.send)" in check.reason


# --- silencing --------------------------------------------------------------------------


def silence(client: Client, hostname: str, **form: str) -> Any:
    url = reverse("worker_check_silence", args=[hostname])
    return client.post(url, form, HTTP_HX_REQUEST="true")


def test_an_operator_silences_a_check_and_it_is_audited(
    broker: redis.Redis,
    careless_worker: WorkerProcess,
    operator_client: Client,
    operator: User,
) -> None:
    sampled(CARELESS)
    page = operator_client.get(reverse("worker_detail", args=[CARELESS])).content.decode()
    assert page.count('name="reason"') == 2, "a form on each flagged check"

    form = {"check": "acks_late", "scope": "worker", "reason": "idempotent pings, loss is fine"}
    response = silence(operator_client, CARELESS, **form)
    assert response.status_code == 200
    assert response["HX-Trigger"] == CHANGED
    fragment = response.content.decode()
    assert fragment.lstrip().startswith('<section id="worker-checks"')
    assert "<html" not in fragment
    assert "Silenced acks_late for worker" in fragment
    assert "by olivia on" in fragment and "idempotent pings, loss is fine" in fragment
    # A double submit does one thing.
    again = silence(operator_client, CARELESS, **form)
    assert again.status_code == 200
    assert "was silenced already, by olivia" in again.content.decode()
    assert CheckSilence.objects.count() == 1
    (event,) = AuditEvent.objects.filter(action="check_silence")
    assert (event.username, event.target_type, event.target_ids, event.reason) == (
        "olivia", "worker", [CARELESS], "idempotent pings, loss is fine",
    )  # fmt: skip
    assert event.details == {"check": "acks_late", "worker": CARELESS}

    # For every worker of a queue, without htmx: a redirect to the page.
    response = operator_client.post(
        reverse("worker_check_silence", args=[CARELESS]),
        {"check": "pickle", "scope": "queue", "queue": "fleet-careless", "reason": "internal"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("worker_detail", args=[CARELESS])
    row = WorkerSnapshot.objects.get(hostname=CARELESS)
    checks = checks_of(row)
    assert (checks["acks_late"].state, checks["pickle"].state) == ("silenced", "silenced")
    by_queue = checks["pickle"].silenced_by
    assert by_queue is not None and (by_queue.scope, by_queue.target) == ("queue", "fleet-careless")
    assert flagged(row) == set()
    overview = operator_client.get(reverse("overview")).content.decode()
    assert "task_acks_late off" not in overview

    # Unsilenced: flagged again, and the audit keeps why it was silenced.
    url = reverse("worker_check_unsilence", args=[CARELESS])
    response = operator_client.post(
        url, {"check": "acks_late", "scope": "worker"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert "acks_late is no longer silenced for worker" in response.content.decode()
    assert flagged(row) == {"acks_late"}
    (event,) = AuditEvent.objects.filter(action="check_unsilence")
    assert (event.reason, event.details["silenced_by"]) == (
        "idempotent pings, loss is fine",
        "olivia",
    )
    twice = operator_client.post(url, {"check": "acks_late", "scope": "worker"})
    assert twice.status_code == 302
    assert AuditEvent.objects.filter(action="check_unsilence").count() == 1


@pytest.fixture
def row() -> WorkerSnapshot:
    now = timezone.now()
    return WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=now, last_seen_at=now, queues=["default", "emails"],
        config={"task_acks_late": False, "tasks": []},
    )  # fmt: skip


def test_a_viewer_gets_403(viewer_client: Client, row: WorkerSnapshot) -> None:
    form = {"check": "acks_late", "scope": "worker", "reason": "r"}
    assert silence(viewer_client, row.hostname, **form).status_code == 403
    unsilence = reverse("worker_check_unsilence", args=[row.hostname])
    assert viewer_client.post(unsilence, form).status_code == 403
    assert not CheckSilence.objects.exists()


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"check": "acks_lately", "scope": "worker", "reason": "r"}, "check"),
        ({"scope": "worker", "reason": "r"}, "check"),
        ({"check": "acks_late", "scope": "cluster", "reason": "r"}, "scope"),
        ({"check": "acks_late", "scope": "queue", "queue": "reports", "reason": "r"}, "queue"),
        ({"check": "acks_late", "scope": "worker", "reason": "   "}, "reason"),
        ({"check": "acks_late", "scope": "worker", "reason": "a\x00b"}, "reason"),
        ({"check": "acks_late", "scope": "worker", "reason": "x" * 2001}, "reason"),
    ],
)
def test_a_bad_field_is_refused_naming_it(
    operator_client: Client, row: WorkerSnapshot, form: dict[str, str], field: str
) -> None:
    response = silence(operator_client, row.hostname, **form)
    assert response.status_code == 422
    assert f'role="alert">{field}: ' in response.content.decode()
    full = operator_client.post(reverse("worker_check_silence", args=[row.hostname]), form)
    assert full.status_code == 422
    assert "<html" in full.content.decode()
    assert not CheckSilence.objects.exists()
    assert not AuditEvent.objects.exists()


# --- metrics --------------------------------------------------------------------------


def scrape(client: Client) -> dict[tuple[str, str], float]:
    response = client.get("/metrics", secure=True, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return {
        (sample.labels["hostname"], sample.labels["check"]): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name == "celery_worker_config_check"
    }


def test_the_metric_is_1_when_flagged_0_when_passed_or_silenced(
    broker: redis.Redis,
    careless_worker: WorkerProcess,
    careful_worker: WorkerProcess,
    client: Client,
    settings: Any,
) -> None:
    settings.METRICS_TOKEN = TOKEN
    sampled(CARELESS)
    sampled(CAREFUL)
    now = timezone.now()
    WorkerSnapshot.objects.create(hostname="plain@host", first_seen_at=now, last_seen_at=now)
    series = scrape(client)
    assert series[(CARELESS, "acks_late")] == 1
    assert series[(CARELESS, "pickle")] == 1
    assert series[(CARELESS, "time_limits")] == 0
    assert {series[(CAREFUL, rule.key)] for rule in RULES} == {0}
    assert not [key for key in series if key[0] == "plain@host"], "unknown: no series"
    CheckSilence.objects.create(
        check_name="pickle", scope="worker", target=CARELESS, reason="internal"
    )
    assert scrape(client)[(CARELESS, "pickle")] == 0
    # Summed over the workers when per-worker series are off.
    settings.METRICS_PER_WORKER = False
    summed = scrape(client)
    assert summed[("all", "acks_late")] == 1
    assert summed[("all", "pickle")] == 0
    assert not [key for key in summed if key[0] != "all"]


# --- the hook's report ------------------------------------------------------------------


def test_the_report_names_the_transport_never_a_url_or_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Celery prefers these to the URLs an app is given.
    monkeypatch.delenv("CELERY_BROKER_URL")
    monkeypatch.delenv("CELERY_RESULT_BACKEND")
    app = Celery(
        "secretive",
        broker="redis://:s3cret@redis.internal:6379/0",
        backend="redis://:s3cret@redis.internal:6379/1",
        set_as_current=False,
    )
    app.conf.update(result_expires=None, task_acks_late=True)

    @app.task(name="secretive.job", time_limit=600, shared=False)
    def job() -> None: ...

    report = hook._config_report(app)
    text = json.dumps(report)
    assert "s3cret" not in text and "redis.internal" not in text
    assert report["broker_transport"] == "redis"
    assert report["visibility_timeout"] == 3600  # kombu's default
    assert report["result_backend"] is True
    assert report["result_expires"] is None
    # Tasks shared with every app (the demo's, in this process) are there too.
    assert [task for task in report["tasks"] if task["name"].startswith("secretive.")] == [
        {"name": "secretive.job", "acks_late": True, "reject_on_worker_lost": None,
         "time_limit": 600.0, "soft_time_limit": None, "queue": "celery"},
    ]  # fmt: skip
    rabbit = Celery("rabbit", broker="amqp://user:pw@rabbit//", set_as_current=False)
    amqp = hook._config_report(rabbit)
    assert (amqp["broker_transport"], amqp["visibility_timeout"]) == ("amqp", None)


def test_the_docs_describe_every_check_with_its_fix() -> None:
    """RULES is the one table: the page users read says the same."""
    docs = (ROOT / "docs" / "hygiene.md").read_text()
    for rule in RULES:
        assert f"`{rule.key}`" in docs, rule.key
        assert rule.fix in " ".join(docs.split()), rule.key


# --- untrusted reports --------------------------------------------------------------------

BUDGET = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)
scalars = st.one_of(
    st.none(), st.booleans(), any_text,
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=12,
)
GOOD_CONFIG = hook._config_report(
    Celery("good", broker="redis://localhost/0", backend="redis://", set_as_current=False)
)
KEYS = sorted(GOOD_CONFIG)


@st.composite
def configs(draw: st.DrawFn) -> Any:
    """Anything at all, or a real report with some of its fields replaced by anything."""
    if draw(st.booleans()):
        return draw(json_like)
    config = json.loads(json.dumps(GOOD_CONFIG))
    config["tasks"] = [
        {"name": "a", "acks_late": True, "time_limit": 5, "queue": "q"},
        draw(json_like),
    ]
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=5, unique=True)):
        config[key] = draw(json_like)
    return config


@BUDGET
@given(config=configs(), queues=json_like)
def test_no_reported_config_makes_the_checks_raise(config: Any, queues: Any) -> None:
    now = timezone.now()
    fields = worker_fields({"stats": {}, "config": config}, now)
    stored = fields["config"]
    assert isinstance(stored, dict)
    # What is stored is plain, finite JSON that any database takes.
    text = json.dumps(stored, allow_nan=False)
    assert "\x00" not in text and "\\u0000" not in text
    assert clean_config(stored) == stored
    row = WorkerSnapshot(hostname="w@host", config=config, queues=queues)
    silences = [CheckSilence(check_name="pickle", scope="queue", target="q", reason="r")]
    checks = worker_checks(row, long_tasks={"a"}, silences=silences)
    assert [check.key for check in checks] == [rule.key for rule in RULES]
    for check in checks:
        assert check.state in {"passed", "flagged", "silenced", "unknown"}
        assert check.reason and not (check.unknown and check.flagged)


def test_a_config_that_is_not_a_dict_is_stored_empty() -> None:
    now = timezone.now()
    config: Any
    for config in (None, [], "acks_late", 5, math.pi):
        assert worker_fields({"config": config}, now)["config"] == {}
