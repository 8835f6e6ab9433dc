"""Small formatters for the queue and worker pages, and the depth chart."""

from __future__ import annotations

import time
from datetime import datetime

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
def depth_chart(points: list[tuple[float, int]], current: int | None = None) -> SafeString:
    """The last hour of a queue's depth as a small inline SVG line, no script.

    ``points`` are (seconds into the hour, deepest sample of the step); the
    current depth, when known, is drawn at the right edge.
    """
    series = list(points)
    if current is not None:
        series.append((CHART_SECONDS, current))
    if not series:
        return format_html('<span class="muted">{}</span>', "no history yet")
    top = max(depth for _, depth in series) or 1
    coordinates = [
        (
            round(min(max(at, 0.0), CHART_SECONDS) / CHART_SECONDS * CHART_WIDTH, 1),
            round(CHART_HEIGHT - 1 - depth / top * (CHART_HEIGHT - 2), 1),
        )
        for at, depth in series
    ]
    if len(coordinates) == 1:
        coordinates.insert(0, (0.0, coordinates[0][1]))
    polyline = format_html_join(" ", "{},{}", coordinates)
    peak = max(depth for _, depth in series)
    return format_html(
        '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="depth over the last hour, peak {peak}"><title>peak {peak} in the last '
        'hour</title><polyline points="{points}"/></svg>',
        w=CHART_WIDTH,
        h=CHART_HEIGHT,
        peak=f"{peak:,}",
        points=polyline,
    )
