"""The CTranslate2 engine (experts/ct2.py) behind ModelPool: conversion once, batching, streaming, stopping.

Real SmolLM2-135M from the model store, converted to CTranslate2 int8 in a temporary data home (about 10 s).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from experts import ct2
from experts.backends import HFBackend, ModelPool
from experts.registry import ExpertSpec

pytestmark = pytest.mark.skipif(not ct2.available(), reason="ctranslate2 is not installed")

COUNT = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]
HELLO = [{"role": "user", "content": "Name three colours."}]


def test_source_digest_follows_the_manifest_or_the_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    plain = ct2.source_digest(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 1}')
    assert ct2.source_digest(tmp_path) != plain  # a rewritten file changes it
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": "ab"}}}))
    pinned = ct2.source_digest(tmp_path)
    os.utime(tmp_path / "config.json", (1, 1))
    assert ct2.source_digest(tmp_path) == pinned  # with a manifest, only the recorded hashes count
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": "cd"}}}))
    assert ct2.source_digest(tmp_path) != pinned


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(pool, folder): SmolLM2-135M on the CTranslate2 engine, converted into a temporary home."""
    source = Settings().home / "models" / "smollm2-135m"
    if not (source / "config.json").is_file():
        pytest.skip("smollm2-135m not in the model store")
    home = tmp_path_factory.mktemp("home")
    (home / "models").mkdir()
    (home / "models" / "smollm2-135m").symlink_to(source)
    pool = ModelPool(Settings(home=home, local_engine="ctranslate2", local_precision="int8", llm_threads=2))
    assert pool.engine == "ctranslate2"
    folder = HFBackend(ExpertSpec(name="tiny", domain="general", backend_kwargs={"model": "smollm2-135m"}),
                       pool=pool).folder
    return pool, folder


@contextlib.contextmanager
def batch_sizes(model):
    """Record the number of rows of every batch ``model`` decodes inside the block."""
    sizes: list[int] = []
    original = model.decode
    model.decode = lambda rows: (sizes.append(len(rows)), original(rows))[1]
    try:
        yield sizes
    finally:
        model.decode = original


@pytest.mark.slow
def test_conversion_happens_once_and_a_broken_copy_is_redone(tiny):
    pool, folder = tiny
    first = ct2.converted_folder(pool.settings, folder)
    assert (first / "model.bin").is_file() and json.loads((first / "SOURCE.json").read_text())["format"] == ct2.FORMAT
    stamp = (first / "model.bin").stat().st_mtime_ns
    assert ct2.converted_folder(pool.settings, folder) == first
    assert (first / "model.bin").stat().st_mtime_ns == stamp  # reused, not converted again
    (first / "model.bin").unlink()  # a copy without its weights (deleted, or an old crash)
    again = ct2.converted_folder(pool.settings, folder)
    assert again == first and (again / "model.bin").is_file()
    assert not list(again.parent.glob(".tmp-*"))  # no temp folders left behind


@contextlib.contextmanager
def slow_decoding(model, delay_s: float = 0.01):
    """Fault injection: every decoded token costs at least ``delay_s`` and no row ends before its budget, so a
    long request stays long on any CPU (the tiny model may otherwise end its answer after a few tokens)."""
    generator = model.generator

    class Slow:
        def __getattr__(self, name):
            return getattr(generator, name)

        def generate_batch(self, prompts, *, callback, max_length, **kwargs):
            def step(result):
                time.sleep(delay_s)
                return callback(result)

            return generator.generate_batch(prompts, max_length=max_length, min_length=max_length, callback=step,
                                            **kwargs)

    model.generator = Slow()
    try:
        yield
    finally:
        model.generator = generator


