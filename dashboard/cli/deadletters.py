"""``ops deadletters``: the console's list, one dead letter, requeue and discard,
and the failure groups."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import QueryDict

from dashboard.cli.base import (
    NOT_DONE,
    NOT_FOUND,
    UNAVAILABLE,
    USAGE,
    OpsError,
    Output,
    acting_user,
    cut,
    facts,
    may_read,
    require,
    table,
    text,
    to_json,
    when,
)
from deadletters import selectors
from deadletters.filters import DeadLetterFilter
from deadletters.forms import EditRequeueForm
from deadletters.models import DeadLetter
from deadletters.redact import redact, redacted_raw, restore
from deadletters.services import (
    AlreadyHandled,
    BrokerUnavailable,
    NotRequeueable,
    deadletter_discard,
    deadletter_requeue,
)

# The list's filter fields, by the flag that sets each (as docs/cli.md lists them).
FILTER_FLAGS = {
    "task": "--task",
    "queue": "--queue",
    "exception": "--exception",
    "q": "--search",
    "state": "--state",
    "since": "--since",
    "until": "--until",
    "signature": "--group",
    "worker": "--worker",
}
MAX_LIMIT = 1000


def filter_query(options: dict[str, Any]) -> str:
    """The list's query string from the flags given: what ``--filter`` takes."""
    params = QueryDict(mutable=True)
    for field, flag in FILTER_FLAGS.items():
        value = options.get(flag[2:].replace("-", "_"))
        if value is not None:
            params[field] = value
    return params.urlencode()


def filtered(query: str, *, flag_names: bool) -> QuerySet[DeadLetter]:
    """The rows the console's filter matches, refused as the list refuses it,
    naming the flag (or the query string's field) that is wrong."""
    rows = DeadLetter.objects.defer(*selectors.BIG_COLUMNS)
    filterset = DeadLetterFilter(QueryDict(query), queryset=rows)
    if not filterset.is_valid():
        said = "; ".join(
            f"{FILTER_FLAGS.get(name, name) if flag_names else name}: {' '.join(errors)}"
            for name, errors in filterset.errors.items()
        )
        raise OpsError(said if flag_names else f"--filter: {said}", USAGE)
    return filterset.qs


def list_(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=False)
    may_read(user, "deadletters.view_deadletter", doing="read dead letters")
    rows = filtered(filter_query(options), flag_names=True).order_by("-failed_at", "-id")
    after = options["after_id"]
    if after is not None:
        # Keyset on the list's order (failed_at, id): the next page reads from the
        # index where the last one stopped, never an OFFSET and never a COUNT.
        last = DeadLetter.objects.filter(pk=after).values_list("failed_at", flat=True).first()
        if last is None:
            raise OpsError(f"--after-id: no dead letter {after}", NOT_FOUND)
        rows = rows.filter(Q(failed_at__lt=last) | Q(failed_at=last, pk__lt=after))
    limit = options["limit"] or settings.DEADLETTERS_PAGE_SIZE
    page = list(rows[: limit + 1])
    more, page = len(page) > limit, page[:limit]
    data = {
        "results": [_row(row) for row in page],
        "next_after_id": page[-1].pk if more and page else None,
    }
    text = table(
        ("ID", "FAILED", "TASK", "QUEUE", "EXCEPTION", "RETRIES", "WORKER", "STATE"),
        [
            (
                row.pk,
                when(row.failed_at),
                row.task_name or "(unreadable message)",
                row.queue or "-",
                cut(f"{row.exception_type or row.kind}: {row.exception_message}", 60),
                row.retries,
                row.worker or "-",
                row.state,
            )
            for row in page
        ],
        empty="No dead letters match.",
    )
    if more:
        text += f"\nMore: add --after-id {page[-1].pk}"
    return Output(data, text)


def _row(row: DeadLetter) -> dict[str, Any]:
    return {
        "id": row.pk,
        "task_id": row.task_id,
        "task_name": row.task_name,
        "queue": row.queue,
        "kind": row.kind,
        "exception_type": row.exception_type,
        "exception_message": row.exception_message,
        "retries": row.retries,
        "worker": row.worker,
        "failed_at": row.failed_at,
        "state": row.state,
        "signature": row.signature,
    }


def _get(pk: int) -> DeadLetter:
    related = DeadLetter.objects.select_related("requeued_by", "discarded_by", "requeued_from")
    dead_letter = related.filter(pk=pk).first()
    if dead_letter is None:
        raise OpsError(f"no dead letter {pk}", NOT_FOUND)
    return dead_letter


def _handled(dead_letter: DeadLetter) -> dict[str, Any]:
    if dead_letter.is_open:
        return {}
    return {"handled_by": dead_letter.handled_by, "handled_at": dead_letter.handled_at}


