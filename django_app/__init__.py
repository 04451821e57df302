"""The Django app of celery_durable: runs in the Django database and an admin for them.

Add ``"celery_durable_django"`` to ``INSTALLED_APPS`` next to
``"django_celery_results"`` (``CELERY_RESULT_BACKEND = "django-db"``) and run
``migrate``; every durable run, with its step checkpoints, is then kept in the
Django database by :class:`celery_durable_django.store.DjangoStore`, and the
admin shows run history, retry controls and a dead-letter view. The app label
is ``celery_durable`` (tables ``celery_durable_*``, permissions
``celery_durable.*``).

* :mod:`.store`: the checkpoint store on the Django database;
* :mod:`.admin`: the admin;
* :mod:`.models` and ``migrations/``: the tables.

This package's source lives in the repository's ``django_app/`` folder; it is
installed and imported as ``celery_durable_django``.
"""
