"""`manage.py ops`: the console's actions in a terminal, under the same roles,
audit, idempotency and redaction as the pages, on the real worker and broker."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from dashboard.models import AuditEvent, PeriodicEntry, QueuePause
from dashboard.queues.sampling import WorkerSampler
from deadletters import bulk_runner
from deadletters.models import BulkAction, DeadLetter
from tests.helpers import (
    ROOT,
    SESSION_WORKER,
    WorkerProcess,
    ingest_until,
    make_dead_letter,
    make_dead_letters,
    make_user,
    start_monitor,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.django_db

TARGET = "requeue-target"


def ops(*args: str, stdin: str = "") -> str:
    """Run ``ops`` in this process; its stdout. An error raises CommandError."""
    out = io.StringIO()
    call_command("ops", *args, stdout=out, stderr=io.StringIO(), stdin=io.StringIO(stdin))
    return out.getvalue()


def ops_json(*args: str) -> Any:
    return json.loads(ops(*args, "--json"))


def ops_error(*args: str) -> CommandError:
    with pytest.raises(CommandError) as caught:
        ops(*args)
    return caught.value


def ops_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python manage.py ops`` as an operator runs it: exit code, stdout, stderr."""
    return subprocess.run(
        [sys.executable, "manage.py", "ops", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- requeue and discard ---------------------------------------------------------------


def test_a_requeue_makes_the_real_worker_run_the_task_and_the_audit_says_cli(
    operator: User, broker: redis.Redis, worker: WorkerProcess
) -> None:
    from demo import tasks
    from demo.celery_app import app

    original = tasks.resize_image.delay(77, [16])
    (dead_letter,) = ingest_until(1)

    said = ops("deadletters", "requeue", str(dead_letter.pk), "--user", "olivia")

    dead_letter.refresh_from_db()
    assert said == f"{dead_letter.pk}: requeued as {dead_letter.requeue_task_id}\n"
    rerun = app.AsyncResult(dead_letter.requeue_task_id)
    assert rerun.get(timeout=30) == "resized 77 to [16]"
    assert rerun.id != original.id
    assert dead_letter.requeued_by == operator
    event = AuditEvent.objects.get(action="requeue")
    assert (event.username, event.target_ids) == ("olivia", [str(dead_letter.pk)])
    assert event.details["via"] == "cli"
    assert event.details["new_task_id"] == rerun.id


def test_a_discard_is_audited_with_the_user_the_reason_and_cli(operator: User) -> None:
    row = make_dead_letter()
    ops("deadletters", "discard", str(row.pk), "--user", "olivia", "--reason", "a test message")
    row.refresh_from_db()
    assert (row.state, row.discarded_by) == ("discarded", operator)
    event = AuditEvent.objects.get()
    assert (event.action, event.username, event.reason) == ("discard", "olivia", "a test message")
    assert event.details == {"via": "cli"}


def test_a_viewer_is_refused_and_nothing_changes(viewer: User) -> None:
    row = make_dead_letter()
    error = ops_error("deadletters", "discard", str(row.pk), "--user", "victor")
    assert error.returncode == 3
    assert str(error) == (
        "refused: victor may not discard dead letters (roles: Viewer reads, Operator acts)"
    )
    row.refresh_from_db()
    assert row.state == "open"
    assert not AuditEvent.objects.exists()


def test_a_change_without_a_user_is_refused_naming_the_flag(broker: redis.Redis) -> None:
    row = make_dead_letter(queue=TARGET)
    error = ops_error("deadletters", "requeue", str(row.pk))
    assert error.returncode == 2
    assert "--user" in str(error)
    assert DeadLetter.objects.get(pk=row.pk).state == "open"


def test_an_unknown_user_is_refused(db: None) -> None:
    row = make_dead_letter()
    error = ops_error("deadletters", "discard", str(row.pk), "--user", "nobody")
    assert (error.returncode, str(error)) == (3, "--user: no user 'nobody'")


@pytest.mark.django_db(transaction=True)
def test_a_viewer_is_refused_by_the_real_command_in_one_line_with_exit_code_3() -> None:
    make_user("victor", group="Viewer")
    row = make_dead_letter()
    done = ops_process("deadletters", "requeue", str(row.pk), "--user", "victor")
    assert done.returncode == 3
    assert done.stderr == (
        "ops: refused: victor may not requeue dead letters (roles: Viewer reads, Operator acts)\n"
    )
    assert DeadLetter.objects.get(pk=row.pk).state == "open"
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_second_requeue_exits_non_zero_naming_who_handled_it_and_when(
    broker: redis.Redis,
) -> None:
    make_user("olivia", group="Operator")
    make_user("oscar", group="Operator")
    row = make_dead_letter(queue=TARGET)
    ops("deadletters", "requeue", str(row.pk), "--user", "olivia")

    done = ops_process("deadletters", "requeue", str(row.pk), "--user", "oscar", "--json")

    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"ops: {row.pk}: Already requeued by olivia at ")
    document = json.loads(done.stdout)
    (result,) = document["results"]
    assert result["ok"] is False
    assert result["handled_by"] == "olivia"
    requeued_at = DeadLetter.objects.get(pk=row.pk).requeued_at
    assert requeued_at is not None
    assert result["handled_at"].startswith(requeued_at.isoformat()[:19])
    assert broker.llen(TARGET) == 1  # published once


@pytest.mark.django_db(transaction=True)
def test_a_bad_argument_is_one_line_naming_it_and_exit_code_2() -> None:
    done = ops_process("deadletters", "list", "--since", "yesterday")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "ops: --since: Enter a valid date/time.\n"
    done = ops_process("deadletters", "show", "12abc")
    assert done.returncode == 2
    assert done.stderr == (
        "ops: deadletters show: argument ID: '12abc' is not an id (a whole number from 1)\n"
    )


def test_edit_and_requeue_keeps_what_was_left_redacted(operator: User, broker: redis.Redis) -> None:
    row = make_dead_letter(queue=TARGET, kwargs={"password": "hunter2", "quality": 90})
    said = ops("deadletters", "edit", str(row.pk), "--user", "olivia", "--reason", "smaller",
               "--kwargs", '{"password": "[redacted]", "quality": 50}')  # fmt: skip
    row.refresh_from_db()
    assert said == f"{row.pk}: requeued with your changes as {row.requeue_task_id}\n"
    (raw,) = broker.lrange(TARGET, 0, -1)
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert body[1] == {"password": "hunter2", "quality": 50}
    event = AuditEvent.objects.get()
    assert (event.action, event.reason, event.details["via"]) == ("edit_requeue", "smaller", "cli")
    assert event.details["after"] == {"kwargs": {"password": "[redacted]", "quality": 50}}
    error = ops_error("deadletters", "edit", str(row.pk), "--user", "olivia", "--args", "{}")
    assert (error.returncode, str(error)) == (2, "--args: Must be a list in JSON.")


# --- reading ------------------------------------------------------------------------------


def test_list_is_newest_first_filtered_and_paged_after_an_id_without_a_count(
    db: None,
) -> None:
    rows = make_dead_letters(5, queue=TARGET)
    make_dead_letters(2, queue="elsewhere")
    newest_first = sorted(rows, key=lambda r: (r.failed_at, r.pk), reverse=True)

    with CaptureQueriesContext(connection) as queries:
        first = ops_json("deadletters", "list", "--queue", TARGET, "--limit", "3")
    assert not [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert [r["id"] for r in first["results"]] == [r.pk for r in newest_first[:3]]
    assert first["next_after_id"] == newest_first[2].pk
    assert set(first["results"][0]) >= {"id", "task_id", "task_name", "queue", "state",
                                        "exception_type", "failed_at", "signature"}  # fmt: skip

    after = str(first["next_after_id"])
    second = ops_json("deadletters", "list", "--queue", TARGET, "--limit", "3", "--after-id", after)
    assert [r["id"] for r in second["results"]] == [r.pk for r in newest_first[3:]]
    assert second["next_after_id"] is None

    table = ops("deadletters", "list", "--queue", TARGET, "--state", "open", "--limit", "3")
    assert table.splitlines()[0].split() == [
        "ID", "FAILED", "TASK", "QUEUE", "EXCEPTION", "RETRIES", "WORKER", "STATE",
    ]  # fmt: skip
    assert table.splitlines()[-1] == f"More: add --after-id {newest_first[2].pk}"


def test_show_redacts_as_the_detail_page_does(db: None) -> None:
    row = make_dead_letter(
        kwargs={"card": {"number": "4111111111111111"}, "password": "hunter2", "quality": 90},
        headers={"x_sent_at": 1.0, "authorization": "Bearer s3cret"},
    )
    document = ops_json("deadletters", "show", str(row.pk))
    assert document["kwargs"] == {"card": "[redacted]", "password": "[redacted]", "quality": 90}
    assert document["headers"]["authorization"] == "[redacted]"
    assert document["task_id"] == row.task_id
    assert document["state"] == "open"
    assert [step["id"] for step in document["history"]] == [row.pk]
    text = ops("deadletters", "show", str(row.pk))
    for secret in ("4111111111111111", "hunter2", "s3cret"):
        assert secret not in text
    assert '"quality": 90' in text


def test_an_unknown_id_is_not_found(db: None) -> None:
    error = ops_error("deadletters", "show", "999999")
    assert (error.returncode, str(error)) == (4, "no dead letter 999999")


def test_groups_name_each_group_by_task_and_exception(db: None) -> None:
    row = make_dead_letter()
    (group,) = ops_json("deadletters", "groups")["results"]
    assert group["signature"] == row.signature
    assert group["open"] == 1
    assert group["name"].startswith("demo.tasks.resize_image · ValueError")


def test_json_errors_are_one_document_too(viewer: User) -> None:
    row = make_dead_letter()
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("ops", "deadletters", "discard", str(row.pk), "--user", "victor", "--json",
                     stdout=out, stderr=io.StringIO())  # fmt: skip
    assert json.loads(out.getvalue()) == {
        "ok": False,
        "error": "refused: victor may not discard dead letters"
        " (roles: Viewer reads, Operator acts)",
        "exit_code": 3,
    }


# --- bulk ---------------------------------------------------------------------------------


def test_a_big_bulk_action_needs_the_count_typed_as_the_page_asks(
    operator: User, settings: Any
) -> None:
    settings.DEADLETTERS_CONFIRM_ABOVE = 2
    make_dead_letters(3, queue=TARGET)
    asked = ("bulk", "discard", "--filter", f"queue={TARGET}", "--reason", "noise",
             "--user", "olivia", "--no-wait")  # fmt: skip
    error = ops_error(*asked)
    assert error.returncode == 2
    assert "--confirm 3 --max-id" in str(error)
    assert not BulkAction.objects.exists()
    assert ops_error(*asked, "--confirm", "4").returncode == 2

    action = ops_json(*asked, "--confirm", "3")
    assert (action["total"], action["state"], action["created_by"]) == (3, "pending", "olivia")
    event = AuditEvent.objects.get(action="bulk_discard")
    assert event.details["via"] == "cli"
    assert event.details["filter"] == f"queue {TARGET!r}"


def test_a_bulk_action_is_refused_as_the_form_refuses_it(operator: User) -> None:
    make_dead_letters(2)
    error = ops_error("bulk", "discard", "--filter", "since=2000-13-01", "--user", "olivia")
    assert error.returncode == 2
    assert "--filter: The filter is not valid: since:" in str(error)
    assert "--reason: Say why" in str(error)
    assert not BulkAction.objects.exists()


class TerminalInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_following_gives_up_after_the_timeout_and_the_action_goes_on(operator: User) -> None:
    make_dead_letters(2)
    # No monitor runs here: the action waits for one.
    error = ops_error("bulk", "discard", "--filter", "", "--reason", "r", "--user", "olivia",
                      "--timeout", "1")  # fmt: skip
    assert error.returncode == 1
    assert str(error).endswith("is still waiting for the monitor after 1s; it goes on"
                               " (is the monitor running?)")  # fmt: skip
    assert BulkAction.objects.get().state == "pending"


def test_on_a_terminal_the_count_is_asked_for(operator: User, settings: Any) -> None:
    settings.DEADLETTERS_CONFIRM_ABOVE = 2
    make_dead_letters(3)
    out = io.StringIO()
    call_command("ops", "bulk", "discard", "--filter", "", "--reason", "r", "--user", "olivia",
                 "--no-wait", stdout=out, stdin=TerminalInput("3\n"))  # fmt: skip
    assert out.getvalue().startswith(
        "This acts on the 3 dead letters that match now; later failures are not included."
        " Type 3 to confirm. Bulk action"
    )
    assert BulkAction.objects.get().total == 3
    with pytest.raises(CommandError, match="--confirm: '2' is not 3: nothing done"):
        call_command("ops", "bulk", "discard", "--filter", "", "--reason", "r", "--user",
                     "olivia", stdout=io.StringIO(), stdin=TerminalInput("2\n"))  # fmt: skip
    assert BulkAction.objects.count() == 1


def test_a_filter_key_the_list_does_not_know_or_left_empty_is_refused(operator: User) -> None:
    make_dead_letters(2)
    for query, said in (("tsk=demo.tasks.add", "'tsk' is not a filter"),
                        ("task=", "task is empty: it would match every dead letter")):  # fmt: skip
        error = ops_error("bulk", "discard", "--filter", query, "--reason", "r", "--user", "olivia")
        assert (error.returncode, str(error).split(" (")[0]) == (2, f"--filter: {said}")
    assert not BulkAction.objects.exists()


def test_pause_resume_and_cancel_a_bulk_action(operator: User, viewer: User) -> None:
    make_dead_letters(2)
    created = ops_json("bulk", "discard", "--filter", "", "--reason", "r", "--user", "olivia",
                       "--no-wait")  # fmt: skip
    pk = str(created["id"])
    assert ops_error("bulk", "pause", pk, "--user", "victor").returncode == 3
    assert ops_json("bulk", "pause", pk, "--user", "olivia")["state"] == "paused"
    assert ops_json("bulk", "resume", pk, "--user", "olivia")["state"] == "pending"
    assert ops_json("bulk", "cancel", pk, "--user", "olivia")["state"] == "cancelled"
    error = ops_error("bulk", "pause", pk, "--user", "olivia")
    assert (error.returncode, str(error)) == (1, "Not paused: the action is cancelled.")
    verbs = list(AuditEvent.objects.order_by("id").values_list("action", "details__via"))
    assert verbs == [("bulk_discard", "cli"), ("bulk_paused", "cli"), ("bulk_resumed", "cli"),
                     ("bulk_cancelled", "cli")]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_a_bulk_requeue_is_carried_out_by_the_monitor_while_the_command_follows_it(
    broker: redis.Redis,
) -> None:
    make_user("olivia", group="Operator")
    rows = make_dead_letters(4, queue=TARGET)
    monitor, _ = start_monitor(DEADLETTERS_CANARY_ABOVE=str(10**9))
    try:
        said = ops("bulk", "requeue", "--filter", f"queue={TARGET}", "--reason", "fix shipped",
                   "--user", "olivia", "--timeout", "120")  # fmt: skip
    finally:
        monitor.terminate()
        monitor.wait(15)
    # Not a terminal: a line per change of state or progress, then the summary.
    lines = said.splitlines()
    assert "done 4/4 (100%)" in lines, said
    assert "State        Done" in lines
    assert "Done         4" in lines
    assert set(DeadLetter.objects.filter(pk__in=[r.pk for r in rows]).values_list(
        "state", flat=True)) == {"requeued"}  # fmt: skip
    assert broker.llen(TARGET) == 4
    (action,) = BulkAction.objects.all()
    status = ops_json("bulk", "status", str(action.pk))
    assert (status["state"], status["done"], status["percent"]) == ("done", 4, 100)
    assert status["outcomes"] == {"succeeded": 0, "failed": 0, "retrying": 0, "not_run": 4}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_is_a_bar_redrawn_in_place(operator: User) -> None:
    make_dead_letters(3)
    created = ops_json("bulk", "discard", "--filter", "", "--reason", "r", "--user", "olivia",
                       "--no-wait")  # fmt: skip
    bulk_runner.run(BulkAction.objects.get(pk=created["id"]))
    out = Terminal()
    call_command("ops", "bulk", "status", str(created["id"]), "--follow", stdout=out)
    assert out.getvalue().startswith(f"\r[{'#' * 30}] 100% 3/3 Done\x1b[K\n")
    assert "Done         3" in out.getvalue()


# --- queues, workers, state --------------------------------------------------------------


def test_queues_pause_resume_and_purge_through_the_services(
    operator: User, viewer: User, broker: redis.Redis, sampled: WorkerSampler
) -> None:
    from dashboard.monitor.jobs import broker_sampler
    from demo import tasks

    try:
        said = ops("queues", "pause", "reports", "--user", "olivia")
        assert said == f"Paused reports: 1 worker replied; ok: {SESSION_WORKER}.\n"
        assert QueuePause.objects.get(queue="reports").username == "olivia"
        assert ops_error("queues", "pause", "reports", "--user", "victor").returncode == 3
    finally:
        resumed = ops_json("queues", "resume", "reports", "--user", "olivia")
    assert resumed["queue"] == "reports"
    assert not QueuePause.objects.exists()
    error = ops_error("queues", "resume", "reports", "--user", "olivia")
    assert (error.returncode, str(error)) == (1, "'reports' is not paused.")

    # Waiting messages of a queue no worker consumes, seen by the monitor's sampler.
    for n in range(3):
        tasks.add.apply_async((n, n), queue="cli-purge")
    broker_sampler()()
    (row,) = [q for q in ops_json("queues")["results"] if q["name"] == "cli-purge"]
    assert row["depth"] == 3
    assert "cli-purge" in ops("queues")

    error = ops_error("queues", "purge", "cli-purge", "--confirm", "reports", "--user", "olivia")
    assert (error.returncode, str(error)) == (
        2,
        "--confirm: Type the queue name, cli-purge, to purge it.",
    )
    purged = ops_json("queues", "purge", "cli-purge", "--confirm", "cli-purge", "--user", "olivia")
    assert purged == {"queue": "cli-purge", "purged": 3}
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "username",
                                                                 "details__via"))  # fmt: skip
    assert actions == [("queue_pause", "olivia", "cli"), ("queue_resume", "olivia", "cli"),
                       ("queue_purge", "olivia", "cli")]  # fmt: skip


