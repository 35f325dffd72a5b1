"""The pretrained (``student.kind: hf``) path of the recipe on a real model: SmolLM2-135M, LoRA,
taught by itself (same tokenizer), a few steps on a handful of real-looking texts."""

import json

import pytest
import torch

from core.settings import Settings
from distill.data import Text
from distill.recipe import ConfigError, DistillRecipe, load_config, prepare_data, prepare_windows
from distill.students import collapse_topk

SMOL = Settings().path("models", "smollm2-135m")
needs_smol = pytest.mark.skipif(not (SMOL / "config.json").is_file(), reason="smollm2-135m not in the model store")

TEXTS = [f"Section {i}. The licensee may copy, modify and distribute the software under clause {i}, provided "
         f"that the notice in paragraph {i + 1} is kept in every copy of the work." for i in range(10)]


def _texts():
    train = [Text(f"t{i}", "law", t) for i, t in enumerate(TEXTS[:8])]
    held = [Text(f"h{i}", "law", t) for i, t in enumerate(TEXTS[8:])]
    return {"train": train, "heldout": held}


def _cfg(tmp_path, *extra):
    return load_config(None, [
        "domain=law", "data.domains=[law]", f"output_dir={tmp_path / 'expert'}", "threads=2", "seed=0",
        "student.kind=hf", f"student.name={SMOL}", "student.lora={r: 4, alpha: 8, targets: [q_proj, v_proj], layers: 2}",
        f"teacher.name={SMOL}", "teacher.dtype=float32", "teacher.top_k=8", "teacher.batch_size=4",
        "encoders=[]", "loss.lambda_align=0", "data.seq_len=32", "curriculum=null", "sampler.name=uniform",
        "optim.steps=4", "optim.batch_size=2", "optim.warmup=1", "optim.lr=0.003", "eval.every=2",
        "eval.max_windows=4", "checkpoint.every=2", "register=false", "profile.enabled=false", "progress=false",
        *extra])


def test_collapse_topk_matches_dense_forward_kl():
    """The (k + 1)-class view gives the same forward KL as the dense teacher row, at any temperature."""
    from distill.losses import KDLoss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 50, generator=g), torch.randn(2, 3, 50, generator=g)
    lp = torch.log_softmax(t, -1)
    val, idx = lp.topk(5, -1)
    for T in (1.0, 3.0):
        dense = torch.full_like(t, float("-inf")).scatter(-1, idx, val)
        view_t = torch.cat([val, torch.full_like(val[..., :1], float("-inf"))], -1)
        a = KDLoss()(s, dense, temperature=T)
        b = KDLoss()(collapse_topk(s, idx, T), view_t, temperature=T)
        assert torch.allclose(a, b, atol=1e-5)


def test_unknown_student_kind_lists_the_kinds(tmp_path):
    with pytest.raises(ValueError, match=r"unknown student 'nope'; choose one of \['hf', 'qrh'\]"):
        load_config(None, ["student.kind=nope"])


@needs_smol
def test_student_with_another_tokenizer_is_refused(tmp_path):
    qwen = Settings().path("models", "qwen-0.5b")
    if not (qwen / "config.json").is_file():
        pytest.skip("qwen-0.5b not in the model store")
    cfg = _cfg(tmp_path, f"teacher.name={qwen}")
    with pytest.raises(ConfigError, match=r"does not share the teacher's tokenizer.*vocabulary policy"):
        prepare_data(cfg, settings=Settings(home=tmp_path), texts=_texts())


