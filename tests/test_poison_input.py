"""Nothing the monitor reads can stop it: whatever a message holds, it becomes
one row (stored, noted, or quarantined with its bytes) and the batch goes on.

Property-based at the boundary (arbitrary envelopes, kombu wrappers and raw
bytes, through the real Redis inbox and ``store_batch`` on the test database),
with the examples found so far kept as explicit regressions.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from typing import Any

import pytest
import redis
from django.db import connection, transaction
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dashboard.broker.inbox import open_inbox
from deadletters.ingest import BatchResult, store_batch
from deadletters.models import DeadLetter
from tests.helpers import make_envelope

pytestmark = pytest.mark.django_db

QUEUE = "deadletters"

# A fixed budget, the same examples on every run: CI runs them on both databases.
BUDGET = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- what can arrive ----------------------------------------------------------------

# Any character at all, lone surrogates and NULs included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, 1e20, 1e400, -1e400]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = (
    "v", "id", "task", "args", "kwargs", "kind", "failed_at", "retries", "priority", "eta",
    "expires", "headers", "queue", "exception_type", "exception_message", "traceback",
    "hostname", "body_b64", "requeued_from", "lossy",
)  # fmt: skip


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with some of its fields replaced by anything at all."""
    envelope = make_envelope()
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        if draw(st.booleans()):
            envelope[name] = draw(json_like)
        else:
            envelope.pop(name, None)
    return envelope


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def envelope_bytes(envelope: dict[str, Any]) -> bytes:
    # As Python writes it: lone surrogates escaped, non-finite numbers as
    # Infinity and NaN (which Python's reader takes back).
    return json.dumps(envelope).encode()


def kombu_message(body: bytes, **overrides: Any) -> bytes:
    """A message as kombu keeps it on Redis: JSON around a base64 body."""
    message: dict[str, Any] = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"x_deadletter_v": 1},
        "properties": {"body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }
    message.update(overrides)
    return json.dumps(message).encode()


@st.composite
def wrappers(draw: st.DrawFn) -> bytes:
    """Anything on the dead-letter list: a kombu message around any body, a
    kombu-like object with any fields, or bytes that are not JSON at all."""
    kind = draw(st.sampled_from(["envelope", "wrapper", "bytes"]))
    if kind == "envelope":
        return kombu_message(envelope_bytes(draw(envelopes())))
    if kind == "wrapper":
        fields = draw(st.dictionaries(st.sampled_from(
            ["body", "content-encoding", "content-type", "headers", "properties"]
        ), json_like, max_size=5))  # fmt: skip
        return json.dumps(fields).encode()
    return draw(st.binary(max_size=200))


# --- through the real inbox and store_batch -----------------------------------------


def drain(broker: redis.Redis, raws: list[bytes]) -> tuple[BatchResult, list[DeadLetter]]:
    """Put ``raws`` on the dead-letter list, fetch them through the inbox, store them."""
    broker.delete(QUEUE)
    for raw in raws:
        broker.lpush(QUEUE, raw)
    inbox = open_inbox(QUEUE, lease_seconds=60)
    try:
        messages = inbox.fetch(len(raws), wait=0)
        assert len(messages) == len(raws)
        result = store_batch(messages)
        inbox.ack()
    finally:
        inbox.close()
    return result, list(DeadLetter.objects.order_by("id"))


def assert_each_message_is_one_row(broker: redis.Redis, raws: list[bytes]) -> None:
    """Every message is a row or the duplicate of one; a valid one after them is stored."""
    with transaction.atomic():
        follower = make_envelope()
        result, rows = drain(broker, [*raws, kombu_message(envelope_bytes(follower))])
        assert result.received == len(raws) + 1
        assert result.stored + result.duplicates == result.received
        assert len(rows) == result.stored
        assert rows[-1].task_id == follower["id"], "the valid message after them is stored"
        for row in rows:
            # Storable means readable back: text is valid UTF-8, JSON is JSON.
            row.refresh_from_db()
            json.dumps(row.args, allow_nan=False)
            json.dumps(row.kwargs, allow_nan=False)
            (row.exception_message + row.task_id + row.quarantine_reason).encode()
        transaction.set_rollback(True)


@BUDGET
@given(st.lists(envelopes(), min_size=1, max_size=4))
def test_any_envelope_is_one_row(broker: redis.Redis, batch: list[dict[str, Any]]) -> None:
    assert_each_message_is_one_row(broker, [kombu_message(envelope_bytes(e)) for e in batch])


@BUDGET
@given(st.lists(wrappers(), min_size=1, max_size=4))
def test_any_message_on_the_list_is_one_row(broker: redis.Redis, raws: list[bytes]) -> None:
    assert_each_message_is_one_row(broker, raws)


# --- the examples that stopped the monitor before, kept -----------------------------


def poison(**fields: Any) -> bytes:
    return kombu_message(envelope_bytes(make_envelope(**fields)))


@pytest.mark.parametrize(
    ("raw", "note"),
    [
        (poison(exception_message="cannot open upload-\udcff.csv"), "lone surrogates"),
        (poison(args=["\udcff", {"k\udc80": 1}]), "lone surrogates"),
        (poison(retries=10**30), "retries"),
        (poison(retries=1e400), "retries"),
        (poison(failed_at=1e20), "failed_at"),
        (poison(eta=-1e400), "eta"),
        (poison(args=[math.nan, math.inf]), "non-finite"),
    ],
    ids=[
        "surrogate-message",
        "surrogate-args",
        "retries-1e30",
        "retries-inf",
        "failed-at-1e20",
        "eta-minus-inf",
        "nan-args",
    ],
)
def test_a_value_no_database_stores_is_made_storable_and_noted(
    broker: redis.Redis, raw: bytes, note: str
) -> None:
    result, rows = drain(broker, [raw, poison()])
    assert result.stored == 2
    noted = rows[0]
    assert noted.kind != DeadLetter.Kind.QUARANTINED
    assert note in noted.ingest_notes
    assert noted.raw_body is not None, "the envelope as it came is kept"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (kombu_message(f'{{"v": 1, "args": {nested(100_000)}}}'.encode()), "nests deeper"),
        (poison(args=json.loads(nested(150))), "nested deeper than 100"),
        (kombu_message(b"{}", **{"content-encoding": "no-such-codec"}), "not valid JSON"),
        (b'{"body": ' + nested(50_000).encode() + b"}", "not a kombu message"),
        (b"[" * 200_000, "not a kombu message"),
    ],
    ids=["args-100000-deep", "args-150-deep", "unknown-encoding", "deep-wrapper", "brackets"],
)
def test_what_cannot_be_read_is_quarantined_and_the_batch_goes_on(
    broker: redis.Redis, raw: bytes, reason: str
) -> None:
    result, rows = drain(broker, [raw, poison()])
    assert result.stored == 2
    assert rows[0].kind == DeadLetter.Kind.QUARANTINED
    assert reason in rows[0].quarantine_reason
    assert rows[1].kind == DeadLetter.Kind.EXCEPTION


