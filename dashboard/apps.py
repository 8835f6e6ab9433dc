from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender: AppConfig, apps: Any = None, **kwargs: Any) -> None:
    from django.apps import apps as live_apps

    from dashboard.roles import ROLE_APPS, sync_roles

    # After each app whose permissions the roles grant has had them created
    # (auth's receiver runs first: it is earlier in INSTALLED_APPS).
    if sender.label in ROLE_APPS:
        # migrate passes its historical apps; flush (tests) passes none.
        sync_roles(apps or live_apps)


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Celery Ops Dashboard"

    def ready(self) -> None:
        post_migrate.connect(_sync_roles, dispatch_uid="dashboard.sync_roles")
