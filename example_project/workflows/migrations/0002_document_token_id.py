"""The wait token a document's approval run waits on."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("workflows", "0001_initial"),
    ]

    operations = [
        migrations.AddField(model_name="document", name="token_id",
                            field=models.CharField(blank=True, max_length=255)),
    ]
