"""Dead-letter capture for a team's Celery app.

Enable it with one import in the module that creates the Celery app:

    import deadletters.hook  # noqa: F401

(``imports=("deadletters.hook",)`` alone loads it in workers only, so producers
would publish without the ``x_sent_at`` stamp.)

It imports only celery, kombu and the standard library, so workers need no
Django. It stamps every published task with ``x_sent_at`` and ``x_queue``, and
publishes a versioned JSON envelope to the ``deadletters`` queue for every task
that failed for good (``task_failure``), every message of an unregistered task
(``task_unknown``) and every message the worker rejected (``task_rejected``).

It never raises into Celery. A dead letter that cannot be published is logged
whole, as one JSON line at ERROR, so that it can still be recovered from logs.

In a worker it also answers the dashboard monitor's ``ops_snapshot`` inspect
command (stats, queues, tasks and the settings that the fleet checks read, in
one reply) and counts the tasks it received per queue, from which the monitor
derives consumption rates.

In every process that runs or sends tasks it counts their outcomes (sent,
received, started, succeeded, failed, retried, rejected, revoked, runtime and
queue wait) and reports what it counted as one message per process and
interval to the ``ops.outcomes`` queue (docs/outcomes.md).

Settings (the Celery app's config first, then the environment):
``deadletters_queue`` / ``DEADLETTERS_QUEUE`` (default ``deadletters``);
``ops_outcomes`` / ``OPS_OUTCOMES`` (default on); ``ops_outcomes_interval`` /
``OPS_OUTCOMES_INTERVAL`` (seconds, default 10); ``ops_outcomes_queue`` /
``OPS_OUTCOMES_QUEUE`` (default ``ops.outcomes``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import logging
import os
import queue as queue_module
import threading
import time
import traceback as traceback_module
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from celery import Task, current_app, signals
from celery.app.task import Context
from celery.exceptions import Reject, TimeLimitExceeded, WorkerLostError
from kombu import Connection, Exchange, Producer, Queue

__all__ = [
    "BUCKETS",
    "ENVELOPE_VERSION",
    "KINDS",
    "OUTCOMES_VERSION",
    "OUTCOME_EVENTS",
    "dead_letter_queue_name",
    "flush_outcomes",
    "outcomes_queue_name",
    "send_dead_letter",
]

ENVELOPE_VERSION = 1
KINDS = ("exception", "time_limit", "worker_lost", "unknown_task", "rejected")

logger = logging.getLogger("deadletters.hook")

# How long a publish may keep trying before the envelope goes to the log.
PUBLISH_TIMEOUT_SECONDS = 5.0
# Envelopes waiting for the background publisher of the worker's main process.
MAX_PENDING = 10_000


def dead_letter_queue_name(app: Any = None) -> str:
    app = app or current_app
    configured = app.conf.get("deadletters_queue")
    return str(configured or os.environ.get("DEADLETTERS_QUEUE") or "deadletters")


def outcomes_queue_name(app: Any = None) -> str:
    app = app or current_app
    configured = app.conf.get("ops_outcomes_queue")
    return str(configured or os.environ.get("OPS_OUTCOMES_QUEUE") or "ops.outcomes")


# --- publish stamps -----------------------------------------------------------


@signals.before_task_publish.connect(weak=False, dispatch_uid="deadletters.hook.stamp")
def _stamp_published_task(
    sender: str | None = None,
    headers: dict[str, Any] | None = None,
    routing_key: str | None = None,
    declare: list[Any] | None = None,
    **_: Any,
) -> None:
    try:
        if headers is None:
            return
        # Assign, never setdefault: a retry republishes the request's headers,
        # and its age in the queue starts now, not at the first publish.
        headers["x_sent_at"] = time.time()
        queue_name = None
        for entity in declare or ():
            if isinstance(entity, Queue):
                queue_name = entity.name
                break
        headers["x_queue"] = queue_name or routing_key or ""
    except Exception:
        logger.exception("deadletters: could not stamp task %r", sender)


# --- the requests of the worker's main process ----------------------------------

# In the main process (worker lost, hard time limit) ``sender.request`` may be
# empty; the live Request object is found here by task id. Weak values: an entry
# lives exactly as long as Celery keeps its Request.
_live_requests: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


@signals.task_received.connect(weak=False, dispatch_uid="deadletters.hook.received")
def _remember_request(request: Any = None, **_: Any) -> None:
    try:
        if request is not None and getattr(request, "id", None):
            _live_requests[request.id] = request
    except Exception:
        logger.exception("deadletters: could not track a received request")


def _request_context(task: Task, task_id: str) -> Context | None:
    try:
        ctx = task.request
        if ctx is not None and ctx.id == task_id:
            return ctx
    except Exception:  # noqa: S110 - fall through to the main process's requests
        pass
    request = _live_requests.get(task_id)
    if request is not None:
        try:
            return Context(request.request_dict)
        except Exception:
            logger.exception("deadletters: could not read the request of %s", task_id)
    return None


# --- building envelopes ----------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_safe(value: Any) -> tuple[Any, bool]:
    """Return ``(value, lossy)``: the value itself when it is JSON, else reprs."""
    try:
        json.dumps(value)
        return value, False
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=repr)), True


def _exception_type(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    # Celery wraps exceptions it cannot pickle; keep the original class name.
    wrapped = getattr(exc, "exc_cls_name", None)
    if wrapped:
        module = getattr(exc, "exc_module", "") or ""
        return wrapped if module in ("", "builtins") else f"{module}.{wrapped}"
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _exception_message(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    wrapped = getattr(exc, "exc_msg", None)
    if wrapped is not None:
        return str(wrapped)
    try:
        return str(exc)
    except Exception:
        return repr(exc)


def _format_traceback(einfo: Any, tb: TracebackType | None, exc: BaseException | None) -> str:
    text = getattr(einfo, "traceback", None)
    if text:
        return str(text)
    if exc is not None and tb is not None:
        return "".join(traceback_module.format_exception(type(exc), exc, tb))
    return ""


def _failure_kind(exc: BaseException | None) -> str:
    if isinstance(exc, TimeLimitExceeded):
        return "time_limit"
    if isinstance(exc, WorkerLostError):
        return "worker_lost"
    if isinstance(exc, Reject):
        return "rejected"
    return "exception"


def _iso(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _custom_headers(ctx: Context) -> dict[str, Any]:
    headers = ctx.headers if isinstance(ctx.headers, Mapping) else {}
    safe, _ = _json_safe(dict(headers))
    return dict(safe)


def _envelope(
    *,
    task_id: str,
    task_name: str,
    args: Any,
    kwargs: Any,
    ctx: Context | None,
    kind: str,
    exc: BaseException | None,
    traceback: str,
    hostname: str | None = None,
) -> dict[str, Any]:
    safe_args, lossy_args = _json_safe(list(args or ()))
    safe_kwargs, lossy_kwargs = _json_safe(dict(kwargs or {}))
    delivery: Mapping[str, Any] = {}
    headers: dict[str, Any] = {}
    if ctx is not None:
        delivery = ctx.delivery_info or {}
        headers = _custom_headers(ctx)
    properties = (ctx.properties if ctx is not None else None) or {}
    priority = delivery.get("priority", properties.get("priority"))
    queue_name = headers.get("x_queue") or delivery.get("routing_key") or ""
    return {
        "v": ENVELOPE_VERSION,
        "id": task_id,
        "task": task_name,
        "args": safe_args,
        "kwargs": safe_kwargs,
        "lossy": lossy_args or lossy_kwargs,
        "queue": queue_name,
        "exchange": delivery.get("exchange") or "",
        "routing_key": delivery.get("routing_key") or "",
        "priority": priority,
        "retries": int(getattr(ctx, "retries", 0) or 0),
        "root_id": getattr(ctx, "root_id", None),
        "parent_id": getattr(ctx, "parent_id", None),
        "group_id": getattr(ctx, "group", None),
        "eta": _iso(getattr(ctx, "eta", None)),
        "expires": _iso(getattr(ctx, "expires", None)),
        "headers": headers,
        "hostname": hostname or getattr(ctx, "hostname", None) or "",
        "kind": kind,
        "exception_type": _exception_type(exc),
        "exception_message": _exception_message(exc),
        "traceback": traceback,
        "failed_at": _now_iso(),
        "requeued_from": headers.get("x_requeued_from"),
    }


def _message_envelope(
    message: Any,
    *,
    kind: str,
    exc: BaseException | None,
    name: str | None,
    task_id: str | None,
    hostname: str | None,
) -> dict[str, Any]:
    """An envelope for a raw message that never became a task request."""
    msg_headers = dict(getattr(message, "headers", None) or {})
    delivery = dict(getattr(message, "delivery_info", None) or {})
    properties = dict(getattr(message, "properties", None) or {})
    content_type = getattr(message, "content_type", None) or ""
    content_encoding = getattr(message, "content_encoding", None) or "utf-8"
    body = getattr(message, "body", b"")
    raw = body if isinstance(body, bytes) else str(body).encode("utf-8", "replace")

    args: Any = []
    kwargs: Any = {}
    decoded = False
    # Only JSON is ever decoded here: a pickle body stays bytes.
    if content_type == "application/json":
        try:
            payload = json.loads(raw.decode(content_encoding))
            if isinstance(payload, list) and len(payload) >= 2:
                args, kwargs = payload[0], payload[1]
                decoded = True
            elif isinstance(payload, dict):  # protocol 1
                args, kwargs = payload.get("args", []), payload.get("kwargs", {})
                decoded = True
        except (ValueError, LookupError):
            decoded = False

    ctx = Context({**msg_headers, "delivery_info": delivery, "properties": properties})
    envelope = _envelope(
        task_id=str(task_id or msg_headers.get("id") or properties.get("correlation_id") or ""),
        task_name=str(name or msg_headers.get("task") or ""),
        args=args if isinstance(args, list | tuple) else [args],
        kwargs=kwargs if isinstance(kwargs, dict) else {},
        ctx=ctx,
        kind=kind,
        exc=exc,
        traceback="",
        hostname=hostname or _worker_hostname(),
    )
    if kind == "unknown_task":
        # Celery reports a KeyError; say what it means.
        envelope["exception_type"] = "celery.exceptions.NotRegistered"
        envelope["exception_message"] = (
            f"task {envelope['task']!r} is not registered on this worker"
        )
    elif exc is None:
        envelope["exception_type"] = "UnknownMessage"
        envelope["exception_message"] = "the worker could not recognise this message"
    if not decoded:
        envelope["lossy"] = True
    envelope["content_type"] = content_type
    envelope["content_encoding"] = content_encoding
    envelope["body_b64"] = base64.b64encode(raw).decode("ascii")
    return envelope


_nodename = ""


@signals.celeryd_after_setup.connect(weak=False, dispatch_uid="deadletters.hook.nodename")
def _remember_nodename(sender: str | None = None, **_: Any) -> None:
    global _nodename
    _nodename = str(sender or "")


def _worker_hostname() -> str:
    """The worker's node name (``name@host``); pool children inherit it."""
    return _nodename


