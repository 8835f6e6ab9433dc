"""The fleet configuration checks: what each worker's settings say about the
mistakes every Celery playbook warns about (docs/hygiene.md).

The hook reports the settings (``deadletters.hook._config_report``), the
sampler stores them cleaned (``clean_config``) in ``WorkerSnapshot.config``,
and ``worker_checks`` reads them, with the tasks that ran long on the worker
and the operators' silences, into one ``Check`` per rule. Pure: no query here
(``selectors.fleet_checks`` does the reads), and no input makes it raise, since
a worker's report is untrusted.

``RULES`` is the one table of the checks: their keys (the metric's ``check``
label), titles and fixes. docs/hygiene.md describes the same rows, and a test
keeps the two in step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dashboard.models import CheckSilence, WorkerSnapshot
from dashboard.templatetags.ops import duration

# A run longer than the runtime histogram's last finite bound (10 s) counts as
# long; so does a task whose own time limit allows more than a minute.
LONG_RUNTIME_SECONDS = 10.0
LONG_LIMIT_SECONDS = 60.0
# Tasks named in a reason before it says "and N more".
NAMED = 3
PICKLE = frozenset({"pickle", "application/x-python-serialize"})
NOT_REPORTED = "not reported: the worker does not import deadletters.hook (or an older one)"
SETTING_NOT_REPORTED = "not reported by this worker's hook"

Config = Mapping[str, Any]
# A rule's finding: flagged (None: the settings it reads were not reported), and why.
Finding = tuple[bool | None, str]


@dataclass(frozen=True)
class Check:
    """One rule, as it stands on one worker."""

    key: str
    title: str
    flagged: bool
    reason: str
    fix: str
    # The problem in a few words, for the workers list and the overview.
    flagged_as: str
    silenced_by: CheckSilence | None = None
    unknown: bool = False

    @property
    def state(self) -> str:
        """passed, flagged, silenced (flagged, and an operator said why not to
        care) or unknown (not reported)."""
        if self.unknown:
            return "unknown"
        if self.flagged:
            return "silenced" if self.silenced_by is not None else "flagged"
        return "passed"

    @property
    def open(self) -> bool:
        """Flagged and not silenced: what the overview and the metric count."""
        return self.state == "flagged"


# --- reading the report --------------------------------------------------------------


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED])
    return f"{shown} and {len(names) - NAMED} more" if len(names) > NAMED else shown


def _tasks(config: Config) -> list[dict[str, Any]]:
    return list(config.get("tasks") or [])


def _late(task: Mapping[str, Any], config: Config) -> bool:
    own = task.get("acks_late")
    return bool(config.get("task_acks_late")) if own is None else bool(own)


def _declared_long(task: Mapping[str, Any], config: Config) -> bool:
    """The task's own time limit (not the app-wide default) allows over a minute."""
    for own, default in (
        (task.get("time_limit"), config.get("task_time_limit")),
        (task.get("soft_time_limit"), config.get("task_soft_time_limit")),
    ):
        if own is not None and own != default and own > LONG_LIMIT_SECONDS:
            return True
    return False


# --- the rules ---------------------------------------------------------------------


def _acks_late(config: Config, long_tasks: Collection[str]) -> Finding:
    if "task_acks_late" not in config:
        return None, SETTING_NOT_REPORTED
    tasks = _tasks(config)
    early = [t["name"] for t in tasks if not _late(t, config)]
    if not config["task_acks_late"] and (early or not tasks):
        return True, "task_acks_late is off: a worker that crashes mid-task loses the task"
    if early:
        return True, (
            f"acks_late is off on {len(early)} task{'s' if len(early) != 1 else ''}"
            f" ({_names(early)}): a worker that crashes mid-task loses the task"
        )
    return False, "acks_late is on: a task is acknowledged after it ran, so a crash redelivers it"


