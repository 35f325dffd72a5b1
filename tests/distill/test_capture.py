"""Teacher capture to memory-mapped shards: values, resumption, never using a bad shard or another
engine's, and the CTranslate2 int8 backend's fidelity to the fp32 one on real text (SmolLM2-135M)."""

import json
import os

import numpy as np
import pytest
import torch
from fakes import FailingCapture

from core.settings import Settings
from distill.capture import (
    CT2Capture,
    TransformersCapture,
    capture_resolver,
    capture_topk,
    compare_topk,
    parse_prompt_logprobs,
)
from experts import ct2

SMOL = Settings().path("models", "smollm2-135m")
pytestmark = pytest.mark.skipif(not (SMOL / "config.json").is_file(), reason="smollm2-135m not in the model store")
needs_ct2 = pytest.mark.skipif(not ct2.available(), reason="ctranslate2 is not installed")

TEXT = ("def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n"
        "The licensee may copy, modify and distribute the software, provided that this notice is kept in every "
        "copy. Hypertension is a long-term condition in which the blood pressure in the arteries is persistently "
        "elevated. The central bank raised interest rates by a quarter of a percentage point to curb inflation, "
        "and bond yields rose across the curve as investors priced in further increases. ")


@pytest.fixture(scope="module")
def backend():
    return TransformersCapture(SMOL, batch_size=2, threads=2)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 40000, (5, 8), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def ct2_home(tmp_path_factory):
    """A temporary data home holding SmolLM2 and, when the real home has it, its converted CTranslate2 copy
    (linked: no second conversion); otherwise it is converted there (about 10 s)."""
    home = tmp_path_factory.mktemp("home")
    (home / "models").mkdir()
    (home / "models" / "smollm2-135m").symlink_to(SMOL.resolve())
    real = Settings().home / "engines" / "ct2" / f"{SMOL.resolve().name}-{ct2.source_digest(SMOL.resolve())}"
    if (real / "model.bin").is_file():
        (home / "engines" / "ct2").mkdir(parents=True)
        (home / "engines" / "ct2" / real.name).symlink_to(real)
    return Settings(home=home, llm_threads=2)


@pytest.fixture(scope="module")
def ct2_backend(ct2_home):
    return CT2Capture(SMOL, settings=ct2_home, batch_size=2, threads=2)