def test_workers_and_state_read_the_stored_snapshots(sampled: WorkerSampler) -> None:
    workers = ops_json("workers")
    assert SESSION_WORKER in [w["hostname"] for w in workers["results"]]
    assert workers["freshness"]["stale"] is False
    assert SESSION_WORKER in ops("workers")
    state = ops_json("state")
    assert state["state"] in ("healthy", "degraded", "failing")
    assert state["workers_online"] >= 1
    assert ops("state").startswith("State ")


def test_a_revoke_reaches_the_worker_and_is_audited(operator: User, sampled: WorkerSampler) -> None:
    from demo import tasks

    later = tasks.add.apply_async((40, 2), countdown=2)
    said = ops("workers", "revoke", later.id, "--user", "olivia")
    assert said == f"Revoked {later.id}: 1 worker replied; ok: {SESSION_WORKER}.\n"
    wait_until(lambda: later.state == "REVOKED", timeout=30)
    event = AuditEvent.objects.get(action="task_revoke")
    assert (event.username, event.details["via"]) == ("olivia", "cli")


def test_the_pool_grows_and_shrinks_and_autoscale_is_checked_first(
    operator: User, sampled: WorkerSampler
) -> None:
    grown = ops("workers", "pool", SESSION_WORKER, "grow", "1", "--user", "olivia")
    try:
        assert grown.startswith(f"Grow {SESSION_WORKER}: 1 worker replied; {SESSION_WORKER}: pool")
    finally:
        shrunk = ops_json("workers", "pool", SESSION_WORKER, "shrink", "--user", "olivia")
    assert shrunk["ok"] is True
    error = ops_error("workers", "autoscale", SESSION_WORKER, "--max", "1", "--min", "2",
                      "--user", "olivia")  # fmt: skip
    assert (error.returncode, str(error)) == (
        2, "--max/--min: Autoscale needs 0 <= min <= max, and max of at least 1.",
    )  # fmt: skip
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "details__via"))
    assert actions == [("worker_pool_grow", "cli"), ("worker_pool_shrink", "cli")]