# --- publishing ---------------------------------------------------------------------


class _Publisher:
    """One broker connection per process (a fork gets a new publisher)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def _connect(self, app: Any) -> Connection:
        if self._connection is None:
            options = dict(app.conf.broker_transport_options or {})
            # RabbitMQ acknowledges each publish, so "published" means "stored".
            options.setdefault("confirm_publish", True)
            self._connection = Connection(
                app.conf.broker_write_url or app.conf.broker_url,
                transport_options=options,
                connect_timeout=PUBLISH_TIMEOUT_SECONDS,
                heartbeat=0,
            )
        return self._connection

    def publish(self, app: Any, envelope: dict[str, Any], *, report: str = "") -> None:
        """Publish a dead-letter envelope to the dead-letter queue, or with
        ``report`` one of the process's outcome reports to its own queue; durably."""
        name = outcomes_queue_name(app) if report else dead_letter_queue_name(app)
        exchange = Exchange(name, type="direct", durable=True)
        target = Queue(name, exchange, routing_key=name, durable=True)
        with self._lock:
            connection = self._connect(app)
            try:
                producer = Producer(connection)
                producer.publish(
                    envelope,
                    exchange=exchange,
                    routing_key=name,
                    declare=[target],
                    serializer="json",
                    delivery_mode=2,
                    # Stamped like a task, so that the monitor's lag is known:
                    # the age of the oldest envelope still waiting to be ingested.
                    headers={
                        "x_deadletter_v": ENVELOPE_VERSION,
                        "x_sent_at": time.time(),
                        "x_queue": name,
                        **({"x_ops_report": report} if report else {}),
                    },
                    retry=True,
                    retry_policy={
                        "max_retries": 3,
                        "interval_start": 0,
                        "interval_step": 0.5,
                        "interval_max": 1.0,
                    },
                )
            except BaseException:
                # Start over with a fresh connection next time.
                self._connection = None
                with contextlib.suppress(Exception):  # it is broken already
                    connection.release()
                raise


