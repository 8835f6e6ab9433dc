"""Password guessing on the real login form: locked per username and address (django-axes)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from tests.helpers import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def visitor(address: str, forwarded_for: str | None = None) -> Client:
    """A browser at ``address`` that must send the form's CSRF token, as a real one does."""
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address)
    if forwarded_for:
        client.defaults["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client


def log_in(client: Client, username: str, password: str) -> Any:
    form = client.get("/login/").content.decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert match, form
    return client.post(
        "/login/",
        {"username": username, "password": password, "csrfmiddlewaretoken": match[1]},
    )


def test_guessing_locks_the_username_from_that_address() -> None:
    make_user("olivia")
    make_user("oscar")
    limit = settings.AXES_FAILURE_LIMIT
    attacker = visitor("203.0.113.7")
    for _ in range(limit - 1):
        assert log_in(attacker, "olivia", "guess").status_code == 200  # the form again
    locked = log_in(attacker, "olivia", "guess")
    assert locked.status_code == 429
    assert "Too many failed log-ins" in locked.content.decode()

    # Even the right password is refused from there now...
    assert log_in(attacker, "olivia", PASSWORD).status_code == 429
    assert "_auth_user_id" not in attacker.session
    # ...but olivia from her own address, and oscar from the same one, get in.
    assert log_in(visitor("198.51.100.20"), "olivia", PASSWORD).status_code == 302
    assert log_in(visitor("203.0.113.7"), "oscar", PASSWORD).status_code == 302


def test_a_successful_login_forgets_earlier_failures() -> None:
    make_user("olivia")
    limit = settings.AXES_FAILURE_LIMIT
    user = visitor("203.0.113.8")
    for _ in range(limit - 1):
        log_in(user, "olivia", "typo")
    assert log_in(user, "olivia", PASSWORD).status_code == 302
    again = visitor("203.0.113.8")
    for _ in range(limit - 1):
        assert log_in(again, "olivia", "typo").status_code == 200


def test_behind_a_proxy_each_client_address_counts_apart(settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    make_user("olivia")
    proxy = "10.0.0.5"
    attacker = visitor(proxy, forwarded_for="203.0.113.7")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(attacker, "olivia", "guess")
    assert log_in(attacker, "olivia", PASSWORD).status_code == 429
    colleague = visitor(proxy, forwarded_for="198.51.100.20")
    assert log_in(colleague, "olivia", PASSWORD).status_code == 302