@needs_smol
def test_validation_split_gets_windows_and_teacher_capture(tmp_path):
    """``texts["validation"]`` (or ``data.validation_docs`` from the corpus) is a third split, captured like the
    others and evaluated with ``evaluate("validation")``; train and held-out windows are unchanged by it."""
    settings = Settings(home=tmp_path)
    cfg = _cfg(tmp_path, "sampler.name=epoch")
    texts = _texts()
    val = [Text(f"v{i}", "law", TEXTS[i].replace("licensee", "lessee")) for i in range(2)]
    plain = prepare_data(cfg, settings=settings, texts=texts)
    prepared = prepare_data(cfg, settings=settings, texts={**texts, "validation": val})
    assert "validation" not in plain and len(prepared["validation"]) > 0
    for split in ("train", "heldout"):
        assert torch.equal(prepared[split].ids, plain[split].ids)
    cap = prepared["teacher"][str(SMOL)]["validation"]
    assert cap["topk_idx"].shape[:2] == prepared["validation"].ids[:, :-1].shape
    rec = DistillRecipe(cfg, settings=settings, prepared=prepared)
    rec.setup()
    rec.train(until=2)
    rec.save_checkpoint()
    ev = rec.evaluate("validation")
    assert ev["tokens"] == int(prepared["validation"].valid.sum()) and ev["ppl"] > 1
    resumed = DistillRecipe(cfg, settings=settings, prepared=prepared)
    resumed.setup()  # the epoch sampler's remaining order comes back with the checkpoint
    assert resumed.step == 2 and torch.equal(resumed.sampler.queue, rec.sampler.queue)


@needs_smol
def test_prepare_windows_are_prepare_datas_and_the_capture_is_timed(tmp_path):
    """``prepare_windows``: the windows ``prepare_data`` trains / evaluates on, without a teacher pass; the
    capture's timing counts the positions it computed (all of them cold, none from the cache)."""
    settings = Settings(home=tmp_path)
    cfg = _cfg(tmp_path)
    windows = prepare_windows(cfg, settings=settings, texts=_texts())
    assert "teacher" not in windows and not (tmp_path / "cache" / "distill").exists()
    cold = prepare_data(cfg, settings=settings, texts=_texts())
    for split in ("train", "heldout"):
        assert torch.equal(windows[split].ids, cold[split].ids) and torch.equal(windows[split].valid, cold[split].valid)
    t = cold["capture_timing"][str(SMOL)]
    assert t["train"]["tokens"] == cold["train"].ids[:, :-1].numel() and t["train"]["rebuilt_shards"] == 1
    assert t["heldout"]["tokens"] == cold["heldout"].ids[:, :-1].numel() and t["train"]["seconds"] > 0
    warm = prepare_data(cfg, settings=settings, texts=_texts())["capture_timing"][str(SMOL)]
    assert warm["train"]["tokens"] == warm["heldout"]["tokens"] == 0 and warm["train"]["rebuilt_shards"] == 0


@needs_smol
@pytest.mark.slow
def test_lora_student_trains_beats_nothing_and_resumes(tmp_path):
    settings = Settings(home=tmp_path)
    cfg = _cfg(tmp_path)
    prepared = prepare_data(cfg, settings=settings, texts=_texts())
    assert prepared["kept"] is None and prepared["train"].ids.shape[1] == 33
    t = prepared["teacher"][str(SMOL)]["train"]
    assert t["topk_idx"].shape == (len(prepared["train"]), 32, 8) and t["topk_logits"].max() <= 0  # log-probs

    rec = DistillRecipe(cfg, settings=settings, prepared=prepared)
    rec.setup()
    n_trainable = sum(p.numel() for p in rec.student.trainable_parameters())
    assert 0 < n_trainable < 0.01 * rec.student.num_parameters()  # LoRA on 2 layers only
    rec.train(until=2)
    rec.save_checkpoint()
    rec.train()
    full = rec.evaluate()
    info = rec.finish(full)
    assert info["backend"] == "peft" and info["metrics"]["tokens_seen"] == rec.tokens_seen > 0
    assert info["metrics"]["base_heldout_ppl"] > 0 and "ppl_ratio_to_base" in info["metrics"]
    assert (tmp_path / "expert" / "adapter_model.safetensors").is_file()
    conf = json.loads((tmp_path / "expert" / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == str(SMOL)

    # resumed from the step-2 checkpoint: the same final evaluation
    cfg2 = _cfg(tmp_path, f"output_dir={tmp_path / 'expert2'}")
    a = DistillRecipe(cfg2, settings=settings, prepared=prepared)
    a.setup()
    a.train(until=2)
    a.save_checkpoint()
    b = DistillRecipe(cfg2, settings=settings, prepared=prepared)
    b.setup()
    assert b.step == 2
    b.train()
    assert b.evaluate()["ppl"] == pytest.approx(full["ppl"], rel=1e-4)