_publisher = _Publisher()
_pending: queue_module.Queue[tuple[Any, dict[str, Any]]] = queue_module.Queue(MAX_PENDING)
_background: threading.Thread | None = None
_background_lock = threading.Lock()
_in_pool_child = False


def _log_unpublished(envelope: dict[str, Any], error: BaseException | str) -> None:
    logger.error(
        "%s",
        json.dumps(
            {"event": "deadletter_not_published", "error": str(error), "envelope": envelope},
            default=repr,
        ),
    )


def _publish_now(app: Any, envelope: dict[str, Any]) -> None:
    try:
        _publisher.publish(app, envelope)
    except BaseException as exc:
        _log_unpublished(envelope, exc)
        if not isinstance(exc, Exception):
            raise  # SystemExit from the pool's shutdown: logged, and let go


def _background_loop() -> None:
    while True:
        app, envelope = _pending.get()
        try:
            _publish_now(app, envelope)
        finally:
            _pending.task_done()


def _dispatch(app: Any, envelope: dict[str, Any]) -> None:
    """Publish from a pool child; hand off from the worker's main process.

    The main process runs the event loop that all pool children depend on, so it
    must not wait on a broker that is down. A pool child has finished its task
    and may wait a few seconds.
    """
    if _in_pool_child:
        _publish_now(app, envelope)
        return
    global _background
    with _background_lock:
        if _background is None or not _background.is_alive():
            _background = threading.Thread(
                target=_background_loop, name="deadletters-publisher", daemon=True
            )
            _background.start()
    try:
        _pending.put_nowait((app, envelope))
    except queue_module.Full:
        _log_unpublished(envelope, "too many dead letters waiting to be published")


def flush(timeout: float = 10.0) -> bool:
    """Wait until the envelopes handed to the background publisher are sent."""
    deadline = time.monotonic() + timeout
    while _pending.unfinished_tasks:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _reset_after_fork() -> None:
    """A forked child starts with its own publisher state.

    The parent's background thread may hold the publisher's lock at the moment
    of the fork; the child would inherit it locked, and wait on it forever. The
    parent's connection and pending envelopes are the parent's business.
    """
    global _publisher, _pending, _background, _background_lock
    _publisher = _Publisher()
    _pending = queue_module.Queue(MAX_PENDING)
    _background = None
    _background_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


@signals.worker_process_init.connect(weak=False, dispatch_uid="deadletters.hook.child")
def _mark_pool_child(**_: Any) -> None:
    global _in_pool_child
    _in_pool_child = True


@signals.worker_shutdown.connect(weak=False, dispatch_uid="deadletters.hook.shutdown")
def _flush_on_shutdown(**_: Any) -> None:
    try:
        if not flush(PUBLISH_TIMEOUT_SECONDS * 2):
            while True:
                try:
                    _, envelope = _pending.get_nowait()
                except queue_module.Empty:
                    break
                _log_unpublished(envelope, "worker shut down before it could publish")
    except Exception:
        logger.exception("deadletters: could not flush at shutdown")


# --- receivers ----------------------------------------------------------------------


