"""Settings for the Celery Ops Dashboard, read from the environment.

With no configuration at all (and ``DEBUG=true``) it boots on a SQLite file
under ``var/`` and a Redis at the conventional local address; ``python dev.py
demo`` starts an embedded Redis and points ``CELERY_BROKER_URL`` at it.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import env_bool, env_float, env_int, env_list, env_secret, env_str

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
    "django_htmx",
    "django_tables2",
    "django_filters",
    "template_partials",
    "dashboard",
    "deadletters",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
                "dashboard.context_processors.collectors",
            ],
        },
    },
]

if "DATABASE_URL" not in os.environ:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'dashboard.sqlite3'}"),
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

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]

DJANGO_TABLES2_TEMPLATE = "django_tables2/table.html"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Celery and the broker -------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
# Requeue runs inside a web request: fail fast with a clear error when the
# broker is away instead of holding the operator's click for a minute.
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("CELERY_BROKER_CONNECTION_TIMEOUT", 3, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 3,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

# --- Dead letters ----------------------------------------------------------
DEADLETTERS_QUEUE = env_str("DEADLETTERS_QUEUE", "deadletters")
DEADLETTERS_BATCH_SIZE = env_int("DEADLETTERS_BATCH_SIZE", 500, minimum=1)
# How long an ingesting monitor may stay silent before another one returns
# the batch it held to the queue.
DEADLETTERS_LEASE_SECONDS = env_int("DEADLETTERS_LEASE_SECONDS", 60, minimum=1)
DEADLETTERS_PAGE_SIZE = env_int("DEADLETTERS_PAGE_SIZE", 50, minimum=1)

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

# Static files are served by whitenoise from the apps' folders, so that the
# site works without a collectstatic step; production images run it anyway.
WHITENOISE_USE_FINDERS = True
