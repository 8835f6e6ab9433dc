"""What the demo's worker says on its console: a line an event, and no traceback.

The demo fails a task every few seconds on purpose, and Celery logs each failure
with its whole traceback: within half a minute they buried the demo's URL and
login. A traceback belongs in the dead letter, where the hook sends it and the
dashboard shows it; the console says in one line what failed. At INFO Celery
also says "received" and "succeeded" for every task, a dozen lines every few
seconds of the demo's steady traffic: the task pages show that traffic, so the
console leaves it out and keeps what a newcomer should notice (retries,
failures, a requeued task that succeeded, the worker's start).

The demo's worker loads this module with ``--include demo.console``
(``demo.workers.worker_command(..., console=True)``); nothing else does.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

# The per-task chatter: one of each for every task the producer sends.
CHATTER = frozenset({LOG_RECEIVED, LOG_SUCCESS})


class OneLineConsole(logging.Filter):
    """Drops the per-task chatter and writes every other record on one line:
    "task demo.tasks.resize_image[<id>] failed: ValueError: image 1002 has an
    unsupported colour profile" instead of the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg in CHATTER:
            return False
        data = getattr(record, "data", None)
        error = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.ERROR and isinstance(data, dict) and "name" in data:
            # A task's failure, as celery.app.trace logs it (its context in ``data``).
            cause = f"{type(error).__name__}: {error}" if error is not None else data.get("exc")
            line = f"task {data['name']}[{data.get('id')}] failed: {cause}"
        elif error is not None or "\n" in record.getMessage():
            # The pool's errors and an unregistered task's message: the first line
            # says what happened, the rest is for the dead letter.
            line = record.getMessage().strip().splitlines()[0]
        else:
            return True
        record.msg, record.args = line, None
        record.exc_info = record.exc_text = record.stack_info = None
        return True


def _one_line(logger: logging.Logger, **kwargs: Any) -> None:
    for handler in logger.handlers:
        handler.addFilter(OneLineConsole())


# The root logger (Celery's own lines) and the task logger (the tasks' lines)
# each get a console handler of their own; the pool's children inherit both.
signals.after_setup_logger.connect(_one_line, weak=False)
signals.after_setup_task_logger.connect(_one_line, weak=False)
