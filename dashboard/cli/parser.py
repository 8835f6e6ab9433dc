"""The ``ops`` command line: subcommands, their arguments and the function each runs."""

from __future__ import annotations

import argparse
from typing import Any

from dashboard.cli import bulk, cluster, deadletters, fleet, tasks
from dashboard.cli.base import bounded_int, dead_letter_id
from deadletters.models import DeadLetter

EPILOG = (
    "Exit codes: 0 done, 1 not done (its state), 2 bad argument, 3 refused, 4 not found,"
    " 5 broker unavailable. See docs/cli.md."
)


def _common(parser: argparse.ArgumentParser, *, change: bool = False) -> None:
    # SUPPRESS: a default here would overwrite the value a parent parser read.
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print one JSON document instead of a table",
    )
    parser.add_argument(
        "--user",
        metavar="USERNAME",
        default=argparse.SUPPRESS,
        help="the acting user, whose roles apply and whom the audit names"
        + (" (required)" if change else " (optional for reads)"),
    )


def _leaf(subparsers: Any, name: str, handler: Any, help_: str, *, change: bool = False) -> Any:
    parser = subparsers.add_parser(name, help=help_, description=help_)
    _common(parser, change=change)
    parser.set_defaults(handler=handler)
    return parser


def _timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=bounded_int(1, 10**6),
        metavar="SECONDS",
        help="stop following after this long (exit 1); the action goes on",
    )


def _ids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+", type=dead_letter_id, metavar="ID", help="dead-letter ids")


