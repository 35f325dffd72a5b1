import threading
import time

import pytest

from core.settings import Settings
from experts.backends import (
    BackendError,
    BackendUnavailableError,
    GenerationCancelledError,
    HFBackend,
    ModelPool,
    OpenAIBackend,
    QRHBackend,
    backend_resolver,
    make_backend,
)
from experts.registry import ExpertSpec


def test_resolver_names_match_spec_backends():
    assert backend_resolver.names == ["hf", "openai", "qrh", "peft"]
    assert isinstance(make_backend(ExpertSpec(name="a", domain="law", backend="hf", backend_kwargs={"model": "x"})),
                      HFBackend)


def test_openai_backend_requires_url_and_model():
    with pytest.raises(BackendUnavailableError, match="base_url"):
        make_backend(ExpertSpec(name="a", domain="law", backend="openai"))


def test_openai_backend_down_raises_backend_error():
    spec = ExpertSpec(name="a", domain="law", backend="openai",
                      backend_kwargs={"base_url": "http://127.0.0.1:9/v1", "model": "m", "timeout": 1, "retries": 0})
    b = OpenAIBackend(spec)
    ok, detail = b.health()
    assert not ok and detail
    with pytest.raises(BackendError, match="remote expert 'a'"):
        b.generate([{"role": "user", "content": "hi"}])


def test_system_prompt_prepended_once():
    spec = ExpertSpec(name="a", domain="law", system_prompt="be a lawyer")
    b = HFBackend(spec, pool=None)
    msgs = b.messages_for([{"role": "user", "content": "q"}])
    assert msgs[0] == {"role": "system", "content": "be a lawyer"}
    own = [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]
    assert b.messages_for(own) == own


def test_hf_backend_bad_path_is_unavailable(tmp_path):
    b = HFBackend(ExpertSpec(name="a", domain="law", backend_kwargs={"path": str(tmp_path)}))
    assert b.health()[0] is False
    with pytest.raises(BackendError, match="not a Hugging Face model folder"):
        b.generate([{"role": "user", "content": "q"}])


def test_qrh_backend_missing_checkpoint(tmp_path):
    b = QRHBackend(ExpertSpec(name="q", domain="law", backend="qrh",
                              backend_kwargs={"checkpoint": str(tmp_path / "none.safetensors")}))
    assert b.health()[0] is False
    with pytest.raises(BackendUnavailableError):
        b.generate([{"role": "user", "content": "q"}])


# ---- cancellation: a timed-out in-process generation stops and frees the model (real models)
# These exercise the transformers engine (torch hooks inject the faults); tests/experts/test_ct2.py has the
# same behaviours on the CTranslate2 engine.

TORCH = {"local_engine": "transformers"}

COUNT = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]


@pytest.mark.slow
def test_timed_out_hf_generation_stops_and_frees_the_model():
    """SmolLM2-135M, slowed to 0.1 s per forward step (fault injection); the dispatcher gives up after
    1 s, the generation stops within a step or two and the next call gets the model at once."""
    from router.dispatch import Dispatcher

    spec = ExpertSpec(name="tiny", domain="general", backend="hf", backend_kwargs={"model": "smollm2-135m"})
    backend = HFBackend(spec, pool=ModelPool(Settings(**TORCH)))
    _, model, lock = backend.pool.get(backend.folder)
    steps: list[float] = []

    def slow_step(module, args):
        steps.append(time.monotonic())
        time.sleep(0.1)

    hook = model.register_forward_pre_hook(slow_step)
    d = Dispatcher(lambda s: backend, timeout_s=1.0)
    try:
        answer, att = d.call(spec, COUNT, max_tokens=400)  # 400 slow steps = 40 s if never stopped
        gave_up = time.monotonic()
        assert answer is None and "timeout after 1s" in att.error and "cancelled" in att.error
        assert lock.acquire(timeout=1.0), "the abandoned generation still holds the model lock"
        lock.release()
        # generation was under way (on a busy machine the prompt's forward pass alone can take the whole
        # second), and after the give-up at most two more steps ran
        assert steps and steps[0] < gave_up and sum(t > gave_up for t in steps) <= 2
    finally:
        hook.remove()
    t0 = time.monotonic()
    answer, att = d.call(spec, [{"role": "user", "content": "Say hello."}], max_tokens=4, timeout_s=60)
    assert att.ok and answer and time.monotonic() - t0 < 20
    d.close()


@pytest.mark.slow
def test_hf_generation_waiting_for_the_lock_gives_up_when_cancelled():
    spec = ExpertSpec(name="tiny", domain="general", backend="hf", backend_kwargs={"model": "smollm2-135m"})
    backend = HFBackend(spec, pool=ModelPool(Settings(**TORCH)))
    _, _, lock = backend.pool.get(backend.folder)
    cancel = threading.Event()
    with lock:  # another request is generating
        threading.Timer(0.2, cancel.set).start()
        t0 = time.monotonic()
        with pytest.raises(GenerationCancelledError, match="waiting for model"):
            backend.generate(COUNT, max_tokens=4, cancel=cancel)
        assert time.monotonic() - t0 < 1.0