@signals.task_failure.connect(weak=False, dispatch_uid="deadletters.hook.failure")
def _on_task_failure(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    traceback: TracebackType | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    try:
        if sender is None or not task_id:
            return
        ctx = _request_context(sender, task_id)
        envelope = _envelope(
            task_id=task_id,
            task_name=sender.name,
            args=args if args is not None else getattr(ctx, "args", None),
            kwargs=kwargs if kwargs is not None else getattr(ctx, "kwargs", None),
            ctx=ctx,
            kind=_failure_kind(exception),
            exc=exception,
            traceback=_format_traceback(einfo, traceback, exception),
            hostname=getattr(ctx, "hostname", None) or _worker_hostname(),
        )
        _dispatch(sender.app, envelope)
    except Exception:
        logger.exception("deadletters: could not capture the failure of %s", task_id)


@signals.task_unknown.connect(weak=False, dispatch_uid="deadletters.hook.unknown")
def _on_task_unknown(
    sender: Any = None,
    name: str | None = None,
    id: str | None = None,
    message: Any = None,
    exc: BaseException | None = None,
    **_: Any,
) -> None:
    try:
        envelope = _message_envelope(
            message,
            kind="unknown_task",
            exc=exc,
            name=name,
            task_id=id,
            hostname=getattr(sender, "hostname", None),
        )
        _dispatch(getattr(sender, "app", None) or current_app, envelope)
    except Exception:
        logger.exception("deadletters: could not capture unknown task %r", name)


@signals.task_rejected.connect(weak=False, dispatch_uid="deadletters.hook.rejected")
def _on_task_rejected(
    sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any
) -> None:
    try:
        envelope = _message_envelope(
            message,
            kind="rejected",
            exc=exc,
            name=None,
            task_id=None,
            hostname=getattr(sender, "hostname", None),
        )
        _dispatch(getattr(sender, "app", None) or current_app, envelope)
    except Exception:
        logger.exception("deadletters: could not capture a rejected message")


# --- the explicit path ------------------------------------------------------------


def send_dead_letter(task: Task, exc: BaseException | None = None) -> None:
    """Send the current request of ``task`` to the dead letters, explicitly.

    For tasks that catch their final error themselves, where no ``task_failure``
    fires::

        except MaxRetriesExceededError as exc:
            send_dead_letter(self, exc)

    Call it from inside the task (``bind=True``). It never raises.
    """
    try:
        ctx = task.request
        if exc is None:
            import sys

            exc = sys.exc_info()[1]
        tb = exc.__traceback__ if exc is not None else None
        envelope = _envelope(
            task_id=str(ctx.id or ""),
            task_name=task.name,
            args=ctx.args,
            kwargs=ctx.kwargs,
            ctx=ctx,
            kind=_failure_kind(exc),
            exc=exc,
            traceback=_format_traceback(None, tb, exc),
            hostname=ctx.hostname or _worker_hostname(),
        )
        _dispatch(task.app, envelope)
    except Exception:
        logger.exception("deadletters: send_dead_letter failed for %r", getattr(task, "name", task))


# --- what the monitor asks every worker ------------------------------------------
#
# The dashboard's monitor samples workers with one broadcast of ``ops_snapshot``
# instead of six inspect commands: a round then costs one reply time. It also
# counts the messages this worker received per queue, from which the monitor
# derives each queue's consumption rate. Both run in the worker's main thread
# (the signal in the consumer, the command in its remote-control handler).

SNAPSHOT_VERSION = 1
_received_by_queue: dict[str, int] = {}


@signals.task_received.connect(weak=False, dispatch_uid="deadletters.hook.count")
def _count_received(request: Any = None, **_: Any) -> None:
    """Per queue for the monitor's rates, and as an outcome (``_count``)."""
    try:
        if request is None:
            return
        queue = _message_queue(
            getattr(request, "request_dict", None), getattr(request, "delivery_info", None)
        )
        _received_by_queue[queue] = _received_by_queue.get(queue, 0) + 1
        _note_eta(getattr(request, "eta", None))
        _count(request.task.app if request.task else current_app, request.name, queue,
               "received")  # fmt: skip
    except Exception:
        logger.exception("deadletters: could not count a received task")


def _message_queue(headers: Any, delivery: Any) -> str:
    """The queue of a received message: the publish stamp, else its routing key."""
    queue = (headers or {}).get("x_queue") or (delivery or {}).get("routing_key")
    return str(queue or "")


def _task_info(request: Any) -> dict[str, Any]:
    # safe=True: the producer's argsrepr/kwargsrepr, never the arguments themselves.
    return dict(request.info(safe=True))


# --- the settings the fleet checks read ---------------------------------------------
#
# The answer to ``ops_snapshot`` carries the settings that the Celery playbooks
# warn about, read by the dashboard's fleet checks (dashboard/queues/checks.py,
# docs/hygiene.md). Plain JSON, and never a URL: a broker or result backend URL
# may hold a password.

CONFIG_VERSION = 1
MAX_CONFIG_TASKS = 500
# Transports built on kombu's Redis transport, where the visibility timeout applies.
REDIS_SCHEMES = frozenset({"redis", "rediss", "sentinel", "redis+socket", "socket"})
REDIS_VISIBILITY_TIMEOUT = 3600.0  # kombu's default, in seconds
# The longest wait for an eta or countdown among the tasks this worker received
# (seconds, measured when received): a wait longer than the Redis visibility
# timeout makes the broker hand the task to another worker too.
_longest_eta: float | None = None


def _note_eta(eta: Any) -> None:
    """Keep the longest wait for an eta seen so far (``_count_received``)."""
    global _longest_eta
    try:
        if not eta:
            return
        moment = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
        wait = moment.timestamp() - time.time()
        if wait > 0 and (_longest_eta is None or wait > _longest_eta):
            _longest_eta = wait
    except Exception:
        logger.debug("deadletters: unreadable eta %r", eta)


def _seconds(value: Any) -> float | None:
    """A duration setting (seconds or a timedelta) in seconds; None when unset."""
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _flag(value: Any) -> bool | None:
    """A boolean setting, None when unset (Celery then decides)."""
    return None if value is None else bool(value)


def _broker_transport(app: Any) -> str:
    """The broker's transport from its URL's scheme ("redis", "amqp"), never the URL."""
    url = app.conf.broker_url or app.conf.broker_transport or "amqp"
    if isinstance(url, list | tuple):
        url = url[0] if url else "amqp"
    first = str(url).split(";", 1)[0].strip()
    scheme = first.split("://", 1)[0].lower() if "://" in first else first.lower()
    return "redis" if scheme in REDIS_SCHEMES else scheme[:32]


def _route_queue(app: Any, task: Any, name: str) -> str:
    """The queue a task is sent to: its own ``queue`` option, else the routes,
    else the default queue (as ``apply_async`` decides)."""
    own = getattr(task, "queue", None)
    try:
        queue = app.amqp.router.route({"queue": own} if own else {}, name).get("queue")
        queue = getattr(queue, "name", queue)
        if queue:
            return str(queue)
    except Exception:
        logger.debug("deadletters: could not route %s", name, exc_info=True)
    return str(own or app.conf.task_default_queue or "")


def _task_config(app: Any, name: str) -> dict[str, Any]:
    task = app.tasks[name]
    return {
        "name": name,
        "acks_late": _flag(getattr(task, "acks_late", None)),
        "reject_on_worker_lost": _flag(getattr(task, "reject_on_worker_lost", None)),
        "time_limit": _seconds(getattr(task, "time_limit", None)),
        "soft_time_limit": _seconds(getattr(task, "soft_time_limit", None)),
        "queue": _route_queue(app, task, name),
    }


def _config_report(app: Any) -> dict[str, Any]:
    """The settings the fleet checks read, as plain JSON (no URL, no secret)."""
    conf = app.conf
    transport = _broker_transport(app)
    options = conf.broker_transport_options
    if not isinstance(options, Mapping):
        options = {}
    visibility = _seconds(options.get("visibility_timeout"))
    if visibility is None and transport == "redis":
        visibility = REDIS_VISIBILITY_TIMEOUT
    names = sorted(name for name in app.tasks if not name.startswith("celery."))
    tasks = []
    for name in names[:MAX_CONFIG_TASKS]:
        try:
            tasks.append(_task_config(app, name))
        except Exception:
            logger.exception("deadletters: could not read the settings of %s", name)
    return {
        "v": CONFIG_VERSION,
        "task_acks_late": bool(conf.task_acks_late),
        "task_reject_on_worker_lost": _flag(conf.task_reject_on_worker_lost),
        "task_time_limit": _seconds(conf.task_time_limit),
        "task_soft_time_limit": _seconds(conf.task_soft_time_limit),
        "worker_prefetch_multiplier": int(conf.worker_prefetch_multiplier),
        "accept_content": [str(content) for content in conf.accept_content or ()],
        # Whether there is one, never its URL.
        "result_backend": bool(conf.result_backend),
        "result_expires": _seconds(conf.result_expires),
        "broker_connection_retry_on_startup": _flag(conf.broker_connection_retry_on_startup),
        "broker_connection_retry": _flag(conf.broker_connection_retry),
        "broker_transport": transport,
        "visibility_timeout": visibility,
        "task_default_queue": str(conf.task_default_queue or ""),
        "tasks": tasks,
        "tasks_total": len(names),
        "longest_eta_seconds": _longest_eta,
    }


def _snapshot(state: Any, max_tasks: int) -> dict[str, Any]:
    import platform

    import celery
    from celery.utils.sysinfo import load_average
    from celery.worker import control as celery_control
    from celery.worker import state as worker_state

    # The typing stubs do not list the command functions, which are plain functions.
    control: Any = celery_control

    report: dict[str, Any] = {"v": SNAPSHOT_VERSION, "errors": {}}

    def part(name: str, read: Any) -> None:
        try:
            report[name] = read()
        except Exception as exc:
            report["errors"][name] = repr(exc)

    part("stats", lambda: control.stats(state))
    part("active_queues", lambda: control.active_queues(state))
    part("registered", lambda: sorted(n for n in state.app.tasks if not n.startswith("celery.")))
    part("loadavg", lambda: list(load_average() or ()))
    part("config", lambda: _config_report(state.app))
    active = list(state.tset(worker_state.active_requests))
    active_ids = {request.id for request in active}
    reserved = [
        request
        for request in state.tset(worker_state.reserved_requests)
        if request.id not in active_ids
    ]
    report["active_count"] = len(active)
    report["active"] = [_task_info(request) for request in active[:max_tasks]]
    report["reserved_count"] = len(reserved)
    report["reserved"] = [_task_info(request) for request in reserved[:max_tasks]]

    def scheduled() -> list[dict[str, Any]]:
        entries = []
        for waiting in list(state.consumer.timer.schedule.queue):
            args = getattr(waiting.entry, "args", None) or ()
            request = args[0] if args else None
            if request is not None and hasattr(request, "info"):
                eta = getattr(request, "eta", None)
                entries.append(
                    {
                        "eta": eta.isoformat() if isinstance(eta, datetime) else eta,
                        "priority": waiting.priority,
                        "request": _task_info(request),
                    }
                )
        return entries

    part("scheduled", scheduled)
    all_scheduled = report.get("scheduled") or []
    report["scheduled_count"] = len(all_scheduled)
    report["scheduled"] = all_scheduled[:max_tasks]
    report["received"] = dict(_received_by_queue)
    report["sw_ver"] = celery.__version__
    report["sw_sys"] = platform.system()
    return report


def _register_snapshot_command() -> None:
    try:
        from celery.worker.control import inspect_command

        @inspect_command(name="ops_snapshot")
        def ops_snapshot(state: Any, max_tasks: int = 100, **_: Any) -> dict[str, Any]:
            """The dashboard's worker round: stats, queues and tasks in one reply."""
            return _snapshot(state, int(max_tasks))

    except Exception:
        logger.exception("deadletters: could not register the ops_snapshot command")


_register_snapshot_command()


# --- task outcomes ----------------------------------------------------------------
#
# Every process that runs or sends tasks counts them here, per minute, task name
# and queue: sent (producers), received, started, succeeded, failed (by
# exception type), retried, rejected, revoked, and histograms of the runtime
# and of the wait in the queue. What it counted since its last report goes to
# the dead-letter queue, which the monitor drains anyway, as one small message
# every ``ops_outcomes_interval`` seconds: a message per process and interval,
# never one per task. The monitor adds the deltas up, so a restarted worker
# resets nothing. See docs/outcomes.md.

OUTCOMES_VERSION = 1
OUTCOME_EVENTS = (
    "sent", "received", "started", "succeeded", "failed", "retried", "rejected", "revoked",
)  # fmt: skip
# Upper bounds in seconds of the runtime and queue-wait histograms (and +Inf):
# celery-exporter's, so that celery-mixin's quantiles read the same.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DEFAULT_OUTCOMES_INTERVAL = 10.0
# Requeued tasks whose outcome is reported, per report at most; and keys
# counted per report at most (a runaway of task names must not grow a report
# without bound: the excess is counted as dropped and said in the report).
MAX_REQUEUES = 1_000
MAX_KEYS = 20_000


def _outcomes_interval(app: Any) -> float:
    configured = app.conf.get("ops_outcomes_interval") or os.environ.get("OPS_OUTCOMES_INTERVAL")
    try:
        return max(0.1, float(configured or DEFAULT_OUTCOMES_INTERVAL))
    except (TypeError, ValueError):
        return DEFAULT_OUTCOMES_INTERVAL


def _bucket(seconds: float) -> int:
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS)


