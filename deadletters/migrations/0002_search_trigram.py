"""The trigram index of the free-text search, on PostgreSQL.

pg_trgm ships with PostgreSQL, but creating an extension needs a privileged
role: without one the search still works, by scanning.
"""

import logging

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger(__name__)


def create_index(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cursor.execute(
                "CREATE INDEX IF NOT EXISTS dls_text_trgm ON deadletters_deadlettersearch "
                "USING gin (text gin_trgm_ops)"
            )
    except DatabaseError as exc:
        logger.warning("no trigram index for dead-letter search (%s); search will scan", exc)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS dls_text_trgm")


class Migration(migrations.Migration):
    dependencies = [("deadletters", "0001_initial")]
    operations = [migrations.RunPython(create_index, drop_index)]
