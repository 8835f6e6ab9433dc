"""JSON on the hot paths: orjson where it gives the standard library's answer,
the standard library where it would not.

Ingest spends most of its time reading and writing JSON (docs/benchmarks.md);
orjson does both several times faster. It differs in three ways that matter
here, each handled by falling back to ``json``: it reads integers beyond 64
bits as floats (a requeue would lose their digits), it refuses what Python's
reader accepts (NaN, Infinity, ``1e400``, lone surrogate escapes), and it
refuses to write lone surrogates and integers beyond 64 bits.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# 19 digits in a row may be an integer that orjson would read as a float.
# Looked for with a translation and a substring search, both in C: the regex
# [0-9]{19} took 12 µs on a dead letter's 1.4 KB, longer than orjson's parse.
_LONG_INTEGER = b"0" * 19
_DIGITS_AS_ZEROS = bytes(48 if 48 <= b <= 57 else 46 for b in range(256))


def loads(data: bytes) -> Any:
    """``json.loads`` of UTF-8 bytes, faster; raises ``ValueError`` as it does."""
    return loads_exact(data)[0]


def loads_exact(data: bytes) -> tuple[Any, bool]:
    """The value, and whether orjson read it: then it holds no NaN, no infinity
    and no lone surrogate, which orjson refuses."""
    if _LONG_INTEGER not in data.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass  # perhaps something only Python's reader accepts: it decides
    return json.loads(data.decode("utf-8")), False


def dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, faster;
    but NaN and infinities, which JSON has not, are written as ``null``."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a lone surrogate, a huge integer, a key that is no string
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
