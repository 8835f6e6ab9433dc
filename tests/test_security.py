"""Production settings: Django's deployment checks, HTTPS, cookies, CSP, secrets from files."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from dashboard.middleware import client_ip
from tests.helpers import ROOT, make_dead_letter

# What an operator sets in production (docs/deploy.md, .env.example).
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "ops.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://ops.example.com",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "TRUST_X_FORWARDED_PROTO": "true",
}
# Set by the test environment (plain HTTP; the browser tests' event loop);
# production leaves them unset.
NOT_IN_PRODUCTION = {
    "SECURE_SSL_REDIRECT",
    "SECURE_COOKIES",
    "SECRET_KEY_FILE",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NOT_IN_PRODUCTION}
    env.update(PRODUCTION, DATABASE_URL=f"sqlite:///{tmp_path / 'deploy.sqlite3'}")
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_reports_nothing_in_production(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_does_complain_about_a_weak_setup(tmp_path: Path) -> None:
    """The test above can fail: the same check, with HTTPS redirection turned off."""
    env = production_env(tmp_path, SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="0")
    result = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout
    assert "security.W004" in result.stderr + result.stdout


def settings_in(env: dict[str, str], *names: str) -> dict[str, Any]:
    script = (
        "import json, dashboard.settings as s; "
        f"print(json.dumps({{n: getattr(s, n, None) for n in {list(names)!r}}}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_debug_off_means_https_only_by_default(tmp_path: Path) -> None:
    values = settings_in(
        production_env(tmp_path),
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_PROXY_SSL_HEADER",
    )
    assert values == {
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_debug_on_stays_on_plain_http(tmp_path: Path) -> None:
    env = production_env(tmp_path, DEBUG="true", TRUST_X_FORWARDED_PROTO="false")
    values = settings_in(env, "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE")
    assert values == {"SECURE_SSL_REDIRECT": False, "SESSION_COOKIE_SECURE": False}


def test_urls_with_passwords_can_come_from_files(tmp_path: Path) -> None:
    database, broker = tmp_path / "database_url", tmp_path / "broker_url"
    database.write_text("postgres://ops:s3cret@db.internal:5432/ops\n")
    broker.write_text("redis://:s3cret@redis.internal:6379/0\n")
    env = production_env(
        tmp_path, DATABASE_URL_FILE=str(database), CELERY_BROKER_URL_FILE=str(broker)
    )
    del env["DATABASE_URL"]
    env.pop("CELERY_BROKER_URL", None)
    values = settings_in(env, "DATABASES", "CELERY_BROKER_URL")
    assert values["DATABASES"]["default"]["HOST"] == "db.internal"
    assert values["DATABASES"]["default"]["PASSWORD"] == "s3cret"
    assert values["CELERY_BROKER_URL"] == "redis://:s3cret@redis.internal:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' is not one of plain, json"),
        ("DEADLETTERS_INGEST_STUCK_AFTER", "soon", "is not an integer"),
        ("MONITOR_LEADER_LEASE", "zookeeper", "is not one of auto, redis, database"),
        ("SECURE_HSTS_SECONDS", "a year", "is not an integer"),
    ],
)
def test_a_malformed_setting_stops_the_start(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    result = manage(production_env(tmp_path, **{name: value}), "check")
    assert result.returncode != 0
    assert message in result.stderr


# --- what a browser receives ---------------------------------------------------------

pages = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
INLINE_STYLE = re.compile(r"\sstyle\s*=|<style", re.IGNORECASE)


@pages
def test_every_page_carries_a_policy_without_inline_script(operator_client: Client) -> None:
    dead_letter = make_dead_letter()
    for url in ("/", reverse("deadletters:list"), dead_letter.get_absolute_url(), "/admin/"):
        response = operator_client.get(url)
        assert response.status_code in {200, 302}, url
        policy = response["Content-Security-Policy"]
        directives = dict(
            (part.split()[0], part.split()[1:]) for part in policy.split(";") if part.strip()
        )
        assert directives["script-src"] == ["'self'"], policy
        assert directives["style-src"] == ["'self'"], policy
        assert directives["object-src"] == ["'none'"]
        assert directives["frame-ancestors"] == ["'none'"]


@pages
def test_the_pages_need_no_inline_script_or_style(operator_client: Client, client: Client) -> None:
    dead_letter = make_dead_letter()
    rendered = [client.get("/login/").content.decode()]
    for url in ("/", reverse("deadletters:list"), dead_letter.get_absolute_url()):
        rendered.append(operator_client.get(url).content.decode())
        rendered.append(operator_client.get(url, HTTP_HX_REQUEST="true").content.decode())
    templates = [
        path.read_text()
        for path in ROOT.glob("**/templates/**/*.html")
        if ".venv" not in path.parts
    ]
    assert len(templates) >= 5
    for text in rendered + templates:
        assert not INLINE_SCRIPT.search(text), INLINE_SCRIPT.search(text)
        assert not INLINE_HANDLER.search(text), INLINE_HANDLER.search(text)
        assert not INLINE_STYLE.search(text), INLINE_STYLE.search(text)


@pages
def test_cookies_are_secure_and_the_session_cookie_http_only(client: Client, settings: Any) -> None:
    from tests.helpers import make_user

    # As with DEBUG off (test_debug_off_means_https_only_by_default); the
    # tests themselves run over plain HTTP with SECURE_COOKIES=false.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    make_user("olivia")
    login = client.get("/login/")
    assert login.cookies["csrftoken"]["secure"]
    response = client.post(
        "/login/", {"username": "olivia", "password": "correct horse battery staple"}
    )
    assert response.status_code == 302
    session = response.cookies["sessionid"]
    assert session["secure"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"


@pages
def test_hsts_is_sent_over_https_when_configured(client: Client, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get("/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"


# --- the client's address behind proxies ------------------------------------------------


def test_the_client_address_is_read_through_the_trusted_proxies_only(settings: Any) -> None:
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9, 10.0.0.1"
    )
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_ip(request) == "10.0.0.2"
    settings.TRUSTED_PROXY_COUNT = 2
    # 10.0.0.1 is the outer proxy; 203.0.113.9 connected to it; 6.6.6.6 is a claim.
    assert client_ip(request) == "203.0.113.9"
    settings.TRUSTED_PROXY_COUNT = 5
    assert client_ip(request) == "10.0.0.2"
