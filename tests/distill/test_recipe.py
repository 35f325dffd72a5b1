"""Recipe end to end on a tiny config (synthetic teacher outputs), checkpoint resume, config handling."""

import json

import pytest
import torch
from distill_fixtures import synthetic_prepared, tiny_config

from core.settings import Settings
from distill.recipe import ConfigError, DistillRecipe, load_config, register_expert, run, sparse_to_dense
from distill.teachers import TeacherCache


def test_recipe_end_to_end(tmp_path, prepared):
    cfg = tiny_config(tmp_path)
    info = run(cfg, settings=Settings(home=tmp_path), prepared=prepared)
    out = tmp_path / "expert"
    assert {"config.json", "model.safetensors", "trainer_state.json", "training_state.safetensors",
            "expert.json"} <= {p.name for p in out.iterdir()}
    assert len(info["history"]) == 2 and info["history"][-1]["step"] == 6
    ev = info["eval"]
    assert ev["ppl"] > 1 and ev["kl_to_teacher"] >= 0 and 0 <= ev["top1_agreement"] <= 1
    assert json.loads((out / "expert.json").read_text())["params"] == info["params"]
    from experts.qrh import QRHModel

    model = QRHModel.from_pretrained(out)
    assert model.vocab_ids[1:].tolist() == prepared["kept"].tolist()


def test_resume_matches_uninterrupted_run(tmp_path):
    full = DistillRecipe(tiny_config(tmp_path / "a"), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    full.setup()
    full.train()

    first = DistillRecipe(tiny_config(tmp_path / "b"), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    first.setup()
    first.train(until=4)  # killed after step 4: the last checkpoint is the one at step 3
    second = DistillRecipe(tiny_config(tmp_path / "b"), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
    second.setup()  # resumes from step 3
    assert second.step == 3
    second.train()
    for (n, a), (_, b) in zip(full.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), n


@pytest.mark.parametrize("extra", [
    ["model.embedding=learned", "model.mixer=attention", "model.linear=dense"],
    ["loss.kd_weight=0", "loss.lambda_align=0", "loss.resistance_weighting=false", "sampler.name=uniform",
     "curriculum=null"],
    ["teacher.views=[{temperature_scale: 1.0, weight: 1.0}, {temperature_scale: 2.0, weight: 0.5}]",
     "aggregation.name=geometric", "loss.kd={name: jsd}", "sampler.name=loss"],
])
def test_recipe_variants_train(tmp_path, prepared, extra):
    r = DistillRecipe(tiny_config(tmp_path, "eval.every=0", "checkpoint.every=0", *extra), settings=Settings(home=tmp_path), prepared=prepared)
    r.setup()
    ev = r.train()
    assert torch.isfinite(torch.tensor(ev["ppl"]))


def test_fixed_seed_is_reproducible(tmp_path):
    evs = []
    for sub in ("x", "y"):
        r = DistillRecipe(tiny_config(tmp_path / sub, "eval.every=0"), settings=Settings(home=tmp_path), prepared=synthetic_prepared())
        r.setup()
        evs.append(r.train()["ppl"])
    assert evs[0] == evs[1]


def test_config_overrides_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("domain: finance\noptim: {steps: 7}\n")
    cfg = load_config(p, ["optim.lr=0.01", "encoders=[]"])
    assert cfg["optim"]["steps"] == 7 and cfg["optim"]["lr"] == 0.01 and cfg["encoders"] == []
    assert cfg["name"] == "finance-qrh" and cfg["data"]["domains"] == ["general", "finance"]
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.nope'"):
        load_config(p, ["optim.nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(p, ["optim.steps"])


def test_shipped_configs_load():
    from pathlib import Path

    from distill import recipe

    folder = Path(recipe.__file__).parent / "configs"
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    assert names == ["code", "finance", "general", "law", "medicine"]
    for n in names:
        assert load_config(folder / f"{n}.yaml")["domain"] == n


def test_teacher_cache_runs_each_teacher_once(tmp_path):
    cache = TeacherCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    key = TeacherCache.key("qwen", torch.arange(5), 32)
    assert torch.equal(cache.get_or_compute("lm", key, compute)["x"], torch.arange(3))
    assert torch.equal(cache.get_or_compute("lm", key, compute)["x"], torch.arange(3))
    assert len(calls) == 1 and key != TeacherCache.key("qwen", torch.arange(5), 16)


def test_sparse_to_dense():
    idx = torch.tensor([[[2, 0]]])
    d = sparse_to_dense(idx, torch.tensor([[[1.5, -1.0]]]), 4)
    assert d[0, 0].tolist() == [-1.0, float("-inf"), 1.5, float("-inf")]


def test_register_expert(tmp_path):
    info = {"name": "law-qrh", "domain": "law", "checkpoint": str(tmp_path), "tokenizer": "qwen-0.5b",
            "params": 1234, "teacher": "qwen-0.5b", "profile": {"kg_anchors": ["a"], "centroid": [0.1]}}
    assert register_expert(info, tmp_path / "experts.sqlite")
    from experts.registry import ExpertRegistry

    spec = ExpertRegistry(tmp_path / "experts.sqlite").get("law-qrh")
    assert spec.backend == "qrh" and spec.size_params == 1234 and spec.profile["kg_anchors"] == ["a"]


def test_cli_command_parses_and_stays_light():
    import argparse
    import subprocess
    import sys

    from api.commands import distill

    p = argparse.ArgumentParser()
    distill.register(p.add_subparsers())
    a = p.parse_args(["distill", "distill/configs/law.yaml", "optim.steps=3", "seed=2"])
    assert a.config.endswith("law.yaml") and a.overrides == ["optim.steps=3", "seed=2"]
    code = "import sys, argparse; from api.commands import distill; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_cli_json_reports_training_budget(monkeypatch, capsys, tmp_path):
    """``qsef distill --json`` carries the run's training summary (budget stop, steps done / planned)."""
    import argparse

    import distill.recipe
    from api.commands import distill as distill_cmd

    info = {"name": "law-qrh", "domain": "law", "output_dir": "/x", "params": 10, "steps": 4, "registered": True,
            "eval": {"ppl": 9.0}, "training": {"stopped_by_budget": True, "steps_done": 4, "steps_planned": 9}}
    monkeypatch.setattr(distill.recipe, "load_config", lambda path, overrides: {})
    monkeypatch.setattr(distill.recipe, "run", lambda cfg, settings: info)
    assert distill_cmd._handle(argparse.Namespace(config="c.yaml", overrides=[], json=True,
                                                  settings=Settings(home=tmp_path))) == 0
    assert json.loads(capsys.readouterr().out) == info


def test_linear_cka():
    from distill.metrics import linear_cka

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.cat([x, torch.zeros(50, 2)], 1)) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, torch.randn(50, 4, generator=g)) < 0.5


@pytest.mark.slow
def test_write_profile_with_real_encoder_and_corpus(tmp_path):
    """The expert profile uses qsef.profiles with the real MiniLM encoder and the finance corpus."""
    from distill.recipe import write_profile

    cfg = load_config(None, ["domain=finance", "profile.max_passages=8"])
    out = write_profile(cfg, 1234, tmp_path / "profile", settings=Settings())
    assert (tmp_path / "profile" / "profile.json").is_file()
    assert len(out["centroid"]) == 384 and out["params"] == 1234
    assert out["corpus"]["n_centroid"] == 8 and out["corpus"]["n_passages"] > 8
