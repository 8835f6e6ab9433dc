"""Gunicorn's settings for the web; ``gunicorn dashboard.wsgi`` reads this file
from the working directory. Command-line options override it (the image binds
to 0.0.0.0:8000 there; gunicorn's own default is 127.0.0.1:8000).
"""

from __future__ import annotations

import os

from dashboard.logs import logging_config

# WEB_CONCURRENCY (gunicorn reads it itself) sets the workers; 2 per CPU is plenty
# for pages that read snapshots and never wait on the broker.
graceful_timeout = 20
timeout = 30
# The site logs one line per request itself, with the request id: no access log.
accesslog = None

# Gunicorn's own lines (start, worker boot and exit) in the site's format, so
# that with LOG_FORMAT=json every line of the container is JSON.
_format = "json" if os.environ.get("LOG_FORMAT", "").strip().lower() == "json" else "plain"
logconfig_dict = logging_config(
    _format,
    loggers={
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
)


def post_worker_init(worker: object) -> None:
    """Move everything loaded so far out of the garbage collector's sight.

    A scrape of /metrics at a thousand queues allocates enough to trigger full
    collections, each walking the ~100,000 objects of the loaded app: tens of
    milliseconds added to one request in ten (docs/benchmarks.md). Frozen
    objects are never walked again; the URLconf is loaded first so that the
    views and their imports are frozen too.
    """
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - importing the views is the point
    gc.freeze()
