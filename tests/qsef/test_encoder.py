"""Encoder: LRU cache semantics with a fake model, and the real MiniLM (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.settings import Settings
from qsef.encoder import Encoder, encode_cached


class _Fake:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, **_):
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    def get_sentence_embedding_dimension(self) -> int:
        return 3


def test_cache_deduplicates_and_evicts():
    fake = _Fake()
    enc = Encoder("fake", model=fake, cache_size=2)
    a = enc.encode(["aa", "b", "aa"])
    assert fake.calls == [["aa", "b"]] and a.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a[0], a[2])
    enc.encode(["b"])
    assert len(fake.calls) == 1  # served from cache
    enc.encode(["ccc"])  # evicts the least recently used ("aa")
    enc.encode(["aa"])
    assert fake.calls[-1] == ["aa"] and enc.forward_calls == 4


def test_prime_fills_the_cache_without_the_model():
    fake = _Fake()
    enc = Encoder("fake", model=fake, cache_size=2)
    enc.prime(["x", "y", "z"], np.eye(3, dtype=np.float32))  # over the size: the oldest ("x") is dropped
    np.testing.assert_array_equal(enc.encode(["z", "y"]), np.eye(3, dtype=np.float32)[[2, 1]])
    assert fake.calls == []
    enc.encode(["x"])
    assert fake.calls == [["x"]]


def test_encode_cached_on_disk(tmp_path):
    fake = _Fake()
    enc = Encoder("fake", model=fake)
    x = encode_cached(["one", "three"], encoder=enc, name="t", cache_dir=tmp_path)
    y = encode_cached(["one", "three"], encoder=enc, name="t", cache_dir=tmp_path)
    np.testing.assert_array_equal(x, y)
    assert len(fake.calls) == 1 and list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.pkl"))


def test_shipped_embeddings_replace_encoding_only_for_their_own_texts(tmp_path):
    from qsef.encoder import ship_cached

    fake = _Fake()
    enc = Encoder("fake", model=fake)
    shipped = ship_cached(["one", "three"], encoder=enc, cache_dir=tmp_path / "maintainer", name="t",
                          dest=tmp_path / "shipped")
    assert shipped.suffix == ".safetensors" and len(fake.calls) == 1
    x = encode_cached(["one", "three"], encoder=enc, name="t", cache_dir=tmp_path / "fresh",
                      shipped_dir=tmp_path / "shipped")
    assert len(fake.calls) == 1  # copied from the shipped file, not encoded
    assert x.dtype == np.float32 and x.shape == (2, 3) and list((tmp_path / "fresh").glob("*.npy"))
    np.testing.assert_allclose(x, enc.encode(["one", "three"]), atol=1e-3)  # float16 rounding only
    # a shipped file whose recorded digest is not these texts' (renamed by hand) is refused: encoded instead
    other = tmp_path / "shipped" / shipped.name.replace("t-", "u-", 1)
    shipped.rename(other)
    from qsef.encoder import _cache_stem

    (tmp_path / "shipped" / f"{_cache_stem(['two'], enc, 'u')}.safetensors").write_bytes(other.read_bytes())
    encode_cached(["two"], encoder=enc, name="u", cache_dir=tmp_path / "fresh", shipped_dir=tmp_path / "shipped")
    assert fake.calls[-1] == ["two"]
    # a damaged shipped file is skipped with a warning, never a crash
    (tmp_path / "shipped" / f"{_cache_stem(['four'], enc, 'v')}.safetensors").write_bytes(b"not safetensors")
    encode_cached(["four"], encoder=enc, name="v", cache_dir=tmp_path / "fresh", shipped_dir=tmp_path / "shipped")
    assert fake.calls[-1] == ["four"]


@pytest.mark.slow
def test_real_minilm_encoder():
    enc = Encoder("minilm", settings=Settings())
    v = enc.encode(["What is a tort?", "What is a tort?", "How do I sort a list in Python?"])
    assert v.shape == (3, 384) and enc.forward_calls == 2
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert float(v[0] @ v[2]) < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["minilm"])
def test_light_encoder_equals_sentence_transformers(name):
    """The fast path (transformers + mean pooling, no sentence-transformers import) gives the vectors
    ``SentenceTransformer`` gives, on texts of very different lengths (padding and truncation at 256 tokens)."""
    from sentence_transformers import SentenceTransformer

    from qsef.encoder import MeanPoolEncoder, resolve_model_path

    folder = resolve_model_path(Settings(), name)
    assert MeanPoolEncoder.supports(folder)
    texts = ["What is a tort?", "How do I reverse a list in Python with slicing or reversed()?",
             "A tenant " * 300, "", "Ünïcödé and emoji 🙂 in a sentence."]
    light = MeanPoolEncoder(folder).encode(texts, batch_size=2, normalize_embeddings=True)
    reference = SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=2, convert_to_numpy=True,
                                                                      normalize_embeddings=True)
    assert light.shape == reference.shape == (5, 384)
    np.testing.assert_allclose(light, reference, atol=2e-5)


def test_light_encoder_refuses_other_pipelines(tmp_path):
    from qsef.encoder import MeanPoolEncoder

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                     "pooling_mode_mean_tokens": False}))
    assert not MeanPoolEncoder.supports(tmp_path)  # CLS pooling: left to sentence-transformers
    assert not MeanPoolEncoder.supports(tmp_path / "missing")
