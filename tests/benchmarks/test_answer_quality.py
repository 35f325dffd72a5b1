"""``benchmarks/answer_quality.py --cost recorded``: where the expert costs come from on a machine whose fleet
registry has none (the committed report's costs, named as such), and when there is nothing to fall back to."""

from __future__ import annotations

import json

import pytest

from benchmarks.answer_quality import COSTS_FILE, EXPERTS, recorded_costs
from experts.registry import ExpertRegistry, capability_fleet

WORDS = "seconds per 100 generated tokens, as the last measured run recorded them in the fleet registry"


def _report(path, values, *, unit=WORDS, cost_unit=None):
    block = {"unit": unit, "values": values}
    if cost_unit:
        block["cost_unit"] = cost_unit
    path.write_text(json.dumps({"machine": {"date": "2026-12-02T15:36:32+0000", "git_commit": "07d1189"},
                                "costs": block}))
    return path


def test_empty_registry_falls_back_to_the_committed_report_and_says_so(tmp_path, capsys):
    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    saved = _report(tmp_path / "answer_quality.json", {"qwen-1.5b": 72.961, "qwen-0.5b": 27.951, "smollm2-135m": 12.184})
    costs, source = recorded_costs(reg, list(EXPERTS), fallback=saved)
    assert costs == {"qwen-1.5b": 72.961, "qwen-0.5b": 27.951, "smollm2-135m": 12.184}
    assert set(source) == set(EXPERTS)
    assert all(s.startswith("answer_quality.json") and "07d1189" in s for s in source.values())
    assert "from answer_quality.json" in capsys.readouterr().err


def test_the_registry_wins_and_only_the_missing_model_falls_back(tmp_path):
    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    for spec in capability_fleet({"qwen-1.5b": 50.0}, cost_unit="s_per_100_tokens"):
        reg.add(spec)  # the 0.5B and the 135M get parameter counts (params_b): not a measured cost
    saved = _report(tmp_path / "r.json", {"qwen-1.5b": 72.961, "qwen-0.5b": 27.951, "smollm2-135m": 12.184},
                    cost_unit="s_per_100_tokens")
    costs, source = recorded_costs(reg, list(EXPERTS), fallback=saved)
    assert costs == {"qwen-1.5b": 50.0, "qwen-0.5b": 27.951, "smollm2-135m": 12.184}
    assert source["qwen-1.5b"] == "fleet registry" and source["qwen-0.5b"].startswith("r.json")


@pytest.mark.parametrize("kind", ["no file", "params report", "model missing"])
def test_no_measured_cost_anywhere_stops_the_report(tmp_path, kind):
    reg = ExpertRegistry(tmp_path / "fleet.sqlite")
    values = {"qwen-1.5b": 1.54, "qwen-0.5b": 0.49, "smollm2-135m": 0.13}
    saved = {"no file": tmp_path / "absent.json",
             "params report": _report(tmp_path / "p.json", values, unit="parameters in billions"),
             "model missing": _report(tmp_path / "m.json", {"qwen-1.5b": 72.961})}[kind]
    with pytest.raises(SystemExit, match="no measured cost recorded"):
        recorded_costs(reg, list(EXPERTS), fallback=saved)


def test_the_committed_report_has_a_measured_cost_for_every_fleet_model(tmp_path):
    costs, source = recorded_costs(ExpertRegistry(tmp_path / "fleet.sqlite"), list(EXPERTS))
    assert set(costs) == set(EXPERTS) and all(v > 0 for v in costs.values())
    assert all(s.startswith(COSTS_FILE.name) for s in source.values())


def test_every_expert_is_scored_in_its_familys_dev_choice_or_the_report_stops(tmp_path):
    """No per-model override: a family without a dev-set choice stops the report (it used to fall back to a
    hard-coded letter-raw for the Qwen experts)."""
    from benchmarks.answer_quality import formats_file, report
    from core.settings import Settings

    settings = Settings(home=tmp_path)
    path = formats_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"family": {"smollm2": "letter-chat"}, "n_dev": 40,
                                "dev": {"smollm2-135m": {"letter-raw": 0.4, "letter-chat": 0.425}}}))
    with pytest.raises(SystemExit, match=r"no dev-set format choice for qwen-1\.5b, qwen-0\.5b"):
        report(settings, list(EXPERTS), cost_mode="params")
