"""The Django settings of a team's project that runs django-celery-beat's
DatabaseScheduler, on a SQLite file of its own (``TEAM_BEAT_DB``)."""

import os

INSTALLED_APPS = ["django.contrib.contenttypes", "django_celery_beat"]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["TEAM_BEAT_DB"]}
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
