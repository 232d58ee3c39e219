"""Uploads get a random public id (tasks name uploads by it, not by their sequential pk).

Three steps, as a unique field needs on existing rows: add it nullable, give every row
its own random id, then make it unique and required.
"""

import secrets
from typing import Any

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

import tether.models


def fill_public_ids(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Upload: Any = apps.get_model("tether", "Upload")
    for upload in Upload.objects.filter(public_id__isnull=True).only("id"):
        upload.public_id = secrets.token_hex(16)
        upload.save(update_fields=["public_id"])


class Migration(migrations.Migration):
    dependencies = [
        ("tether", "0004_recoveries"),
    ]

    operations = [
        migrations.AddField(
            model_name="upload",
            name="public_id",
            field=models.CharField(max_length=32, null=True),
        ),
        migrations.RunPython(fill_public_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="upload",
            name="public_id",
            field=models.CharField(default=tether.models.new_upload_id, max_length=32, unique=True),
        ),
    ]
