"""Wall-clock budget: the clock logic on a fake clock, and a tiny run that the budget stops early."""

import json

import pytest
from distill_fixtures import synthetic_prepared, tiny_config

from core.settings import Settings
from distill.budget import BudgetError, WallClockBudget
from distill.recipe import DistillRecipe, load_config, register_expert


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_budget_counts_from_start_and_keeps_the_reserve():
    clock = FakeClock()
    b = WallClockBudget(minutes=10, reserve_minutes=2, clock=clock)
    b.start()
    clock.t += 7 * 60
    assert not b.exhausted()
    assert b.exhausted(next_step_seconds=61)  # that step would run into the reserve
    clock.t += 60
    assert b.exhausted() and b.elapsed_minutes == pytest.approx(8.0)
    s = b.summary(steps_done=3, steps_planned=9)
    assert s["steps_done"] == 3 and s["steps_planned"] == 9 and s["stopped_by_budget"] is False


def test_no_budget_never_stops():
    clock = FakeClock()
    b = WallClockBudget(None, clock=clock)
    b.start()
    clock.t += 1e9
    assert not b.exhausted(1e9)


@pytest.mark.parametrize("minutes, reserve, schedule", [(0, 0, "steps"), (-1, 0, "steps"), (5, 5, "steps"),
                                                        (5, -1, "steps"), (5, 1, "time")])
def test_invalid_budgets_are_refused(minutes, reserve, schedule):
    with pytest.raises(BudgetError, match="budget"):
        WallClockBudget(minutes, reserve, schedule)


def test_budget_schedule_follows_steps_or_time_whichever_is_further():
    clock = FakeClock()
    b = WallClockBudget(minutes=12, reserve_minutes=1, schedule="budget", clock=clock)
    b.start()
    clock.t += 60  # setup took 1 min: 12 - 1 reserve - 1 setup = 10 min of training time
    b.begin_training()
    clock.t += 60  # 10% of the training time
    assert b.progress_step(step=50, total=100) == 50  # ahead of time: the step count rules
    assert b.progress_step(step=3, total=100) == 10  # behind: time rules
    clock.t += 20 * 60
    assert b.progress_step(step=3, total=100) == 99  # never past the last step
    steps_only = WallClockBudget(minutes=12, reserve_minutes=1, schedule="steps", clock=clock)
    steps_only.begin_training()
    clock.t += 11 * 60
    assert steps_only.progress_step(step=3, total=100) == 3


def _budget_run(tmp_path, seconds: float):
    # far more steps than a few seconds allow: only the budget can end this run
    return tiny_config(tmp_path, "optim.steps=100000", "eval.every=0", "checkpoint.every=0",
                       f"budget.minutes={seconds / 60}", "budget.reserve_minutes=0")


@pytest.mark.slow
def test_budget_stops_training_saves_evaluates_and_resumes(tmp_path):
    r = DistillRecipe(_budget_run(tmp_path, 2.0), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    r.setup()
    r.budget.started = r.budget.clock()  # count from here: imports on a busy machine take seconds
    result = r.train()  # then the stages of recipe.run
    r.save_checkpoint()
    info = r.finish(result)
    tr = info["training"]
    assert tr["stopped_by_budget"] and 0 < tr["steps_done"] < tr["steps_planned"] == 100000
    assert tr["elapsed_minutes"] * 60 < 10  # stopped near the budget, not after the planned steps
    assert info["steps"] == tr["steps_done"] == info["eval"]["step"]  # evaluated at the stopping step
    assert info["eval"]["stopped_by_budget"] and info["eval"]["ppl"] > 1
    out = tmp_path / "expert"
    saved = json.loads((out / "expert.json").read_text())["training"]
    assert saved["stopped_by_budget"] and saved["steps_done"] == tr["steps_done"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["step"] == tr["steps_done"] and state["training"]["stopped_by_budget"]

    again = DistillRecipe(_budget_run(tmp_path, 1.0), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    again.setup()  # resumes from the checkpoint the budget-stopped run saved, with a fresh budget
    assert again.step == tr["steps_done"]
    again.budget.started = again.budget.clock()
    again.train()
    assert again.budget.stopped and again.step > tr["steps_done"]


def test_budget_schedule_ends_a_stopped_run_annealed(tmp_path):
    cfg = _budget_run(tmp_path, 1.5)
    cfg["budget"]["schedule"] = "budget"
    r = DistillRecipe(cfg, settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    r.setup()
    r.budget.started = r.budget.clock()
    r.train()
    tr = r.training_summary()
    assert tr["stopped_by_budget"] and tr["steps_done"] < 100000
    # the schedules ran with the time, not the step count: near their end (the last step before the stop
    # is at most one step's time short of it; steps are slower on a busy machine)
    assert tr["schedule_step"] >= 0.8 * 100000 > 10 * tr["steps_done"]
    assert r.temperature(tr["schedule_step"], 100000) < 1.3 < 4.5 < r.temperature(tr["steps_done"], 100000)


def test_budget_spent_before_training_does_no_step(tmp_path):
    r = DistillRecipe(_budget_run(tmp_path, 0.6), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    r.setup()
    r.budget.started -= 60  # setup (e.g. a cold teacher pass) took longer than the whole budget
    ev = r.train()
    assert r.step == 0 and r.budget.stopped and ev["step"] == 0


def test_registered_description_says_the_budget_stopped_training(tmp_path):
    info = {"name": "law-qrh", "domain": "law", "checkpoint": str(tmp_path), "tokenizer": "qwen-0.5b",
            "params": 10, "teacher": "qwen-0.5b", "training": {"stopped_by_budget": True, "budget_minutes": 15,
                                                                "steps_done": 90, "steps_planned": 150}}
    assert register_expert(info, tmp_path / "experts.sqlite")
    from experts.registry import ExpertRegistry

    desc = ExpertRegistry(tmp_path / "experts.sqlite").get("law-qrh").description
    assert "stopped by its 15-min budget at step 90/150" in desc


def test_budget_is_a_config_key_with_an_override():
    cfg = load_config(None, ["budget.minutes=12.5"])
    assert cfg["budget"] == {"minutes": 12.5, "reserve_minutes": 1.0, "schedule": "steps"}
    assert load_config(None)["budget"]["minutes"] is None


def test_shipped_configs_set_the_budget_their_header_states():
    from pathlib import Path

    from distill import recipe

    for p in sorted((Path(recipe.__file__).parent / "configs").glob("*.yaml")):
        budget = load_config(p)["budget"]
        header = "".join(line for line in p.read_text().splitlines() if line.startswith("#"))
        assert budget["minutes"] and f"Wall-clock budget: {budget['minutes']:g} min" in header, p.name
        assert 0 < budget["reserve_minutes"] < budget["minutes"]
