"""Pruning: requeued and discarded rows older than the retention; open rows never.

The counters (``DeadLetterStats``) and group totals are left as they are, so
the totals that Prometheus reads stay monotonic across pruning.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from deadletters.models import (
    DeadLetter,
    DeadLetterGroup,
    DeadLetterGroupHour,
    DeadLetterSearch,
    DeadLetterSearchQueue,
)

logger = logging.getLogger("deadletters.retention")

BATCH = 5_000
HOURLY_DAYS = 8


def prune(now: datetime | None = None) -> int:
    """Delete handled rows past the retention, in batches; returns how many."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.DEADLETTERS_RETENTION_DAYS)
    expired = Q(state=DeadLetter.State.REQUEUED, requeued_at__lt=cutoff) | Q(
        state=DeadLetter.State.DISCARDED, discarded_at__lt=cutoff
    )
    total = 0
    while True:
        ids = list(DeadLetter.objects.filter(expired).values_list("pk", flat=True)[:BATCH])
        if not ids:
            break
        with transaction.atomic():
            DeadLetterSearch.objects.filter(dead_letter_id__in=ids).delete()
            DeadLetterSearchQueue.objects.filter(dead_letter_id__in=ids).delete()
            DeadLetter.objects.filter(requeued_from_id__in=ids).update(requeued_from=None)
            # A raw delete: Django's collector would load every row to null a link
            # that the line above already nulled.
            rows = DeadLetter.objects.filter(pk__in=ids)
            total += rows._raw_delete(rows.db)
    DeadLetterGroupHour.objects.filter(hour__lt=now - timedelta(days=HOURLY_DAYS)).delete()
    DeadLetterGroup.objects.filter(open__lte=0, last_seen__lt=cutoff).delete()
    if total:
        logger.info("pruned %d handled dead letters older than %s", total, cutoff.isoformat())
    return total
