"""Every URL and every form field, with input nobody should send: never a 500.

The routes come from the URLconf and the field names from the templates, the
filters and the forms, so a new page or field is fuzzed without a change here.
Each input a run once found to answer 500 is kept below as a regression.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
import redis
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.filters import AuditFilter
from dashboard.models import QueueSnapshot, WorkerSnapshot
from deadletters.filters import DeadLetterFilter
from deadletters.forms import BulkActionForm, EditRequeueForm
from deadletters.services import deadletter_discard
from tests.helpers import ROOT, make_dead_letter, make_user

pytestmark = pytest.mark.django_db

# Not ours to fuzz (the admin), ending the session (logout), behind a token (metrics).
SKIPPED = ("admin/", "logout/", "metrics")
PARAMETER = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")


def routes(
    patterns: Sequence[URLPattern | URLResolver] | None = None, prefix: str = ""
) -> Iterator[str]:
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(entry.pattern)
        if route.startswith(SKIPPED):
            continue
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, route)
        else:
            yield route


def field_names() -> list[str]:
    """Every name a template's form sends, a filter or form reads, or a view reads raw."""
    names = {"page", "sort", "per_page", "all"}
    for template in (ROOT / "templates").rglob("*.html"):
        names |= set(re.findall(r'\bname="(\w+)"', template.read_text()))
    for source in [*(ROOT / "dashboard").rglob("*.py"), *(ROOT / "deadletters").rglob("*.py")]:
        names |= set(re.findall(r'\b(?:GET|POST)\.get(?:list)?\("(\w+)"', source.read_text()))
    for filterset in (DeadLetterFilter, AuditFilter):
        names |= set(filterset.base_filters)
    for form in (BulkActionForm, EditRequeueForm):
        names |= set(form.base_fields)
    return sorted(names - {"csrfmiddlewaretoken"})


ROUTES = sorted(set(routes()))
NAMES = field_names()

# Text a browser can send: anything but lone surrogates (UTF-8 cannot carry them;
# their bytes arrive, below, as raw bytes instead).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
ODD = st.sampled_from([
    "", " ", "0", "-1", "1e5", "1e3", "1.5", "abc", "NaN", "Infinity", "null", "true",
    str(10**20), str(10**30), str(2**63), "9" * 5000, "\x00", "a\x00b", "١٢٣",
    "[]", "{}", "[[[[]]]]", '{"a": NaN}', "[1e400]", '["\\u0000"]', '["\\ud800"]',
    "2000-13-01", "0001-01-01T00:00", "9999-12-31T23:59", "99999-01-01",
    "requeue", "discard", "selected", "filter", "grow", "shrink", "on", "open", "15m", "30d",
    "until=2000-13-01", "range=30d", "q=" + "x" * 300, "signature=&state=open",
    "../../etc/passwd", "<script>alert(1)</script>", "%00", "%ff", "x" * 300,
])  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
).map(lambda value: json.dumps(value))
VALUES = st.one_of(ODD, TEXT, JSON_VALUES, st.integers().map(str))
# Raw query-string bytes, percent-encoded: invalid UTF-8 and surrogate halves included.
RAW = st.binary(max_size=12).map(quote_from_bytes)

ODD_IDS = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(str),
    st.sampled_from(["0", "9" * 19, "9" * 25, "-1", "abc", "1e3", "١٢", "1.0"]),
)
ODD_NAMES = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=300),
    st.sampled_from(["a/b", "/", "a//b", "x" * 256, "\x00", "a\x00", "é@host", "..", "%", "?#"]),
)


@pytest.fixture
def world(db: None, broker: redis.Redis, settings: Any) -> dict[str, Any]:
    """Personas and one of each thing a URL can name, so valid paths reach the views' logic."""
    # Control commands wait this long for replies that no worker here sends.
    settings.MONITOR_INSPECT_TIMEOUT = 0.05
    operator = make_user("olivia", group="Operator")
    superuser = make_user("root", superuser=True)
    # A queue nothing consumes: a requeue that gets through runs nowhere.
    open_row = make_dead_letter(queue="requeue-target")
    handled = make_dead_letter(queue="requeue-target")
    deadletter_discard(dead_letter=handled, user=operator)
    now = datetime.now(UTC)
    QueueSnapshot.objects.create(name="requeue-target", sampled_at=now, depth=0)
    WorkerSnapshot.objects.create(hostname="fuzz@host", first_seen_at=now, last_seen_at=now)
    clients = {}
    for user in (operator, superuser):
        client = Client(raise_request_exception=False)
        client.force_login(user)
        clients[user.username] = client
    return {
        "clients": clients,
        "ids": [str(open_row.pk), str(handled.pk)],
        "names": ["requeue-target", "fuzz@host"],
    }


