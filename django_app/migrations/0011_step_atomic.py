from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('celery_durable', '0010_wait_tokens'),
    ]

    operations = [
        migrations.AddField(
            model_name='step',
            name='atomic',
            field=models.BooleanField(default=False),
        ),
    ]
