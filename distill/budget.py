"""Wall-clock budget of a distillation run: training stops cleanly when the time is up.

A config with ``budget: {minutes: 15, reserve_minutes: 1.5}`` gives the whole run 15 minutes of
wall-clock time, counted from the start of ``setup``: loading the texts, the teacher pass on a cold
cache, the encoder embeddings and training all count. Before each optimisation step the trainer asks
:meth:`WallClockBudget.exhausted`. The answer is yes once the time spent, plus the duration of the
last step, reaches the budget minus ``reserve_minutes``. The reserve pays for what still has to run
after training: the held-out evaluation, the checkpoint, the profile and the registration.
Training then stops at that step boundary and the run finishes as usual. The expert's metadata
(``expert.json`` and ``trainer_state.json``) records ``stopped_by_budget`` with the steps done
and planned, so a short expert is never mistaken for a full one.

The learning-rate schedule still follows ``optim.steps``. A run the budget stops at 60% of its
steps therefore ends at a higher learning rate than a finished run. Choose ``optim.steps`` so that
a normal run fits, and treat the budget as the guarantee.

A run the budget stopped resumes like an interrupted one. Run it again (``checkpoint.resume:
true``): it continues from the saved step with a fresh budget.

    >>> budget = WallClockBudget(minutes=15, reserve_minutes=1.5)
    >>> budget.start()
    >>> budget.exhausted()          # False until ~13.5 minutes have passed
    False
    >>> budget.summary(steps_done=150, steps_planned=150)["stopped_by_budget"]
    False
"""

from __future__ import annotations

import time
from collections.abc import Callable


class BudgetError(ValueError):
    """A budget that cannot be honoured (negative minutes, a reserve larger than the budget)."""


class WallClockBudget:
    """Minutes of wall-clock time for one run, checked at step boundaries.

    Args:
        minutes: the whole run's budget; ``None`` means no limit.
        reserve_minutes: kept back for evaluation, checkpoint, profile and registration.
        clock: seconds, monotonic (tests pass a fake clock).
    Raises:
        BudgetError: ``minutes`` not positive, or ``reserve_minutes`` negative or not below ``minutes``.
    """

    def __init__(self, minutes: float | None = None, reserve_minutes: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if minutes is not None and minutes <= 0:
            raise BudgetError(f"budget.minutes must be positive or null (no limit), got {minutes}")
        if reserve_minutes < 0 or (minutes is not None and reserve_minutes >= minutes):
            raise BudgetError(f"budget.reserve_minutes must be >= 0 and below budget.minutes ({minutes}), "
                              f"got {reserve_minutes}")
        self.minutes, self.reserve_minutes, self.clock = minutes, reserve_minutes, clock
        self.started: float | None = None
        self.stopped = False  # set by the trainer when the budget ended training

    def start(self) -> None:
        """Start the clock (idempotent: the first call counts)."""
        if self.started is None:
            self.started = self.clock()

    @property
    def elapsed_minutes(self) -> float:
        return 0.0 if self.started is None else (self.clock() - self.started) / 60

    def exhausted(self, next_step_seconds: float = 0.0) -> bool:
        """True when one more step of ``next_step_seconds`` would eat into the reserve."""
        if self.minutes is None:
            return False
        self.start()
        return self.elapsed_minutes + next_step_seconds / 60 >= self.minutes - self.reserve_minutes

    def summary(self, *, steps_done: int, steps_planned: int) -> dict:
        """What the metadata records about the budget and how training ended."""
        return {"budget_minutes": self.minutes, "reserve_minutes": self.reserve_minutes,
                "elapsed_minutes": round(self.elapsed_minutes, 2), "steps_done": steps_done,
                "steps_planned": steps_planned, "stopped_by_budget": self.stopped}
