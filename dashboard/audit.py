"""Writing the audit: one row and one structured log line per operator action."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from dashboard.models import AuditEvent

logger = logging.getLogger("dashboard.audit")

AnyUser = AbstractBaseUser | AnonymousUser


# How the changes recorded now came, when not through the pages (see acting_via).
_how: ContextVar[dict[str, str] | None] = ContextVar("audit_how", default=None)


class acting_via:
    """Every event recorded inside says how the change came, e.g.
    ``acting_via(via="api", api_token="deploy-bot")``: the services write the
    audit and know nothing of tokens or terminals.

    A class, not ``@contextmanager``: that one sets ``__traceback__`` on the
    exception passing through, which a frozen dataclass exception refuses
    (``dashboard.periodic.services.AlreadySent``).
    """

    def __init__(self, **how: str) -> None:
        self.how = how

    def __enter__(self) -> None:
        self._reset = _how.set(self.how)

    def __exit__(self, *exc: object) -> None:
        _how.reset(self._reset)


def user_id(user: AnyUser | None) -> Any:
    """The id of the user who acts, or None for the system or an anonymous one."""
    return user.pk if user is not None and user.is_authenticated else None


def record(
    *,
    user: AnyUser | None,
    action: str,
    target_type: str = "",
    target_ids: Sequence[Any] = (),
    target_filter: str = "",
    count: int | None = None,
    reason: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Store the event; callers pass values already redacted for display."""
    ids = [str(i) for i in target_ids]
    event = AuditEvent.objects.create(
        user_id=user_id(user),
        username=user.get_username() if user is not None and user.is_authenticated else "",
        action=action,
        target_type=target_type,
        target_ids=ids,
        target_filter=target_filter,
        count=len(ids) if count is None else count,
        reason=reason,
        # What the service wrote wins: how it came only adds.
        details={**(_how.get() or {}), **(details or {})},
    )
    # What was acted on in words, as the caller named it: a failure group by
    # its task and exception, which its hash in ``target_filter`` never says;
    # and how the change came (the API, and its token's name: never its secret).
    named = {
        key: event.details[key]
        for key in ("group", "filter", "via", "api_token")
        if event.details.get(key)
    }
    logger.info(
        "%s",
        json.dumps(
            {
                "event": "audit",
                "audit_id": event.pk,
                "user": event.username or None,
                "action": action,
                "target_type": target_type,
                "target_ids": ids[:100],
                "target_filter": target_filter,
                "count": event.count,
                "reason": reason,
                **named,
            },
            default=str,
            # As JsonFormatter writes its lines: a group's "·" stays one character.
            ensure_ascii=False,
        ),
    )
    return event