def test_a_task_id_longer_than_the_key_is_one_row_per_failure(broker: redis.Redis) -> None:
    long_id = "x" * 250
    result, rows = drain(broker, [poison(id=long_id), poison(id=long_id), poison(id="y" * 250)])
    assert (result.stored, result.duplicates) == (2, 1)
    assert rows[0].task_id == long_id


# --- a row the database refuses ------------------------------------------------------


@pytest.fixture
def refusing_table() -> Any:
    """A trigger that makes the database refuse rows of the task ``refuse.me``, as
    a constraint the code does not know of would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse_me() RETURNS trigger AS $$ BEGIN "
                "IF NEW.task_name = 'refuse.me' THEN RAISE EXCEPTION 'refused by a rule'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse_me BEFORE INSERT ON deadletters_deadletter "
                "FOR EACH ROW EXECUTE FUNCTION refuse_me()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse_me BEFORE INSERT ON deadletters_deadletter "
                "WHEN NEW.task_name = 'refuse.me' BEGIN SELECT RAISE(ABORT, 'refused by a rule'); "
                "END"
            )
    # The test's transaction is rolled back, the trigger with it.


def test_a_row_the_database_refuses_is_found_and_quarantined_alone(
    broker: redis.Redis, refusing_table: None
) -> None:
    raws = [poison(task="demo.tasks.ok") for _ in range(6)]
    raws.insert(3, poison(task="refuse.me"))
    result, rows = drain(broker, raws)
    assert (result.stored, result.quarantined) == (7, 1)
    (refused,) = [row for row in rows if row.kind == DeadLetter.Kind.QUARANTINED]
    assert "could not be stored" in refused.quarantine_reason
    assert "refused by a rule" in refused.quarantine_reason
    assert b"refuse.me" in bytes(refused.raw_body or b"")
    assert sum(1 for row in rows if row.task_name == "demo.tasks.ok") == 6


@example(position=0)
@BUDGET
@given(position=st.integers(min_value=0, max_value=20))
def test_wherever_the_refused_row_is_the_rest_are_stored(
    broker: redis.Redis, refusing_table: None, position: int
) -> None:
    with transaction.atomic():
        raws = [poison() for _ in range(20)]
        raws.insert(position, poison(task="refuse.me"))
        result, _ = drain(broker, raws)
        assert (result.stored, result.quarantined) == (21, 1)
        transaction.set_rollback(True)