class _Tally:
    """What this process counted since its last report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # One id per process life: the monitor applies each report of it once.
        self.process = f"{os.getpid()}-{os.urandom(6).hex()}"
        self.seq = 0
        self.counts: dict[tuple[int, str, str, str, str], int] = {}
        # (minute, task, queue, "runtime" | "wait") -> [count per bucket..., sum]
        self.histograms: dict[tuple[int, str, str, str], list[float]] = {}
        self.requeues: list[dict[str, Any]] = []
        self.dropped = 0
        self.app: Any = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    def count(self, task: str, queue: str, event: str, exception: str = "") -> None:
        key = (int(time.time() // 60), task, queue, event, exception)
        with self.lock:
            if key in self.counts:
                self.counts[key] += 1
            elif len(self.counts) < MAX_KEYS:
                self.counts[key] = 1
            else:
                self.dropped += 1

    def observe(self, task: str, queue: str, kind: str, seconds: float) -> None:
        key = (int(time.time() // 60), task, queue, kind)
        seconds = max(0.0, seconds)
        with self.lock:
            histogram = self.histograms.get(key)
            if histogram is None:
                if len(self.histograms) >= MAX_KEYS:
                    self.dropped += 1
                    return
                histogram = self.histograms[key] = [0] * (len(BUCKETS) + 1) + [0.0]
            histogram[_bucket(seconds)] += 1
            histogram[-1] += seconds

    def requeued(self, outcome: dict[str, Any]) -> None:
        with self.lock:
            if len(self.requeues) < MAX_REQUEUES:
                self.requeues.append(outcome)
            else:
                self.dropped += 1

    def take(self) -> dict[str, Any] | None:
        """The report of what was counted since the last one (None if nothing was)."""
        with self.lock:
            if not (self.counts or self.histograms or self.requeues or self.dropped):
                return None
            counts, self.counts = self.counts, {}
            histograms, self.histograms = self.histograms, {}
            requeues, self.requeues = self.requeues, []
            dropped, self.dropped = self.dropped, 0
            self.seq += 1
            seq = self.seq
        return {
            "type": "outcomes",
            "v": OUTCOMES_VERSION,
            "process": self.process,
            "seq": seq,
            "hostname": _worker_hostname() or f"producer@{_host()}",
            "pid": os.getpid(),
            "sent_at": time.time(),
            "buckets": list(BUCKETS),
            "counts": [[*key, n] for key, n in counts.items()],
            "histograms": [[*key, h[:-1], h[-1]] for key, h in histograms.items()],
            "requeues": requeues,
            "dropped": dropped,
        }

    def give_back(self, report: dict[str, Any]) -> None:
        """A report the broker did not take: counted again into the next one."""
        with self.lock:
            for *key, n in report["counts"]:
                self.counts[tuple(key)] = self.counts.get(tuple(key), 0) + n
            for *key, buckets, total in report["histograms"]:
                mine = self.histograms.setdefault(tuple(key), [0] * (len(BUCKETS) + 1) + [0.0])
                for index, n in enumerate(buckets):
                    mine[index] += n
                mine[-1] += total
            self.requeues = (report["requeues"] + self.requeues)[:MAX_REQUEUES]
            self.dropped += report["dropped"]

    def ensure_reporting(self, app: Any) -> None:
        """Start this process's reporter thread, once (and again after a fork)."""
        if self.thread is not None:
            return
        with self.lock:
            if self.thread is not None:
                return
            self.app = app
            self.thread = threading.Thread(
                target=self._report_loop, name="ops-outcomes", daemon=True
            )
            self.thread.start()

    def _report_loop(self) -> None:
        interval = _outcomes_interval(self.app)
        while not self.stop.wait(interval):
            self.report()

    def report(self) -> None:
        report = self.take()
        if report is None or self.app is None:
            return
        try:
            _publisher.publish(self.app, report, report="outcomes")
        except Exception as exc:
            self.give_back(report)
            if not _exiting:  # the log may be gone already
                logger.warning("deadletters: outcome report not published (%s); kept", exc)


