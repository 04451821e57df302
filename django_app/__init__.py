"""The Django app of celery_durable: runs in the Django database and an admin for them.

Add ``"django_app"`` to ``INSTALLED_APPS`` next to ``"django_celery_results"``
(``CELERY_RESULT_BACKEND = "django-db"``) and run ``migrate``; every durable
run, with its step checkpoints, is then kept in the Django database by
:class:`django_app.store.DjangoStore`, and the admin shows run history, retry
controls and a dead-letter view.
"""
