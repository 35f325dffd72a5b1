"""Teacher capture to memory-mapped shards: values, resumption, and never using a bad shard."""

import json

import numpy as np
import pytest
import torch
from fakes import FailingCapture

from core.settings import Settings
from distill.capture import (
    TransformersCapture,
    capture_resolver,
    capture_topk,
    parse_prompt_logprobs,
)

SMOL = Settings().path("models", "smollm2-135m")
pytestmark = pytest.mark.skipif(not (SMOL / "config.json").is_file(), reason="smollm2-135m not in the model store")


@pytest.fixture(scope="module")
def backend():
    return TransformersCapture(SMOL, batch_size=2, threads=2)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 40000, (5, 8), generator=torch.Generator().manual_seed(0))


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
    with pytest.raises(ValueError, match=r"choose one of \['transformers', 'vllm'\]"):
        capture_resolver.lookup("onnx")