@pytest.fixture(scope="module")
def text_ids():
    """(4, 24) windows of real text (random ids make every distribution flat: no test of fidelity)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(SMOL))(TEXT)["input_ids"]
    return torch.tensor(ids[:96]).view(4, 24)


def _cap(backend, ids, folder, **kw):
    args = {"k": 4, "teacher": "smol", "tokenizer_sha256": "tok", "shard_windows": 2, "progress": False, **kw}
    return capture_topk(backend, ids, folder, **args)


def test_capture_is_the_full_vocabulary_top_k_and_is_read_back(backend, ids, tmp_path):
    cap = _cap(backend, ids, tmp_path)
    assert cap.rebuilt == [0, 1, 2] and cap.topk_ids.shape == (5, 8, 4)
    with torch.inference_mode():
        ref = torch.log_softmax(backend.model(input_ids=ids).logits.float(), -1).topk(4, -1)
    assert torch.equal(cap.topk_ids.long(), ref.indices)
    assert torch.allclose(cap.topk_logprobs.float(), ref.values, atol=2e-2)  # stored as float16
    again = _cap(backend, ids, tmp_path)
    assert again.rebuilt == [] and torch.equal(again.topk_ids, cap.topk_ids)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert {"teacher", "tokenizer_sha256", "data_sha256", "k", "shards"} <= set(m)
    assert set(m["shards"]["0"]["sha256"]) == {"tokens", "topk_ids", "topk_logprobs"}


def test_interrupted_capture_resumes_at_the_first_missing_shard(backend, ids, tmp_path):
    with pytest.raises(RuntimeError, match="injected"):
        _cap(FailingCapture(backend, fail_on_call=2), ids, tmp_path)  # shard 0 written, shard 1 fails
    assert list(json.loads((tmp_path / "manifest.json").read_text())["shards"]) == ["0"]
    assert _cap(backend, ids, tmp_path).rebuilt == [1, 2]


def test_corrupt_or_mismatched_shards_are_rebuilt_never_used(backend, ids, tmp_path):
    good = _cap(backend, ids, tmp_path)
    p = tmp_path / "shard-00001.topk_logprobs.npy"
    a = np.load(p)
    a[...] = 0
    np.save(p, a)  # a valid .npy with wrong values: only the hash tells
    fixed = _cap(backend, ids, tmp_path)
    assert fixed.rebuilt == [1] and torch.equal(fixed.topk_logprobs, good.topk_logprobs)
    assert _cap(backend, ids, tmp_path, k=3).rebuilt == [0, 1, 2]  # another k: the manifest is discarded
    assert _cap(backend, ids, tmp_path, k=3, teacher="other").rebuilt == [0, 1, 2]
    assert _cap(backend, ids, tmp_path, k=3, tokenizer_sha256="x").rebuilt == [0, 1, 2]


def test_vllm_prompt_logprobs_are_parsed_in_rank_order():
    per_pos = [{"5": {"logprob": -2.0}, "7": {"logprob": -0.5}, "9": {"logprob": -1.0}}, {"3": -0.1}]
    ids, lps = parse_prompt_logprobs(per_pos, 2)
    assert ids.tolist() == [[7, 9], [3, 0]] and lps[1, 1] == -np.inf
    with pytest.raises(ValueError, match="no log-probabilities at position 0"):
        parse_prompt_logprobs([None], 2)


def test_unknown_capture_backend_lists_the_names():
    with pytest.raises(ValueError, match=r"choose one of \['ct2', 'transformers', 'vllm'\]"):
        capture_resolver.lookup("onnx")
    assert capture_resolver.lookup("ctranslate2") is CT2Capture


def test_chunked_head_equals_one_head_call(ids):
    """The output head on chunks of positions (logit - logsumexp) == log_softmax of the whole logits."""
    whole = TransformersCapture(SMOL, batch_size=2, threads=2, head_chunk=10_000)
    chunked = TransformersCapture(SMOL, batch_size=2, threads=2, head_chunk=3, model=whole.model)
    a, b = whole.topk(ids, 4), chunked.topk(ids, 4)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1], atol=1e-4)


def test_compare_topk_on_tiny_tensors():
    ref_ids = torch.tensor([[[1, 2, 3]], [[4, 5, 6]]])
    ref_lp = torch.log(torch.tensor([[[0.5, 0.3, 0.1]], [[0.6, 0.2, 0.1]]]))
    same = compare_topk(ref_ids, ref_lp, ref_ids, ref_lp)
    assert (same.positions, same.top1_agreement, same.top1_logprob_abs_diff, same.outside_topk) == (2, 1.0, 0.0, 0.0)
    assert same.kl_topk == pytest.approx(0.0, abs=1e-7)
    # position 0: the other ranks 2 first and misses 3 (floored at its k-th, 0.1); position 1: 4 drops out
    ids = torch.tensor([[[2, 1, 7]], [[5, 6, 8]]])
    lp = torch.log(torch.tensor([[[0.5, 0.4, 0.1]], [[0.5, 0.3, 0.05]]]))
    f = compare_topk(ref_ids, ref_lp, ids, lp)
    assert f.top1_agreement == 0.0 and f.outside_topk == 0.5
    assert f.top1_logprob_abs_diff == pytest.approx((abs(np.log(0.5 / 0.4)) + abs(np.log(0.6 / 0.05))) / 2, rel=1e-5)
    p0, q0 = np.array([0.5, 0.3, 0.1]) / 0.9, np.array([0.4, 0.5, 0.1]) / 1.0
    p1, q1 = np.array([0.6, 0.2, 0.1]) / 0.9, np.array([0.05, 0.5, 0.3]) / 0.85
    kl = ((p0 * np.log(p0 / q0)).sum() + (p1 * np.log(p1 / q1)).sum()) / 2
    assert f.kl_topk == pytest.approx(kl, rel=1e-5)


@needs_ct2
def test_ct2_int8_capture_agrees_with_fp32_on_real_text(backend, ct2_backend, text_ids):
    ids, lp = ct2_backend.topk(text_ids, 8)
    assert ids.shape == lp.shape == (4, 24, 8) and ids.dtype == torch.int32
    assert bool((lp[..., :-1] >= lp[..., 1:]).all()) and bool((lp <= 0).all())  # sorted log-probabilities
    ref = backend.topk(text_ids, 8)
    f = compare_topk(*ref, ids, lp)
    # measured here: top-1 agreement ~0.85 and mean |dlog p| ~0.5 nats for this 135M model in int8;
    # the bounds are loose, to catch a broken path (shifted positions, wrong ids: agreement ~0), not drift
    assert f.top1_agreement > 0.6 and f.outside_topk < 0.1 and f.top1_logprob_abs_diff < 1.5, f
    assert ct2_backend.engine()["backend"] == "ct2" and ct2_backend.engine()["compute_type"].startswith("int8")


@needs_ct2
def test_a_capture_by_another_engine_is_rebuilt_never_used(backend, ct2_backend, text_ids, tmp_path):
    """Same teacher, data, tokenizer and k, another engine (or dtype): the manifest refuses the shards."""
    ids = text_ids[:2]
    first = _cap(backend, ids, tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["engine"]["dtype"] == "float32"
    assert _cap(backend, ids, tmp_path).rebuilt == []
    swapped = _cap(ct2_backend, ids, tmp_path)
    assert swapped.rebuilt == [0] and json.loads((tmp_path / "manifest.json").read_text())["engine"]["backend"] == "ct2"
    assert not torch.equal(swapped.topk_logprobs, first.topk_logprobs)  # int8 numbers, not the fp32 ones
    bf16 = TransformersCapture(SMOL, dtype="bfloat16", batch_size=2, threads=2, model=backend.model)
    assert bf16.engine() != backend.engine()
    assert _cap(bf16, ids, tmp_path).rebuilt == [0]  # another dtype is another engine


@needs_ct2
def test_recipe_capture_config_picks_the_ct2_backend(ct2_home, text_ids):
    """``teacher.capture: ct2`` in the recipe: the shards are CTranslate2's, in a folder of their own."""
    from transformers import AutoTokenizer

    from distill.data import Windows
    from distill.recipe import capture_teacher, load_config

    cfg = load_config(None, [f"teacher.name={SMOL}", "teacher.capture=ct2", "teacher.top_k=4", "teacher.batch_size=2",
                             "threads=2"])
    w = Windows(torch.cat([text_ids[:2], text_ids[:2, :1]], 1), torch.ones(2, 24, dtype=torch.bool), torch.arange(2), [])
    tok = AutoTokenizer.from_pretrained(str(SMOL))
    out = capture_teacher(cfg, str(SMOL), {"train": w, "heldout": w}, settings=ct2_home, tokenizer=tok)
    assert out["train"]["topk_idx"].shape == (2, 24, 4)
    folders = list((ct2_home.home / "cache" / "distill").glob("capture-*"))
    assert len(folders) == 1 and json.loads((folders[0] / "manifest.json").read_text())["engine"]["backend"] == "ct2"
    assert os.path.isfile(folders[0] / "shard-00000.topk_ids.npy")
