"""Wait tokens (``create_wait_token`` / ``complete_wait_token``): one row per token."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('celery_durable', '0009_mysql_ascending_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='WaitToken',
            fields=[
                ('id', models.CharField(max_length=255, primary_key=True, serialize=False)),
                ('run_id', models.CharField(max_length=255)),
                ('created_at', models.FloatField()),
                ('expires_at', models.FloatField(blank=True, null=True)),
                ('completed_at', models.FloatField(blank=True, null=True)),
                ('payload', models.TextField(blank=True, null=True)),
                ('tags', models.JSONField(default=list)),
            ],
            options={
                'verbose_name': 'wait token',
                'verbose_name_plural': 'wait tokens',
                'db_table': 'celery_durable_wait_token',
                'ordering': ['-created_at', '-id'],
                'default_permissions': ('view',),
                'permissions': [('complete_wait_token',
                                 'Can complete a wait token with a payload')],
                'indexes': [
                    models.Index(fields=['created_at'], name='cd_token_created_idx'),
                    models.Index(fields=['run_id', 'created_at'], name='cd_token_run_idx'),
                ],
            },
        ),
    ]
