"""The Viewer and Operator groups and the permissions each holds, in every app.

Applied by a migration, and again after every migrate (and test flush) so that
permissions added later reach the groups without a hand edit.
"""

from __future__ import annotations

from typing import Any

ROLES: dict[str, list[str]] = {
    "Viewer": [
        "deadletters.view_deadletter",
        "dashboard.view_queuesnapshot",
        "dashboard.view_workersnapshot",
        "dashboard.view_periodicentry",
        "dashboard.view_auditevent",
    ],
    "Operator": [
        "deadletters.view_deadletter",
        "deadletters.view_raw_deadletter",
        "deadletters.change_deadletter",
        "deadletters.requeue_deadletter",
        "deadletters.discard_deadletter",
        "dashboard.view_queuesnapshot",
        "dashboard.view_workersnapshot",
        "dashboard.control_queue",
        "dashboard.control_worker",
        # Asks the monitor to read whole queues for a task id ("where is task X?").
        "dashboard.add_tasksearch",
        "dashboard.view_periodicentry",
        "dashboard.run_periodicentry",
        "dashboard.view_auditevent",
    ],
}


# The apps whose permissions the roles grant.
ROLE_APPS = frozenset(dotted.split(".")[0] for perms in ROLES.values() for dotted in perms)


def sync_roles(apps: Any) -> None:
    """Create the groups and grant their permissions (with historical or live apps)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is not None:
                group.permissions.add(permission)
