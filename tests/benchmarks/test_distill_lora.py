"""benchmarks/distill_lora.py, distill_lora_cross.py and distill_lora_seeds.py: checkpoint names of candidates
and seeds, the seed summary's pooling, the capture summary, shipping a candidate only when it beats the shipped
adapter on the same held-out windows, the cross-domain verdict and the held-out perplexity on a tiny model."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import distill_lora
import distill_lora_cross
import distill_lora_seeds


def test_checkpoint_names_never_clash():
    assert distill_lora.checkpoint_name("law", None) == "law-lora"  # the shipped build
    assert distill_lora.checkpoint_name("law", 2) == "law-lora-s2"  # an extra seed
    assert distill_lora.checkpoint_name("law", 0, "teacher-qwen-1.5b") == "law-lora-teacher-qwen-1.5b"
    assert distill_lora.checkpoint_name("law", 2, teacher="qwen-1.5b") == "law-lora-qwen-1.5b-s2"
    assert len({distill_lora.checkpoint_name("law", s, x, t) for s, x, t in
                [(None, None, None), (0, None, None), (0, "teacher-qwen-1.5b", None), (2, None, None),
                 (2, None, "qwen-1.5b")]}) == 5


def _row(domain, seed, ppl, teacher=None, heldout="h1"):
    row = {"domain": domain, "seed": seed, "heldout_ppl": ppl, "base_heldout_ppl": 20.0,
           "ppl_ratio_to_base": ppl / 20.0, "tokens_seen": 6144, "wall_s": 1.0, "train_tokens_per_s": 1.0,
           "heldout_sha256": heldout}
    if teacher:
        row["config"] = {"teacher": teacher, "seed": seed}
    return row


def test_seed_summary_pools_only_the_seeds_of_the_shipped_teacher_and_windows():
    seed0 = {"law": _row("law", 0, 16.0, teacher="qwen-1.5b")}
    extra = [_row("law", 1, 17.0),  # self-KD (no teacher recorded): another recipe
             _row("law", 1, 16.4, teacher="qwen-1.5b"), _row("law", 2, 16.2, teacher="qwen-1.5b"),
             _row("law", 3, 10.0, teacher="qwen-1.5b", heldout="h2")]  # other held-out windows
    law = distill_lora_seeds.summarize(seed0, extra)["law"]
    assert law["teacher"] == "qwen-1.5b" and law["seeds"] == [0, 1, 2]
    assert law["ratio_mean"] == pytest.approx((16.0 + 16.4 + 16.2) / 60.0, abs=1e-4)
    assert law["welch_p_vs_base"] < 0.01 and law["at_or_below_target_runs"] == 3
    table = distill_lora_seeds.markdown_table({"law": law})
    assert "| law | qwen-1.5b | 0.800 (s0) / 0.820 (s1) / 0.810 (s2) |" in table


def test_capture_summary_adds_the_splits_and_skips_cached_ones():
    timing = {"qwen-1.5b": {"engine_s": 40.0, "train": {"seconds": 60.0, "tokens": 6144, "rebuilt_shards": 1},
                            "heldout": {"seconds": 40.0, "tokens": 4096, "rebuilt_shards": 1}},
              "qwen-0.5b": {"engine_s": 1.0, "train": {"seconds": 0.5, "tokens": 0, "rebuilt_shards": 0}}}
    s = distill_lora.capture_summary(timing)
    assert s["qwen-1.5b"] == {"engine_s": 40.0, "capture_s": 100.0, "captured_tokens": 10240,
                              "capture_tokens_per_s": 102.4}
    assert s["qwen-0.5b"]["capture_tokens_per_s"] is None  # read from disk: no throughput
    assert distill_lora.capture_summary(None) == {}


def _candidate(folder: Path, ppl: float, sha: str = "h1", teacher: str = "qwen-1.5b") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"w" * 10)
    (folder / "adapter_config.json").write_text("{}")
    meta = {"teacher": teacher, "data": {"heldout_sha256": sha},
            "metrics": {"heldout_ppl": ppl, "base_heldout_ppl": 30.0, "ppl_ratio_to_base": round(ppl / 30, 4)}}
    (folder / "candidate_meta.json").write_text(json.dumps(meta))
    (folder / "candidate_row.json").write_text(json.dumps({"domain": "law", "heldout_ppl": ppl}))
    return folder


def test_export_checkpoint_ships_only_a_better_candidate_on_the_same_windows(tmp_path, monkeypatch):
    adapters = tmp_path / "adapters"
    monkeypatch.setattr(distill_lora, "ADAPTERS", adapters)
    monkeypatch.setattr(distill_lora, "ROOT", tmp_path)
    shipped = _candidate(tmp_path / "old", 25.0, teacher="qwen-0.5b")
    (adapters / "law").mkdir(parents=True)
    (adapters / "law" / "meta.json").write_text((shipped / "candidate_meta.json").read_text())

    assert distill_lora.export_checkpoint("law", _candidate(tmp_path / "worse", 26.0)) is None
    assert json.loads((adapters / "law" / "meta.json").read_text())["teacher"] == "qwen-0.5b"  # untouched
    with pytest.raises(ValueError, match="held-out windows differ"):
        distill_lora.export_checkpoint("law", _candidate(tmp_path / "other", 20.0, sha="h2"))

    row = distill_lora.export_checkpoint("law", _candidate(tmp_path / "better", 24.0))
    assert row["shipped"] and row["replaced"] == {"teacher": "qwen-0.5b", "heldout_ppl": 25.0,
                                                  "ppl_ratio_to_base": 0.8333}
    assert row["exported_from"] == "better" and row["adapter"] == "adapters/law"
    meta = json.loads((adapters / "law" / "meta.json").read_text())
    assert meta["teacher"] == "qwen-1.5b" and meta["metrics"]["heldout_ppl"] == 24.0
    assert sorted(p.name for p in (adapters / "law").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "meta.json"]


def test_cross_verdict_names_the_lowest_adapter_and_the_base_comparison():
    m = {"base": {"law": 20.0, "code": 10.0}, "law": {"law": 18.0, "code": 9.5}, "code": {"law": 17.5, "code": 9.0}}
    assert distill_lora_cross.lowest(m, "code") == {"lowest": "code", "in_domain_lowest": True,
                                                    "in_domain_below_base": True}
    assert distill_lora_cross.lowest(m, "law") == {"lowest": "code", "in_domain_lowest": False,
                                                   "in_domain_below_base": True}
    table = distill_lora_cross.markdown(m, ["law", "code"], {d: distill_lora_cross.lowest(m, d) for d in m["law"]},
                                        {"law": "qwen-1.5b", "code": "qwen-0.5b"})
    assert "| law-lora (teacher qwen-1.5b) | **18.00** | 9.50 |" in table
    assert "| in-domain expert lowest of the adapters | no (code-lora) | yes |" in table
    partial = {"base": {"law": 20.0}, "law": {"law": 18.0}, "code": {"code": 9.0}}  # code-lora on law missing
    assert distill_lora_cross.lowest(partial, "law") is None
    table = distill_lora_cross.markdown(partial, ["law", "code"], {"law": None, "code": None}, {},
                                        from_meta={("law", "law")})
    assert "| law-lora (teacher ?) | **18.00†** | – |" in table and "| incomplete | incomplete |" in table


def test_cross_report_keeps_the_hand_written_notes(tmp_path):
    path = tmp_path / "cross.md"
    distill_lora_cross.write_report(path, "| a |", {"law": 4096})
    path.write_text(path.read_text() + "notes by hand\n")
    distill_lora_cross.write_report(path, "| b |", {"law": 4096})
    text = path.read_text()
    assert "| b |" in text and "| a |" not in text and text.endswith(distill_lora.KEEP_MARKER + "\nnotes by hand\n")


def test_cross_perplexity_counts_only_valid_targets():
    import math

    import torch

    from distill.data import Windows

    class Uniform(torch.nn.Module):  # every token 1/V: ppl V whatever the ids
        def to_student_ids(self, ids):
            return ids

        def forward(self, ids):
            return torch.zeros(*ids.shape, 7)

    ids = torch.randint(0, 7, (3, 5))
    valid = torch.ones(3, 4, dtype=torch.bool)
    valid[2, 2:] = False
    ppl, n = distill_lora_cross.perplexity(Uniform(), Windows(ids, valid, torch.arange(3), []), batch_size=2)
    assert n == 10 and ppl == pytest.approx(7.0)
    assert math.isfinite(ppl)


def test_kd_versus_no_kd_pairs_the_recipe_with_its_no_kd_runs_only():
    seed0 = {"law": _row("law", 0, 16.0, teacher="qwen-1.5b")}
    kd = distill_lora_seeds.summarize(seed0, [_row("law", 1, 16.4, teacher="qwen-1.5b")])
    no_kd = [{**_row("law", s, ppl, teacher="qwen-1.5b"), "config": {"teacher": "qwen-1.5b", "seed": s, "kd_weight": 0.0}}
             for s, ppl in ((0, 20.0), (1, 20.4))]
    other = {**_row("law", 2, 1.0, teacher="qwen-1.5b"), "config": {"teacher": "qwen-1.5b", "seed": 2, "kd_weight": 1.0}}
    out = distill_lora_seeds.kd_versus_no_kd(kd, [*no_kd, other], seed0)["law"]
    assert out["no_kd_seeds"] == [0, 1] and out["kd_ppl_mean"] == pytest.approx(16.2)
    assert out["ratio_kd_over_no_kd"] == pytest.approx(16.2 / 20.2, abs=1e-4) and out["welch_p"] < 0.05
    assert "| law | 16.20 (2) | 20.20 (2) | 20.00 | 0.802 |" in distill_lora_seeds.kd_table({"law": out})
