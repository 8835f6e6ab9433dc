"""Small formatters for every page, and the one SVG chart tag."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

CHART_WIDTH = 120
CHART_HEIGHT = 28
CHART_SECONDS = 3600.0


@register.filter
def duration(seconds: float | None) -> str:
    """42 s, 7 min, 3 h 5 min, 2 d 4 h; '' for None (the caller says "unknown")."""
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def seconds_since(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (timezone.now() - moment).total_seconds()


@register.filter
def epoch_age(epoch_seconds: float | None) -> float | None:
    """Seconds since an epoch timestamp (a worker's ``time_start``)."""
    if epoch_seconds is None:
        return None
    return time.time() - float(epoch_seconds)


@register.filter
def number(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


@register.filter
def rate(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 100:
        return f"{value:,.0f}/s"
    return f"{value:.1f}/s"


@register.simple_tag
def chart(
    series: list[Any],
    *,
    label: str,
    bars: bool = False,
    current: int | None = None,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
) -> SafeString:
    """A small inline SVG chart, server-rendered: nothing but numbers in the markup.

    As a line (a queue's depth): ``series`` holds (seconds into the last hour,
    value) and ``current``, when known, is drawn at the right edge. As ``bars``
    (failures per hour): ``series`` holds one value a bar, oldest first.
    """
    if bars:
        points = [(i * CHART_SECONDS / max(len(series), 1), int(v)) for i, v in enumerate(series)]
    else:
        points = list(series) + ([(CHART_SECONDS, current)] if current is not None else [])
    if not points:
        return format_html('<span class="muted">{}</span>', "no history yet")
    peak = max(value for _, value in points)
    top = peak or 1
    if bars:
        step = width / len(points)
        marks = format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            (
                (f"{i * step:.1f}", f"{height - height * v / top:.1f}",
                 f"{max(step - 1, 1):.1f}", f"{height * v / top:.1f}", v)
                for i, (_, v) in enumerate(points)
            ),
        )  # fmt: skip
    else:
        xy = [
            (
                round(min(max(at, 0.0), CHART_SECONDS) / CHART_SECONDS * width, 1),
                round(height - 1 - value / top * (height - 2), 1),
            )
            for at, value in points
        ]
        if len(xy) == 1:
            xy.insert(0, (0.0, xy[0][1]))
        marks = format_html('<polyline points="{}"/>', format_html_join(" ", "{},{}", xy))
    return format_html(
        '<svg class="chart{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="{label}, peak {peak}"><title>peak {peak}: {label}</title>{marks}</svg>',
        " bars" if bars else "",
        w=width,
        h=height,
        label=label,
        peak=f"{peak:,}",
        marks=marks,
    )
