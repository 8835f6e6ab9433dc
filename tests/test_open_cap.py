"""The cap on open dead letters: past it the site says so, and nothing is dropped."""

from __future__ import annotations

import pytest
from django.test import Client

from deadletters.models import DeadLetter
from tests.helpers import make_dead_letters

pytestmark = pytest.mark.django_db


def test_a_cap_on_open_rows_shows_a_banner_and_drops_nothing(
    operator_client: Client, settings: object
) -> None:
    settings.DEADLETTERS_MAX_OPEN = 3  # type: ignore[attr-defined]
    make_dead_letters(2)
    assert "cap of 3 open" not in operator_client.get("/").content.decode()
    make_dead_letters(2)
    assert DeadLetter.objects.count() == 4
    assert "cap of 3 open dead letters is reached" in operator_client.get("/").content.decode()
