"""Celery's task events, for workers that run without the hook.

A thread of its own holds one consumer of the event exchange open (on Redis
events are published, not queued: one not listened to is lost), as Celery's
own ``celery events`` does; ``drain`` hands over what arrived since.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from dashboard.broker import BROKER_ERRORS
from dashboard.celery import app

logger = logging.getLogger("dashboard.monitor")

# Events held between two drains at the most; older ones are dropped first.
BUFFER = 200_000


class EventStream:
    def __init__(self) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=BUFFER)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.listening = threading.Event()

    def drain(self) -> list[dict[str, Any]]:
        """The events that arrived since the last drain (listening from the first)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._listen, name="task-events", daemon=True)
            self._thread.start()
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with app.connection_for_read() as connection:
                    receiver = app.events.Receiver(connection, handlers={"*": self._events.append})
                    # One turn a second at least, so that a stop is seen.
                    for _ in receiver.itercapture(limit=None, timeout=None, wakeup=False):
                        self.listening.set()
                        if self._stop.is_set():
                            return
            except BROKER_ERRORS as exc:
                self.listening.clear()
                logger.warning("task events: the broker went away (%s); listening again", exc)
                self._stop.wait(2.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