@pytest.mark.slow
def test_concurrent_calls_are_decoded_together_each_on_its_own_prompt_and_budget(tiny):
    """Two greedy calls at once join one batch; each stops at its own budget and answers its own prompt.

    Not compared token for token with the answer alone: CTranslate2 does not promise equal logits for a padded
    batch and a single row, and with int8 weights a near-tie can flip at any step (seen at the third token of
    the 2 + 2 answer on a CI machine). What must hold is that each row's answer is as likely, given its own
    prompt and scored alone, as the answer decoded alone, and far more likely than given the other prompt
    (rows are not mixed up)."""
    pool, folder = tiny
    asks = [HELLO, [{"role": "user", "content": "What is 2 + 2?"}]]
    budgets = (6, 12)
    alone = [pool.generate(folder, a, max_tokens=n, temperature=0.0) for a, n in zip(asks, budgets, strict=True)]
    model = pool.ct2_model(folder)
    with batch_sizes(model) as sizes, cf.ThreadPoolExecutor(2) as ex:
        together = list(ex.map(lambda a, n: pool.generate(folder, a, max_tokens=n, temperature=0.0), asks, budgets))
    assert sizes == [2]
    tok = model.tokenizer
    prompts = [tok(tok.apply_chat_template(a, tokenize=False, add_generation_prompt=True))["input_ids"] for a in asks]

    def mean_logprob(prompt: list[int], text: str) -> float:
        answer = tok(text, add_special_tokens=False)["input_ids"]
        return float(np.mean(model.score([prompt + answer])[0][len(prompt):]))

    for i, (one, joint) in enumerate(zip(alone, together, strict=True)):
        assert 4 <= len(tok(joint, add_special_tokens=False)["input_ids"]) <= budgets[i] + 1  # (+1: re-tokenising)
        own, other = mean_logprob(prompts[i], joint), mean_logprob(prompts[1 - i], joint)
        assert own > mean_logprob(prompts[i], one) - 0.5, (one, joint)
        assert own > other + 0.5, (joint, own, other)


@pytest.mark.slow
def test_stream_equals_generate_and_closing_it_stops_the_row(tiny):
    pool, folder = tiny
    whole = pool.generate(folder, HELLO, max_tokens=24, temperature=0.0)
    pieces = list(pool.stream(folder, HELLO, max_tokens=24, temperature=0.0))
    assert len(pieces) > 3 and "".join(pieces) == whole

    stream = pool.stream(folder, COUNT, max_tokens=400, temperature=0.0)
    first = [next(stream) for _ in range(3)]
    stream.close()  # the client went away: the row ends and the model is free for the next call at once
    t0 = time.monotonic()
    assert first and pool.generate(folder, HELLO, max_tokens=4, temperature=0.0)
    assert time.monotonic() - t0 < 5


@pytest.mark.slow
def test_generation_stops_when_the_predicate_holds(tiny):
    from router.llm import json_closed

    pool, folder = tiny
    ask = [{"role": "user", "content": 'Reply with JSON like {"colours": ["red", "blue"]} and then explain it.'}]
    text = pool.generate(folder, ask, max_tokens=400, temperature=0.0, prefill='{"colours": ["',
                         stop_when=lambda more: json_closed('{"colours": ["' + more))
    assert json_closed('{"colours": ["' + text)
    assert len(('{"colours": ["' + text).rsplit("}", 1)[1]) <= 12  # within a token or two of the brace


@pytest.mark.slow
def test_timed_out_dispatch_stops_the_generation(tiny):
    """The dispatcher gives up after 1 s on a 400-token request: the row ends and the next call runs at once."""
    from router.dispatch import Dispatcher

    pool, folder = tiny
    spec = ExpertSpec(name="tiny", domain="general", backend="hf", backend_kwargs={"path": str(folder)})
    backend = HFBackend(spec, pool=pool)
    d = Dispatcher(lambda s: backend, timeout_s=1.0)
    try:
        with slow_decoding(pool.ct2_model(folder)):  # 400 tokens take >= 4 s however fast the CPU
            answer, att = d.call(spec, COUNT, max_tokens=400)
        assert answer is None and "timeout after 1s" in att.error
        t0 = time.monotonic()
        answer, att = d.call(spec, [{"role": "user", "content": "Say hello."}], max_tokens=4, timeout_s=60)
        assert att.ok and answer and time.monotonic() - t0 < 5
    finally:
        d.close()


@pytest.mark.slow
def test_sampled_and_greedy_rows_are_not_mixed(tiny):
    pool, folder = tiny
    with cf.ThreadPoolExecutor(2) as ex:
        sampled = ex.submit(pool.generate, folder, HELLO, max_tokens=8, temperature=0.9)
        greedy = ex.submit(pool.generate, folder, HELLO, max_tokens=8, temperature=0.0)
        assert sampled.result(timeout=60) and greedy.result(timeout=60)
    assert greedy.result() == pool.generate(folder, HELLO, max_tokens=8, temperature=0.0)


def test_without_ctranslate2_the_pool_falls_back_to_transformers(monkeypatch, tmp_path):
    monkeypatch.setattr(ct2, "available", lambda: False)  # fault injection: the package is missing
    assert ModelPool(Settings(home=tmp_path, local_engine="ctranslate2")).engine == "transformers"
    assert ModelPool(Settings(home=tmp_path, local_precision="fp32")).engine == "transformers"


