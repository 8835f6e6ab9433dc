"""``ops bulk``: ask for a bulk requeue or discard with the page's rules, follow
its progress while the monitor carries it out, and pause, resume, cancel or
approve it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

from django.http import QueryDict

from dashboard.cli.base import (
    NOT_DONE,
    NOT_FOUND,
    REFUSED,
    USAGE,
    OpsError,
    Output,
    acting_user,
    facts,
    may_read,
    require,
    when,
)
from dashboard.cli.deadletters import FILTER_FLAGS
from deadletters import bulk, selectors
from deadletters.forms import BulkActionForm
from deadletters.models import BulkAction

# The form's fields, by the flag that sets each.
FORM_FLAGS = {
    "filter_query": "--filter",
    "ids": "--ids",
    "reason": "--reason",
    "confirm": "--confirm",
    "rate": "--rate",
    "max_id": "--max-id",
    "__all__": "arguments",
}
# How often a followed action's row is read again.
POLL_SECONDS = 0.5
BAR_WIDTH = 30


def create(options: dict[str, Any]) -> Output:
    """What the list's bulk form does on a click, validated by the same form."""
    stdout: IO[str] = options["stream"]
    stdin: IO[str] = options["stdin"]
    verb = options["verb"]
    user = acting_user(options["user"], required=True)
    require(user, f"deadletters.{verb}_deadletter", doing=f"{verb} dead letters")
    ids = options["ids"]
    if options["filter"]:
        _check_filter(options["filter"])
    data: dict[str, Any] = {
        "action": verb,
        "scope": "selected" if ids else "filter",
        "ids": [str(pk) for pk in ids or []],
        "filter_query": options["filter"] or "",
        "reason": options["reason"] or "",
        "confirm": "" if options["confirm"] is None else str(options["confirm"]),
        "skip_canary": options["skip_canary"],
        "rate": "" if options["rate"] is None else options["rate"],
        "max_id": "" if options["max_id"] is None else str(options["max_id"]),
    }
    form = BulkActionForm(data)
    if not form.is_valid():
        said = "; ".join(
            f"{FORM_FLAGS.get(name, name)}: {' '.join(str(e) for e in errors)}"
            for name, errors in form.errors.items()
        )
        raise OpsError(said, USAGE)
    cleaned = form.cleaned_data
    scope_ids = cleaned["ids"] if ids else None
    # Fixed once, as the page fixes it at the first click: the number confirmed
    # is the number acted on, whatever fails meanwhile.
    max_id = bulk.newest_id() if cleaned["max_id"] is None else cleaned["max_id"]
    confirmation = cleaned["confirm"]
    try:
        bulk.confirm_size(
            filter_query=cleaned["filter_query"],
            selected_ids=scope_ids,
            confirmation=confirmation,
            max_id=max_id,
        )
    except bulk.NeedsConfirmation as exc:
        if confirmation or options["json"] or not stdin.isatty():
            wrong = f"{confirmation!r} is not the count. " if confirmation else ""
            raise OpsError(
                f"--confirm: {wrong}{exc.total} dead letters match now (newest id"
                f" {exc.max_id}); confirm with --confirm {exc.total} --max-id {exc.max_id}",
                USAGE,
                total=exc.total,
                max_id=exc.max_id,
            ) from None
        stdout.write(f"{exc} ")
        stdout.flush()
        typed = stdin.readline().strip()
        try:
            bulk.confirm_size(
                filter_query=cleaned["filter_query"],
                selected_ids=scope_ids,
                confirmation=typed,
                max_id=exc.max_id,
            )
        except bulk.NeedsConfirmation:
            raise OpsError(
                f"--confirm: {typed!r} is not {exc.total}: nothing done", USAGE
            ) from None
        max_id = exc.max_id
    action = bulk.create(
        user=user,
        action=verb,
        reason=cleaned["reason"],
        filter_query=cleaned["filter_query"],
        selected_ids=scope_ids,
        max_id=max_id,
        skip_canary=cleaned["skip_canary"],
        rate=cleaned["rate"],
    )
    if options["no_wait"] or action.state == BulkAction.State.APPROVAL:
        return _status_output(action, created=True)
    return follow(action, stdout=stdout, quiet=options["json"], timeout=options["timeout"])


def _check_filter(query: str) -> None:
    """Refuse what a page's form never sends: a key the list does not filter on,
    or one left empty. Either is ignored by the filter, and would widen the set
    to every dead letter (a typo, an unset shell variable)."""
    known = {*FILTER_FLAGS, "range"}
    for key, values in QueryDict(query).lists():
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise OpsError(f"--filter: {key[:40]!r} is not a filter (one of {allowed})", USAGE)
        if not all(value.strip() for value in values):
            raise OpsError(f"--filter: {key} is empty: it would match every dead letter", USAGE)


def _get(pk: int) -> BulkAction:
    action = BulkAction.objects.select_related("created_by", "approved_by").filter(pk=pk).first()
    if action is None:
        raise OpsError(f"no bulk action {pk}", NOT_FOUND)
    return action


def status(options: dict[str, Any]) -> Output:
    stdout: IO[str] = options["stream"]
    user = acting_user(options["user"], required=False)
    may_read(user, "deadletters.view_deadletter", doing="read bulk actions")
    action = _get(options["id"])
    if options["follow"]:
        return follow(action, stdout=stdout, quiet=options["json"], timeout=options["timeout"])
    return _status_output(action)


