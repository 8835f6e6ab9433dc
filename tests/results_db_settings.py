"""The Django settings of a team's project whose workers store their results with
django-celery-results (``CELERY_RESULT_BACKEND=django-db``), on a SQLite file of
its own (``TEAM_RESULTS_DB``)."""

import os

INSTALLED_APPS = ["django_celery_results"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["TEAM_RESULTS_DB"],
        # The dashboard reads the file while the worker writes it.
        "OPTIONS": {"timeout": 30},
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
