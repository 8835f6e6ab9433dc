"""API tokens and who may call the API: a bearer token acts as its user, with
the user's roles; a browser session works too, with CSRF on changes; anything
else is a 401 in JSON, never the login page."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from dashboard.api.tokens import TOKEN68, create_token, digest, parse_bearer
from dashboard.models import ApiToken
from tests.helpers import make_dead_letter, make_user

pytestmark = pytest.mark.django_db

API = "/api/v1"


def bearer(secret: str) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def token_for(user: User, name: str = "ci", **kwargs: Any) -> str:
    return create_token(user=user, name=name, **kwargs).secret


@pytest.fixture
def operator_token(operator: User) -> str:
    return token_for(operator, "deploy-bot")


@pytest.fixture
def viewer_token(viewer: User) -> str:
    return token_for(viewer, "chat-bot")


# --- making tokens ----------------------------------------------------------------


def test_the_command_prints_the_token_once_and_stores_only_its_hash(operator: User) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_token", "olivia", "--name", "deploy", "--expires", "30", stdout=out,
                 stderr=err)  # fmt: skip
    secret = out.getvalue().strip()
    token = ApiToken.objects.get(user=operator, name="deploy")
    assert token.secret_hash == digest(secret)
    assert secret.startswith(token.prefix)
    stored = [str(v) for v in ApiToken.objects.filter(pk=token.pk).values().get().values()]
    assert secret not in stored
    assert token.expires_at is not None
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert "shown once" in err.getvalue()
    response = Client().get(f"{API}/deadletters", **bearer(secret))
    assert response.status_code == 200


def test_the_command_refuses_an_unknown_user_and_a_duplicate_name(operator: User) -> None:
    with pytest.raises(CommandError, match="No user"):
        call_command("api_token", "nobody", stdout=io.StringIO(), stderr=io.StringIO())
    call_command("api_token", "olivia", "--name", "a", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="already has a token named 'a'"):
        call_command("api_token", "olivia", "--name", "a", stdout=io.StringIO(),
                     stderr=io.StringIO())  # fmt: skip


# --- refused tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "expired"),
        ({"revoked_at": timezone.now()}, "revoked"),
    ],
)
def test_an_expired_or_revoked_token_gets_401(
    operator: User, change: dict[str, Any], said: str
) -> None:
    new = create_token(user=operator, name="old")
    ApiToken.objects.filter(pk=new.token.pk).update(**change)
    response = Client().get(f"{API}/deadletters", **bearer(new.secret))
    assert response.status_code == 401
    assert said in response.json()["detail"]


def test_an_unknown_or_malformed_token_gets_401_in_json_not_the_login_page(
    operator: User,
) -> None:
    for header in ("Bearer cod_nope", "Bearer", "Basic b2xpdmlhOnB3", "Bearer a b"):
        response = Client().get(f"{API}/deadletters", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["detail"]
    response = Client().post(f"{API}/deadletters/1/requeue")
    assert response.status_code == 401
    assert "login" not in response.get("Location", "")


def test_the_admin_lists_and_revokes_tokens(operator: User) -> None:
    admin = make_user("ada", superuser=True)
    new = create_token(user=operator, name="leaked")
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/dashboard/apitoken/").content.decode()
    assert "leaked" in page
    assert new.token.prefix in page
    assert new.secret not in page
    response = client.post(
        "/admin/dashboard/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [new.token.pk]},
        follow=True,
    )
    assert "Revoked 1 token" in response.content.decode()
    assert Client().get(f"{API}/deadletters", **bearer(new.secret)).status_code == 401


def test_a_call_notes_when_the_token_was_last_used(operator: User) -> None:
    new = create_token(user=operator, name="cron")
    assert new.token.last_used_at is None
    Client().get(f"{API}/queues", **bearer(new.secret))
    new.token.refresh_from_db()
    assert new.token.last_used_at is not None


# --- roles ---------------------------------------------------------------------------------


def test_a_user_in_no_group_reads_nothing() -> None:
    nobody = make_user("nadia")
    secret = token_for(nobody)
    for path in ("/deadletters", "/queues", "/workers", "/periodic", "/audit", "/overview",
                 "/groups"):  # fmt: skip
        response = Client().get(f"{API}{path}", **bearer(secret))
        assert response.status_code == 403, path


def test_a_viewer_token_reads_but_every_change_is_403(viewer_token: str) -> None:
    row = make_dead_letter()
    client = Client()
    assert client.get(f"{API}/deadletters/{row.pk}", **bearer(viewer_token)).status_code == 200
    changes: list[tuple[str, dict[str, Any]]] = [
        (f"/deadletters/{row.pk}/requeue", {}),
        (f"/deadletters/{row.pk}/discard", {}),
        (f"/deadletters/{row.pk}/edit", {"args": [], "kwargs": {}, "queue": "q"}),
        ("/bulk", {"action": "requeue", "reason": "x", "ids": [row.pk]}),
        ("/bulk", {"action": "discard", "reason": "x", "ids": [row.pk]}),
        ("/queues/default/pause", {}),
        ("/queues/default/resume", {}),
        ("/queues/default/purge", {"confirm": "default"}),
        ("/tasks/revoke", {"task_id": "abc"}),
        ("/workers/w1@host/pool", {"action": "grow", "n": 1}),
        ("/workers/w1@host/autoscale", {"max": 2, "min": 1}),
        ("/periodic/nightly/run", {"token": "abcdefgh12"}),
    ]
    for path, body in changes:
        response = client.post(
            f"{API}{path}", body, content_type="application/json", **bearer(viewer_token)
        )
        assert response.status_code == 403, path
    row.refresh_from_db()
    assert row.state == "open"


# --- browser sessions --------------------------------------------------------------------


def test_a_session_reads_and_changes_with_csrf(operator: User) -> None:
    row = make_dead_letter()
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.get(f"{API}/deadletters").status_code == 200
    refused = client.post(f"{API}/deadletters/{row.pk}/discard")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get("/deadletters/")  # the page sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        f"{API}/deadletters/{row.pk}/discard", content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )  # fmt: skip
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert row.state == "discarded"


# --- rate limits --------------------------------------------------------------------------


def test_the_expensive_endpoints_are_limited_per_token(operator: User, settings: Any) -> None:
    settings.API_RATE_LIMIT = "3/min"
    cache.clear()
    first, second = token_for(operator, "a"), token_for(operator, "b")
    client = Client()
    codes = [client.get(f"{API}/deadletters", **bearer(first)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert client.get(f"{API}/deadletters", **bearer(second)).status_code == 200
    # Cheap reads are not counted.
    assert client.get(f"{API}/queues", **bearer(first)).status_code == 200


# --- the header, for any input ----------------------------------------------------------


@given(st.text(alphabet=sorted(TOKEN68), min_size=1, max_size=200), st.sampled_from(
    ["Bearer", "bearer", "BEARER"]), st.text(" ", max_size=3))  # fmt: skip
def test_a_bearer_header_gives_back_its_token(token: str, scheme: str, pad: str) -> None:
    assert parse_bearer(f"{pad}{scheme} {pad}{token}{pad}") == token


@given(st.text(max_size=300))
def test_any_header_is_a_token_or_none_never_an_error(header: str) -> None:
    found = parse_bearer(header)
    assert found is None or (found and set(found) <= TOKEN68 and found in header)
    if not header.strip().lower().startswith("bearer "):
        assert found is None


@given(st.text(max_size=300))
def test_any_authorization_header_is_answered_401_never_500(header: str) -> None:
    try:
        response = Client().get(f"{API}/queues", HTTP_AUTHORIZATION=header)
    except ValueError:
        return  # the test client itself refuses some header values (newlines)
    assert response.status_code == 401
