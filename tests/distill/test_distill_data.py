"""Vocabulary, windows, resistance, samplers, curriculum and temperature annealing."""

import itertools

import pytest
import torch

from distill.data import (
    Curriculum,
    DifficultySampler,
    EpochSampler,
    LossSampler,
    Stage,
    TemperatureSchedule,
    Text,
    UniformSampler,
    build_vocabulary,
    coverage,
    make_windows,
    resistance,
    sampler_resolver,
)


def test_vocabulary_keeps_frequent_and_forced_ids():
    toks = [[5, 5, 5, 7, 7, 9], [5, 11]]
    kept = build_vocabulary(toks, size=4, always=[99])
    assert kept.tolist() == [5, 7, 99]
    assert coverage(toks, kept) == pytest.approx(6 / 8)
    assert build_vocabulary([[3]], size=5).numel() == 4  # padded to the configured size


def test_windows_cut_and_pad():
    texts = [Text("a", "law", "x"), Text("b", "law", "y")]
    toks = [list(range(1, 30)), list(range(1, 5))]
    w = make_windows(texts, toks, seq_len=10, pad_id=0, min_tokens=3)
    assert w.ids.shape == (4, 11)  # 29 tokens -> windows starting at 0, 10, 20; 4 tokens -> one window
    assert w.ids[0].tolist() == list(range(1, 12))
    assert w.valid[2].sum() == 8 and w.valid[3].sum() == 3
    assert w.doc_index.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="no window"):
        make_windows(texts[:1], [[1]], seq_len=10)


def test_resistance_rises_with_complexity():
    easy = "The cat sat. The cat sat. The cat sat."
    hard = ("Notwithstanding the foregoing, if the licensee fails to comply, therefore the licensor may terminate, "
            "calculate damages of 15% and, because jurisdiction is contested, appeal to the federal circuit.")
    assert 0 <= resistance(easy) < resistance(hard) <= 1


def test_samplers():
    r = torch.tensor([0.0, 0.0, 1.0, 1.0])
    ds = DifficultySampler(4, resistance=r, mix=1.0, seed=0)
    draws = ds.sample(torch.arange(4), 200)
    assert set(draws.tolist()) <= {2, 3}
    u = UniformSampler(4, seed=0)
    assert u.sample(torch.tensor([1, 3]), 2).sort().values.tolist() == [1, 3]  # no replacement when possible
    ls = LossSampler(4, mix=1.0, seed=0)
    ls.update(torch.tensor([0, 1, 2, 3]), torch.tensor([0.0, 0.0, 0.0, 5.0]))
    assert set(ls.sample(torch.arange(4), 50).tolist()) == {3}
    assert sampler_resolver.options == ["difficulty", "epoch", "loss", "uniform"]


def test_epoch_sampler_draws_every_window_once_per_epoch_and_resumes():
    e = EpochSampler(6, seed=0)
    eligible = torch.arange(6)
    first = torch.cat([e.sample(eligible, 2) for _ in range(3)])
    assert sorted(first.tolist()) == list(range(6))  # one epoch: no repeats
    state = e.state_dict()
    e.sample(eligible, 4)  # 4 more: epoch two, then ...
    after = e.sample(eligible, 4)  # ... the rest of it plus the start of epoch three
    e.load_state_dict(state)
    e.sample(eligible, 4)
    assert torch.equal(e.sample(eligible, 4), after)
    assert set(e.sample(torch.tensor([1, 4]), 2).tolist()) == {1, 4}  # a new eligible set: a new epoch of it
    assert sampler_resolver.lookup("shuffle") is EpochSampler


def test_load_texts_excludes_ids_before_subsampling(monkeypatch):
    import corpora
    from distill.data import load_texts

    class Doc:
        def __init__(self, i):
            self.id, self.domain, self.title, self.text = f"law-{i}", "law", "", f"clause {i} of the agreement binds both parties"

    monkeypatch.setattr(corpora, "load_corpus", lambda settings, domain, split: [Doc(i) for i in range(20)])
    train = load_texts(None, "law", "train", limit=8, seed=0)
    val = load_texts(None, "law", "train", limit=8, seed=1, exclude={t.id for t in train})
    assert len(train) == len(val) == 8 and not {t.id for t in train} & {t.id for t in val}
    assert len(load_texts(None, "law", "train", exclude={t.id for t in train})) == 12


def test_sampler_state_round_trip():
    a = DifficultySampler(10, resistance=torch.rand(10), seed=3)
    state = a.state_dict()
    first = a.sample(torch.arange(10), 5)
    a.load_state_dict(state)
    assert torch.equal(a.sample(torch.arange(10), 5), first)


def test_curriculum_general_then_domain_rising_complexity():
    from distill.data import Windows

    texts = [Text(str(i), "general" if i < 4 else "law", "t") for i in range(8)]
    w = Windows(torch.zeros(8, 3, dtype=torch.long), torch.ones(8, 2, dtype=torch.bool), torch.arange(8), texts)
    w.resistance = torch.tensor([0.1, 0.2, 0.8, 0.9, 0.1, 0.5, 0.7, 0.9])
    cur = Curriculum.default("law")
    first = cur.eligible(w, 0, 100).tolist()
    assert first and all(i < 4 for i in first) and 3 not in first
    last = cur.eligible(w, 99, 100).tolist()
    assert last == list(range(8))
    assert cur.stage_at(30, 100).name == "mixed"
    assert Curriculum([Stage(1.0, ["nowhere"])]).eligible(w, 0, 10).numel() == 8  # never empty


@pytest.mark.parametrize("kind", ["linear", "cosine", "exponential"])
def test_temperature_anneals_5_to_1(kind):
    s = TemperatureSchedule(5.0, 1.0, kind)
    temps = [s(i, 11) for i in range(11)]
    assert temps[0] == pytest.approx(5.0) and temps[-1] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(temps))


def test_pack_windows_cuts_full_windows_across_documents_and_caps_evenly():
    from distill.data import Text, pack_windows

    texts = [Text(f"d{i}", "law" if i < 3 else "code", "x") for i in range(6)]
    toks = [list(range(100 * i, 100 * i + 10)) for i in range(6)]  # 6 documents of 10 tokens
    w = pack_windows(texts, toks, seq_len=4)
    assert w.ids.shape == (14, 5) and bool(w.valid.all())  # (60 - 1) // 4 full windows, no padding
    assert w.ids[0].tolist() == [0, 1, 2, 3, 4] and w.ids[2].tolist() == [8, 9, 100, 101, 102]  # crosses docs
    assert w.doc_index[2] == 0 and w.doc_index[3] == 1  # the document of the first target token
    capped = pack_windows(texts, toks, seq_len=4, max_windows=4)
    assert len(capped) == 4 and set(capped.domains()) == {"law", "code"}  # evenly spaced: both domains kept
