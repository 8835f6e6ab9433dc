"""The task-outcomes benchmark: what counting outcomes costs the workers and the monitor.

    python3 dev.py bench outcomes [--tasks 4000] [--rounds 5] [--fleet-seconds 20]
                                  [--only hook|fleet|state]

One run starts its own Redis and measures, in the same run:

- **the hook in a worker**: real prefork ``celery worker`` processes of the
  benchmark's own app (``bench.outcomes_app``, one task that does nothing),
  without the hook, with the hook but ``OPS_OUTCOMES=off``, with the hook as
  shipped (counting), and for reference without the hook but with task events
  (``-E``, what Flower needs). Each runs ``--tasks`` tasks per round, in turns,
  ``--rounds`` times; the figure is the CPU time (user + system) of the
  worker's main process and its pool children per task, and the wall time.
- **a simulated fleet**: the reports of ``--processes`` processes (producers,
  and the main processes and pool children of ``--nodes`` prefork workers)
  running ``--task-names`` tasks at ``--rate`` tasks a second, built by the
  hook's own ``_Tally`` and published as the hook publishes them, then drained
  by the monitor's real ingestion, ``Monitor().run(until_empty=True)``: the
  monitor's CPU per second of fleet traffic. Then ``/metrics`` rendered over
  what it stored (``StoredStateCollector`` and ``generate_latest``), next to
  ``generate_latest`` over a prebuilt registry of as many series.
- **Celery's event state machine**, which Flower runs for every event:
  ``celery.events.state.State().event`` fed the sent, received, started and
  succeeded events of ``--state-tasks`` tasks.

SQLite always; the fleet on PostgreSQL too when ``DATABASE_URL`` names a
PostgreSQL server (a throwaway database, dropped afterwards). Every database
is measured in a child process (see bench/_harness.py). It fails only when a
measured thing did the wrong thing (a task or a report not counted, or counted
twice); a missed target is reported, never an error.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import _harness as harness

if TYPE_CHECKING:
    from celery import Celery
    from prometheus_client import CollectorRegistry

DEFAULT_TASKS = 4_000
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP_TASKS = 500
DEFAULT_CONCURRENCY = 2
DEFAULT_PROCESSES = 200
DEFAULT_NODES = 20
DEFAULT_TASK_NAMES = 500
DEFAULT_RATE = 10_000
DEFAULT_INTERVAL = 10
DEFAULT_FLEET_SECONDS = 20
DEFAULT_STATE_TASKS = 20_000
DEFAULT_SCRAPES = 3
# Targets from the issue; reported, never asserted.
TARGET_HOOK_OVERHEAD = 5.0  # % of the worker's CPU per task
TARGET_MONITOR_CORE = 10.0  # % of one core per second of fleet traffic
# Flower's single event consumer saturates at 3,000 to 4,000 events a second
# (flower#759, #1305; docs/outcomes.md); a task sends four events here.
FLOWER_EVENTS_PER_SECOND = (3_000, 4_000)
EVENTS_PER_TASK = 4

APP = "bench.outcomes_app"
TASK = f"{APP}.noop"
QUEUE_PREFIX = "bench.outcomes."
# The fleet: a share of the processes are producers, the rest prefork workers.
PRODUCER_SHARE = 10  # one process in ten
PRODUCERS_PER_HOST = 2
QUEUES = 10
FAILED, RETRIED = 0.02, 0.01  # of the runs; the rest succeed
EXCEPTIONS = ("TimeoutError", "ConnectionError", "billing.errors.PaymentDeclined")


class OutcomesBenchError(RuntimeError):
    """A worker or the monitor counted something other than what ran."""


# --- the parent: one Redis, one child per database, the report --------------------------


def main(argv: list[str]) -> int:
    return harness.main("outcomes", argv, _parser(), parent=_run, child=_measure)


def _parser() -> argparse.ArgumentParser:
    parser = harness.parser(
        "outcomes",
        "What counting task outcomes costs: the hook's CPU per task in a real prefork "
        "worker, the monitor's CPU for a simulated fleet, and Celery's event state "
        "machine (Flower's) for reference.",
    )
    parser.add_argument(
        "--only",
        choices=("hook", "fleet", "state"),
        default=None,
        help="measure only the hook in workers, the fleet, or Celery's event state",
    )
    worker = parser.add_argument_group("the hook in a real worker")
    worker.add_argument(
        "--tasks",
        type=harness.positive,
        default=DEFAULT_TASKS,
        help=f"tasks per worker and round (default {DEFAULT_TASKS:,})",
    )
    worker.add_argument(
        "--rounds",
        type=harness.positive,
        default=DEFAULT_ROUNDS,
        help=f"timed rounds per worker, taking turns (default {DEFAULT_ROUNDS})",
    )
    worker.add_argument(
        "--warmup-tasks",
        type=harness.positive,
        default=DEFAULT_WARMUP_TASKS,
        help=f"untimed tasks per worker first (default {DEFAULT_WARMUP_TASKS})",
    )
    worker.add_argument(
        "--concurrency",
        type=harness.positive,
        default=DEFAULT_CONCURRENCY,
        help=f"pool processes per worker (default {DEFAULT_CONCURRENCY})",
    )
    fleet = parser.add_argument_group("the simulated fleet")
    fleet.add_argument(
        "--processes",
        type=harness.positive,
        default=DEFAULT_PROCESSES,
        help=f"reporting processes (default {DEFAULT_PROCESSES}; one in "
        f"{PRODUCER_SHARE} a producer, the rest prefork workers)",
    )
    fleet.add_argument(
        "--nodes",
        type=harness.positive,
        default=DEFAULT_NODES,
        help=f"prefork workers the worker processes belong to (default {DEFAULT_NODES})",
    )
    fleet.add_argument(
        "--task-names",
        type=harness.positive,
        default=DEFAULT_TASK_NAMES,
        help=f"task names (default {DEFAULT_TASK_NAMES})",
    )
    fleet.add_argument(
        "--rate",
        type=harness.positive,
        default=DEFAULT_RATE,
        help=f"tasks a second across the fleet (default {DEFAULT_RATE:,})",
    )
    fleet.add_argument(
        "--interval",
        type=harness.positive,
        default=DEFAULT_INTERVAL,
        help=f"seconds between a process's reports (default {DEFAULT_INTERVAL})",
    )
    fleet.add_argument(
        "--fleet-seconds",
        type=harness.positive,
        default=DEFAULT_FLEET_SECONDS,
        help=f"seconds of fleet traffic the monitor ingests, timed (default "
        f"{DEFAULT_FLEET_SECONDS}; after one untimed interval)",
    )
    fleet.add_argument(
        "--scrapes",
        type=harness.positive,
        default=DEFAULT_SCRAPES,
        help=f"timed renders of /metrics and of its floor (default {DEFAULT_SCRAPES})",
    )
    parser.add_argument(
        "--state-tasks",
        type=harness.positive,
        default=DEFAULT_STATE_TASKS,
        help=f"tasks fed to Celery's event state (default {DEFAULT_STATE_TASKS:,})",
    )
    return parser


def _run(args: argparse.Namespace, child: harness.Child) -> int:
    # Read before anything of ours sets it: the PostgreSQL server to measure, if any.
    server_url = os.environ.get("DATABASE_URL", "")
    postgres = server_url.startswith("postgres") and args.only in (None, "fleet")
    with harness.scratch() as directory, harness.embedded_redis(directory) as broker_url:

        def measure(child: harness.Child, label: str, database_url: str) -> dict[str, Any]:
            print(f"outcomes: {label} ...", file=sys.stderr, flush=True)
            return child.run(
                database_url,
                directory,
                label=label,
                CELERY_BROKER_URL=broker_url,
                CELERY_RESULT_BACKEND=None,
                # The child publishes tasks: it must not count and report them itself.
                OPS_OUTCOMES="off",
                LOG_LEVEL="WARNING",
                # One connection for the whole drain, so that its server process's CPU is known.
                DATABASE_CONN_MAX_AGE="3600",
            )

        results = {"sqlite": measure(child, "SQLite", harness.sqlite_url(directory))}
        if postgres:
            # The workers and Celery's state do not depend on the database: measured once.
            fleet_only = harness.Child(child.name, [*child.argv, "--only", "fleet"])
            with harness.ThrowawayDatabase(server_url) as database_url:
                results["postgresql"] = measure(fleet_only, "PostgreSQL, the fleet", database_url)
    print(_report(args, results, postgres_skipped=not server_url.startswith("postgres")))
    return 0


# --- the report -----------------------------------------------------------------------------


def _report(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], *, postgres_skipped: bool
) -> str:
    first = results["sqlite"]
    out = ["", "Task outcomes", ""]
    hook, state = first.get("hook"), first.get("state")
    fleets = [r["fleet"] for r in results.values() if "fleet" in r]
    if hook:
        out += _hook_report(hook)
    for fleet in fleets:
        out += _fleet_report(fleet)
    if state or hook or fleets:
        out += _reference_report(state, hook, fleets)
    out += [
        f"machine: {harness.machine()}",
        "",
        "targets (from the issue; reported, not asserted):",
    ]
    if hook:
        overhead = hook["overhead"]["hook"]
        out.append(
            f"  {harness.verdict(overhead <= TARGET_HOOK_OVERHEAD)}  the hook adds at most "
            f"{TARGET_HOOK_OVERHEAD:.0f} % to the worker's CPU per task: {overhead:+.1f} %"
        )
    for fleet in fleets:
        core = fleet["monitor"]["core_percent"]
        out.append(
            f"  {harness.verdict(core <= TARGET_MONITOR_CORE)}  {fleet['label']}: the monitor "
            f"at most {TARGET_MONITOR_CORE:.0f} % of one core for "
            f"{fleet['shape']['rate']:,} tasks/s: {core:.1f} %"
        )
    if postgres_skipped and args.only in (None, "fleet"):
        out.append(
            f"  n/a   PostgreSQL: the monitor at most {TARGET_MONITOR_CORE:.0f} % of one core: "
            "not measured; set DATABASE_URL=postgres://... to include it"
        )
    return "\n".join(out)


def _hook_report(hook: dict[str, Any]) -> list[str]:
    header = ("worker", "rounds", "tasks", "CPU µs/task", "min-max", "vs no hook", "tasks/s")
    rows: list[tuple[str, ...]] = []
    for key, label in VARIANT_LABELS.items():
        v = hook["variants"][key]
        rows.append(
            (
                label,
                str(len(v["cpu_us"])),
                f"{v['tasks']:,}",
                f"{v['cpu_us_per_task']:.0f}",
                f"{min(v['cpu_us']):.0f}-{max(v['cpu_us']):.0f}",
                "" if key == "plain" else f"{hook['overhead'][key]:+.1f} %",
                f"{v['tasks_per_second']:,.0f}",
            )
        )
    return [
        f"The hook in a real worker: prefork, concurrency {hook['concurrency']}, "
        f"{hook['tasks']:,} no-op tasks a round, Redis {hook['redis_version']}, "
        f"Celery {hook['celery_version']}",
        "",
        *harness.table(header, rows, right_from=1),
        "",
        "CPU: user + system of the worker's main process and its pool children, per task, "
        "median of the rounds; vs no hook: median of each round's difference to the worker "
        "without the hook in the same round; tasks/s: wall clock, median",
        f"counted by the hook's worker and added up by the monitor: "
        f"{hook['counted']['succeeded']:,} succeeded, {hook['counted']['received']:,} "
        f"received, of {hook['variants']['hook']['tasks'] + hook['warmup_tasks']:,} run",
        "",
    ]


def _fleet_report(fleet: dict[str, Any]) -> list[str]:
    shape, monitor, scrape = fleet["shape"], fleet["monitor"], fleet["scrape"]
    out = [
        f"A simulated fleet into {fleet['label']} {fleet['server_version']}: "
        f"{shape['processes']} processes ({shape['producers']} producers, {shape['nodes']} "
        f"prefork workers of 1 main process and {shape['children_min']}-"
        f"{shape['children_max']} children), {shape['task_names']} task names on {QUEUES} "
        f"queues, {shape['rate']:,} tasks/s, a report every {shape['interval']} s",
        "",
        f"  reports ingested (timed)            {monitor['reports']:>12,}  "
        f"({monitor['seconds_of_traffic']} s of traffic, {monitor['runs']:,} task runs)",
        f"  report size                         {monitor['report_bytes']:>12,}  "
        "bytes of JSON on average",
        f"  rows upserted per report            {monitor['rows_per_report']:>12,.0f}  "
        "(minute, hour and since-ever rows, failures)",
        f"  rows upserted in all                {monitor['rows']:>12,}  "
        f"(if each batch of {monitor['batch_size']} reports were summed first: "
        f"{monitor['rows_summed_per_batch']:,})",
        f"  monitor CPU                         {monitor['cpu_seconds']:>12.2f}  s "
        f"(wall {monitor['seconds']:.2f} s)",
    ]
    if monitor.get("database_cpu_seconds") is not None:
        out.append(
            f"  PostgreSQL backend CPU              {monitor['database_cpu_seconds']:>12.2f}  s "
            "(its server process, not in the monitor's figure)"
        )
    out += [
        f"  monitor CPU per second of traffic   {monitor['core_percent']:>11.1f} %  of one core",
        f"  monitor CPU per task run            {monitor['us_per_task']:>12.2f}  µs",
        f"  stored: {fleet['stored']['totals']:,} since-ever rows (task, queue, worker), "
        f"{fleet['stored']['minutes']:,} minute rows, {fleet['stored']['reporters']} processes",
        "",
    ]
    header = ("/metrics render", "series", "task series", "p50 ms", "p95 ms", "CPU ms", "renders")
    rows: list[tuple[str, ...]] = []
    for key, label in (
        ("per_worker", "per worker (METRICS_PER_WORKER, the default)"),
        ("summed", "summed over workers (METRICS_PER_WORKER=false)"),
    ):
        for name, t in scrape[key].items():
            rows.append(
                (
                    f"{label}: {name}" if name == "ours" else "  floor: prebuilt, as many series",
                    f"{t['series']:,}",
                    f"{t['task_series']:,}",
                    f"{t['p50']:,.1f}",
                    f"{t['p95']:,.1f}",
                    f"{t['cpu_ms']:,.1f}",
                    str(t["renders"]),
                )
            )
    out += harness.table(header, rows, right_from=1)
    out += [
        "  ours: StoredStateCollector rendered by generate_latest; floor: generate_latest over "
        "a registry of as many gauges, set beforehand",
    ]
    out.append("")
    return out


def _reference_report(
    state: dict[str, Any] | None, hook: dict[str, Any] | None, fleets: list[dict[str, Any]]
) -> list[str]:
    header = ("per task", "µs CPU", "tasks/s per core", "events/s per core")
    rows: list[tuple[str, ...]] = []
    if state:
        rows.append(
            (
                f"Celery's State.event (Flower's state), {EVENTS_PER_TASK} events, "
                f"{state['tasks']:,} tasks",
                f"{state['us_per_task']:.1f}",
                f"{state['tasks_per_second']:,.0f}",
                f"{state['events_per_second']:,.0f}",
            )
        )
    low, high = FLOWER_EVENTS_PER_SECOND
    rows.append(
        (
            "Flower, documented saturation (flower#759, #1305)",
            f"{1e6 * EVENTS_PER_TASK / high:.0f}-{1e6 * EVENTS_PER_TASK / low:.0f}",
            f"{low // EVENTS_PER_TASK:,}-{high // EVENTS_PER_TASK:,}",
            f"{low:,}-{high:,}",
        )
    )
    if hook:
        for key, label in (
            ("hook", "ours, in the worker: the hook, counting (over no hook)"),
            ("events", "worker with task events on, -E (over no hook)"),
        ):
            rows.append((label, f"{hook['added_us'][key]:.1f}", "", ""))
    for fleet in fleets:
        us = fleet["monitor"]["us_per_task"]
        rows.append(
            (
                f"ours, in the monitor: adding reports up ({fleet['label']})",
                f"{us:.2f}",
                f"{1e6 / us:,.0f}",
                "",
            )
        )
    return [
        "Reference, same run: per task, Flower's way (events) and ours (reports)",
        "",
        *harness.table(header, rows, right_from=1),
        "",
    ]


# --- the child ------------------------------------------------------------------------------


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if args.only in (None, "state"):
        figures["state"] = _event_state(args.state_tasks)
    if args.only in (None, "hook"):
        figures["hook"] = _hook_cost(args)
    if args.only in (None, "fleet"):
        figures["fleet"] = _fleet(args)
    return figures


def _empty_outcomes() -> None:
    """No outcome row and no report waiting: a part starts from nothing."""
    from django.conf import settings

    from dashboard import broker
    from dashboard.models import (
        OutcomeReporter,
        TaskFailureMinute,
        TaskFailureTotal,
        TaskHour,
        TaskMinute,
        TaskTotal,
    )

    for model in (TaskMinute, TaskHour, TaskTotal, TaskFailureMinute, TaskFailureTotal):
        model.objects.all().delete()
    OutcomeReporter.objects.all().delete()
    client = broker.redis_client()
    try:
        client.delete(*broker.redis_priority_keys(settings.OPS_OUTCOMES_QUEUE))
    finally:
        client.close()


def _drain() -> tuple[Any, float, float]:
    """``Monitor().run(until_empty=True)``: its totals, wall seconds and CPU seconds."""
    from dashboard.monitor.loop import Monitor

    monitor = Monitor()
    started, cpu_started = time.perf_counter(), time.process_time()
    totals = monitor.run(until_empty=True)
    return totals, time.perf_counter() - started, time.process_time() - cpu_started


# --- the hook in real workers -----------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    env: dict[str, str]
    extra: tuple[str, ...] = ()


VARIANTS = (
    Variant("plain", {"BENCH_HOOK": "off"}),
    Variant("hook_off", {"BENCH_HOOK": "on", "OPS_OUTCOMES": "off"}),
    Variant("hook", {"BENCH_HOOK": "on", "OPS_OUTCOMES": "on"}),
    Variant("events", {"BENCH_HOOK": "off"}, ("-E",)),
)
VARIANT_LABELS = {
    "plain": "no hook",
    "hook_off": "hook, OPS_OUTCOMES=off",
    "hook": "hook, counting outcomes (as shipped)",
    "events": "no hook, task events on (-E, for Flower)",
}


@dataclass
class Worker:
    """A real prefork worker of the benchmark's app, consuming its own queue."""

    variant: Variant
    process: subprocess.Popen[bytes]
    node: str
    queue: str
    log: Path
    cpu_us: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    tasks: int = 0

    def cpu_seconds(self) -> tuple[float, frozenset[int]]:
        """User + system CPU of the main process and its pool children, and their pids."""
        import psutil

        root = psutil.Process(self.process.pid)
        processes = [root, *root.children(recursive=True)]
        times = [p.cpu_times() for p in processes]
        return sum(t.user + t.system for t in times), frozenset(p.pid for p in processes)