def build(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    commands = parser.add_subparsers(
        dest="command",
        metavar="{deadletters,bulk,queues,workers,periodic,audit,state,task}",
        required=True,
    )

    dl = commands.add_parser("deadletters", help="the dead-letter console")
    dl_verbs = dl.add_subparsers(dest="verb", metavar="{list,show,requeue,discard,edit,groups}")
    dl_verbs.required = True
    listing = _leaf(dl_verbs, "list", deadletters.list_, "dead letters, newest first")
    listing.add_argument("--task", help="the task's name")
    listing.add_argument("--queue")
    listing.add_argument("--exception", help="the exception's type, e.g. ValueError")
    listing.add_argument("--search", help="task id, message, args or kwargs contain this text")
    listing.add_argument("--state", choices=DeadLetter.State.values)
    listing.add_argument("--group", help="a failure group's signature (ops deadletters groups)")
    listing.add_argument("--worker")
    listing.add_argument("--since", help="failed at or after this time (ISO 8601)")
    listing.add_argument("--until", help="failed before this time (ISO 8601)")
    listing.add_argument("--limit", type=bounded_int(1, deadletters.MAX_LIMIT), help="rows (50)")
    listing.add_argument(
        "--after-id", type=dead_letter_id, metavar="ID", help="the page after this row"
    )
    show = _leaf(dl_verbs, "show", deadletters.show, "one dead letter, redacted as on its page")
    show.add_argument("id", type=dead_letter_id, metavar="ID")
    requeue = _leaf(
        dl_verbs, "requeue", deadletters.requeue, "publish again under a new id", change=True
    )
    _ids(requeue)
    discard = _leaf(dl_verbs, "discard", deadletters.discard, "close without running", change=True)
    _ids(discard)
    discard.add_argument("--reason", help="why, for the audit")
    edit = _leaf(
        dl_verbs, "edit", deadletters.edit, "change args, kwargs or queue, then requeue",
        change=True,
    )  # fmt: skip
    edit.add_argument("id", type=dead_letter_id, metavar="ID")
    # Not dest "args": Django's call_command takes that for the positional arguments.
    edit.add_argument(
        "--args", dest="edit_args", metavar="JSON", help='a JSON list; "[redacted]" keeps a value'
    )
    edit.add_argument(
        "--kwargs",
        dest="edit_kwargs",
        metavar="JSON",
        help='a JSON object; "[redacted]" keeps a value',
    )
    edit.add_argument("--queue", help="another queue to send it to")
    edit.add_argument("--reason", help="why, for the audit")
    groups = _leaf(dl_verbs, "groups", deadletters.groups, "failure groups, open first")
    groups.add_argument("--all", action="store_true", help="also groups with nothing open")
    groups.add_argument("--task", help="only this task's groups")
    groups.add_argument("--limit", type=bounded_int(1, deadletters.MAX_LIMIT), help="rows (50)")

    bulk_parser = commands.add_parser("bulk", help="bulk requeue and discard")
    bulk_verbs = bulk_parser.add_subparsers(
        dest="verb", metavar="{requeue,discard,status,pause,resume,cancel,approve}"
    )
    bulk_verbs.required = True
    for verb in ("requeue", "discard"):
        create = _leaf(
            bulk_verbs, verb, bulk.create, f"{verb} every open match, then follow", change=True
        )
        create.set_defaults(verb=verb)
        scope = create.add_mutually_exclusive_group(required=True)
        scope.add_argument(
            "--filter",
            metavar="QUERYSTRING",
            help="the console's filter as in its URL: 'task=app.charge&since=2026-12-01T14:00'",
        )
        scope.add_argument("--ids", nargs="+", type=dead_letter_id, metavar="ID")
        create.add_argument("--reason", help="why (required), for the audit")
        create.add_argument(
            "--confirm",
            metavar="N",
            help="the number of rows, typed, when more than DEADLETTERS_CONFIRM_ABOVE match",
        )
        create.add_argument(
            "--max-id",
            type=dead_letter_id,
            metavar="ID",
            help="the newest id when the rows were counted (as the confirmation said)",
        )
        create.add_argument("--rate", type=float, help="messages a second at the most")
        create.add_argument("--no-wait", action="store_true", help="do not follow the progress")
        _timeout(create)
        if verb == "requeue":
            create.add_argument(
                "--skip-canary", action="store_true", help="no canary before a large requeue"
            )
        else:
            create.set_defaults(skip_canary=False)
    status = _leaf(bulk_verbs, "status", bulk.status, "a bulk action's progress and outcome")
    status.add_argument("id", type=dead_letter_id, metavar="ID")
    status.add_argument("-f", "--follow", action="store_true", help="until it finishes")
    _timeout(status)
    for verb in ("pause", "resume", "cancel", "approve"):
        control = _leaf(bulk_verbs, verb, bulk.control, f"{verb} a bulk action", change=True)
        control.set_defaults(verb=verb)
        control.add_argument("id", type=dead_letter_id, metavar="ID")

    queues = commands.add_parser("queues", help="depth, age and rates; pause, resume, purge")
    _common(queues)
    queues.set_defaults(handler=cluster.queues)
    queue_verbs = queues.add_subparsers(dest="verb", metavar="{list,pause,resume,purge}")
    _leaf(queue_verbs, "list", cluster.queues, "every queue from the stored snapshot")
    pause = _leaf(queue_verbs, "pause", cluster.queue_pause, "workers stop consuming", change=True)
    pause.add_argument("name", metavar="NAME")
    resume = _leaf(queue_verbs, "resume", cluster.queue_resume, "consume again", change=True)
    resume.add_argument("name", metavar="NAME")
    purge = _leaf(queue_verbs, "purge", cluster.queue_purge, "delete every message", change=True)
    purge.add_argument("name", metavar="NAME")
    purge.add_argument("--confirm", metavar="NAME", required=True, help="the queue's name, typed")

    workers = commands.add_parser("workers", help="the workers; pool, autoscale, revoke")
    _common(workers)
    workers.set_defaults(handler=cluster.workers)
    worker_verbs = workers.add_subparsers(dest="verb", metavar="{list,pool,autoscale,revoke}")
    _leaf(worker_verbs, "list", cluster.workers, "every worker from the stored snapshot")
    pool = _leaf(worker_verbs, "pool", fleet.pool, "grow or shrink a worker's pool", change=True)
    pool.add_argument("hostname", metavar="HOSTNAME")
    pool.add_argument("change", choices=("grow", "shrink"))
    pool.add_argument("n", nargs="?", type=bounded_int(1, 100), default=1, metavar="N")
    scale = _leaf(worker_verbs, "autoscale", fleet.autoscale, "set autoscale", change=True)
    scale.add_argument("hostname", metavar="HOSTNAME")
    scale.add_argument("--max", type=bounded_int(1, 10_000), required=True)
    scale.add_argument("--min", type=bounded_int(0, 10_000), required=True)
    revoke = _leaf(worker_verbs, "revoke", fleet.revoke, "revoke a task", change=True)
    revoke.add_argument("task_id", metavar="TASK_ID")
    revoke.add_argument("--terminate", action="store_true", help="also kill it if it runs")

    periodic = commands.add_parser("periodic", help="beat's entries; run one now")
    _common(periodic)
    periodic.set_defaults(handler=fleet.periodic)
    periodic_verbs = periodic.add_subparsers(dest="verb", metavar="{list,run}")
    _leaf(periodic_verbs, "list", fleet.periodic, "every entry, late or sent twice")
    run = _leaf(periodic_verbs, "run", fleet.periodic_run, "send its task now", change=True)
    run.add_argument("name", metavar="NAME")

    audit = _leaf(commands, "audit", fleet.audit, "the audit log, newest first")
    audit.add_argument("--who", help="events of this username")
    audit.add_argument("--action", help="actions starting with this, e.g. requeue or bulk_")
    audit.add_argument("--since", help="at or after this time (ISO 8601)")
    audit.add_argument("--target", help="events naming this id (a dead letter, a queue)")
    audit.add_argument("--limit", type=bounded_int(1, deadletters.MAX_LIMIT), help="rows (50)")

    task = _leaf(commands, "task", tasks.task, "where is task X? everything known about an id")
    task.add_argument(
        "task_id", metavar="TASK_ID", help="a task id, or 8 or more of its first characters"
    )

    state = commands.add_parser("state", help="the overview's state and why")
    _common(state)
    state.set_defaults(handler=cluster.state)