def test_a_periodic_entry_runs_now_and_the_audit_lists_it(
    operator: User, broker: redis.Redis
) -> None:
    PeriodicEntry.objects.create(name="nightly", task="demo.tasks.add", args=[1, 2],
                                 queue=TARGET, reported_at=timezone.now())  # fmt: skip
    (entry,) = ops_json("periodic")["results"]
    assert (entry["name"], entry["task"]) == ("nightly", "demo.tasks.add")
    sent = ops_json("periodic", "run", "nightly", "--user", "olivia")
    assert broker.llen(TARGET) == 1
    (event,) = ops_json("audit", "--action", "periodic")["results"]
    assert event["details"]["task_id"] == sent["task_id"]
    assert (event["username"], event["details"]["via"]) == ("olivia", "cli")
    assert "periodic_run_now" in ops("audit", "--who", "olivia")
    error = ops_error("periodic", "run", "weekly", "--user", "olivia")
    assert (error.returncode, str(error)) == (4, "no periodic entry 'weekly'")


def test_a_user_without_a_role_reads_nothing(db: None) -> None:
    make_user("nora")
    for args in (("deadletters", "list"), ("queues",), ("workers",), ("state",)):
        assert ops_error(*args, "--user", "nora").returncode == 3


# --- untrusted arguments -------------------------------------------------------------------

