"""The admin of durable runs: run history, a run page, retry controls, dead letters.

* :mod:`.runs`: the ModelAdmins of runs and dead letters and the run page;
* :mod:`.actions` and :mod:`.wait_actions`: what an operator can do to a run,
  each behind its own permission;
* :mod:`.changelist`: filters and paging; :mod:`.forms`: the argument editor;
* :mod:`.tokens`: wait tokens, and completing one with a payload.

Django's admin autodiscovery imports this package, which registers the ModelAdmins.
"""

from .runs import DeadLetterAdmin, RunAdmin
from .tokens import WaitTokenAdmin

__all__ = ["DeadLetterAdmin", "RunAdmin", "WaitTokenAdmin"]
