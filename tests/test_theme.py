"""The theme: system (the browser's prefers-color-scheme), light or dark, kept
per person, switched by a plain form in the header that brings them back."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.models import UserPreference

pytestmark = pytest.mark.django_db


def theme(client: Client, url: str = "/audit/") -> str:
    """The theme the page is drawn in: its <html data-theme>."""
    match = re.search(r'<html lang="en" data-theme="(\w+)">', client.get(url).content.decode())
    assert match
    return match.group(1)


def test_everyone_starts_on_the_system_theme(viewer_client: Client, client: Client) -> None:
    assert theme(viewer_client) == "system"
    page = viewer_client.get("/").content.decode()
    assert '<meta name="color-scheme" content="light dark">' in page
    assert 'data-theme="system"' in client.get(reverse("login")).content.decode()


def test_the_header_button_names_the_theme_and_offers_the_next(viewer_client: Client) -> None:
    page = viewer_client.get("/audit/?action=requeue").content.decode()
    form = page.split('<form class="theme"', 1)[1].split("</form>", 1)[0]
    assert f'action="{reverse("theme")}"' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert '<input type="hidden" name="next" value="/audit/?action=requeue">' in form
    assert 'name="theme" value="light"' in form
    assert ">Theme: System</button>" in form


def test_it_goes_round_system_light_dark_and_back(viewer_client: Client, viewer: User) -> None:
    seen = []
    for _ in range(3):
        response = viewer_client.post(reverse("theme"), {"next": "/audit/"})
        assert (response.status_code, response["Location"]) == (302, "/audit/")
        seen.append(UserPreference.objects.get(user=viewer).theme)
        assert theme(viewer_client) == seen[-1]
    assert seen == ["light", "dark", "system"]


def test_a_named_theme_is_set_and_kept_for_that_person_only(
    viewer_client: Client, operator_client: Client
) -> None:
    viewer_client.post(reverse("theme"), {"theme": "dark"})
    page = viewer_client.get("/").content.decode()
    assert 'data-theme="dark"' in page
    assert '<meta name="color-scheme" content="dark">' in page
    assert 'name="theme" value="system"' in page  # dark's next
    assert 'data-theme="system"' in operator_client.get("/").content.decode()


def test_an_unknown_theme_is_refused(viewer_client: Client, viewer: User) -> None:
    response = viewer_client.post(reverse("theme"), {"theme": "neon"})
    assert response.status_code == 400
    assert UserPreference.objects.get(user=viewer).theme == "system"


@pytest.mark.parametrize(
    "next_url", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)", ""]
)
def test_it_only_goes_back_within_the_site(viewer_client: Client, next_url: str) -> None:
    response = viewer_client.post(reverse("theme"), {"theme": "dark", "next": next_url})
    assert (response.status_code, response["Location"]) == (302, reverse("overview"))


def test_it_takes_only_a_post_with_its_csrf_token(viewer: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    assert client.get(reverse("theme")).status_code == 405
    assert client.post(reverse("theme"), {"theme": "dark"}).status_code == 403
    assert not UserPreference.objects.exists()
