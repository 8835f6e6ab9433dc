"""Retention: handled dead letters are pruned after a while, open ones never."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deadletters.models import DeadLetter, DeadLetterStats
from deadletters.retention import prune
from deadletters.services import deadletter_discard
from tests.helpers import make_dead_letters

pytestmark = pytest.mark.django_db


def test_retention_prunes_old_handled_rows_and_never_open_ones() -> None:
    old_open, old_done, recent_done = make_dead_letters(3)
    for row in (old_done, recent_done):
        deadletter_discard(dead_letter=row, user=None)  # type: ignore[arg-type]
    DeadLetter.objects.filter(pk=old_done.pk).update(
        discarded_at=timezone.now() - timedelta(days=31)
    )
    DeadLetter.objects.filter(pk=old_open.pk).update(failed_at=timezone.now() - timedelta(days=90))
    assert prune() == 1
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {old_open.pk, recent_done.pk}
    stats = DeadLetterStats.objects.get()
    assert (stats.received_total, stats.discarded_total, stats.open) == (3, 2, 1)