def follow(
    action: BulkAction, *, stdout: IO[str], quiet: bool, timeout: float | None = None
) -> Output:
    """Read the action's row until it finishes (or waits for a person); a bar on a
    terminal, a line per change elsewhere (nothing with ``--json``).

    The monitor carries the action out; Ctrl-C, or ``timeout`` seconds (a
    pipeline must not wait for ever on a monitor that is down), stop watching,
    not the action.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    gave_up = False
    draw: Callable[[BulkAction], None] = (
        (lambda _: None) if quiet else _bar(stdout) if stdout.isatty() else _lines(stdout)
    )
    try:
        while True:
            draw(action)
            if action.is_finished or action.state == BulkAction.State.APPROVAL:
                break
            if deadline is not None and time.monotonic() >= deadline:
                gave_up = True
                break
            time.sleep(POLL_SECONDS)
            action = _get(action.pk)
    except KeyboardInterrupt:
        if not quiet:
            stdout.write(
                f"\nStopped watching; it goes on. Follow: ops bulk status {action.pk} -f\n"
            )
    else:
        if stdout.isatty() and not quiet:
            stdout.write("\n")
    result = _status_output(action)
    finished_badly = action.state in (
        BulkAction.State.STOPPED,
        BulkAction.State.CANCELLED,
        BulkAction.State.FAILED,
    )
    if finished_badly:
        result.code = NOT_DONE
        result.errors.append(f"bulk action {action.pk} {action.get_state_display().lower()}")
    elif gave_up:
        result.code = NOT_DONE
        result.errors.append(
            f"bulk action {action.pk} is still {action.get_state_display().lower()} after"
            f" {timeout:g}s; it goes on (is the monitor running?)"
        )
    return result


def _bar(stdout: IO[str]) -> Callable[[BulkAction], None]:
    def draw(action: BulkAction) -> None:
        filled = BAR_WIDTH * action.percent // 100
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        stdout.write(
            f"\r[{bar}] {action.percent:3d}% {action.processed}/{action.total}"
            f" {action.get_state_display()}\x1b[K"
        )
        stdout.flush()

    return draw


def _lines(stdout: IO[str]) -> Callable[[BulkAction], None]:
    seen: list[tuple[str, int]] = []

    def draw(action: BulkAction) -> None:
        now = (action.state, action.processed)
        if not seen or seen[-1] != now:
            seen.append(now)
            stdout.write(f"{action.state} {action.processed}/{action.total} ({action.percent}%)\n")
            stdout.flush()

    return draw


def _status_output(action: BulkAction, *, created: bool = False) -> Output:
    requeue = action.action == BulkAction.Action.REQUEUE
    outcomes = selectors.requeue_outcomes(action) if requeue else None
    data: dict[str, Any] = {
        "id": action.pk,
        "action": action.action,
        "state": action.state,
        "state_display": action.get_state_display(),
        "scope": bulk.named_scope(action),
        "filter": action.filter_query,
        "selected_ids": action.selected_ids,
        "max_id": action.max_id,
        "reason": action.reason,
        "created_by": action.created_by.get_username() if action.created_by else None,
        "created_at": action.created_at,
        "approved_by": action.approved_by.get_username() if action.approved_by else None,
        "total": action.total,
        "processed": action.processed,
        "percent": action.percent,
        "done": action.done,
        "skipped": action.skipped,
        "failed": action.failed,
        "unconfirmed": action.unconfirmed,
        "verdict": action.verdict,
        "last_error": action.last_error,
        "started_at": action.started_at,
        "finished_at": action.finished_at,
        "outcomes": None
        if outcomes is None
        else {
            "succeeded": outcomes.succeeded,
            "failed": outcomes.failed,
            "retrying": outcomes.retrying,
            "not_run": outcomes.not_run,
        },
    }
    pairs: list[tuple[str, Any]] = [
        ("Bulk action", f"{action.pk}: {action.get_action_display().lower()} of {action.total}"),
        ("State", action.get_state_display()),
        ("Which", f"{data['scope']}; open at the click (newest id {action.max_id})"),
        ("Asked by", f"{data['created_by'] or '-'} at {when(action.created_at)}"),
        ("Reason", action.reason),
        ("Progress", f"{action.processed} of {action.total} ({action.percent}%)"),
        ("Done", action.done),
        ("Skipped", f"{action.skipped} (someone else handled them first)"),
        ("Failed", f"{action.failed} (not published, still open)"),
    ]
    if action.unconfirmed:
        pairs.append(("Unconfirmed", action.unconfirmed))
    if action.verdict:
        pairs.append(("Verdict", action.verdict))
    if action.last_error:
        pairs.append(("Error", action.last_error))
    if outcomes is not None and outcomes.requeued:
        pairs.append(
            (
                "Outcomes",
                f"{outcomes.succeeded} succeeded, {outcomes.failed} failed again,"
                f" {outcomes.retrying} retrying, {outcomes.not_run} not run yet",
            )
        )
    if action.state == BulkAction.State.APPROVAL:
        pairs.append(("Next", f"another operator: ops bulk approve {action.pk} --user NAME"))
    elif created and not action.is_finished:
        pairs.append(("Follow", f"ops bulk status {action.pk} --follow"))
    return Output(data, facts(pairs))


CONTROLS = {
    "pause": bulk.pause,
    "resume": bulk.resume,
    "cancel": bulk.cancel,
    "approve": bulk.approve,
}


def control(options: dict[str, Any]) -> Output:
    verb = options["verb"]
    user = acting_user(options["user"], required=True)
    action = _get(options["id"])
    require(user, f"deadletters.{action.action}_deadletter", doing=f"{verb} this bulk action")
    try:
        action = CONTROLS[verb](action, user=user)
    except bulk.NotAllowedNow as exc:
        raise OpsError(str(exc), NOT_DONE, state=action.state) from None
    except bulk.SamePerson as exc:
        raise OpsError(str(exc), REFUSED) from None
    return _status_output(action)