# A bulk action asked for without following it: no monitor runs here.
QUIET_DISCARD = (
    "bulk",
    "discard",
    "--filter",
    "",
    "--reason",
    "r",
    "--user",
    "olivia",
    "--no-wait",
)
ARGUMENT_SHAPES = [
    ("deadletters", "list", "--since", "{}"),
    ("deadletters", "list", "--until", "{}"),
    ("deadletters", "list", "--limit", "{}"),
    ("deadletters", "list", "--after-id", "{}"),
    ("deadletters", "list", "--search", "{}"),
    ("deadletters", "list", "--state", "{}"),
    ("deadletters", "show", "{}"),
    ("deadletters", "discard", "{}", "--user", "olivia"),
    ("bulk", "discard", "--filter", "{}", "--reason", "r", "--user", "olivia", "--no-wait"),
    ("bulk", "requeue", "--ids", "{}", "--reason", "r", "--user", "olivia", "--no-wait"),
    ("bulk", "status", "{}"),
    ("queues", "purge", "{}", "--confirm", "x", "--user", "olivia"),
    (*QUIET_DISCARD, "--rate", "{}"),
    (*QUIET_DISCARD, "--confirm", "{}"),
    ("deadletters", "edit", "ROW", "--user", "olivia", "--args", "{}"),
    ("deadletters", "edit", "ROW", "--user", "olivia", "--kwargs", "{}"),
    ("workers", "autoscale", "w@h", "--min", "1", "--max", "{}", "--user", "olivia"),
    ("audit", "--since", "{}"),
    ("audit", "--who", "{}"),
    ("deadletters", "list", "--user", "{}"),
    ("deadletters", "discard", "ROW", "--user", "olivia", "--reason", "{}"),
    ("workers", "pool", "{}", "grow", "--user", "olivia"),
    ("periodic", "run", "{}", "--user", "olivia"),
]


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shape=st.sampled_from(ARGUMENT_SHAPES), value=st.text(max_size=40))
def test_no_argument_makes_a_traceback(operator: User, shape: tuple[str, ...], value: str) -> None:
    """Whatever the value, the command answers or refuses in a line naming the argument."""
    row = make_dead_letter(queue=TARGET) if "ROW" in shape else None
    fill = {"{}": value, "ROW": str(row.pk) if row else ""}
    args = [fill.get(part, part) for part in shape]
    error: CommandError | None = None
    try:
        ops(*args)
    except CommandError as exc:
        error = exc
    if error is None:
        return
    assert error.returncode in (1, 2, 3, 4), (args, error)
    message = str(error)
    assert "\n" not in message
    flag = shape[shape.index("{}") - 1]
    named = {"show": "ID", "status": "ID", "discard": "ID", "purge": "NAME", "pool": "HOSTNAME",
             "run": "NAME"}  # fmt: skip
    said = (named.get(flag, flag), "no ", "Already", "unrecognized arguments", "required")
    assert any(words in message for words in said), (args, message)


# --- where is task X? ------------------------------------------------------------------------


def test_task_tells_a_dead_letters_story_by_id_or_prefix(viewer: User, broker: redis.Redis) -> None:
    row = make_dead_letter(kwargs={"password": "hunter2"})
    document = ops_json("task", row.task_id, "--user", "victor")
    assert document["task_id"] == row.task_id
    (step,) = document["dead_letters"]["chain"]
    assert (step["pk"], step["is_this_task"], step["state"]) == (row.pk, True, "open")
    assert document["summary"]
    text = ops("task", row.task_id[:8])
    assert f"Task {row.task_id}" in text and f"#{row.pk} open" in text and "(this task)" in text
    assert "hunter2" not in text


def test_task_refuses_a_short_prefix_and_a_user_without_a_role(db: None) -> None:
    error = ops_error("task", "abc")
    assert error.returncode == 2 and "TASK_ID" in str(error)
    make_user("nobody-here", group=None)
    error = ops_error("task", "0123456789abcdef", "--user", "nobody-here")
    assert error.returncode == 3