def _reject_on_worker_lost(config: Config, long_tasks: Collection[str]) -> Finding:
    if "task_acks_late" not in config or "task_reject_on_worker_lost" not in config:
        return None, SETTING_NOT_REPORTED
    tasks = _tasks(config) or [{"name": "(every task)"}]
    late = [t for t in tasks if _late(t, config)]
    if not late:
        return False, "no task acknowledges late (see task_acks_late): nothing to redeliver"

    def rejects(task: Mapping[str, Any]) -> bool:
        own = task.get("reject_on_worker_lost")
        return bool(config.get("task_reject_on_worker_lost") if own is None else own)

    lost = [t["name"] for t in late if not rejects(t)]
    if lost:
        which = "" if len(lost) == len(late) else f" on {_names(lost)}"
        return True, (
            f"task_reject_on_worker_lost is off{which} while acks_late is on: a task whose"
            " worker process dies (killed, out of memory) is acknowledged as failed, not"
            " redelivered"
        )
    return False, "task_reject_on_worker_lost is on: a task whose process dies is redelivered"


def _time_limits(config: Config, long_tasks: Collection[str]) -> Finding:
    tasks = _tasks(config)
    if not tasks:
        # No task listed: the app's defaults are what every task would get.
        if "task_time_limit" not in config or "task_soft_time_limit" not in config:
            return None, SETTING_NOT_REPORTED
        tasks = [
            {
                "name": "(every task)",
                "time_limit": config.get("task_time_limit"),
                "soft_time_limit": config.get("task_soft_time_limit"),
            }
        ]
    unlimited = [
        t["name"] for t in tasks if t.get("time_limit") is None and t.get("soft_time_limit") is None
    ]
    if unlimited:
        return True, (
            f"{len(unlimited)} task{'s' if len(unlimited) != 1 else ''} run without time_limit"
            f" or soft_time_limit ({_names(unlimited)}): a task that hangs holds its worker"
            " process forever"
        )
    return False, "every task has a time limit"


def _prefetch_long_tasks(config: Config, long_tasks: Collection[str]) -> Finding:
    multiplier = config.get("worker_prefetch_multiplier")
    if multiplier is None:
        return None, SETTING_NOT_REPORTED
    if multiplier == 1:
        return False, "worker_prefetch_multiplier is 1: a process reserves one task at a time"
    declared = {t["name"] for t in _tasks(config) if _declared_long(t, config)}
    long = sorted(set(long_tasks) | declared)
    said = "0 (no limit)" if multiplier == 0 else str(multiplier)
    if not long:
        return False, (
            f"worker_prefetch_multiplier is {said}, and no task ran longer than"
            f" {LONG_RUNTIME_SECONDS:g} s here or is allowed more than {LONG_LIMIT_SECONDS:g} s"
        )
    each = "every message it can" if multiplier == 0 else f"{multiplier} messages"
    return True, (
        f"worker_prefetch_multiplier is {said} and long tasks run here ({_names(long)}):"
        f" each process reserves {each}, which wait behind a long task while other workers idle"
    )


def _pickle(config: Config, long_tasks: Collection[str]) -> Finding:
    accepted = config.get("accept_content")
    if accepted is None:
        return None, SETTING_NOT_REPORTED
    if any(content.lower() in PICKLE for content in accepted):
        return True, (
            "accept_content includes pickle: whoever can publish to the broker can run code"
            " on this worker"
        )
    return False, f"accept_content is {', '.join(accepted) or 'empty'}: no pickle"


def _default_queue_only(config: Config, long_tasks: Collection[str]) -> Finding:
    default = config.get("task_default_queue")
    if "tasks" not in config or default is None:
        return None, SETTING_NOT_REPORTED
    tasks = _tasks(config)
    if len(tasks) < 2:
        return False, "fewer than two tasks: nothing to split"
    queues = sorted({t.get("queue") or default for t in tasks})
    if queues == [default]:
        return True, (
            f"every task ({len(tasks)}) goes to the default queue {default!r}: a slow task"
            " blocks the fast ones behind it"
        )
    return False, f"tasks go to {len(queues)} queues: {_names(queues)}"


def _result_expires(config: Config, long_tasks: Collection[str]) -> Finding:
    if "result_backend" not in config or "result_expires" not in config:
        return None, SETTING_NOT_REPORTED
    if not config["result_backend"]:
        return False, "no result backend: nothing is kept"
    expires = config["result_expires"]
    if expires is None or expires <= 0:
        return True, (
            "result_expires is off with a result backend: results are never deleted, and the"
            " backend grows until it is full"
        )
    return False, f"results expire after {duration(expires)}"


