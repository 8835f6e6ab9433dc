"""Reading needs a role: a signed-in user in no group reads nothing, and is told
which role to ask for; a viewer reads every page and changes nothing."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from dashboard.models import PeriodicEntry, QueueSnapshot, WorkerSnapshot
from deadletters.models import BulkAction
from tests.helpers import make_dead_letter, make_user
from tests.outcome_reports import fold, runs

pytestmark = pytest.mark.django_db

# Pages anyone may reach (signing in, the machines' endpoints) and Django's admin,
# which has its own rules (staff only).
OPEN = {"login", "logout", "healthz", "readyz", "metrics"}
# Signed in, with any role or none: a person's own settings, which show nothing.
EVERY_SIGNED_IN = {"theme"}


def url_names(resolver: URLResolver | None = None, namespace: str = "") -> set[str]:
    names = set()
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            # The admin has its own rules; the API's (JSON 403s) are in test_api_auth.
            if entry.app_name in ("admin", "api"):
                continue
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            names |= url_names(entry, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            names.add(namespace + entry.name)
    return names


@pytest.fixture
def urls() -> dict[str, tuple[str, str]]:
    """Every routed view but the open ones: its URL, and the method it answers."""
    dead_letter = make_dead_letter()
    worker = WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=timezone.now(), last_seen_at=timezone.now()
    )
    QueueSnapshot.objects.create(name="default", sampled_at=timezone.now(), depth=3)
    bulk = BulkAction.objects.create(action="discard", reason="r", max_id=0, total=0)
    fold(runs("demo.tasks.add", succeeded=1))
    entry = PeriodicEntry.objects.create(
        name="nightly", task="demo.tasks.add", reported_at=timezone.now()
    )
    host, pk = worker.hostname, dead_letter.pk
    return {
        "overview": (reverse("overview"), "get"),
        "audit": (reverse("audit"), "get"),
        "queues": (reverse("queues"), "get"),
        "queue_pause": (reverse("queue_pause", args=["default"]), "post"),
        "queue_resume": (reverse("queue_resume", args=["default"]), "post"),
        "queue_purge": (reverse("queue_purge", args=["default"]), "get"),
        "queue_detail": (reverse("queue_detail", args=["default"]), "get"),
        "workers": (reverse("workers"), "get"),
        "worker_detail": (reverse("worker_detail", args=[host]), "get"),
        "worker_pool": (reverse("worker_pool", args=[host]), "post"),
        "worker_autoscale": (reverse("worker_autoscale", args=[host]), "post"),
        "worker_check_silence": (reverse("worker_check_silence", args=[host]), "post"),
        "worker_check_unsilence": (reverse("worker_check_unsilence", args=[host]), "post"),
        "task_revoke": (reverse("task_revoke"), "post"),
        "tasks": (reverse("tasks"), "get"),
        "task_detail": (reverse("task_detail", args=["demo.tasks.add"]), "get"),
        "task_search": (f"{reverse('task_search')}?q=abcdefgh", "get"),
        "task_lookup": (reverse("task_lookup", args=["abcdefgh-1"]), "get"),
        # Asking for a full queue scan; its GET is the page's poll (htmx only).
        "task_queue_scan": (f"{reverse('task_queue_scan')}?task_id=abcdefgh-1", "post"),
        "periodic": (reverse("periodic"), "get"),
        "periodic_run": (reverse("periodic_run", args=[entry.name]), "post"),
        "deadletters:list": (reverse("deadletters:list"), "get"),
        "deadletters:groups": (reverse("deadletters:groups"), "get"),
        "deadletters:detail": (reverse("deadletters:detail", args=[pk]), "get"),
        "deadletters:requeue": (reverse("deadletters:requeue", args=[pk]), "post"),
        "deadletters:discard": (reverse("deadletters:discard", args=[pk]), "post"),
        "deadletters:edit": (reverse("deadletters:edit", args=[pk]), "get"),
        "deadletters:bulk_create": (reverse("deadletters:bulk_create"), "post"),
        "deadletters:bulk": (reverse("deadletters:bulk", args=[bulk.pk]), "get"),
        "deadletters:bulk_control": (
            reverse("deadletters:bulk_control", args=[bulk.pk, "pause"]),
            "post",
        ),
    }


def test_every_routed_view_is_listed_here(urls: dict[str, tuple[str, str]]) -> None:
    """A new page must say who may read it: this list is where it is checked."""
    assert url_names() - OPEN - EVERY_SIGNED_IN == set(urls)


def test_a_user_in_no_group_reads_nothing_and_is_told_which_role_to_ask_for(
    urls: dict[str, tuple[str, str]],
) -> None:
    client = Client()
    client.force_login(make_user("nora"))
    for name, (url, method) in urls.items():
        response = getattr(client, method)(url)
        assert response.status_code == 403, name
        assert b"Ask an administrator for the <b>Viewer</b> role" in response.content, name


def test_a_user_in_no_group_may_still_choose_a_theme_and_an_anonymous_visitor_may_not() -> None:
    client = Client()
    url = reverse("theme")
    response = client.post(url, {"theme": "dark"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    client.force_login(make_user("nora"))
    response = client.post(url, {"theme": "dark", "next": "/audit/"})
    assert (response.status_code, response["Location"]) == (302, "/audit/")


def test_a_viewer_reads_every_page_and_changes_nothing(
    viewer_client: Client, urls: dict[str, tuple[str, str]]
) -> None:
    for name, (url, method) in urls.items():
        response = getattr(viewer_client, method)(url)
        if method == "get" and name not in {"queue_purge", "deadletters:edit"}:
            assert response.status_code == 200, name
        else:
            assert response.status_code == 403, name
            assert b"Your role does not allow this" in response.content, name


def test_raw_messages_are_for_operators_and_the_audit_for_both_roles() -> None:
    viewer, operator = make_user("vera", group="Viewer"), make_user("otto", group="Operator")
    assert not viewer.has_perm("deadletters.view_raw_deadletter")
    assert operator.has_perm("deadletters.view_raw_deadletter")
    assert viewer.has_perm("dashboard.view_auditevent")
    assert operator.has_perm("dashboard.view_auditevent")
