"""A queue's own page (/queues/<name>/): its state, history, workers, tasks, dead
letters and controls, from stored state; and its name as a link on every page."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
import redis
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.models import (
    AuditEvent,
    PeriodicEntry,
    QueueHistory,
    QueuePause,
    QueueSnapshot,
    WorkerSnapshot,
)
from dashboard.queues.sampling import WorkerSampler
from deadletters.models import DeadLetter
from tests.helpers import SESSION_WORKER, make_dead_letter, make_dead_letters
from tests.outcome_reports import fold, runs

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


def queue(name: str, **fields: object) -> QueueSnapshot:
    defaults: dict[str, object] = {"sampled_at": timezone.now(), "sources": ["configured"]}
    defaults.update(fields)
    return QueueSnapshot.objects.create(name=name, **defaults)


def worker(hostname: str, **fields: object) -> WorkerSnapshot:
    now = timezone.now()
    defaults: dict[str, object] = {
        "first_seen_at": now,
        "last_seen_at": now,
        "pool": "prefork",
        "concurrency": 4,
        "queues": ["default"],
    }
    defaults.update(fields)
    return WorkerSnapshot.objects.create(hostname=hostname, **defaults)


def url(name: str) -> str:
    return reverse("queue_detail", args=[name])


def page(client: Client, name: str) -> str:
    response = client.get(url(name))
    assert response.status_code == 200
    return response.content.decode()


def section(text: str, id_: str) -> str:
    return text.split(f'id="{id_}"', 1)[1].split("</section>", 1)[0]


def fragment(client: Client, name: str) -> str:
    response = client.get(url(name), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    text = response.content.decode()
    assert "<html" not in text
    return text


def test_it_shows_depth_age_rates_and_the_workers_consuming_it(viewer_client: Client) -> None:
    queue("images", depth=42, ready=40, unacked=2, oldest_age=190.0, in_rate=1.0, out_rate=3.5)
    worker("b@h", queues=["images", "default"], online=False,
           last_seen_at=timezone.now() - timedelta(minutes=7))  # fmt: skip
    worker("a@h", queues=["images"], active_count=3)
    worker("c@h", queues=["default"])
    text = page(viewer_client, "images")
    assert "<h1>images</h1>" in text
    assert '<span class="figure">42</span>' in text
    assert "40 ready, 2 unacked" in text
    assert '<span class="figure">3 min</span>' in text
    assert '<span class="figure">1.0/s / 3.5/s</span>' in text
    assert '<span class="badge badge-online">consumed</span> by 1 online worker.' in text
    assert "growing" not in text
    workers = section(text, "queue-workers")
    assert workers.index("a@h") < workers.index("b@h"), "online first"
    assert "c@h" not in workers, "it does not consume this queue"
    assert f'href="{reverse("worker_detail", args=["a@h"])}"' in workers
    assert '<span class="badge badge-offline">offline</span>' in workers
    assert "seen 7 min ago" in workers


def test_a_paused_queue_says_who_paused_it_and_when(viewer_client: Client) -> None:
    queue("images", depth=5)
    pause = QueuePause.objects.create(queue="images", username="olivia", workers=["a@h"])
    QueuePause.objects.filter(pk=pause.pk).update(
        paused_at=timezone.now() - timedelta(minutes=3, seconds=5)
    )
    status = section(page(viewer_client, "images"), "queue-status")
    assert '<span class="badge badge-paused">paused</span>' in status
    assert re.search(
        r"by <b>olivia</b>\s*<time[^>]*>3 min ago</time>;\s*consumed then by a@h", status
    )
    assert "no consumer" not in status, "paused on purpose"


def test_trouble_is_said_in_words_next_to_its_colour(viewer_client: Client) -> None:
    queue("stuck", depth=7, in_rate=4.0, out_rate=0.0)
    status = section(page(viewer_client, "stuck"), "queue-status")
    assert '<span class="badge badge-warn">no consumer</span> messages are waiting' in status
    assert '<span class="badge badge-warn">growing</span> by 4.0/s' in status
    assert "consumed</span>" not in status

    queue("deadletters", depth=3, sources=["monitor"])
    status = section(page(viewer_client, "deadletters"), "queue-status")
    assert "drained by the monitor" in status
    assert "no consumer" not in status


def test_the_charts_draw_the_last_hour_and_the_last_day(viewer_client: Client) -> None:
    queue("images", depth=4, oldest_age=20.0)
    now = timezone.now()
    for ago, depth, age in (
        (timedelta(minutes=10), 12, 30.0),
        (timedelta(minutes=40), 8, 95.0),
        (timedelta(hours=3), 99, 600.0),
        (timedelta(hours=30), 500, 9000.0),  # older than a day: not drawn
    ):
        QueueHistory.objects.create(
            queue="images", at=now - ago, depth=depth, depth_max=depth, oldest_age=age
        )
    text = page(viewer_client, "images")
    charts = dict(re.findall(r'aria-label="([^"]+?), peak [^"]+"><title>peak ([^:]+):', text))
    assert charts["messages waiting over the last hour"] == "12"
    assert charts["seconds the oldest message waited over the last hour"] == "95"
    assert charts["deepest sample every 15 minutes over the last 24 hours"] == "99"
    assert (
        charts["seconds the oldest message waited, every 15 minutes over the last 24 hours"]
        == "600"
    )
    assert "peak 10 min; one point per 15 min" in text


def test_a_queue_without_history_says_so(viewer_client: Client) -> None:
    queue("fresh", depth=None)
    text = page(viewer_client, "fresh")
    assert "no history yet" in text
    assert "no online worker consumes it; how many messages wait is not known" in text
    assert '<span class="figure">?</span>' in text


def test_it_lists_the_tasks_on_the_queue_with_their_counts(viewer_client: Client) -> None:
    queue("images", depth=0)
    fold(
        runs("demo.tasks.resize_image", queue="images", succeeded=7, failed={"ValueError": 3},
             runtimes=[0.2] * 10, waits=[1.5] * 10),
        runs("demo.tasks.thumbnail", queue="images", succeeded=2),
        runs("demo.tasks.add", queue="default", succeeded=50),
        runs("demo.tasks.old", queue="images", succeeded=9,
             at=timezone.now() - timedelta(hours=2)),
    )  # fmt: skip
    tasks = section(page(viewer_client, "images"), "queue-tasks")
    rows = re.findall(r'<a href="/tasks/([^/"]+)/">[^<]+</a></td>(.*?)</tr>', tasks, re.S)
    assert [name for name, _ in rows] == ["demo.tasks.resize_image", "demo.tasks.thumbnail"]
    cells = re.findall(r'<td class="num">([^<]*)', rows[0][1])
    assert cells[:3] == ["7", "3 ", "0"]
    assert "(30 %)" in rows[0][1]
    assert "demo.tasks.add" not in tasks, "another queue's"
    assert "demo.tasks.old" not in tasks, "not in the last hour"


def test_it_counts_open_dead_letters_and_links_the_console_filtered_by_it(
    viewer_client: Client,
) -> None:
    queue("images", depth=0)
    rows = make_dead_letters(3, queue="images")
    DeadLetter.objects.filter(pk=rows[0].pk).update(state=DeadLetter.State.DISCARDED)
    make_dead_letter(queue="default")
    dead = section(page(viewer_client, "images"), "queue-deadletters")
    link = "/deadletters/?queue=images&amp;state=open"
    assert f'<a href="{link}">2 open dead letters</a>' in dead
    console = viewer_client.get(link.replace("&amp;", "&")).content.decode()
    assert "<b data-count>2</b> matching" in console


def test_the_fragment_is_the_polled_state_without_the_day(viewer_client: Client) -> None:
    queue("images", depth=1)
    text = page(viewer_client, "images")
    assert (
        '<div id="queue-state" hx-get="/queues/images/" hx-trigger="every 5s"'
        " data-poll-while-visible" in text
    )
    assert 'id="queue-day"' in text
    state = fragment(viewer_client, "images")
    assert state.lstrip().startswith('<div id="queue-state"')
    assert 'id="queue-tasks"' in state
    assert 'id="queue-day"' not in state
    assert 'id="banner" hx-swap-oob="true"' in state


def test_an_unknown_queue_is_a_404_that_says_so(operator_client: Client) -> None:
    response = operator_client.get(url("nowhere"))
    assert response.status_code == 404
    assert "No queue named “nowhere” is known" in response.content.decode()
    QueuePause.objects.create(queue="nowhere", username="olivia")
    text = page(operator_client, "nowhere")  # paused before the monitor sampled it
    assert '<span class="badge badge-paused">paused</span>' in text
    assert "Resume</button>" in text
    assert "Purge" not in text, "its purge page needs a sample"


def test_names_with_slashes_and_markup_are_text(viewer_client: Client) -> None:
    queue("jobs/" + XSS, depth=1)
    text = page(viewer_client, "jobs/" + XSS)
    assert XSS not in text
    assert "jobs/&lt;script&gt;" in text
    assert viewer_client.get("/queues/a%00b/").status_code == 404


def test_a_viewer_sees_no_controls_and_may_not_use_them(
    viewer_client: Client, operator_client: Client
) -> None:
    queue("images", depth=1)
    queue("held", depth=1)
    QueuePause.objects.create(queue="held", username="olivia")
    text = page(operator_client, "images")
    assert "Pause</button>" in text
    assert f'href="{reverse("queue_purge", args=["images"])}"' in text
    assert 'hx-target="#queue-state"' in text
    assert '<input type="hidden" name="from" value="queue">' in text
    assert "Resume</button>" in page(operator_client, "held")
    for name in ("images", "held"):
        text = page(viewer_client, name)
        assert "Pause</button>" not in text
        assert "Resume</button>" not in text
        assert "Purge" not in text
    for view in ("queue_pause", "queue_resume"):
        response = viewer_client.post(reverse(view, args=["held"]), {"from": "queue"})
        assert response.status_code == 403, view
    assert QueuePause.objects.filter(queue="held").exists()


def test_pausing_and_resuming_from_the_page_rerender_the_page(
    operator_client: Client, broker: redis.Redis, sampled: WorkerSampler
) -> None:
    # A queue of this test's own: the session's worker does not consume it.
    name = f"page-{uuid.uuid4().hex[:8]}"
    queue(name, depth=0)
    response = operator_client.post(
        reverse("queue_pause", args=[name]), {"from": "queue"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Trigger"] == "ops-changed"
    text = response.content.decode()
    assert "<html" not in text
    assert text.lstrip().startswith('<div id="queue-state"')
    assert f"Paused {name}: 1 worker replied" in text
    assert 'id="control-result" hx-swap-oob="true"' in text
    assert re.search(r'<span class="badge badge-paused">paused</span>\s*by <b>olivia</b>', text)
    assert "Resume</button>" in text
    assert AuditEvent.objects.filter(action="queue_pause", target_ids=[name]).exists()

    response = operator_client.post(reverse("queue_resume", args=[name]), {"from": "queue"})
    assert response.status_code == 302
    assert response["Location"] == url(name)
    assert not QueuePause.objects.filter(queue=name).exists()
    assert SESSION_WORKER not in section(page(operator_client, name), "queue-status")

    # Sent from the queues table, the answer is still the table.
    response = operator_client.post(reverse("queue_pause", args=[name]), HTTP_HX_REQUEST="true")
    assert response.content.decode().lstrip().startswith('<div id="queue-table"')
    operator_client.post(reverse("queue_resume", args=[name]))


def test_the_queues_table_links_each_name_and_says_its_sources_in_a_tooltip(
    viewer_client: Client,
) -> None:
    queue("images", depth=1, sources=["workers", "dead letters", "broker"])
    text = viewer_client.get(reverse("queues")).content.decode()
    assert (
        '<a href="/queues/images/" title="known from workers, dead letters, broker">'
        "<b>images</b></a>" in text
    )
    assert ">known from" not in text, "a tooltip, not a line under the name"


def test_queue_names_link_to_their_page_everywhere(viewer_client: Client) -> None:
    queue("images", depth=9, in_rate=2.0, out_rate=1.0)
    host = worker("a@h", queues=["images", "default"])
    fold(runs("demo.tasks.resize_image", queue="images", succeeded=1))
    dead_letter = make_dead_letter(queue="images")
    PeriodicEntry.objects.create(
        name="nightly", task="demo.tasks.resize_image", queue="images", reported_at=timezone.now()
    )
    link = f'href="{url("images")}"'
    for where in (
        reverse("queues"),
        reverse("workers"),
        host.get_absolute_url(),
        reverse("task_detail", args=["demo.tasks.resize_image"]),
        dead_letter.get_absolute_url(),
        reverse("deadletters:list"),
        reverse("periodic"),
        reverse("overview"),
    ):
        response = viewer_client.get(where)
        assert response.status_code == 200, where
        assert link in response.content.decode(), where
