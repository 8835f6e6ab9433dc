from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender: AppConfig, apps: Any = None, **kwargs: Any) -> None:
    from django.apps import apps as live_apps

    from deadletters.roles import sync_roles

    # migrate passes its historical apps; flush (tests) passes none.
    sync_roles(apps or live_apps)


class DeadLettersConfig(AppConfig):
    name = "deadletters"
    verbose_name = "Dead letters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # After auth has created the permissions (it is earlier in INSTALLED_APPS).
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="deadletters.sync_roles")