def show(options: dict[str, Any]) -> Output:
    """One dead letter with the detail page's redaction: args, kwargs, headers and a
    JSON raw message redacted; raw bytes that are not JSON only for those who may."""
    user = acting_user(options["user"], required=False)
    may_read(user, "deadletters.view_deadletter", doing="read dead letters")
    dead_letter = _get(options["id"])
    history = selectors.requeue_chain(dead_letter)
    follow = selectors.follow_up(dead_letter, history)
    raw: str | None = None
    raw_note = ""
    if dead_letter.raw_body:
        raw = redacted_raw(dead_letter.raw_body)
        if raw is None and user.has_perm("deadletters.view_raw_deadletter"):
            raw = dead_letter.raw_text
        elif raw is None:
            size = len(dead_letter.raw_body)
            raw_note = (
                f"{size} bytes that are not JSON, so not redactable: only operators read them"
            )
    arguments = not dead_letter.is_quarantined
    data = {
        **_row(dead_letter),
        "envelope_version": dead_letter.envelope_version,
        "priority": dead_letter.priority,
        "root_id": dead_letter.root_id,
        "parent_id": dead_letter.parent_id,
        "group_id": dead_letter.group_id,
        "eta": dead_letter.eta,
        "expires": dead_letter.expires,
        "args": redact(dead_letter.args) if arguments else None,
        "kwargs": redact(dead_letter.kwargs) if arguments else None,
        "headers": redact(dead_letter.headers),
        "traceback": dead_letter.traceback,
        "quarantine_reason": dead_letter.quarantine_reason,
        "content_type": dead_letter.content_type,
        "raw": raw,
        "raw_note": raw_note,
        "requeue_blocker": dead_letter.requeue_blocker,
        **_handled(dead_letter),
        "requeue_task_id": dead_letter.requeue_task_id,
        "requeue_outcome": dead_letter.requeue_outcome,
        "requeue_outcome_at": dead_letter.requeue_outcome_at,
        "failed_again_as": follow.pk if follow else None,
        "history": [
            {
                "id": step.pk,
                "task_id": step.task_id,
                "failed_at": step.failed_at,
                "exception_type": step.exception_type,
                "state": step.state,
                "requeue_task_id": step.requeue_task_id,
                **_handled(step),
            }
            for step in history
        ],
    }
    state = dead_letter.state
    if not dead_letter.is_open:
        state += f" by {dead_letter.handled_by} at {when(dead_letter.handled_at)}"
    if dead_letter.requeue_task_id:
        outcome = "failed again" if follow else dead_letter.requeue_outcome or "not run yet"
        state += f"; as {dead_letter.requeue_task_id}: {outcome}"
    pairs: list[tuple[str, Any]] = [
        ("ID", dead_letter.pk),
        ("Task", f"{dead_letter.task_name or '(unreadable message)'} [{dead_letter.task_id}]"),
        ("State", state),
        ("Failure", dead_letter.get_kind_display()),
        ("Exception", f"{dead_letter.exception_type} {dead_letter.exception_message}".strip()),
        ("Failed at", when(dead_letter.failed_at)),
        ("Queue", dead_letter.queue or "-"),
        ("Worker", dead_letter.worker or "-"),
        ("Retries", dead_letter.retries),
        ("Root / parent", f"{dead_letter.root_id or '-'} / {dead_letter.parent_id or '-'}"),
    ]
    if dead_letter.quarantine_reason:
        pairs.append(("Quarantined", dead_letter.quarantine_reason))
    if dead_letter.requeue_blocker and dead_letter.is_open:
        pairs.append(("Not requeueable", dead_letter.requeue_blocker))
    sections = [facts(pairs)]
    if arguments:
        sections.append(f"args:\n{to_json(data['args'])}\nkwargs:\n{to_json(data['kwargs'])}")
    if dead_letter.traceback:
        sections.append(f"Traceback:\n{dead_letter.traceback.rstrip()}")
    sections.append(f"Headers:\n{to_json(data['headers'])}")
    if raw is not None or raw_note:
        sections.append(f"Raw message:\n{raw if raw is not None else raw_note}")
    if len(history) > 1:
        sections.append(
            "History:\n"
            + "\n".join(
                f"{'*' if step.pk == dead_letter.pk else ' '} {step.pk} {step.task_id}"
                f" {step.exception_type} at {when(step.failed_at)}: {step.state}"
                for step in history
            )
        )
    return Output(data, "\n\n".join(sections))


