"""``ops task``: where is task X? The lookup page's answer in a terminal."""

from __future__ import annotations

import dataclasses
from typing import Any

from dashboard.cli.base import USAGE, OpsError, Output, acting_user, may_read, table, when
from dashboard.tasks import lookup

# As the lookup page: it shows the task's dead letters beside the workers' and queues' state.
PERMISSIONS = ("dashboard.view_queuesnapshot", "deadletters.view_deadletter")


def task(options: dict[str, Any]) -> Output:
    """One task id's story; a prefix of one known id opens it, of several lists them."""
    user = acting_user(options["user"], required=False)
    for perm in PERMISSIONS:
        may_read(user, perm, doing="look a task up")
    raw = options["task_id"]
    try:
        task_id = lookup.clean_task_id(raw, field="TASK_ID", prefix=not lookup.looks_whole(raw))
    except lookup.InvalidTaskId as exc:
        raise OpsError(f"{exc.field}: {exc.message}", USAGE) from None
    if not lookup.looks_whole(task_id):
        matches = lookup.task_matches(task_id)
        if len(matches) > 1:
            rows = [(m.task_id, m.name) for m in matches]
            data = {"matches": [dataclasses.asdict(m) for m in matches]}
            return Output(data, table(("TASK ID", "NAME"), rows, empty=""))
        if matches:
            task_id = matches[0].task_id
    story = lookup.task_story(task_id)
    data = dataclasses.asdict(story) | {"queue_search_complete": story.queues.search.complete}
    return Output(data, _told(story))


def _told(story: lookup.TaskStory) -> str:
    lines = [f"Task {story.task_id}", story.summary, ""]
    backend = story.backend
    if not backend.configured:
        lines.append("Result backend: none configured here; results cannot be known.")
    elif not backend.known:
        lines.append(f"Result backend ({backend.backend}): unknown to the backend. {backend.note}")
    else:
        done = f", done {when(backend.date_done)}" if backend.date_done else ""
        lines.append(f"Result backend ({backend.backend}): {backend.state}{done}")
        if backend.exception_type:
            lines.append(f"  {backend.exception_type}: {backend.exception_message}")
        elif backend.result is not None:
            lines.append(f"  result: {backend.result}")
    chain = story.dead_letters.chain
    if chain:
        lines.append("Dead letters (the requeue chain, oldest first):")
        lines += [
            f"  #{step.pk} {step.state} {step.task_id}"
            + (" (this task)" if step.is_this_task else "")
            + f": {step.exception_type or step.kind} {step.exception_message}".rstrip()
            + (f"; requeued as {step.requeue_task_id}" if step.requeue_task_id else "")
            + (f", then {step.requeue_outcome}" if step.requeue_outcome else "")
            for step in chain
        ]
    else:
        lines.append("Dead letters: none for this id.")
    snapshot = story.snapshot
    if snapshot.sightings:
        lines.append(f"Workers (snapshot of {when(snapshot.sampled_at)}):")
        lines += [
            f"  {s.kind} on {s.worker}"
            + (f" since {when(s.started)}" if s.started else "")
            + (f", eta {s.eta}" if s.eta else "")
            for s in snapshot.sightings
        ]
    else:
        lines.append(f"Workers: not active, reserved or scheduled at {when(snapshot.sampled_at)}.")
    search = story.queues.search
    if search.found:
        lines += [
            f"Waiting in {w.queue} (priority step {w.priority}), {w.ahead} messages ahead of it."
            for w in search.found
        ]
    elif not search.searchable or search.reason:
        lines.append(f"Queues: {search.reason}")
    elif search.complete:
        lines.append("Queues: not waiting in any queue.")
    else:
        read = ", ".join(f"{q.read} of {q.total} in {q.queue}" for q in search.queues)
        lines.append(f"Queues: not among the messages read ({read}); the page can scan them all.")
    return "\n".join(lines)