_tally = _Tally()
_exiting = False


def _at_exit() -> None:
    """The interpreter is leaving: the reporter thread stops with it, quietly."""
    global _exiting
    _report_beat_exit()
    _exiting = True
    _tally.stop.set()


atexit.register(_at_exit)


def _host() -> str:
    import socket

    return socket.gethostname()


def _reset_tally_after_fork() -> None:
    """A forked child (a pool process) counts and reports for itself."""
    global _tally
    _tally = _Tally()


os.register_at_fork(after_in_child=_reset_tally_after_fork)


def _header(ctx: Any, name: str) -> Any:
    """A custom header of a task's request (Celery keeps them in ``headers``,
    and in some versions on the request itself)."""
    headers = getattr(ctx, "headers", None)
    if isinstance(headers, Mapping) and name in headers:
        return headers[name]
    return getattr(ctx, name, None)


def _queue_of(ctx: Any) -> str:
    queue = _header(ctx, "x_queue")
    if not queue:
        delivery = getattr(ctx, "delivery_info", None) or {}
        queue = delivery.get("routing_key") if isinstance(delivery, Mapping) else None
    return str(queue or "")


# Whether each app counts outcomes: its ``ops_outcomes``, else OPS_OUTCOMES in
# the environment (on unless "off"). The dashboard's processes say off: their
# requeues are the dashboard's business, not a team's traffic. A publish names
# no app, so what is sent is counted by the environment alone.
_counting: dict[int, bool] = {}


def _counts_outcomes(app: Any) -> bool:
    enabled = _counting.get(id(app))
    if enabled is None:
        configured = app.conf.get("ops_outcomes") if app is not None else None
        if configured is None:
            configured = os.environ.get("OPS_OUTCOMES", "on").strip().lower()
            configured = configured not in {"0", "false", "no", "off"}
        enabled = _counting[id(app)] = bool(configured)
    return enabled


def _count(app: Any, task: str, queue: str, event: str, exception: str = "") -> None:
    if not _counts_outcomes(app):
        return
    _tally.count(task, queue, event, exception)
    _tally.ensure_reporting(app if app is not None else current_app)


