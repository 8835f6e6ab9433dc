"""What every ``ops`` subcommand shares: errors with exit codes, the acting
user and their roles, the audit's "via", and rendering (a table or JSON)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, NoReturn

from django.contrib.auth.models import AnonymousUser, User
from django.core.management.base import CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from dashboard import audit
from dashboard.http import MAX_ID

# Exit codes, as docs/cli.md lists them.
NOT_DONE = 1  # the state forbids it: handled already, not paused, finished
USAGE = 2  # an argument is wrong (argparse's own code)
REFUSED = 3  # the acting user's roles do not allow it
NOT_FOUND = 4  # no such dead letter, bulk action, queue or user
UNAVAILABLE = 5  # the broker could not be reached: nothing was done, try again


class OpsError(CommandError):
    """One line for stderr and the exit code; ``data`` goes into ``--json`` output."""

    def __init__(self, message: str, code: int = NOT_DONE, **data: Any) -> None:
        super().__init__(message, returncode=code)
        self.code = code
        self.data = data


class OpsParser(CommandParser):
    """Argument errors in one line that names the argument, never the usage block."""

    def error(self, message: str) -> NoReturn:
        # "manage.py ops deadletters list" -> "deadletters list: ..."
        where = self.prog.partition(" ops")[2].strip()
        raise OpsError(f"{where}: {message}" if where else message, USAGE)


# --- argument types ---------------------------------------------------------------------


def dead_letter_id(text: str) -> int:
    """A row id as the pages' URLs take it: ASCII digits that fit the id column."""
    # isascii: int() also reads other scripts' digits; 19 digits: MAX_ID's length.
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and 1 <= int(text) <= MAX_ID):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an id (a whole number from 1)")
    return int(text)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit() and len(stripped) <= 9):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number")
        number = int(stripped)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is not between {low} and {high}")
        return number

    return parse


def text(flag: str, value: str, *, limit: int = 255) -> str:
    """Free text that goes into a query or the audit: no NUL (PostgreSQL refuses
    it in text), and no longer than its column."""
    if "\x00" in value or len(value) > limit:
        raise OpsError(f"{flag}: at most {limit:,} characters, without NUL", USAGE)
    return value


# --- who acts ------------------------------------------------------------------------------

AnyUser = User | AnonymousUser


def acting_user(username: str | None, *, required: bool) -> AnyUser:
    """The user named by ``--user``; without one, an anonymous reader for reads.

    Changes always need a person: their roles decide, and the audit names them.
    """
    if not username:
        if required:
            raise OpsError("--user: a change needs the acting user (--user USERNAME)", USAGE)
        return AnonymousUser()
    text("--user", username, limit=150)
    try:
        user = User.objects.get_by_natural_key(username)
    except (User.DoesNotExist, ValueError):
        raise OpsError(f"--user: no user {username[:150]!r}", REFUSED) from None
    if not user.is_active:
        raise OpsError(f"--user: {username!r} is not active", REFUSED)
    return user


def require(user: AnyUser, *perms: str, doing: str) -> None:
    """Refuse unless ``user`` holds every permission (superusers hold all)."""
    if user.is_authenticated and all(user.has_perm(perm) for perm in perms):
        return
    who = user.get_username() if user.is_authenticated else "without --user, nobody"
    raise OpsError(f"refused: {who} may not {doing} (roles: Viewer reads, Operator acts)", REFUSED)


def may_read(user: AnyUser, perm: str, *, doing: str) -> None:
    """Reads on the dashboard host need no --user; a user named must hold the role."""
    if user.is_authenticated:
        require(user, perm, doing=doing)


# --- the audit says "cli" ----------------------------------------------------------------


def via_cli() -> audit.acting_via:
    """Audit events written inside say the change came from the command line."""
    return audit.acting_via(via="cli")


# --- rendering ------------------------------------------------------------------------------


@dataclass
class Output:
    """What a command answers: ``data`` for ``--json``, ``text`` for a person."""

    data: Any
    text: str = ""
    # Non-zero: done in part (some ids refused); the lines go to stderr.
    code: int = 0
    errors: list[str] = field(default_factory=list)


def to_json(data: Any) -> str:
    return json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)


def when(value: datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z") if value else "-"


def seconds(value: float | None) -> str:
    """An age or a duration as the pages write it: 45s, 12m, 3.5h."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}/s"


def cut(text: str, width: int) -> str:
    one_line = " ".join(str(text).split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str) -> str:
    """Plain aligned columns, one row a line: what ``column -t`` would make."""
    if not rows:
        return empty
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def facts(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in pairs)


def write(stream: IO[str], text: str) -> None:
    stream.write(text if text.endswith("\n") else text + "\n")
