"""benchmarks/distill_lora.py and distill_lora_cross.py: checkpoint names of candidates, the capture summary,
shipping a candidate only when it beats the shipped adapter on the same held-out windows, the cross-domain
verdict and the held-out perplexity on a tiny model."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import distill_lora
import distill_lora_cross


def test_checkpoint_names_never_clash():
    assert distill_lora.checkpoint_name("law", None) == "law-lora"  # the shipped build
    assert distill_lora.checkpoint_name("law", 2) == "law-lora-s2"  # an extra seed
    assert distill_lora.checkpoint_name("law", 0, "teacher-qwen-1.5b") == "law-lora-teacher-qwen-1.5b"
    assert len({distill_lora.checkpoint_name("law", s, x) for s, x in
                [(None, None), (0, None), (0, "teacher-qwen-1.5b")]}) == 3


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