def _each(ids: list[int], act: Any) -> Output:
    """Act on each id in turn, as as many clicks would; a refusal of one is
    reported and the others go on. The exit code is the last failure's."""
    results: list[dict[str, Any]] = []
    lines: list[str] = []
    errors: list[str] = []
    code = 0
    for pk in dict.fromkeys(ids):
        try:
            said, extra = act(_get(pk))
            results.append({"id": pk, "ok": True, **extra})
            lines.append(f"{pk}: {said}")
        except OpsError as exc:
            results.append({"id": pk, "ok": False, "error": str(exc), **exc.data})
            errors.append(f"{pk}: {exc}")
            code = exc.code
    return Output({"results": results}, "\n".join(lines), code=code, errors=errors)


def requeue(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=True)
    require(user, "deadletters.requeue_deadletter", doing="requeue dead letters")

    def act(dead_letter: DeadLetter) -> tuple[str, dict[str, Any]]:
        try:
            task_id = deadletter_requeue(dead_letter=dead_letter, user=user)
        except AlreadyHandled as exc:
            raise OpsError(str(exc), NOT_DONE, **_handled(exc.dead_letter)) from None
        except NotRequeueable as exc:
            raise OpsError(str(exc), NOT_DONE) from None
        except BrokerUnavailable as exc:
            raise OpsError(
                f"not requeued: {exc}; it is still open, try again", UNAVAILABLE
            ) from None
        return f"requeued as {task_id}", {"task_id": task_id}

    return _each(options["ids"], act)


def discard(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=True)
    require(user, "deadletters.discard_deadletter", doing="discard dead letters")
    reason = text("--reason", options["reason"] or "", limit=2000)

    def act(dead_letter: DeadLetter) -> tuple[str, dict[str, Any]]:
        try:
            deadletter_discard(dead_letter=dead_letter, user=user, reason=reason)
        except AlreadyHandled as exc:
            raise OpsError(str(exc), NOT_DONE, **_handled(exc.dead_letter)) from None
        return "discarded", {}

    return _each(options["ids"], act)


def edit(options: dict[str, Any]) -> Output:
    """Edit and requeue: the edit page's form, from the redacted values; a value
    left as "[redacted]" keeps the stored one, as on the page."""
    user = acting_user(options["user"], required=True)
    require(
        user,
        "deadletters.change_deadletter",
        "deadletters.requeue_deadletter",
        doing="edit and requeue dead letters",
    )
    dead_letter = _get(options["id"])
    given = {
        "args": options["edit_args"],
        "kwargs": options["edit_kwargs"],
        "queue": options["queue"],
    }
    data = {
        "args": to_json(redact(dead_letter.args)) if given["args"] is None else given["args"],
        "kwargs": to_json(redact(dead_letter.kwargs))
        if given["kwargs"] is None
        else given["kwargs"],
        "queue": dead_letter.queue if given["queue"] is None else given["queue"],
        "reason": options["reason"] or "",
    }
    form = EditRequeueForm(data)
    if not form.is_valid():
        said = "; ".join(
            f"--{name}: {' '.join(str(e) for e in errors)}" for name, errors in form.errors.items()
        )
        raise OpsError(said, USAGE)
    try:
        task_id = deadletter_requeue(
            dead_letter=dead_letter,
            user=user,
            args=restore(form.cleaned_data["args"], dead_letter.args),
            kwargs=restore(form.cleaned_data["kwargs"], dead_letter.kwargs),
            queue=form.cleaned_data["queue"],
            reason=form.cleaned_data["reason"],
        )
    except AlreadyHandled as exc:
        raise OpsError(str(exc), NOT_DONE, **_handled(exc.dead_letter)) from None
    except NotRequeueable as exc:
        raise OpsError(str(exc), NOT_DONE) from None
    except BrokerUnavailable as exc:
        raise OpsError(f"not requeued: {exc}; it is still open, try again", UNAVAILABLE) from None
    result = {"id": dead_letter.pk, "ok": True, "task_id": task_id}
    return Output(result, f"{dead_letter.pk}: requeued with your changes as {task_id}")


def groups(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=False)
    may_read(user, "deadletters.view_deadletter", doing="read dead letters")
    rows = list(
        selectors.failure_groups(show_all=options["all"], task=options["task"] or "")[
            : options["limit"] or 50
        ]
    )
    data = {
        "results": [
            {
                "signature": group.signature,
                "name": group.name,
                "task_name": group.task_name,
                "exception_type": group.exception_type,
                "queue": group.queue,
                "open": group.open,
                "total": group.total,
                "first_seen": group.first_seen,
                "last_seen": group.last_seen,
            }
            for group in rows
        ]
    }
    text = table(
        ("SIGNATURE", "OPEN", "TOTAL", "LAST SEEN", "GROUP"),
        [(g.signature, g.open, g.total, when(g.last_seen), cut(g.name, 90)) for g in rows],
        empty="No failure groups with open dead letters." if not options["all"] else "No groups.",
    )
    return Output(data, text)
