"""The leg-id BRIN indexes stop asking for summarization at every full range.

With `autosummarize` each filled range queues a work item for autovacuum; a fast ingest
fills ranges faster than the queue drains, and PostgreSQL logs every request it drops
("request for BRIN range summarization … was not recorded"), thousands per large file.
Autovacuum summarizes the new ranges anyway when it vacuums the table after inserts, and
an unsummarized range is still searched, so lookups stay correct meanwhile.
"""

from django.db import migrations

COLUMNS = ("orig_leg_id", "dest_leg_id")


def _autosummarize(schema_editor, value: str) -> None:
    connection = schema_editor.connection
    if connection.vendor == "postgresql" and connection.pg_version >= 140000:  # BRIN there
        for column in COLUMNS:
            schema_editor.execute(f"ALTER INDEX cdr_cdr_{column} SET (autosummarize = {value})")


def autosummarize_off(apps, schema_editor):
    _autosummarize(schema_editor, "off")


def autosummarize_on(apps, schema_editor):
    _autosummarize(schema_editor, "on")


class Migration(migrations.Migration):

    dependencies = [
        ("cdr", "0005_leg_ids_brin_indexed"),
    ]

    operations = [
        migrations.RunPython(autosummarize_off, autosummarize_on),
    ]
