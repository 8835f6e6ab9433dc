"""The fast JSON paths give the standard library's answers, whatever the value."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard import jsonio
from deadletters.redact import redact, redacted_json

# Every value a JSON reader can produce, and more: integers past 64 bits,
# lone surrogates, non-finite floats, NULs, keys that hold sensitive words.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
keys = st.text() | st.sampled_from(["password", "API_Key", "x-token", "Secret", "user"])
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    # NaN is not equal to itself; its text form says whether both read one.
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@settings(max_examples=300)
@given(values)
def test_loads_reads_what_json_reads(value: Any) -> None:
    data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        # A lone surrogate written raw is no UTF-8: both refuse it.
        try:
            jsonio.loads(data)
        except ValueError:
            return
        raise AssertionError("jsonio read bytes that are not UTF-8") from None
    assert _same(jsonio.loads(data), expected)


@settings(max_examples=300)
@given(values)
def test_dumps_writes_what_json_writes(value: Any) -> None:
    written = jsonio.dumps(value)
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if "NaN" in expected or "Infinity" in expected:
        return  # JSON has neither; orjson writes null (documented)
    assert json.loads(written) == json.loads(expected)


@settings(max_examples=300)
@given(values)
def test_redacted_json_is_the_json_of_the_redacted_value(value: Any) -> None:
    expected = jsonio.dumps(redact(value))
    assert redacted_json(value) == expected
