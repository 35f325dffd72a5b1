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

What the schedules follow (``schedule``). The learning rate, the KD temperature (annealed, e.g. 5 -> 1)
and the curriculum all move with training progress. With ``schedule: steps`` (the default, fully
reproducible) progress is ``step / optim.steps``. A run the budget stops at 40% of its steps then ends
mid-anneal: still at a high temperature and learning rate, and badly calibrated at T = 1. With
``schedule: budget``, progress is whichever is further along, the steps or the share of training
time used (:meth:`WallClockBudget.progress_step`). A run that keeps pace with its steps trains
exactly as with ``steps``. A run that falls behind moves through its schedules faster and reaches
their end (T = 1, the last curriculum stage, the final learning rate) when the budget runs out.

A run the budget stopped resumes like an interrupted one. Run it again (``checkpoint.resume:
true``): it continues from the saved step with a fresh budget.

    >>> budget = WallClockBudget(minutes=15, reserve_minutes=1.5)
    >>> budget.start()
    >>> budget.exhausted()          # False until ~13.5 minutes have passed
    False
    >>> budget.begin_training()
    >>> budget.progress_step(step=10, total=300)   # "steps" schedule: the step itself
    10
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
        schedule: ``"steps"`` (schedules follow the step count) or ``"budget"`` (they follow the
            steps or the share of training time used, whichever is further along).
        clock: seconds, monotonic (tests pass a fake clock).
    Raises:
        BudgetError: ``minutes`` not positive, ``reserve_minutes`` negative or not below ``minutes``,
            or an unknown ``schedule``.
    """

    SCHEDULES = ("steps", "budget")

    def __init__(self, minutes: float | None = None, reserve_minutes: float = 1.0, schedule: str = "steps",
                 clock: Callable[[], float] = time.monotonic):
        if minutes is not None and minutes <= 0:
            raise BudgetError(f"budget.minutes must be positive or null (no limit), got {minutes}")
        if reserve_minutes < 0 or (minutes is not None and reserve_minutes >= minutes):
            raise BudgetError(f"budget.reserve_minutes must be >= 0 and below budget.minutes ({minutes}), "
                              f"got {reserve_minutes}")
        if schedule not in self.SCHEDULES:
            raise BudgetError(f"budget.schedule must be one of {list(self.SCHEDULES)}, got {schedule!r}")
        self.minutes, self.reserve_minutes, self.schedule, self.clock = minutes, reserve_minutes, schedule, clock
        self.started: float | None = None
        self.training_started: float | None = None
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

    def begin_training(self) -> None:
        """Mark the start of training: the training time is what is left of the budget from here."""
        self.start()
        self.training_started = self.clock()

    def progress_step(self, step: int, total: int) -> int:
        """The step the schedules should use: ``step``, or further along when time runs short.

        With ``schedule="budget"`` the share of training time used, ``(now - training start) /
        (budget - reserve - time before training)``, is turned into a step and the larger one is
        returned (at most ``total - 1``). Without a budget, or with ``schedule="steps"``: ``step``.
        """
        if self.minutes is None or self.schedule == "steps" or self.training_started is None:
            return step
        now = self.clock()
        available = (self.minutes - self.reserve_minutes) * 60 - (self.training_started - self.started)
        share = (now - self.training_started) / available if available > 0 else 1.0
        return max(step, min(total - 1, int(share * total)))

    def summary(self, *, steps_done: int, steps_planned: int) -> dict:
        """What the metadata records about the budget and how training ended."""
        return {"budget_minutes": self.minutes, "reserve_minutes": self.reserve_minutes, "schedule": self.schedule,
                "elapsed_minutes": round(self.elapsed_minutes, 2), "steps_done": steps_done,
                "steps_planned": steps_planned, "stopped_by_budget": self.stopped}
