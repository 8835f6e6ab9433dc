from __future__ import annotations

import json
import math
import re
from typing import Any

from django import forms

from dashboard.http import MAX_ID
from deadletters import bulk
from deadletters.envelope import MAX_DEPTH
from deadletters.models import BulkAction


class IdListField(forms.Field):
    """Dead-letter ids as the list's check boxes send them.

    Any id the column can hold is acceptable: the runner only acts on open rows.
    """

    widget = forms.MultipleHiddenInput
    default_error_messages = {
        "invalid": "%(value)s is not a dead-letter id (a whole number from 1 to %(max)s)."
    }

    def to_python(self, value: Any) -> list[int]:
        if value in self.empty_values:
            return []
        ids = []
        for raw in value if isinstance(value, list | tuple) else [value]:
            text = str(raw).strip()
            # isascii: int() also reads other scripts' digits; 19 digits: int() of
            # thousands is refused, and anything past 19 is past MAX_ID anyway.
            if not (text.isascii() and text.isdigit() and len(text) <= 19
                    and 1 <= int(text) <= MAX_ID):  # fmt: skip
                raise forms.ValidationError(
                    self.error_messages["invalid"],
                    code="invalid",
                    params={"value": repr(text[:40]), "max": f"{MAX_ID:,}"},
                )
            ids.append(int(text))
        return ids


class BulkActionForm(forms.Form):
    action = forms.ChoiceField(choices=BulkAction.Action.choices)
    scope = forms.ChoiceField(choices=[("selected", "selected"), ("filter", "all matching")])
    ids = IdListField(required=False)
    filter_query = forms.CharField(required=False)
    reason = forms.CharField(
        max_length=2000, error_messages={"required": "Say why: the reason goes into the audit."}
    )
    confirm = forms.CharField(required=False)
    # A large requeue starts with a canary unless the operator says otherwise.
    skip_canary = forms.BooleanField(required=False)
    rate = forms.FloatField(
        required=False,
        min_value=0.1,
        max_value=100_000,
        error_messages={"min_value": "The rate is messages a second: at least 0.1."},
    )
    # The newest id when the operator was asked to type the size: the set they counted.
    max_id = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_ID,
        widget=forms.HiddenInput,
        error_messages={
            key: "Not the confirmation this page asked for: start the action again."
            for key in ("invalid", "min_value", "max_value")
        },
    )

    def clean_filter_query(self) -> str:
        filter_query: str = self.cleaned_data["filter_query"]
        try:
            bulk.matching(filter_query)
        except bulk.InvalidFilter as exc:
            raise forms.ValidationError(f"The filter is not valid: {exc}") from None
        return filter_query

    def clean_max_id(self) -> int | None:
        max_id: int | None = self.cleaned_data["max_id"]
        # Lower only narrows the set, and the number typed must match it; higher
        # would sweep in failures that arrived after the operator counted.
        if max_id is not None and max_id > bulk.newest_id():
            raise forms.ValidationError(
                "Not the confirmation this page asked for: start the action again."
            )
        return max_id

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("scope") == "selected" and not data.get("ids"):
            raise forms.ValidationError("Tick at least one dead letter, or choose all matching.")
        return data


class JSONField(forms.CharField):
    """A textarea that must hold JSON of one type (a list for args, an object for kwargs).

    ``[]`` and ``{}`` are values (a task without arguments); an empty textarea is not.
    What neither the database nor the broker's JSON holds is refused here: nesting
    deeper than the ingest keeps (MAX_DEPTH), NaN and Infinity, NUL and lone
    surrogates.
    """

    widget = forms.Textarea(attrs={"rows": 8, "spellcheck": "false"})
    # Not [] and {}, which Django's fields count as empty and so as missing.
    empty_values = [None, ""]

    def __init__(self, *, expected: type, **kwargs: Any) -> None:
        self.expected = expected
        self.kind = "a list" if expected is list else "an object"
        none = "[]" if expected is list else "{}"
        kwargs.setdefault("error_messages", {})
        kwargs["error_messages"].setdefault(
            "required", f"Enter {self.kind} in JSON ({none} for none)."
        )
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value)
        if not text:
            return None
        try:
            parsed = json.loads(text, parse_constant=_no_constant)
        except RecursionError:
            raise forms.ValidationError(f"Nested deeper than {MAX_DEPTH} levels.") from None
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(parsed, self.expected):
            raise forms.ValidationError(f"Must be {self.kind} in JSON.")
        problem = _unstorable(parsed)
        if problem:
            raise forms.ValidationError(problem)
        return parsed


# NUL and lone surrogates: valid in JSON as escapes, refused by UTF-8 and PostgreSQL.
_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unstorable(value: Any) -> str:
    """Why ``value`` cannot be stored and published as JSON, or "".

    Walked with a stack, not recursion: the value may nest as deep as the
    parser allowed.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            if depth > MAX_DEPTH:
                return f"Nested deeper than {MAX_DEPTH} levels."
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(item, str) and _UNSTORABLE_TEXT.search(item):
            return "Holds a NUL (\\u0000) or a lone surrogate (\\ud800): no database stores them."
        elif isinstance(item, float) and not math.isfinite(item):
            return "Holds a number too large for JSON (it reads as infinity)."
    return ""


class EditRequeueForm(forms.Form):
    args = JSONField(expected=list, help_text="A JSON list.")
    kwargs = JSONField(expected=dict, help_text="A JSON object.")
    queue = forms.CharField(max_length=255)
    reason = forms.CharField(max_length=2000, required=False)
