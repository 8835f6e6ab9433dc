"""Settings for the Celery Ops Dashboard, read from the environment.

With no configuration at all (and ``DEBUG=true``) it boots on a SQLite file
under ``var/`` and a Redis at the conventional local address; ``python dev.py
demo`` starts an embedded Redis and points ``CELERY_BROKER_URL`` at it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_secret,
    env_str,
)
from dashboard.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)

_secret = env_secret("SECRET_KEY")
if _secret is None:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off")
    _secret = "insecure-development-key-used-only-with-DEBUG-on"  # noqa: S105
SECRET_KEY = _secret

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "template_partials",
    "csp",
    "axes",
    # Celery's django-db result backend imports its models, so it is installed
    # whatever the backend; dashboard.dbrouters keeps its tables out of every
    # database the dashboard migrates (the team owns them).
    "django_celery_results",
    "dashboard",
    "deadletters",
    "metrics",
    # Only for its templates and static files: the API docs' vendored Swagger UI.
    "ninja",
]

MIDDLEWARE = [
    # First, so that every line logged while answering carries the request id.
    "dashboard.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.banners",
                "dashboard.context_processors.headline",
                "dashboard.context_processors.theme",
                "deadletters.context_processors.open_cap",
            ],
        },
    },
]

# Both URLs may hold a password: either may come from a file (Docker secrets).
_database_url = env_secret("DATABASE_URL")
if _database_url is None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        _database_url or f"sqlite:///{DATA_DIR / 'dashboard.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web, the monitor and the tests write the same file concurrently:
    # WAL lets readers go on during a write, and IMMEDIATE takes the write
    # lock up front instead of failing on a read-to-write upgrade.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}

# The team's django-celery-results table, for CELERY_RESULT_BACKEND=django-db: read
# from their database (the "results" alias), never migrated (dashboard.dbrouters).
_results_url = env_secret("RESULTS_DATABASE_URL")
if _results_url is not None:
    try:
        # Read once per lookup: no connection is kept open to the team's database.
        DATABASES["results"] = dj_database_url.parse(_results_url, conn_max_age=0)
    except ValueError as exc:
        raise ImproperlyConfigured(f"RESULTS_DATABASE_URL is not a database URL: {exc}") from None
elif env_str("CELERY_RESULT_BACKEND", "").split(":", 1)[0] == "django-db":
    raise ImproperlyConfigured(
        "CELERY_RESULT_BACKEND=django-db reads the team's django-celery-results table: "
        "set RESULTS_DATABASE_URL (or RESULTS_DATABASE_URL_FILE) to their database"
    )
DATABASE_ROUTERS = ["dashboard.dbrouters.ResultsRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # Refuses a locked-out username and address before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]

DJANGO_TABLES2_TEMPLATE = "django_tables2/table.html"

# One line per event; JSON for log shippers. See dashboard/logs.py.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
LOGGING = logging_config(
    LOG_FORMAT,
    root_level=env_str("LOG_LEVEL", "INFO"),
    loggers={"django.db.backends": {"level": "WARNING"}},
)

# --- Running behind a TLS proxy ----------------------------------------------
# With DEBUG off the defaults are those of a site served over HTTPS only.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Orchestrators probe and Prometheus scrapes the container over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Only behind a proxy that sets the header itself (and drops the client's).
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many proxies append to X-Forwarded-For in front of the site: the login
# throttle and the logs then see the client's address, not the proxy's.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
# htmx sends the token from the page (hx-headers), never reads the cookie.
CSRF_COOKIE_HTTPONLY = True
# HSTS is a promise browsers keep for its whole duration: opt in per domain.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

# No inline script or style anywhere: htmx comes from our static files, its
# configuration from a <meta> tag, and includeIndicatorStyles is off so it
# injects no <style>. No eval either: htmx's allowEval is off, so trigger
# filters (hx-trigger="... [expr]") are ignored; static/dashboard/poll.js
# pauses polling while the tab is hidden instead.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Login throttling (django-axes) ------------------------------------------
# A username is locked from one address after this many failures in a row;
# the same username from elsewhere, and other users, can still log in.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "dashboard.middleware.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Not its start-up banner on every manage.py command: `ops` answers in one line.
AXES_VERBOSE = False

# --- Celery and the broker -------------------------------------------------
CELERY_BROKER_URL = env_secret("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
# Requeue runs inside a web request: fail fast with a clear error when the
# broker is away instead of holding the operator's click for a minute.
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("CELERY_BROKER_CONNECTION_TIMEOUT", 3, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 3,
}
# The result backend (CELERY_RESULT_BACKEND, which Celery reads itself) is read on
# the request path by "where is task X?": a Redis backend that does not answer
# costs the page seconds, not Celery's default of two minutes.
CELERY_REDIS_SOCKET_TIMEOUT = 5.0
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = 3.0
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
# --- Task outcomes (reported by the hook, added up by the monitor) ---------------
# The queue the hook's outcome reports travel on (``ops_outcomes_queue`` on the
# workers, or OPS_OUTCOMES_QUEUE in their environment).
OPS_OUTCOMES_QUEUE = env_str("OPS_OUTCOMES_QUEUE", "ops.outcomes")
# Per-minute outcomes are kept this long, per-hour ones this long.
OUTCOMES_MINUTES_DAYS = env_int("OUTCOMES_MINUTES_DAYS", 7, minimum=1)
OUTCOMES_HOURS_DAYS = env_int("OUTCOMES_HOURS_DAYS", 90, minimum=1)
# Count the outcomes of workers without the hook from Celery's task events
# (workers started with -E); workers that report for themselves are skipped.
MONITOR_TASK_EVENTS = env_bool("MONITOR_TASK_EVENTS", True)

# --- Beat supervision ---------------------------------------------------------
# A periodic entry whose next run is this many seconds overdue, with nothing
# sent since, is shown late (and celery_periodic_task_late is 1).
PERIODIC_LATE_AFTER = env_float("PERIODIC_LATE_AFTER", 60.0, minimum=0.0)

# --- Dead letters ----------------------------------------------------------
DEADLETTERS_QUEUE = env_str("DEADLETTERS_QUEUE", "deadletters")
DEADLETTERS_BATCH_SIZE = env_int("DEADLETTERS_BATCH_SIZE", 500, minimum=1)
# Every page shows a banner when the oldest dead letter has waited this long in
# the queue for the monitor, or while the monitor's ingestion keeps failing.
DEADLETTERS_INGEST_STUCK_AFTER = env_int("DEADLETTERS_INGEST_STUCK_AFTER", 120, minimum=1)
# Rows a bulk action claims, publishes and confirms per transaction.
DEADLETTERS_BULK_CHUNK = env_int("DEADLETTERS_BULK_CHUNK", 1000, minimum=1)
# A bulk requeue of more rows than this starts with a canary of this many rows,
# spread across the set, and stops if one fails again with the same error; a
# canary whose outcomes are not all known within the timeout stops it too.
DEADLETTERS_CANARY_ABOVE = env_int("DEADLETTERS_CANARY_ABOVE", 50, minimum=0)
DEADLETTERS_CANARY_SIZE = env_int("DEADLETTERS_CANARY_SIZE", 5, minimum=1)
DEADLETTERS_CANARY_TIMEOUT = env_int("DEADLETTERS_CANARY_TIMEOUT", 300, minimum=1)
# A bulk action on more rows than this waits for a second operator (0: never).
DEADLETTERS_APPROVAL_ABOVE = env_int("DEADLETTERS_APPROVAL_ABOVE", 0, minimum=0)
# How long an ingesting monitor may stay silent before another one returns
# the batch it held to the queue.
DEADLETTERS_LEASE_SECONDS = env_int("DEADLETTERS_LEASE_SECONDS", 60, minimum=1)
DEADLETTERS_PAGE_SIZE = env_int("DEADLETTERS_PAGE_SIZE", 50, minimum=1)

# --- The monitor's replicas --------------------------------------------------
# Sampling and background actions run in one monitor at a time, the holder of
# a lease it renews every third of this; when it dies, another monitor takes
# over within this time (plus the second between its tries).
MONITOR_LEADER_LEASE_SECONDS = env_int("MONITOR_LEADER_LEASE_SECONDS", 30, minimum=1)
# Where the lease lives: "auto" is Redis when the broker is Redis, else the database.
MONITOR_LEADER_LEASE = env_choice("MONITOR_LEADER_LEASE", "auto", ("auto", "redis", "database"))

# --- The monitor's liveness (manage.py monitor --check) ---------------------
# The ingest loop touches this file while it runs; the check fails when the
# file is older than MONITOR_HEARTBEAT_MAX_AGE. One file per replica: set it
# apart when replicas share a file system.
MONITOR_HEARTBEAT_FILE = Path(
    env_str("MONITOR_HEARTBEAT_FILE", str(DATA_DIR / "monitor.heartbeat"))
)
MONITOR_HEARTBEAT_MAX_AGE = env_int("MONITOR_HEARTBEAT_MAX_AGE", 60, minimum=1)

# --- Queues and workers (sampled by the monitor) -----------------------------
# Queues to show even before a worker, a dead letter or the broker names them.
MONITOR_QUEUES = env_list("MONITOR_QUEUES", [])
MONITOR_BROKER_INTERVAL = env_float("MONITOR_BROKER_INTERVAL", 5.0, minimum=0.5)
MONITOR_WORKERS_INTERVAL = env_float("MONITOR_WORKERS_INTERVAL", 10.0, minimum=0.5)
# Inspect waits this long after the last reply; a round ends sooner once
# every known worker has answered.
MONITOR_INSPECT_TIMEOUT = env_float("MONITOR_INSPECT_TIMEOUT", 1.0, minimum=0.1)
# A worker that has not answered for this long is shown offline...
MONITOR_WORKER_OFFLINE_AFTER = env_float("MONITOR_WORKER_OFFLINE_AFTER", 30.0, minimum=1.0)
# ...and after this long it is forgotten, so that dead pods do not pile up.
MONITOR_WORKER_FORGET_AFTER = env_float("MONITOR_WORKER_FORGET_AFTER", 86400.0, minimum=1.0)
# Queue history: one point per step (the deepest sample in it), kept this long.
MONITOR_HISTORY_STEP = env_int("MONITOR_HISTORY_STEP", 60, minimum=1)
MONITOR_HISTORY_HOURS = env_float("MONITOR_HISTORY_HOURS", 24.0, minimum=1.0)
# RabbitMQ only: the management API (http://host:15672) gives unacked counts,
# message rates and the head message's timestamp; without it, depths come from
# a passive queue declare. Credentials default to the broker URL's.
RABBITMQ_MANAGEMENT_URL = env_str("RABBITMQ_MANAGEMENT_URL", "")

# The cluster's state and open dead letters, in every page's title and icon,
# are judged at most this often per web process (0: on every page).
STATE_CACHE_SECONDS = env_int("STATE_CACHE_SECONDS", 5, minimum=0)

# Static files are served by whitenoise from the apps' folders, so that the
# site works without a collectstatic step; production images run it anyway.
WHITENOISE_USE_FINDERS = True

# Keys whose values are shown as [redacted] on pages and in the audit, matched
# case-insensitively as parts of key names at any depth. Stored values stay intact.
DEADLETTERS_REDACT_KEYS = env_list(
    "DEADLETTERS_REDACT_KEYS",
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "authorization",
        "auth_header",
        "api_key",
        "apikey",
        "access_key",
        "private_key",
        "credential",
        "cookie",
        "session",
        "card",
        "cvv",
        "cvc",
        "ssn",
        "iban",
    ],
)
# Requeued and discarded rows older than this are pruned by the monitor; open
# rows never are.
DEADLETTERS_RETENTION_DAYS = env_int("DEADLETTERS_RETENTION_DAYS", 30, minimum=1)
# When this many rows are open, every page says so (0: no cap). Nothing is dropped.
DEADLETTERS_MAX_OPEN = env_int("DEADLETTERS_MAX_OPEN", 0, minimum=0)
# A bulk action of more than this many dead letters asks for a typed confirmation.
DEADLETTERS_CONFIRM_ABOVE = env_int("DEADLETTERS_CONFIRM_ABOVE", 1000, minimum=1)

# --- /api/v1/ ------------------------------------------------------------------
# Requests per token (or signed-in user) to the expensive endpoints: the
# dead-letter list and search, bulk actions, purges. Counted in Django's cache,
# so per web process unless CACHES names a shared one.
API_RATE_LIMIT = env_str("API_RATE_LIMIT", "120/min")
# Rows per page of the API's lists when the caller does not say (at most 500).
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 100, minimum=1)

# --- /metrics --------------------------------------------------------------
# Prometheus sends "Authorization: Bearer <token>"; or list the networks it
# scrapes from; an open endpoint needs METRICS_PUBLIC=true, on purpose.
METRICS_TOKEN = env_secret("METRICS_TOKEN") or ""
METRICS_ALLOWED_NETWORKS = env_networks("METRICS_ALLOWED_NETWORKS", [])
METRICS_PUBLIC = env_bool("METRICS_PUBLIC", False)
# Per-worker series; turn off where pod names churn (one series per pod ever seen).
METRICS_PER_WORKER = env_bool("METRICS_PER_WORKER", True)