def _connection_retry_on_startup(config: Config, long_tasks: Collection[str]) -> Finding:
    if "broker_connection_retry_on_startup" not in config:
        return None, SETTING_NOT_REPORTED
    retry = config["broker_connection_retry_on_startup"]
    # Unset, Celery 5 falls back to broker_connection_retry (on by default).
    fallback = retry is None
    if fallback:
        retry = config.get("broker_connection_retry", True) is not False
    if not retry:
        setting = "broker_connection_retry" if fallback else "broker_connection_retry_on_startup"
        return True, (
            f"{setting} is off: a worker started while the broker is unreachable exits"
            " instead of waiting for it"
        )
    if fallback:
        return False, "unset: Celery retries on startup because broker_connection_retry is on"
    return False, "broker_connection_retry_on_startup is on"


def _visibility_timeout(config: Config, long_tasks: Collection[str]) -> Finding:
    transport = config.get("broker_transport")
    if transport is None:
        return None, SETTING_NOT_REPORTED
    if transport != "redis":
        return False, f"the broker is {transport or 'unknown'}: no visibility timeout to outlast"
    timeout, longest = config.get("visibility_timeout"), config.get("longest_eta_seconds")
    if timeout is None:
        return None, SETTING_NOT_REPORTED
    if longest is None:
        return False, "no task with an eta or countdown received since the worker started"
    if longest > timeout:
        return True, (
            f"the Redis visibility timeout is {duration(timeout)} but a task waited"
            f" {duration(longest)} for its eta/countdown: Redis hands it to another worker"
            f" after {duration(timeout)}, and it runs twice"
        )
    return False, (
        f"the longest eta/countdown seen ({duration(longest)}) is within the Redis visibility"
        f" timeout ({duration(timeout)})"
    )


@dataclass(frozen=True)
class Rule:
    key: str
    title: str
    flagged_as: str
    fix: str
    finding: Callable[[Config, Collection[str]], Finding]


RULES: tuple[Rule, ...] = (
    Rule(
        "acks_late", "Acknowledged after the task ran", "task_acks_late off",
        "set task_acks_late=True and task_reject_on_worker_lost=True (and make tasks idempotent:"
        " one may run twice)",
        _acks_late,
    ),
    Rule(
        "reject_on_worker_lost", "Redelivered when its process dies",
        "task_reject_on_worker_lost off with acks_late on",
        "set task_reject_on_worker_lost=True",
        _reject_on_worker_lost,
    ),
    Rule(
        "time_limits", "Time limits", "tasks without a time limit",
        "set task_time_limit and a lower task_soft_time_limit, or time_limit= and"
        " soft_time_limit= on the task",
        _time_limits,
    ),
    Rule(
        "prefetch_long_tasks", "Prefetch with long tasks", "prefetch above 1 with long tasks",
        "set worker_prefetch_multiplier=1 on workers that run long tasks, or route the long"
        " tasks to a queue and worker of their own",
        _prefetch_long_tasks,
    ),
    Rule(
        "pickle", "Serializers accepted", "pickle accepted",
        "set accept_content=['json'] and task_serializer='json', and pass ids, not objects",
        _pickle,
    ),
    Rule(
        "default_queue_only", "Queues split", "every task on the default queue",
        "route slow tasks to queues of their own with task_routes, and start a worker per"
        " queue (-Q reports)",
        _default_queue_only,
    ),
    Rule(
        "result_expires", "Results expire", "result_expires off with a result backend",
        "set result_expires (86400 keeps results a day)",
        _result_expires,
    ),
    Rule(
        "connection_retry_on_startup", "Waits for the broker at startup",
        "broker_connection_retry_on_startup off",
        "set broker_connection_retry_on_startup=True",
        _connection_retry_on_startup,
    ),
    Rule(
        "visibility_timeout", "Redis visibility timeout",
        "eta/countdown beyond the visibility timeout",
        "set broker_transport_options={'visibility_timeout': N} with N longer than the longest"
        " eta or countdown, or schedule far-off work with beat instead",
        _visibility_timeout,
    ),
)  # fmt: skip
RULE_KEYS = frozenset(rule.key for rule in RULES)


# --- one worker --------------------------------------------------------------------------