def _qrh_expert(tmp_path):
    import torch

    from experts.qrh import QRHConfig, QRHModel

    torch.manual_seed(0)
    model = QRHModel(QRHConfig(vocab_size=99, d_model=32, n_layers=2, n_heads=4, max_seq_len=16)).eval()
    model.set_vocabulary(torch.arange(1000, 1000 + 98 * 3, 3))
    model.save_pretrained(tmp_path / "ckpt")
    spec = ExpertSpec(name="q", domain="law", backend="qrh",
                      backend_kwargs={"checkpoint": str(tmp_path / "ckpt"), "tokenizer": "qwen-0.5b"})
    return QRHBackend(spec, pool=ModelPool(Settings(**TORCH)))


def test_qrh_step_by_step_decoding_equals_model_generate(tmp_path):
    backend = _qrh_expert(tmp_path)
    model, tok = backend._load()
    prompt = tok.apply_chat_template(COUNT, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    expected = tok.decode(model.generate(ids, max_new_tokens=12)[0, ids.shape[1]:], skip_special_tokens=True)
    assert backend.generate(COUNT, max_tokens=12) == expected.strip()


def test_qrh_generation_stops_when_cancelled(tmp_path):
    backend = _qrh_expert(tmp_path)
    backend._load()
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(GenerationCancelledError, match=r"cancelled after [1-9]\d* tokens"):
        backend.generate(COUNT, max_tokens=1_000_000, cancel=cancel)
    assert time.monotonic() - t0 < 2.0


@pytest.mark.slow
def test_cancelled_remote_request_is_aborted_at_once(tmp_path):
    """A real HTTP server whose model "slow" takes 5 s: setting cancel closes the connection."""
    from tests.api.processes import ECHO, free_port, spawn, stop, wait_http

    port = free_port()
    proc = spawn(["-c", ECHO, str(port), "remote"], tmp_path / "echo.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc, timeout=60)
        spec = ExpertSpec(name="r", domain="law", backend="openai",
                          backend_kwargs={"base_url": f"http://127.0.0.1:{port}/v1", "model": "slow"})
        backend = make_backend(spec)
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        t0 = time.perf_counter()
        with pytest.raises(GenerationCancelledError, match="aborted"):
            backend.generate([{"role": "user", "content": "hi"}], cancel=cancel)
        assert time.perf_counter() - t0 < 2.0
        fast = ExpertSpec(name="f", domain="law", backend="openai",
                          backend_kwargs={"base_url": f"http://127.0.0.1:{port}/v1", "model": "m"})
        assert "hi" in make_backend(fast).generate([{"role": "user", "content": "hi"}], cancel=threading.Event())
    finally:
        stop(proc)


@pytest.mark.slow
def test_hf_stream_equals_generate_and_stops_when_closed():
    """SmolLM2-135M, greedy: the streamed pieces join to ``generate``'s answer; closing the stream after a
    few pieces ends the generation at once and frees the model."""
    spec = ExpertSpec(name="tiny", domain="general", backend="hf", backend_kwargs={"model": "smollm2-135m"})
    backend = HFBackend(spec, pool=ModelPool(Settings(**TORCH)))
    hello = [{"role": "user", "content": "Name three colours."}]
    whole = backend.generate(hello, max_tokens=24)
    pieces = list(backend.stream(hello, max_tokens=24))
    assert len(pieces) > 3 and "".join(pieces).strip() == whole

    _, _, lock = backend.pool.get(backend.folder)
    stream = backend.stream(COUNT, max_tokens=400)
    first = [next(stream) for _ in range(3)]
    stream.close()  # the client went away
    assert first and lock.acquire(timeout=1.0), "the closed stream's generation still holds the model lock"
    lock.release()


@pytest.mark.slow
def test_hf_generation_stops_when_the_predicate_holds():
    """``stop_when`` ends a 400-token request as soon as the text so far satisfies it (JSON closed)."""
    from router.llm import json_closed

    spec = ExpertSpec(name="tiny", domain="general", backend="hf", backend_kwargs={"model": "smollm2-135m"})
    pool = ModelPool(Settings(**TORCH))
    folder = HFBackend(spec, pool=pool).folder
    ask = [{"role": "user", "content": 'Reply with JSON like {"colours": ["red", "blue"]} and then explain it.'}]
    text = pool.generate(folder, ask, max_tokens=400, temperature=0.0, prefill='{"colours": ["',
                         stop_when=lambda more: json_closed('{"colours": ["' + more))
    assert json_closed('{"colours": ["' + text)
    tail = ('{"colours": ["' + text).rsplit("}", 1)[1]
    assert len(tail) <= 12  # stopped within a token or two of the closing brace


def test_json_closed():
    from router.llm import json_closed

    assert not json_closed('{"subtasks": [{"subtask": "What is a } or ]?"')
    assert json_closed('{"subtasks": [{"subtask": "a \\" } b"}]} trailing')
    assert not json_closed("no json here") and json_closed("[1, [2]]")


@pytest.fixture(scope="module")
def smol_adapter(tmp_path_factory):
    """A random (non-zero) rank-4 LoRA adapter for SmolLM2-135M, saved like the shipped ones."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = Settings().path("models", "smollm2-135m")
    if not (folder / "config.json").is_file():
        pytest.skip("smollm2-135m not in the model store")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(folder))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False, task_type="CAUSAL_LM"))
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return folder, out


@pytest.mark.slow
def test_peft_expert_shares_the_base_with_plain_hf_experts(smol_adapter):
    """One loaded SmolLM2 serves the plain expert and the adapter expert; the plain one answers as the
    bare base before and after the adapter was loaded (adapters are off for it)."""
    from experts.backends import PeftBackend

    folder, adapter = smol_adapter
    pool = ModelPool(Settings(local_precision="fp32"))  # at int8 the plain experts hold their own copy
    plain = HFBackend(ExpertSpec(name="plain", domain="law", backend_kwargs={"path": str(folder)}), pool=pool)
    lora = make_backend(ExpertSpec(name="law-lora", domain="law", backend="peft",
                                   backend_kwargs={"adapter": str(adapter), "path": str(folder)}), pool=pool)
    assert isinstance(lora, PeftBackend) and lora.health()[0]
    msg = [{"role": "user", "content": "What is a contract?"}]
    before = plain.generate(msg, max_tokens=6)
    adapted = lora.generate(msg, max_tokens=6)
    after = plain.generate(msg, max_tokens=6)
    assert before == after != adapted
    assert "".join(lora.stream(msg, max_tokens=6)) == adapted
    assert len(pool._models) == 1  # one base in memory


def test_peft_backend_needs_an_adapter_folder(tmp_path):
    with pytest.raises(BackendUnavailableError, match="adapter"):
        make_backend(ExpertSpec(name="x", domain="law", backend="peft"))
    b = make_backend(ExpertSpec(name="x", domain="law", backend="peft", backend_kwargs={"adapter": str(tmp_path)}))
    ok, detail = b.health()
    assert not ok and "not a LoRA adapter folder" in detail


# ---- precision and micro-batching (real models)

def _tiny_pool(precision: str = "int8", engine: str = "transformers") -> tuple[ModelPool, object]:
    pool = ModelPool(Settings(local_precision=precision, local_engine=engine))
    spec = ExpertSpec(name="tiny", domain="general", backend="hf", backend_kwargs={"model": "smollm2-135m"})
    return pool, HFBackend(spec, pool=pool).folder


@pytest.mark.slow
def test_int8_quantises_every_linear_but_the_down_projections():
    import torch

    pool, folder = _tiny_pool("int8")
    _, model, _ = pool.get(folder)
    kinds = {name: type(m) for name, m in model.named_modules() if "proj" in name or name == "lm_head"}
    assert kinds and all((t is torch.nn.Linear) == ("down_proj" in n) for n, t in kinds.items())
    _, plain, _ = pool.get(folder, "fp32")  # a second copy, kept apart
    assert plain is not model and type(plain.lm_head) is torch.nn.Linear


@pytest.mark.slow
def test_concurrent_greedy_calls_are_decoded_in_one_batch():
    """Two calls at once on one fp32 model: one forward pass per step serves both (batch of 2), each row
    stops at its own budget, and each answer equals the one it gets alone."""
    import concurrent.futures as cf

    pool, folder = _tiny_pool("fp32")
    _, model, _ = pool.get(folder)
    asks = [[{"role": "user", "content": "Name three colours."}], [{"role": "user", "content": "What is 2 + 2?"}]]
    alone = [pool.generate(folder, a, max_tokens=n, temperature=0.0) for a, n in zip(asks, (6, 12), strict=True)]
    widths: list[int] = []
    hook = model.register_forward_pre_hook(lambda mod, args, kw: widths.append(kw["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        with cf.ThreadPoolExecutor(2) as ex:
            together = list(ex.map(lambda a, n: pool.generate(folder, a, max_tokens=n, temperature=0.0),
                                   asks, (6, 12)))
    finally:
        hook.remove()
    assert widths and max(widths) == 2 and len(widths) <= 13  # one batch: 12 steps, not 6 + 12
    assert together == alone
    tok, _, _ = pool.get(folder, "fp32")
    assert len(tok(together[0], add_special_tokens=False)["input_ids"]) <= 6


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["transformers", "ctranslate2"])
def test_a_cancelled_row_leaves_the_batch_and_the_other_finishes(engine):
    import concurrent.futures as cf

    pool, folder = _tiny_pool("int8", engine)
    pool.ct2_model(folder) if pool.engine == "ctranslate2" else pool.get(folder)
    cancel = threading.Event()
    with cf.ThreadPoolExecutor(2) as ex:
        long = ex.submit(pool.generate, folder, COUNT, max_tokens=400, temperature=0.0, cancel=cancel)
        short = ex.submit(pool.generate, folder, [{"role": "user", "content": "Say hi."}], max_tokens=200,
                          temperature=0.0)
        time.sleep(0.5)
        cancel.set()
        t0 = time.monotonic()
        with pytest.raises(GenerationCancelledError, match="cancelled"):
            long.result(timeout=60)
        assert time.monotonic() - t0 < 5
        assert short.result(timeout=120)