def test_a_failed_conversion_keeps_nothing(tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    settings = Settings(home=tmp_path / "home")
    with pytest.raises(RuntimeError, match=r"converting .*not-a-model to CTranslate2 failed"):
        ct2.converted_folder(settings, bad)
    root = Path(settings.home) / "engines" / "ct2"
    assert not [p for p in root.iterdir() if not p.name.endswith(".lock")]


@pytest.mark.slow
def test_a_cached_prefix_gives_the_same_answer(tiny):
    """``cache_prefix`` (the router LLM's long instructions): the answer equals the uncached one, again and again;
    rows with another prefix are decoded in their own batch."""
    pool, folder = tiny
    shared = [{"role": "system", "content": "Answer in one short sentence. " * 12}]
    ask = [*shared, {"role": "user", "content": "What is 2 + 2?"}]
    plain = pool.generate(folder, ask, max_tokens=10, temperature=0.0)
    assert [pool.generate(folder, ask, max_tokens=10, temperature=0.0, cache_prefix=True)
            for _ in range(2)] == [plain, plain]
    with batch_sizes(pool.ct2_model(folder)) as sizes, cf.ThreadPoolExecutor(2) as ex:
        cached = ex.submit(pool.generate, folder, ask, max_tokens=10, temperature=0.0, cache_prefix=True)
        other = ex.submit(pool.generate, folder, HELLO, max_tokens=10, temperature=0.0)
        assert cached.result(timeout=60) == plain and other.result(timeout=60)
    assert sorted(sizes) == [1, 1]


def test_a_closed_pool_refuses_new_calls(tmp_path):
    from experts.backends import BackendUnavailableError

    pool = ModelPool(Settings(home=tmp_path))
    pool.close()
    pool.close()  # idempotent
    with pytest.raises(BackendUnavailableError, match="closed"):
        pool._submit(tmp_path, "ct2", ct2.Row("hi", 4))


def _no_probe(*args, **kwargs):
    raise AssertionError("the decode threads were measured again")


def test_a_setting_or_a_single_core_needs_no_measurement(tmp_path, monkeypatch):
    monkeypatch.setattr(ct2, "_probe_tokens_per_s", _no_probe)
    assert ct2.decode_threads(Settings(home=tmp_path, decode_threads=3, llm_threads=2), tmp_path) == 3
    assert ct2.decode_threads(Settings(home=tmp_path, llm_threads=1), tmp_path) == 1
    assert not (tmp_path / "engines" / "ct2" / "decode_threads.json").exists()


@pytest.mark.slow
def test_decode_threads_are_measured_once_and_remembered(tiny, monkeypatch):
    pool, folder = tiny
    settings = pool.settings.model_copy(update={"decode_threads": None})
    converted = ct2.converted_folder(settings, folder)
    record = settings.home / "engines" / "ct2" / "decode_threads.json"
    record.unlink(missing_ok=True)
    chosen = ct2.decode_threads(settings, converted)  # the real probe: both thread counts decode
    entry = next(iter(json.loads(record.read_text()).values()))
    assert chosen in (1, 2) and entry["threads"] == chosen
    speeds = {int(t): v for t, v in entry["tokens_per_s"].items()}
    assert set(speeds) == {1, 2} and chosen == max(speeds, key=speeds.get) and min(speeds.values()) > 0
    monkeypatch.setattr(ct2, "_probe_tokens_per_s", _no_probe)
    assert ct2.decode_threads(settings, converted) == chosen  # read back, not measured again


@pytest.mark.slow
def test_a_corrupt_record_is_measured_again(tiny, monkeypatch, caplog):
    pool, folder = tiny
    settings = pool.settings.model_copy(update={"decode_threads": None})
    converted = ct2.converted_folder(settings, folder)
    record = settings.home / "engines" / "ct2" / "decode_threads.json"
    record.write_text('{"half a record')
    monkeypatch.setattr(ct2, "_probe_tokens_per_s", lambda path, prompt, threads: {1: 10.0, 2: 30.0}[threads])
    assert ct2.decode_threads(settings, converted) == 2
    assert "measuring the decode threads again" in caplog.text
    assert next(iter(json.loads(record.read_text()).values()))["tokens_per_s"] == {"1": 10.0, "2": 30.0}
