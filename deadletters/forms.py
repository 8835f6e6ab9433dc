from __future__ import annotations

import json
from typing import Any

from django import forms

from deadletters.models import BulkAction


class BulkActionForm(forms.Form):
    action = forms.ChoiceField(choices=BulkAction.Action.choices)
    scope = forms.ChoiceField(choices=[("selected", "selected"), ("filter", "all matching")])
    ids = forms.TypedMultipleChoiceField(coerce=int, required=False)
    filter_query = forms.CharField(required=False)
    reason = forms.CharField(
        max_length=2000, error_messages={"required": "Say why: the reason goes into the audit."}
    )
    confirm = forms.CharField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Any integer id is acceptable here; the runner only acts on open rows.
        self.fields["ids"].valid_value = lambda value: str(value).isdigit()  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("scope") == "selected" and not data.get("ids"):
            raise forms.ValidationError("Tick at least one dead letter, or choose all matching.")
        return data


class JSONField(forms.CharField):
    """A textarea that must hold JSON of one type (a list for args, an object for kwargs)."""

    widget = forms.Textarea(attrs={"rows": 8, "spellcheck": "false"})

    def __init__(self, *, expected: type, **kwargs: Any) -> None:
        self.expected = expected
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> Any:
        text = super().to_python(value) or ""
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(parsed, self.expected):
            kind = "a list" if self.expected is list else "an object"
            raise forms.ValidationError(f"Must be {kind} in JSON.")
        return parsed


class EditRequeueForm(forms.Form):
    args = JSONField(expected=list, help_text="A JSON list.")
    kwargs = JSONField(expected=dict, help_text="A JSON object.")
    queue = forms.CharField(max_length=255)
    reason = forms.CharField(max_length=2000, required=False)
