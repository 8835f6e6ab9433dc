"""The site's own Celery app, configured from the ``CELERY_*`` settings.

The web and the monitor never run tasks: they publish through this app
(``dashboard.broker.publish``) and send remote-control commands with it
(``dashboard.broker.control``).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
# The hook, which the dashboard loads for its contract, would count what this
# process publishes (requeues) as a team's traffic: not in the dashboard.
os.environ.setdefault("OPS_OUTCOMES", "off")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