@signals.before_task_publish.connect(weak=False, dispatch_uid="deadletters.hook.sent")
def _count_sent(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    try:
        if sender and headers is not None:
            _count(None, str(sender), str(headers.get("x_queue") or ""), "sent")
    except Exception:
        logger.exception("deadletters: could not count a sent task")


# Start of each task running in this process, by task id and thread (a retry
# with no countdown may start on another thread before this run has ended):
# (perf_counter, queue).
_running: dict[tuple[str, int], tuple[float, str]] = {}


@signals.task_prerun.connect(weak=False, dispatch_uid="deadletters.hook.prerun")
def _on_prerun(sender: Task | None = None, task_id: str | None = None, **_: Any) -> None:
    try:
        if sender is None or not task_id:
            return
        if not _counts_outcomes(sender.app):
            return
        ctx = sender.request
        queue = _queue_of(ctx)
        _running[(task_id, threading.get_ident())] = (time.perf_counter(), queue)
        _count(sender.app, sender.name, queue, "started")
        sent_at = _header(ctx, "x_sent_at")
        if isinstance(sent_at, int | float):
            # Waiting for its eta or countdown is no queue wait.
            eta = getattr(ctx, "eta", None)
            ready_at = float(sent_at)
            if eta:
                with contextlib.suppress(ValueError, TypeError):
                    moment = eta if isinstance(eta, datetime) else datetime.fromisoformat(eta)
                    ready_at = max(ready_at, moment.timestamp())
            _tally.observe(sender.name, queue, "wait", time.time() - ready_at)
    except Exception:
        logger.exception("deadletters: could not count a started task")


def _finished(sender: Task, task_id: str, event: str, exception: str = "") -> None:
    if not _counts_outcomes(sender.app):
        return
    key = (task_id, threading.get_ident())
    started = _running.pop(key, None) if event != "retried" else _running.get(key)
    ctx = _request_context(sender, task_id)
    queue = started[1] if started else _queue_of(ctx)
    runtime = time.perf_counter() - started[0] if started else None
    _count(sender.app, sender.name, queue, event, exception)
    if runtime is not None and event != "retried":
        _tally.observe(sender.name, queue, "runtime", runtime)
    requeued_from = _header(ctx, "x_requeued_from") if ctx is not None else None
    if requeued_from:
        _tally.requeued(
            {
                "task_id": task_id,
                "requeued_from": str(requeued_from),
                "state": event,
                "at": time.time(),
                "runtime": runtime,
                "exception": exception,
            }
        )


@signals.task_success.connect(weak=False, dispatch_uid="deadletters.hook.success")
def _on_success(sender: Task | None = None, **_: Any) -> None:
    try:
        if sender is not None and sender.request.id:
            _finished(sender, sender.request.id, "succeeded")
    except Exception:
        logger.exception("deadletters: could not count a succeeded task")


@signals.task_failure.connect(weak=False, dispatch_uid="deadletters.hook.failed")
def _on_failed(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    try:
        if sender is not None and task_id:
            _finished(sender, task_id, "failed", _exception_type(exception))
    except Exception:
        logger.exception("deadletters: could not count a failed task")


@signals.task_retry.connect(weak=False, dispatch_uid="deadletters.hook.retried")
def _on_retried(sender: Task | None = None, request: Any = None, **_: Any) -> None:
    try:
        task_id = getattr(request, "id", None)
        if sender is not None and task_id:
            _finished(sender, task_id, "retried")
    except Exception:
        logger.exception("deadletters: could not count a retried task")


@signals.task_postrun.connect(weak=False, dispatch_uid="deadletters.hook.postrun")
def _on_postrun(sender: Task | None = None, task_id: str | None = None, **_: Any) -> None:
    """The runtime of a task that neither succeeded nor failed (a retry, an ignore)."""
    try:
        started = _running.pop((task_id or "", threading.get_ident()), None)
        if sender is not None and started is not None:
            _tally.observe(sender.name, started[1], "runtime", time.perf_counter() - started[0])
    except Exception:
        logger.exception("deadletters: could not time a task")


@signals.task_rejected.connect(weak=False, dispatch_uid="deadletters.hook.outcome_rejected")
def _on_rejected(message: Any = None, **_: Any) -> None:
    try:
        headers = getattr(message, "headers", None) or {}
        queue = _message_queue(headers, getattr(message, "delivery_info", None))
        _count(current_app, str(headers.get("task") or ""), queue, "rejected")
    except Exception:
        logger.exception("deadletters: could not count a rejected task")


@signals.task_revoked.connect(weak=False, dispatch_uid="deadletters.hook.revoked")
def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    try:
        if request is not None:
            queue = _message_queue(
                getattr(request, "request_dict", None), getattr(request, "delivery_info", None)
            )
            app = getattr(sender, "app", None) or current_app
            _count(app, str(getattr(request, "name", "") or ""), queue, "revoked")
    except Exception:
        logger.exception("deadletters: could not count a revoked task")


def flush_outcomes() -> None:
    """Report what this process counted now (at shutdown; tests)."""
    try:
        _tally.report()
    except Exception:
        logger.exception("deadletters: could not report outcomes")


@signals.worker_process_shutdown.connect(weak=False, dispatch_uid="deadletters.hook.child_end")
def _report_at_child_exit(**_: Any) -> None:
    flush_outcomes()


@signals.worker_shutdown.connect(weak=False, dispatch_uid="deadletters.hook.outcomes_end")
def _report_at_shutdown(**_: Any) -> None:
    flush_outcomes()


# --- beat: the process, its schedule and what it sends ---------------------------------
#
# Imported by the app module, the hook runs in ``celery beat`` too. There it
# reports the process and its schedule every ``ops_outcomes_interval`` seconds to
# the same queue as the outcome reports, names the entry of every task beat
# sends (header ``x_beat_entry``), and says so when it exits: two beats sending
# one entry are seen at once, a stopped one at once (docs/hygiene.md).
#
# The schedule is read in beat's own thread only (at start and at each send),
# never from the reporter thread: a scheduler's storage (a shelve file, the
# database) is not made to be read from two threads.

BEAT_VERSION = 1
MAX_ENTRIES = 1_000
MAX_SENDS = 1_000
# The send options an entry keeps, for the dashboard's "run now".
ENTRY_OPTIONS = ("queue", "exchange", "routing_key", "priority", "expires")


def _schedule_of(scheduler: Any) -> Mapping[str, Any]:
    # django-celery-beat's DatabaseScheduler keeps its entries in ``_schedule``;
    # its ``schedule`` property would poll the database and may sync.
    entries = getattr(scheduler, "_schedule", None)
    if not isinstance(entries, Mapping):
        entries = scheduler.schedule
    return entries if isinstance(entries, Mapping) else {}


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        with contextlib.suppress(ValueError, OverflowError, OSError):
            return value.timestamp()
    return None


def _plural(n: float, unit: str) -> str:
    n = int(n) if float(n).is_integer() else round(n, 2)
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _schedule_words(schedule: Any) -> str:
    """The schedule as an operator says it: "every 30 seconds", "cron 0 4 * * *"."""
    run_every = getattr(schedule, "run_every", None)
    if hasattr(schedule, "_orig_minute"):
        fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        return "cron " + " ".join(str(getattr(schedule, f"_orig_{f}", "*")) for f in fields)
    if hasattr(schedule, "event") and hasattr(schedule, "lat"):
        return f"solar {schedule.event} at {schedule.lat}, {schedule.lon}"
    if run_every is not None and hasattr(run_every, "total_seconds"):
        seconds = run_every.total_seconds()
        for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
            if seconds >= size and seconds % size == 0:
                return f"every {_plural(seconds / size, unit)}"
        return f"every {_plural(seconds, 'second')}"
    return str(schedule)[:255]


def _name_of(value: Any) -> Any:
    """A queue or exchange option as its name (kombu objects are not JSON)."""
    return getattr(value, "name", value)


def _entry_report(app: Any, entry: Any) -> dict[str, Any]:
    # django-celery-beat updates the entry's model when it sends, not the entry.
    model = getattr(entry, "model", None)
    last_run = getattr(model, "last_run_at", None) or entry.last_run_at
    total = getattr(model, "total_run_count", None) or entry.total_run_count or 0
    next_due = None
    with contextlib.suppress(Exception):
        remaining = entry.schedule.remaining_estimate(last_run)
        next_due = time.time() + max(0.0, remaining.total_seconds())
    options = {
        key: _name_of(value)
        for key, value in dict(entry.options or {}).items()
        if key in ENTRY_OPTIONS and value is not None
    }
    queue = options.get("queue")
    if not queue:
        with contextlib.suppress(Exception):
            queue = _name_of(app.amqp.router.route(dict(options), entry.task).get("queue"))
    args, lossy_args = _json_safe(list(entry.args or ()))
    kwargs, lossy_kwargs = _json_safe(dict(entry.kwargs or {}))
    options, lossy_options = _json_safe(options)
    return {
        "name": str(entry.name),
        "task": str(entry.task),
        "schedule": _schedule_words(entry.schedule),
        "args": args,
        "kwargs": kwargs,
        "options": options,
        "queue": str(queue or app.conf.task_default_queue or ""),
        "lossy": lossy_args or lossy_kwargs or lossy_options,
        "enabled": bool(getattr(model, "enabled", True)),
        "last_run_at": _timestamp(last_run),
        "next_due": next_due,
        "total_run_count": int(total),
    }


class _Beat:
    """This beat process: what it runs and what it sent since its last report."""

    def __init__(self, service: Any) -> None:
        self.app = service.app
        self.scheduler = service.scheduler
        cls = type(self.scheduler)
        self.scheduler_name = f"{cls.__module__}.{cls.__qualname__}"
        self.process = f"{os.getpid()}-{os.urandom(6).hex()}"
        self.started_at = time.time()
        self.lock = threading.Lock()
        self.seq = 0
        self.entries: dict[str, dict[str, Any]] = {}
        self.read_at = 0.0
        self.sends: list[list[Any]] = []
        self.stop = threading.Event()
        self.interval = _outcomes_interval(self.app)

    def read_schedule(self, only: str = "") -> None:
        """Take the schedule (or one entry of it) as it stands. Beat's thread only."""
        schedule = _schedule_of(self.scheduler)
        if only and time.monotonic() - self.read_at < self.interval:
            names = [only] if only in schedule else []
        else:
            names = list(schedule)[:MAX_ENTRIES]
            self.read_at = time.monotonic()
            with self.lock:
                self.entries = {n: e for n, e in self.entries.items() if n in schedule}
        for name in names:
            try:
                report = _entry_report(self.app, schedule[name])
            except Exception:
                logger.exception("deadletters: could not read the beat entry %r", name)
                continue
            with self.lock:
                self.entries[name] = report

    def entry_for(self, task: str, body: Any) -> str:
        """The entry beat is sending now: the only one of this task, or the one
        with these arguments that beat has just marked as run."""
        candidates = [e for e in _schedule_of(self.scheduler).values() if e.task == task]
        if len(candidates) > 1 and isinstance(body, list | tuple) and len(body) >= 2:
            same = [
                e for e in candidates
                if list(e.args or ()) == list(body[0]) and dict(e.kwargs or {}) == dict(body[1])
            ]  # fmt: skip
            candidates = same or candidates
        if not candidates:
            return ""

        def last_run(entry: Any) -> float:
            model = getattr(entry, "model", None)
            return _timestamp(getattr(model, "last_run_at", None) or entry.last_run_at) or 0.0

        return str(max(candidates, key=last_run).name)

    def sent(self, name: str, task: str, task_id: str) -> None:
        with self.lock:
            if len(self.sends) < MAX_SENDS:
                self.sends.append([name, task, time.time(), task_id])
        if name:
            self.read_schedule(only=name)

    def take(self, stopping: bool = False) -> dict[str, Any]:
        with self.lock:
            sends, self.sends = self.sends, []
            entries = list(self.entries.values())
            self.seq += 1
            seq = self.seq
        return {
            "type": "beat",
            "v": BEAT_VERSION,
            "process": self.process,
            "seq": seq,
            "hostname": _host(),
            "pid": os.getpid(),
            "scheduler": self.scheduler_name,
            "database_scheduler": self.scheduler_name.startswith("django_celery_beat."),
            "started_at": self.started_at,
            "sent_at": time.time(),
            "interval": self.interval,
            "stopping": stopping,
            "entries": entries,
            "sends": sends,
        }

    def report(self, stopping: bool = False) -> None:
        report = self.take(stopping)
        try:
            _publisher.publish(self.app, report, report="beat")
        except Exception as exc:
            with self.lock:  # the sends go out with the next report
                self.sends = (report["sends"] + self.sends)[:MAX_SENDS]
            if not _exiting:
                logger.warning("deadletters: beat report not published (%s)", exc)

    def report_loop(self) -> None:
        while not self.stop.wait(self.interval):
            self.report()


_beat: _Beat | None = None


@signals.beat_init.connect(weak=False, dispatch_uid="deadletters.hook.beat")
def _on_beat_init(sender: Any = None, **_: Any) -> None:
    global _beat
    try:
        if sender is None:
            return
        beat = _Beat(sender)
        beat.read_schedule()
        _beat = beat
        beat.report()
        threading.Thread(target=beat.report_loop, name="ops-beat", daemon=True).start()
    except Exception:
        logger.exception("deadletters: could not start reporting this beat")


@signals.before_task_publish.connect(weak=False, dispatch_uid="deadletters.hook.beat_send")
def _name_beat_send(
    sender: str | None = None,
    body: Any = None,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    **_: Any,
) -> None:
    beat = _beat
    if beat is None or headers is None or not headers.get("celery_beat_task"):
        return
    try:
        # django-celery-beat names its entry; for the others, find it.
        name = (properties or {}).get("periodic_task_name") or headers.get("periodic_task_name")
        name = str(name or beat.entry_for(str(sender or ""), body))
        if name:
            headers["x_beat_entry"] = name
        beat.sent(name, str(sender or ""), str(headers.get("id") or ""))
    except Exception:
        logger.exception("deadletters: could not name a beat send of %r", sender)


def _report_beat_exit() -> None:
    """Beat is exiting: say so, so that the dashboard stops counting on it."""
    beat = _beat
    if beat is not None:
        beat.stop.set()
        with contextlib.suppress(Exception):
            beat.report(stopping=True)
