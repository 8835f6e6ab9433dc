"""Request ids and one log line per request; the client's address behind proxies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from dashboard.logs import log_context, new_id, safe_id

logger = logging.getLogger("dashboard.request")

HEADER = "X-Request-ID"
# Probes and scrapes arrive every few seconds; their lines would drown the rest.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class RequestIdMiddleware:
    """Take the proxy's ``X-Request-ID`` (or make one), log with it, and answer with it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = safe_id(request.headers.get(HEADER)) or new_id()
        started = time.monotonic()
        with log_context(request_id=rid):
            response = self.get_response(request)
            response[HEADER] = rid
            duration_ms = round((time.monotonic() - started) * 1000, 1)
            # The path only: a query string may carry what an operator typed.
            logger.log(
                logging.DEBUG if request.path in QUIET_PATHS else logging.INFO,
                "%s %s %d %.1fms",
                request.method,
                request.path,
                response.status_code,
                duration_ms,
                extra={
                    "fields": {
                        "method": request.method,
                        "path": request.path,
                        "status": response.status_code,
                        "duration_ms": duration_ms,
                    }
                },
            )
        return response


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, counting ``TRUSTED_PROXY_COUNT`` proxies in front of us.

    Each trusted proxy appends the address it received the request from to
    ``X-Forwarded-For``; entries further left were written by the client and
    prove nothing, so they are never used.
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR")
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies]
