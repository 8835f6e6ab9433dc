from __future__ import annotations

from datetime import datetime

from django.db import models


class CollectorStatus(models.Model):
    """How each of the monitor's collectors last fared: one row per collector.

    Pages show how old their data is and since when a source is unreachable;
    ``/readyz`` and ``/metrics`` read the same rows.
    """

    name = models.CharField(max_length=64, primary_key=True)
    last_attempt_at = models.DateTimeField(null=True)
    last_success_at = models.DateTimeField(null=True)
    last_error = models.TextField(blank=True)
    # When the current run of failures began; None while it succeeds.
    failing_since = models.DateTimeField(null=True)

    class Meta:
        verbose_name_plural = "collector statuses"

    def __str__(self) -> str:
        return self.name

    @property
    def is_failing(self) -> bool:
        return self.failing_since is not None

    def age_seconds(self, now: datetime) -> float | None:
        if self.last_success_at is None:
            return None
        return (now - self.last_success_at).total_seconds()
