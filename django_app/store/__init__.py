"""The checkpoint store on the Django database: :class:`DjangoStore`.

* :mod:`.django_store`: runs, checkpoints, leases and the sweeper's claims;
* :mod:`.waits`: durable waits and events; :mod:`.controls`: child runs, cancel,
  idempotency keys, concurrency slots;
* :mod:`.rows`: how rows become records, and the checkpoint's one statement.
"""

from .django_store import DjangoStore

__all__ = ["DjangoStore"]