def _start_worker(variant: Variant, broker_url: str, concurrency: int, logs: Path) -> Worker:
    from demo.workers import worker_command

    name = f"bench-{variant.key.replace('_', '-')}"
    queue = QUEUE_PREFIX + variant.key
    # A team's worker: no Django settings of the dashboard's (Celery's Django
    # fix-up would set the site up inside the worker).
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(CELERY_BROKER_URL=broker_url, **variant.env)
    log = logs / f"worker-{variant.key}.log"
    command = worker_command(
        name,
        app=APP,
        queues=(queue,),
        concurrency=concurrency,
        loglevel="WARNING",
        extra=variant.extra,
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=harness.ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    return Worker(variant, process, f"{name}@{socket.gethostname()}", queue, log)


@contextmanager
def _running_workers(
    broker_url: str, concurrency: int, logs: Path, client: Celery
) -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    try:
        for variant in VARIANTS:
            workers.append(_start_worker(variant, broker_url, concurrency, logs))
        deadline = time.monotonic() + 120
        waiting = {worker.node: worker for worker in workers}
        while waiting:
            for worker in waiting.values():
                if worker.process.poll() is not None:
                    raise OutcomesBenchError(
                        f"worker {worker.node} exited:\n{worker.log.read_text()[-3000:]}"
                    )
            if time.monotonic() > deadline:
                raise OutcomesBenchError(f"workers did not start within 120 s: {list(waiting)}")
            for reply in client.control.ping(destination=list(waiting), timeout=1.0) or []:
                for node in reply:
                    waiting.pop(node, None)
        yield workers
    finally:
        _stop(workers)


def _stop(workers: list[Worker]) -> None:
    """A warm shutdown, in which the hook reports what is left, as in production."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        try:
            worker.process.wait(30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _hook_cost(args: argparse.Namespace) -> dict[str, Any]:
    import celery
    from celery import Celery
    from django.conf import settings

    from dashboard import broker
    from dashboard.models import TaskTotal

    _empty_outcomes()
    broker_url = os.environ["CELERY_BROKER_URL"]
    client = Celery("bench-client", broker=broker_url, set_as_current=False)
    redis = broker.redis_client()
    logs = Path(settings.DATA_DIR)
    try:
        redis_version = str(redis.info("server")["redis_version"])
        with _running_workers(broker_url, args.concurrency, logs, client) as workers:
            harness.progress(f"{len(workers)} workers answer; warming up")
            for worker in workers:
                _round(client, redis, worker, args.warmup_tasks)
            for n in range(args.rounds):
                # In turns, in alternating order, so that a neighbour's load weighs on all alike.
                for worker in workers if n % 2 == 0 else reversed(workers):
                    cpu, seconds = _round(client, redis, worker, args.tasks)
                    worker.cpu_us.append(cpu / args.tasks * 1e6)
                    worker.seconds.append(seconds)
                    worker.tasks += args.tasks
                harness.progress(
                    f"round {n + 1}: "
                    + ", ".join(f"{w.variant.key} {w.cpu_us[-1]:.0f} µs" for w in workers)
                )
    finally:
        redis.close()
        client.close()
    # The workers are stopped: every process reported what it counted. Added up
    # by the monitor, the hook's worker must have counted each task it ran, once,
    # and the others nothing.
    totals, _, _ = _drain()
    if totals.quarantined or totals.duplicates:
        raise OutcomesBenchError(f"the monitor drained the workers' reports as {totals}")
    by_worker = {worker.variant.key: worker for worker in workers}
    expected = by_worker["hook"].tasks + args.warmup_tasks
    counted = {
        event: sum(
            TaskTotal.objects.filter(task=TASK, hostname=by_worker["hook"].node).values_list(
                event, flat=True
            )
        )
        for event in ("received", "started", "succeeded")
    }
    if any(n != expected for n in counted.values()):
        raise OutcomesBenchError(f"the hook counted {counted}, expected {expected} each")
    others = TaskTotal.objects.exclude(hostname=by_worker["hook"].node).count()
    if others:
        raise OutcomesBenchError(f"{others} outcome rows from workers that should not count")
    _empty_outcomes()

    variants = {
        worker.variant.key: {
            "tasks": worker.tasks,
            "cpu_us": worker.cpu_us,
            "cpu_us_per_task": statistics.median(worker.cpu_us),
            "seconds": worker.seconds,
            "tasks_per_second": args.tasks / statistics.median(worker.seconds),
        }
        for worker in workers
    }
    # Paired by round: each against the worker without the hook in the same round.
    plain = by_worker["plain"].cpu_us
    overhead, added = {}, {}
    for key, v in variants.items():
        pairs = list(zip(v["cpu_us"], plain, strict=True))
        overhead[key] = statistics.median((a - b) / b * 100 for a, b in pairs)
        added[key] = statistics.median(a - b for a, b in pairs)
    return {
        "concurrency": args.concurrency,
        "tasks": args.tasks,
        "warmup_tasks": args.warmup_tasks,
        "redis_version": redis_version,
        "celery_version": celery.__version__,
        "variants": variants,
        "overhead": overhead,
        "added_us": added,
        "counted": counted,
    }


def _round(client: Celery, redis: Any, worker: Worker, count: int) -> tuple[float, float]:
    """Run ``count`` tasks on ``worker``; the CPU seconds it spent, and the wall seconds.

    The tasks are queued while the worker does not consume, so that the timing
    is of the worker alone, from its first task to its last ack.
    """
    from dashboard import broker

    _control(client.control.cancel_consumer, worker)
    with client.producer_or_acquire() as producer:
        for _ in range(count):
            client.send_task(TASK, queue=worker.queue, producer=producer)
    keys = broker.redis_priority_keys(worker.queue)
    queued = sum(int(redis.llen(key)) for key in keys)
    if queued != count:
        raise OutcomesBenchError(f"{queued} tasks queued for {worker.node}, expected {count}")
    cpu_before, pids = worker.cpu_seconds()
    started = time.perf_counter()
    _control(client.control.add_consumer, worker)
    deadline = time.monotonic() + 60 + count / 50
    # Acked late: nothing queued and nothing unacked is every task run.
    while sum(int(redis.llen(key)) for key in keys) or redis.hlen("unacked"):
        if time.monotonic() > deadline or worker.process.poll() is not None:
            raise OutcomesBenchError(f"{worker.node} did not run its {count} tasks")
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    cpu_after, pids_after = worker.cpu_seconds()
    if pids_after != pids:
        # A pool child that exits takes its CPU time with it.
        raise OutcomesBenchError(f"{worker.node}'s processes changed during a round")
    return cpu_after - cpu_before, seconds


def _control(command: Callable[..., Any], worker: Worker) -> None:
    replies = command(worker.queue, destination=[worker.node], reply=True, timeout=10.0)
    if not replies:
        raise OutcomesBenchError(f"{worker.node} did not answer {command.__name__}")


# --- a simulated fleet, through the monitor ---------------------------------------------------


@dataclass
class Fleet:
    """The reporting processes of a fleet, each with the hook's own tally."""

    args: argparse.Namespace
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def __post_init__(self) -> None:
        from deadletters.hook import _Tally

        args = self.args
        self.names = [f"team{t % 8}.tasks.job_{t:03d}" for t in range(args.task_names)]
        self.queues = [f"queue-{t % QUEUES}" for t in range(args.task_names)]
        # A few tasks make most of the traffic: Zipf's law, 1/rank.
        self.cum_weights: list[float] = []
        weight = 0.0
        for rank in range(1, args.task_names + 1):
            weight += 1 / rank
            self.cum_weights.append(weight)
        producers = max(1, args.processes // PRODUCER_SHARE)
        workers = args.processes - producers
        if workers < 2 * args.nodes:
            raise SystemExit("--processes must leave a main process and a child for each node")
        self.producers = [_Tally() for _ in range(producers)]
        self.mains = [_Tally() for _ in range(args.nodes)]
        self.children: list[list[Any]] = [[] for _ in range(args.nodes)]
        for n in range(workers - args.nodes):
            self.children[n % args.nodes].append(_Tally())
        self.hostnames: dict[int, str] = {}
        for n, tally in enumerate(self.producers):
            self.hostnames[id(tally)] = f"producer@web-{n // PRODUCERS_PER_HOST:02d}"
        for n, tally in enumerate(self.mains):
            self.hostnames[id(tally)] = f"celery@worker-{n:02d}"
            for child in self.children[n]:
                self.hostnames[id(child)] = f"celery@worker-{n:02d}"
        self.runs = 0

    @property
    def tallies(self) -> list[Any]:
        return [*self.producers, *self.mains, *(c for node in self.children for c in node)]

    def shape(self) -> dict[str, Any]:
        sizes = [len(children) for children in self.children]
        return {
            "processes": len(self.tallies),
            "producers": len(self.producers),
            "nodes": len(self.mains),
            "children_min": min(sizes),
            "children_max": max(sizes),
            "task_names": len(self.names),
            "rate": self.args.rate,
            "interval": self.args.interval,
        }

    def interval(self) -> list[dict[str, Any]]:
        """Every process's report of one interval: the runs counted as the hook counts them.

        Sent in a producer, received in a node's main process, started and
        finished in one of its pool children, with both histograms there.
        """
        rng, names, queues = self.rng, self.names, self.queues
        runs = self.args.rate * self.args.interval
        picks = rng.choices(range(len(names)), cum_weights=self.cum_weights, k=runs)
        nodes = len(self.mains)
        for n, task in enumerate(picks):
            name, queue = names[task], queues[task]
            self.producers[n % len(self.producers)].count(name, queue, "sent")
            node = n % nodes
            self.mains[node].count(name, queue, "received")
            children = self.children[node]
            child = children[(n // nodes) % len(children)]
            child.count(name, queue, "started")
            child.observe(name, queue, "wait", rng.expovariate(5.0))
            draw = rng.random()
            if draw < FAILED:
                child.count(name, queue, "failed", EXCEPTIONS[n % len(EXCEPTIONS)])
            elif draw < FAILED + RETRIED:
                child.count(name, queue, "retried")
            else:
                child.count(name, queue, "succeeded")
            child.observe(name, queue, "runtime", rng.lognormvariate(-3.0, 1.2))
        self.runs += runs
        reports = []
        for n, tally in enumerate(self.tallies):
            report = tally.take()
            if report is None:
                continue
            # Each as that process's hook would have said it.
            report["hostname"] = self.hostnames[id(tally)]
            report["pid"] = 1000 + n
            reports.append(report)
        return reports


def _publish(app: Celery, reports: list[dict[str, Any]], upserts: Upserts | None = None) -> int:
    """Publish as the hook's reporter thread does; returns the bytes of JSON."""
    import json

    from deadletters import hook

    publisher = hook._Publisher()
    size = 0
    try:
        for report in reports:
            publisher.publish(app, report, report="outcomes")
            size += len(json.dumps(report))
            if upserts is not None:
                upserts.add(report)
    finally:
        if publisher._connection is not None:
            publisher._connection.release()
    return size


def _fleet(args: argparse.Namespace) -> dict[str, Any]:
    from celery import Celery
    from django.conf import settings
    from django.db import connection

    from dashboard.models import OutcomeReporter, TaskMinute, TaskTotal

    _empty_outcomes()
    app = Celery("bench-fleet", broker=os.environ["CELERY_BROKER_URL"], set_as_current=False)
    fleet = Fleet(args)
    intervals = max(1, round(args.fleet_seconds / args.interval))

    # The steady state: every process has reported before, its rows exist.
    started = time.perf_counter()
    warm = fleet.interval()
    _publish(app, warm)
    totals, _, _ = _drain()
    if totals.received != len(warm):
        raise OutcomesBenchError(f"the monitor drained {totals}, expected {len(warm)} reports")
    warm_runs = fleet.runs
    harness.progress(
        f"warm: {len(warm)} reports in {time.perf_counter() - started:.1f}s; "
        f"simulating {intervals} intervals"
    )

    reports = size = 0
    upserts = Upserts(int(settings.DEADLETTERS_BATCH_SIZE))
    for _ in range(intervals):
        batch = fleet.interval()
        size += _publish(app, batch, upserts)
        reports += len(batch)
    upserts.close()
    runs = fleet.runs - warm_runs
    harness.progress(f"queued {reports:,} reports ({size / 1e6:.1f} MB); the monitor drains them")

    backend = _database_backend()
    totals, seconds, cpu_seconds = _drain()
    database_cpu = backend() if backend else None
    if totals.received != reports or totals.duplicates or totals.quarantined:
        raise OutcomesBenchError(f"the monitor drained {totals}, expected {reports} reports")
    stored = _check_fleet(fleet)
    traffic = intervals * args.interval
    harness.progress(f"monitor: {cpu_seconds:.2f} CPU s for {traffic} s of traffic")
    return {
        "label": "SQLite" if connection.vendor == "sqlite" else "PostgreSQL",
        "server_version": harness.server_version(),
        "shape": fleet.shape(),
        "monitor": {
            "reports": reports,
            "runs": runs,
            "seconds_of_traffic": traffic,
            "report_bytes": size // max(reports, 1),
            "batch_size": upserts.batch_size,
            "rows_per_report": upserts.per_report / reports,
            "rows": upserts.per_report,
            "rows_summed_per_batch": upserts.per_batch,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "database_cpu_seconds": database_cpu,
            "core_percent": cpu_seconds / traffic * 100,
            "us_per_task": cpu_seconds / runs * 1e6,
        },
        "stored": {
            "totals": TaskTotal.objects.count(),
            "minutes": TaskMinute.objects.count(),
            "reporters": OutcomeReporter.objects.count(),
            **stored,
        },
        "scrape": _scrapes(args.scrapes),
    }


@dataclass
class Upserts:
    """The rows the monitor upserts for the reports, one statement a row: as it
    adds each report up on its own, and as many as there would be if each batch
    of ``batch_size`` reports (the monitor's fetch) were summed first."""

    batch_size: int
    reports: int = 0
    per_report: int = 0
    per_batch: int = 0
    _batch: set[tuple[Any, ...]] = field(default_factory=set)
    _in_batch: int = 0

    def add(self, report: dict[str, Any]) -> None:
        rows = self.rows(report)
        self.reports += 1
        self.per_report += len(rows)
        self._batch |= rows
        self._in_batch += 1
        if self._in_batch == self.batch_size:
            self.close()

    def close(self) -> None:
        self.per_batch += len(self._batch)
        self._batch, self._in_batch = set(), 0

    @staticmethod
    def rows(report: dict[str, Any]) -> set[tuple[Any, ...]]:
        """A row per minute, hour and worker of each task and queue counted, and per
        minute and worker of each exception type (``dashboard.tasks.outcomes._add``)."""
        host = report["hostname"]
        rows: set[tuple[Any, ...]] = set()
        for minute, task, queue, *_ in (*report["counts"], *report["histograms"]):
            rows.add(("minute", minute, task, queue))
            rows.add(("hour", minute // 60, task, queue))
            rows.add(("total", task, queue, host))
        for minute, task, queue, event, exception, _ in report["counts"]:
            if event == "failed" and exception:
                rows.add(("failure minute", minute, task, queue, exception))
                rows.add(("failure total", task, queue, host, exception))
        return rows


def _check_fleet(fleet: Fleet) -> dict[str, int]:
    """Every simulated run counted once: sent, received, started, and one outcome."""
    from django.db.models import Sum

    from dashboard.models import OutcomeReporter, TaskTotal

    sums = TaskTotal.objects.aggregate(
        **{e: Sum(e) for e in ("sent", "received", "started", "succeeded", "failed", "retried")}
    )
    finished = sum(sums[e] or 0 for e in ("succeeded", "failed", "retried"))
    counted = {e: sums[e] or 0 for e in ("sent", "received", "started")}
    if any(n != fleet.runs for n in (*counted.values(), finished)):
        raise OutcomesBenchError(f"the monitor added up {sums}, expected {fleet.runs:,} runs each")
    if OutcomeReporter.objects.count() != len(fleet.tallies):
        raise OutcomesBenchError("not every simulated process is known to the monitor")
    return {"runs": fleet.runs}


def _database_backend() -> Callable[[], float | None] | None:
    """PostgreSQL: a function that says the CPU seconds the monitor's server
    process spent since now (None if the connection was replaced meanwhile)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    import psutil

    # A fresh connection: its age (CONN_MAX_AGE) starts now, and the run keeps it.
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = int(cursor.fetchone()[0])
    try:
        process = psutil.Process(pid)
        before = process.cpu_times()
    except psutil.Error:
        return None

    def spent() -> float | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            if int(cursor.fetchone()[0]) != pid:
                return None
        after = process.cpu_times()
        return (after.user + after.system) - (before.user + before.system)

    return spent


# --- /metrics over what the monitor stored ------------------------------------------------


def _render_ours() -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    from metrics.collector import StoredStateCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoredStateCollector())
    return generate_latest(registry)


def _series(body: bytes) -> tuple[int, int]:
    """Samples in a text exposition, and those of task outcomes (``celery_task_*``)."""
    lines = [line for line in body.splitlines() if line and not line.startswith(b"#")]
    return len(lines), sum(1 for line in lines if line.startswith(b"celery_task_"))


def _prebuilt(series: int) -> CollectorRegistry:
    """A registry of ``series`` gauges with a task's three labels, set once:
    what ``generate_latest`` alone costs for as many lines."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry(auto_describe=False)
    per_family = 10_000
    for first in range(0, series, per_family):
        gauge = Gauge(
            f"bench_floor_{first // per_family}",
            "A prebuilt series.",
            ["name", "hostname", "queue_name"],
            registry=registry,
        )
        for n in range(first, min(series, first + per_family)):
            name = f"team{n % 8}.tasks.job_{n % 1000:03d}"
            gauge.labels(name, f"celery@worker-{n // 1000:03d}", f"queue-{n % QUEUES}").set(n)
    return registry


def _time(render: Callable[[], bytes], renders: int, *, warm: bool = True) -> dict[str, Any]:
    """Milliseconds per render, after one untimed if ``warm``; p95 is the nearest rank."""
    body = render() if warm else b""
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(renders):
        started, cpu_started = time.perf_counter(), time.process_time()
        body = render()
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    ordered = sorted(samples)
    series, task_series = _series(body)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "cpu_ms": statistics.mean(cpu),
        "renders": renders,
        "series": series,
        "task_series": task_series,
        "bytes": len(body),
    }


def _scrapes(renders: int) -> dict[str, Any]:
    """Ours, per worker (the default) and summed over the workers, each next to its floor."""
    from django.test import override_settings
    from prometheus_client import generate_latest

    figures: dict[str, Any] = {}
    for key, per_worker in (("per_worker", True), ("summed", False)):
        with override_settings(METRICS_PER_WORKER=per_worker):
            ours = _time(_render_ours, renders)
        harness.progress(f"/metrics, {key}: {ours['series']:,} series, {ours['p50']:.0f} ms")
        registry = _prebuilt(ours["series"])
        # Nothing to warm: it was built in memory.
        floor = _time(functools.partial(generate_latest, registry), renders, warm=False)
        del registry
        figures[key] = {"ours": ours, "floor": floor}
    return figures


# --- Celery's event state (Flower's) ---------------------------------------------------------


def _task_events(count: int) -> Iterator[dict[str, Any]]:
    """The events of ``count`` tasks as a worker with -E and a producer with
    ``task_send_sent_event`` send them: sent, received, started, succeeded."""
    now = time.time()
    clock = 0
    for n in range(count):
        task_id = str(uuid.uuid4())
        name, queue = f"team{n % 8}.tasks.job_{n % 500:03d}", f"queue-{n % QUEUES}"
        worker = f"celery@worker-{n % 20:02d}"
        at = now + n * 1e-4
        fields = {"uuid": task_id, "utcoffset": 0, "pid": 4000 + n % 8}
        for kind, hostname, extra in (
            (
                "task-sent",
                f"producer@web-{n % 10:02d}",
                {
                    "name": name,
                    "args": f"({n},)",
                    "kwargs": "{}",
                    "retries": 0,
                    "eta": None,
                    "expires": None,
                    "queue": queue,
                    "exchange": "",
                    "routing_key": queue,
                    "root_id": task_id,
                    "parent_id": None,
                },
            ),
            (
                "task-received",
                worker,
                {
                    "name": name,
                    "args": f"({n},)",
                    "kwargs": "{}",
                    "root_id": task_id,
                    "parent_id": None,
                    "retries": 0,
                    "eta": None,
                    "expires": None,
                },
            ),
            ("task-started", worker, {}),
            ("task-succeeded", worker, {"result": "None", "runtime": 0.002}),
        ):
            clock += 1
            yield {
                "type": kind,
                "hostname": hostname,
                "timestamp": at,
                "local_received": at + 1e-3,
                "clock": clock,
                **fields,
                **extra,
            }


def _event_state(tasks: int) -> dict[str, Any]:
    from celery.events.state import State

    events = list(_task_events(tasks))
    # Flower's default: the last 10,000 tasks in memory.
    state = State(max_tasks_in_memory=10_000)
    event = state.event
    started, cpu_started = time.perf_counter(), time.process_time()
    for message in events:
        event(message)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if state.task_count != tasks:
        raise OutcomesBenchError(f"Celery's state saw {state.task_count} tasks, fed {tasks}")
    harness.progress(f"Celery's State: {tasks / cpu_seconds:,.0f} tasks/s")
    return {
        "tasks": tasks,
        "events": len(events),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "us_per_task": cpu_seconds / tasks * 1e6,
        "tasks_per_second": tasks / cpu_seconds,
        "events_per_second": len(events) / cpu_seconds,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