@st.composite
def requests(draw: st.DrawFn, route: str, world: dict[str, Any]) -> dict[str, Any]:
    def fill(match: re.Match[str]) -> str:
        if match["converter"] == "id":
            value = draw(st.sampled_from(world["ids"]) | ODD_IDS)
        else:
            value = draw(st.sampled_from(world["names"]) | ODD_NAMES)
        return quote(value, safe="/")

    pairs = draw(st.lists(st.tuples(st.sampled_from(NAMES) | TEXT, VALUES), max_size=8))
    raw = draw(st.lists(st.tuples(st.sampled_from(NAMES), RAW), max_size=2))
    query = "&".join(
        [f"{quote(k)}={quote(v)}" for k, v in pairs] + [f"{quote(k)}={v}" for k, v in raw]
    )
    return {
        "path": "/" + PARAMETER.sub(fill, route),
        "method": draw(st.sampled_from(["GET", "POST"])),
        "query": query,
        "htmx": draw(st.booleans()),
        "persona": draw(st.sampled_from(sorted(world["clients"]))),
    }


def send(client: Client, method: str, path: str, query: str, *, htmx: bool) -> Any:
    headers = {"HX-Request": "true"} if htmx else {}
    if method == "GET":
        return client.get(f"{path}?{query}", headers=headers)
    return client.post(
        path, query, content_type="application/x-www-form-urlencoded", headers=headers
    )


@pytest.mark.parametrize("route", ROUTES)
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_input_makes_a_page_answer_500(
    route: str, world: dict[str, Any], data: st.DataObject
) -> None:
    asked = data.draw(requests(route, world))
    client = world["clients"][asked["persona"]]
    response = send(client, asked["method"], asked["path"], asked["query"], htmx=asked["htmx"])
    assert response.status_code != 500, asked


def test_every_route_is_fuzzed() -> None:
    """The list above comes from the URLconf: a new page is fuzzed without a change here."""
    assert "deadletters/<id:pk>/edit/" in ROUTES
    assert "workers/<name:hostname>/pool/" in ROUTES
    assert not [r for r in ROUTES if r.startswith(SKIPPED)]
    assert {"q", "ids", "filter_query", "max_id", "args", "kwargs", "page"} <= set(NAMES)


DEEP = "[" * 100_000 + "]" * 100_000

# Inputs that answered 500 before they were fixed: (method, path, form or query).
FOUND = [
    ("GET", "/deadletters/", "page=100000000000000000000"),
    ("GET", "/deadletters/", "per_page=100000000000000000000"),
    ("GET", "/deadletters/groups/", "per_page=-1"),
    ("GET", "/audit/", "per_page=-1"),
    ("GET", "/queues/", "per_page=-1"),
    ("GET", "/workers/", "per_page=-1"),
    ("GET", "/deadletters/", "q=" + "a" * 60_000),
    ("GET", "/audit/", "target=" + "a" * 60_000),
    ("POST", "/deadletters/bulk/", f"action=discard&scope=selected&reason=r&ids={10**30}"),
    ("GET", f"/deadletters/{10**30}/", ""),
    ("GET", f"/deadletters/bulk/{10**20}/", ""),
    ("POST", "/deadletters/{open}/edit/", f"args={quote(DEEP)}&kwargs=%7B%7D&queue=q"),
    ("POST", "/deadletters/{open}/edit/", "args=%5BNaN%5D&kwargs=%7B%7D&queue=q"),
    ("POST", "/deadletters/{open}/edit/", "args=%5B1e400%5D&kwargs=%7B%7D&queue=q"),
    ("POST", "/deadletters/{open}/edit/", "args=%5B%22%5Cu0000%22%5D&kwargs=%7B%7D&queue=q"),
    ("POST", "/deadletters/{open}/edit/", "args=%5B%22%5Cud800%22%5D&kwargs=%7B%7D&queue=q"),
    ("GET", "/workers/a%00b/", ""),
    ("POST", "/queues/a%00b/pause/", ""),
    ("POST", "/queues/" + "x" * 300 + "/pause/", ""),
    ("POST", "/workers/revoke/", "task_id=a%00b"),
]


@pytest.mark.parametrize(("method", "path", "form"), FOUND)
@pytest.mark.parametrize("persona", ["olivia", "root"])
def test_inputs_that_once_answered_500_are_refused_cleanly(
    world: dict[str, Any], persona: str, method: str, path: str, form: str
) -> None:
    path = path.format(open=world["ids"][0])
    response = send(world["clients"][persona], method, path, form, htmx=False)
    assert 200 <= response.status_code < 500, response.content[:500]
