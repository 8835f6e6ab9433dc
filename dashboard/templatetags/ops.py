"""Small formatters for every page, and the one SVG chart tag."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from dashboard.models import OUTCOME_BUCKETS

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


# Closer than this, a time is "just now": "0 s ago" reads like a bug.
JUST_NOW_SECONDS = 10


@register.filter
def ago(moment: datetime | float | None) -> str:
    """A moment (or seconds since it) as people say it: "just now", "42 s ago",
    "7 min ago", "3 h 5 min ago"; '' for None (the caller says "never")."""
    seconds = seconds_since(moment) if isinstance(moment, datetime) else moment
    if seconds is None:
        return ""
    if seconds < JUST_NOW_SECONDS:
        return "just now"
    return f"{duration(seconds)} ago"


@register.filter
def seconds_since(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (timezone.now() - moment).total_seconds()


@register.filter
def seconds_until(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment - timezone.now()).total_seconds()


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


@register.filter
def seconds(value: float | None) -> str:
    """A short duration with the precision it deserves: 4 ms, 35 ms, 0.4 s, 2.25 s, 12.5 s, 3 min;
    '' for None. A value at the top histogram bound is "at least" that (``≥ 10 s``)."""
    if value is None:
        return ""
    if value >= OUTCOME_BUCKETS[-1]:
        return f"≥ {OUTCOME_BUCKETS[-1]:g} s"
    if value < 0.01:
        return f"{value * 1000:.1f} ms".replace(".0 ms", " ms")
    if value < 0.1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
        return text.rstrip("0").rstrip(".") + " s"
    return duration(value)


@register.filter
def percent(ratio: float | None) -> str:
    """0.123 as '12 %', small ratios with a decimal ('0.4 %'); '' for None."""
    if ratio is None:
        return ""
    value = ratio * 100
    if value == 0:
        return "0 %"
    return f"{value:.1f} %" if value < 10 else f"{value:.0f} %"


@register.filter
def per_minute(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}/min"
    return f"{value:.1f}/min".replace(".0/min", "/min")


@register.filter
def peak(points: Sequence[tuple[float, float]]) -> float | None:
    """The highest value of a chart's (at, value) points, for its legend."""
    return max((value for _, value in points), default=None)


def _figure(value: float) -> str:
    """A chart's peak, as a person reads it."""
    if float(value).is_integer():
        return f"{int(value):,}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _line(points: Sequence[tuple[float, float]], span: float, top: float, width: int, height: int,
          css: str) -> SafeString:  # fmt: skip
    xy = [
        (
            round(min(max(at, 0.0), span) / span * width, 1),
            round(height - 1 - value / top * (height - 2), 1),
        )
        for at, value in points
    ]
    if len(xy) == 1:
        xy.insert(0, (0.0, xy[0][1]))
    # Numbers only, formatted here: nothing to escape (format_html_join's
    # escaping of every coordinate was most of a page of 50 charts).
    coordinates = mark_safe(" ".join(f"{x},{y}" for x, y in xy))  # noqa: S308 - numbers we formatted
    return format_html(
        '<polyline{} points="{}"/>', format_html(' class="{}"', css) if css else "", coordinates
    )


@register.simple_tag
def chart(
    series: list[Any],
    *,
    label: str,
    bars: bool = False,
    current: int | None = None,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
    second: list[Any] | None = None,
    second_label: str = "",
    span: float = CHART_SECONDS,
    kind: str = "",
) -> SafeString:
    """A small inline SVG chart, server-rendered: nothing but numbers in the markup.

    As a line (a queue's depth): ``series`` holds (seconds into the window,
    value) and ``current``, when known, is drawn at the right edge; ``span`` is
    the window in seconds (the last hour unless said). ``second``, of the same
    shape, is drawn on the same scale as a second line (failed beside
    succeeded, p95 beside p50): the page's legend names the two, by colour and
    in words. As ``bars`` (failures per hour): ``series`` holds one value a
    bar, oldest first. ``kind`` is a class the stylesheet colours by
    (``throughput``, ``latency``); a wide chart scales to its box.
    """
    span = float(span) or CHART_SECONDS
    if bars:
        points = [(i * span / max(len(series), 1), int(v)) for i, v in enumerate(series)]
    else:
        points = list(series) + ([(span, current)] if current is not None else [])
    others = list(second or [])
    if not points and not others:
        return format_html('<span class="muted">{}</span>', "no history yet")
    peak = max(value for _, value in points + others)
    top = peak or 1
    if bars:
        step = width / len(points)
        # Bars stand on a baseline across the whole window: with most hours at
        # zero, the one bar of the last hour alone sat at the chart's right
        # edge and read as part of the next column.
        tall = height - 1
        # Numbers only (the values are ints by now): nothing to escape.
        rects = mark_safe(  # noqa: S308 - numbers we formatted
            "".join(
                f'<rect x="{i * step:.1f}" y="{tall - tall * v / top:.1f}" '
                f'width="{max(step - 1, 1):.1f}" height="{tall * v / top:.1f}">'
                f"<title>{v}</title></rect>"
                for i, (_, v) in enumerate(points)
            )
        )
        marks = format_html(
            '{}<line class="baseline" x1="0" y1="{}" x2="{}" y2="{}" stroke="currentColor"/>',
            rects,
            height - 0.5,
            width,
            height - 0.5,
        )
    elif second is None:
        marks = _line(points, span, top, width, height, "")
    else:
        marks = format_html(
            "{}{}",
            _line(points, span, top, width, height, "s1") if points else "",
            _line(others, span, top, width, height, "s2") if others else "",
        )
    if second is not None:
        label = f"{label} and {second_label}"
    classes = "".join(f" {c}" for c in ("bars" if bars else "", kind) if c)
    return format_html(
        '<svg class="chart{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        'aria-label="{label}, peak {peak}"><title>peak {peak}: {label}</title>{marks}</svg>',
        classes,
        w=width,
        h=height,
        label=label,
        peak=_figure(peak),
        marks=marks,
    )
