"""Perplexity over the kept vocabulary: student and teacher NLLs on tiny models (no download)."""

import math

import pytest
import torch

from core.settings import Settings
from distill.metrics import student_target_nll
from distill.teachers import CausalLMTeacher
from experts.qrh import QRHConfig, QRHModel

N_TOK = 50  # tokenizer size of the tiny models
KEPT = torch.tensor([3, 5, 8, 13, 21, 34])  # V - 1 = 6 kept ids; student id 0 = unknown


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _ids():
    return torch.tensor([[3, 5, 8, 2, 13, 40, 21], [34, 34, 1, 5, 8, 13, 3]])  # 2, 40, 1: not kept


def test_student_nll_in_kept_and_full_space():
    model = QRHModel(QRHConfig(vocab_size=7, d_model=16, n_layers=1, n_heads=2, max_seq_len=8)).eval()
    model.set_vocabulary(KEPT)
    ids = _ids()
    out = student_target_nll(model, ids, n_token_ids=N_TOK)
    s = model.to_student_ids(ids)
    logp = torch.log_softmax(model(s[:, :-1]), -1)
    for b in range(2):
        for t in range(6):
            want = -logp[b, t, s[b, t + 1]].item()
            assert out["kept"][b, t].item() == pytest.approx(want, abs=1e-5)
            extra = math.log(N_TOK - 6) if s[b, t + 1] == 0 else 0.0  # unknown mass spread over 44 ids
            assert out["full"][b, t].item() == pytest.approx(want + extra, abs=1e-5)


def test_teacher_nll_sums_the_probability_outside_the_kept_ids():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=N_TOK, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
    teacher = CausalLMTeacher("tiny", settings=Settings(), dtype="float32")
    teacher._model = Qwen2ForCausalLM(cfg).eval()
    ids = _ids()
    out = teacher.target_nll(ids, KEPT, batch_size=1)
    with torch.no_grad():
        p = torch.softmax(teacher.model(input_ids=ids[:, :-1]).logits, -1)
    other = torch.ones(N_TOK, dtype=torch.bool)
    other[KEPT] = False
    for b in range(2):
        for t in range(6):
            target = int(ids[b, t + 1])
            assert out["full"][b, t].item() == pytest.approx(-math.log(p[b, t, target]), abs=1e-4)
            in_kept = p[b, t, target] if target in KEPT.tolist() else p[b, t, other].sum()
            assert out["kept"][b, t].item() == pytest.approx(-math.log(in_kept), abs=1e-4)
    assert (out["kept"] <= out["full"] + 1e-6).all()  # the kept view merges ids, so it is never less likely
