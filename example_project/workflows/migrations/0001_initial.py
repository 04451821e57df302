"""Orders and documents of the example workflows."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Document",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
                ("body", models.TextField(blank=True)),
                ("status", models.CharField(choices=[
                    ("draft", "Draft"), ("awaiting approval", "Awaiting approval"),
                    ("published", "Published"), ("rejected", "Rejected"),
                    ("expired", "Expired")], default="draft", max_length=20)),
                ("decided_by", models.CharField(blank=True, max_length=100)),
                ("run_id", models.CharField(blank=True, max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("customer", models.CharField(max_length=100)),
                ("email", models.EmailField(max_length=254)),
                ("address", models.CharField(max_length=200)),
                ("sku", models.CharField(max_length=40)),
                ("quantity", models.PositiveIntegerField(default=1)),
                ("amount", models.DecimalField(decimal_places=2, max_digits=10)),
                ("payment_source", models.CharField(default="tok_visa", max_length=40)),
                ("status", models.CharField(choices=[
                    ("new", "New"), ("paid", "Paid"), ("shipped", "Shipped")],
                    default="new", max_length=10)),
                ("charge_id", models.CharField(blank=True, max_length=40)),
                ("tracking", models.CharField(blank=True, max_length=40)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
