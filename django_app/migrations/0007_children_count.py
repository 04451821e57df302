"""A parent counts its children's notices instead of flagging the latest one.

``children_done`` grows with every notice; a parent parked at its children
wait resumes once it reaches ``children_needed`` (one wake for a whole
``map``, not one per child). ``child_notice`` is no longer used.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('celery_durable', '0006_idempotency_key_expiry_index'),
    ]

    operations = [
        migrations.RemoveField(model_name='run', name='child_notice'),
        migrations.AddField(model_name='run', name='children_done',
                            field=models.IntegerField(default=0)),
        migrations.AddField(model_name='run', name='children_needed',
                            field=models.IntegerField(default=0)),
    ]
