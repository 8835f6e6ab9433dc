"""The Viewer (read only) and Operator (acts on dead letters) groups."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = ["deadletters.view_deadletter"]
OPERATOR = [*VIEWER, "deadletters.requeue_deadletter", "deadletters.discard_deadletter",
            "deadletters.change_deadletter"]


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in (("Viewer", VIEWER), ("Operator", OPERATOR)):
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in perms:
            app_label, codename = dotted.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("deadletters", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
