from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from deadletters.redact import redact

register = template.Library()


@register.simple_tag
def sparkline(values: list[int], width: int = 120, height: int = 24) -> SafeString:
    """A server-rendered bar chart: no script, nothing but numbers in the markup."""
    if not values:
        return format_html("")
    peak = max(values) or 1
    bar = width / len(values)
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
        (
            (
                f"{i * bar:.1f}",
                f"{height - height * v / peak:.1f}",
                f"{max(bar - 1, 1):.1f}",
                f"{height * v / peak:.1f}",
                int(v),
            )
            for i, v in enumerate(values)
        ),
    )
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="failures per hour, last {} hours">{}</svg>',
        width, height, width, height, len(values), bars,
    )  # fmt: skip


@register.filter
def redacted_json(value: Any) -> str:
    """Pretty JSON with sensitive keys redacted (escaped by the template as usual)."""
    return json.dumps(redact(value), indent=2, ensure_ascii=False, default=str)