def worker_checks(
    worker: WorkerSnapshot,
    *,
    long_tasks: Collection[str] = (),
    silences: Iterable[CheckSilence] = (),
) -> list[Check]:
    """Every rule on ``worker``, in ``RULES`` order; never raises."""
    config = clean_config(worker.config)
    queues = set(queue_list(worker.queues))
    applying = [
        silence
        for silence in silences
        if (silence.scope == "worker" and silence.target == worker.hostname)
        or (silence.scope == "queue" and silence.target in queues)
    ]
    # A silence for the worker before one for a queue, then by queue name.
    applying.sort(key=lambda silence: (silence.scope != "worker", silence.target))
    checks = []
    for rule in RULES:
        if config:
            flagged, reason = rule.finding(config, long_tasks)
        else:
            flagged, reason = None, NOT_REPORTED
        silence = next((s for s in applying if s.check_name == rule.key), None)
        checks.append(
            Check(
                key=rule.key,
                title=rule.title,
                flagged=bool(flagged),
                reason=reason,
                fix=rule.fix,
                flagged_as=rule.flagged_as,
                silenced_by=silence,
                unknown=flagged is None,
            )
        )
    return checks


def queue_list(value: Any) -> list[str]:
    """A worker's stored queue names (a list of strings, whatever was stored)."""
    return [q for q in value if isinstance(q, str)] if isinstance(value, list) else []


# --- cleaning what a worker reported --------------------------------------------------------

MAX_TASKS = 500
MAX_ACCEPT = 20
_BOOLS = ("task_acks_late", "result_backend")
# None is a value of its own here: unset, Celery decides.
_OPTIONAL_BOOLS = (
    "task_reject_on_worker_lost",
    "broker_connection_retry_on_startup",
    "broker_connection_retry",
)
_OPTIONAL_SECONDS = (
    "task_time_limit",
    "task_soft_time_limit",
    "result_expires",
    "visibility_timeout",
    "longest_eta_seconds",
)
_TEXTS = {"broker_transport": 32, "task_default_queue": 255}
_MISSING = object()


def _number(value: Any) -> float | object | None:
    """Seconds as a float, None for None, ``_MISSING`` for anything else."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value) if abs(value) < 1e15 else math.inf
        return number if math.isfinite(number) else _MISSING
    return _MISSING


def _count(value: Any) -> int | None:
    """A whole number from 0 to 2**31 - 1, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    # NUL: PostgreSQL refuses it in text, even inside JSON.
    return value.replace("\x00", "")[:limit]


def _task(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    name = _text(value.get("name"), 255)
    if not name:
        return None
    task: dict[str, Any] = {"name": name, "queue": _text(value.get("queue"), 255)}
    for key in ("acks_late", "reject_on_worker_lost"):
        flag = value.get(key)
        task[key] = flag if isinstance(flag, bool) else None
    for key in ("time_limit", "soft_time_limit"):
        number = _number(value.get(key))
        task[key] = None if number is _MISSING else number
    return task


def clean_config(raw: Any) -> dict[str, Any]:
    """The settings a worker reported, as the checks read them: known keys of the
    right types only (a key of another type is left out, and its check says
    "not reported"), bounded, JSON. Anything but a dict is ``{}``."""
    if not isinstance(raw, dict):
        return {}
    config: dict[str, Any] = {}
    for key in _BOOLS:
        if isinstance(raw.get(key), bool):
            config[key] = raw[key]
    for key in _OPTIONAL_BOOLS:
        if key in raw and (raw[key] is None or isinstance(raw[key], bool)):
            config[key] = raw[key]
    for key in _OPTIONAL_SECONDS:
        if key in raw and (number := _number(raw[key])) is not _MISSING:
            config[key] = number
    for key, limit in _TEXTS.items():
        if (text := _text(raw.get(key), limit)) is not None:
            config[key] = text
    if (multiplier := _count(raw.get("worker_prefetch_multiplier"))) is not None:
        config["worker_prefetch_multiplier"] = multiplier
    accepted = raw.get("accept_content")
    if isinstance(accepted, list):
        texts = [_text(content, 100) for content in accepted[:MAX_ACCEPT]]
        config["accept_content"] = [text for text in texts if text is not None]
    tasks = raw.get("tasks")
    if isinstance(tasks, list):
        cleaned = [_task(task) for task in tasks[:MAX_TASKS]]
        config["tasks"] = [task for task in cleaned if task is not None]
    if config:
        config["v"] = _count(raw.get("v")) or 0
        if (total := _count(raw.get("tasks_total"))) is not None:
            config["tasks_total"] = total
    return config
