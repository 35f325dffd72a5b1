"""Expert backends: how an expert turns chat messages into an answer.

One resolver, :data:`backend_resolver` (:class:`core.resolver.Resolver`), maps a name to a class:

- ``hf``: a local Hugging Face causal LM folder (or a model-store name) run in-process — on CTranslate2
  int8 by default (:mod:`experts.ct2`), or on transformers (``settings.local_engine``, ``local_precision``);
  experts that name the same model share one loaded instance through a :class:`ModelPool`;
- ``openai``: a remote OpenAI-compatible endpoint (e.g. one vLLM server per expert);
- ``qrh``: a QRH student checkpoint (``experts/qrh.py``), loaded lazily when that module exists;
- ``peft``: a LoRA adapter (``distill/`` builds them; five ship in ``experts/data/adapters/``) on a
  base model from the :class:`ModelPool`: every adapter and the plain ``hf`` experts of that base share
  one loaded instance (the adapter is switched per call under the model's lock; ``hf`` calls run with
  adapters off).

Cancellation: ``generate`` takes an optional ``cancel`` event. The dispatcher sets it when it stops
waiting (per-expert timeout, or the request was abandoned); ``openai`` closes the request's connection
(vLLM then aborts the generation); the in-process backends check it between decoding steps (CTranslate2's
per-token callback or a transformers ``StoppingCriteria`` for ``hf``, a step-by-step loop for ``qrh``) and
while waiting for the model's
lock, so an abandoned generation ends within a step and releases the model for the next request. It
then raises :class:`GenerationCancelledError`; its partial output is never returned.

Example:
    >>> pool = ModelPool(Settings())
    >>> backend = make_backend(spec, pool=pool)      # spec: an ExpertSpec from the registry
    >>> backend.generate([{"role": "user", "content": "What is a mutex?"}], max_tokens=64)
    >>> stop = threading.Event()                       # stop.set() from another thread cancels
    >>> backend.generate(messages, max_tokens=64, cancel=stop)
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from core.resolver import Resolver, UnknownComponentError
from experts.ct2 import Row

if TYPE_CHECKING:
    from core.settings import Settings
    from experts.registry import ExpertSpec

log = logging.getLogger(__name__)

__all__ = [
    "AnyEvent",
    "BackendError",
    "BackendUnavailableError",
    "ExpertBackend",
    "GenerationCancelledError",
    "HFBackend",
    "ModelPool",
    "OpenAIBackend",
    "PeftBackend",
    "QRHBackend",
    "ServedBackend",
    "backend_resolver",
    "make_backend",
]


class BackendError(RuntimeError):
    """An expert failed to answer (the dispatcher then tries the next-best expert)."""


class BackendUnavailableError(BackendError):
    """The backend cannot be used at all here (missing module, checkpoint or model)."""


class GenerationCancelledError(BackendError):
    """The caller cancelled the generation (e.g. the dispatcher's timeout); partial output is discarded."""


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def _acquire(lock: threading.Lock, cancel: threading.Event | None, what: str) -> None:
    """Take ``lock``, giving up as soon as ``cancel`` is set (checked every 50 ms).

    Raises:
        GenerationCancelledError: cancelled while waiting.
    """
    if cancel is None:
        lock.acquire()
        return
    while not lock.acquire(timeout=0.05):
        if cancel.is_set():
            raise GenerationCancelledError(f"cancelled while waiting for {what} (busy with another request)")


class AnyEvent:
    """Set when any of its events is set: one ``cancel`` for a call that a timeout and a client can both stop."""

    def __init__(self, *events: threading.Event | AnyEvent | None) -> None:
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    def wait(self, timeout: float | None = None) -> bool:
        """Like ``threading.Event.wait``: True once any event is set, False after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(0.02 if left is None else min(0.02, left))
        return True


def _stop_on(cancel: threading.Event) -> Any:
    """A transformers ``StoppingCriteria`` that ends generation once ``cancel`` is set (checked each step)."""
    import torch
    from transformers import StoppingCriteria

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return _Cancel()


def _stop_when(predicate: Callable[[str], bool], tok: Any, prompt_len: int) -> Any:
    """A transformers ``StoppingCriteria`` that ends generation once ``predicate(text so far)`` holds."""
    import torch
    from transformers import StoppingCriteria

    class _When(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            done = [predicate(tok.decode(row[prompt_len:], skip_special_tokens=True)) for row in input_ids]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return _When()


class ExpertBackend(ABC):
    """The contract: chat messages in, answer text out. Subclasses implement :meth:`generate`."""

    name: ClassVar[str]

    def __init__(self, spec: ExpertSpec, **kwargs: Any):
        self.spec = spec

    def messages_for(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Prepend the expert's system prompt unless the caller brought one."""
        if self.spec.system_prompt and not any(m.get("role") == "system" for m in messages):
            return [{"role": "system", "content": self.spec.system_prompt}, *messages]
        return messages

    @abstractmethod
    def generate(
        self, messages: list[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0,
        cancel: threading.Event | None = None,
    ) -> str:
        """Answer the conversation.

        Args:
            cancel: when set (by another thread), stop as soon as possible and raise
                :class:`GenerationCancelledError` instead of returning partial text.

        Raises:
            BackendError: on any failure to produce an answer.
        """

    def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int = 128, temperature: float = 0.0,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Answer the conversation piece by piece, as the model generates it.

        Closing the iterator early (or setting ``cancel``) stops the generation. Default: the whole
        :meth:`generate` answer as one piece, for backends that cannot stream.

        Raises:
            BackendError: on any failure; :class:`GenerationCancelledError` when ``cancel`` was set.
        """
        yield self.generate(messages, max_tokens=max_tokens, temperature=temperature, cancel=cancel)

    def health(self, *, timeout_s: float = 2.0) -> tuple[bool, str]:
        """Cheap liveness check, never loading a model: (ok, detail). Default: the backend could be
        constructed. See :mod:`experts.health` for what each backend checks."""
        return True, "ok"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (default: nothing)."""


# Kept in fp32: the MLP output projections carry the activation outliers of these small models. Quantising
# them too raised Qwen2.5-Coder-0.5B's perplexity by a third (and turned answers into refusals); without
# them, by about 7 % (benchmarks/local_precision.py measures it per model).
INT8_SKIP = ("down_proj",)


def quantize_int8(model: Any, *, skip: tuple[str, ...] = INT8_SKIP) -> Any:
    """Dynamic int8 quantisation of the ``nn.Linear`` layers whose names contain none of ``skip``
    (per-output-channel weight scales; activations are quantised on the fly, per call): on this project's
    2-core CPU a 64-token answer of Qwen2.5-Coder-0.5B took 7.8 s instead of 13.6 s, two decoded together
    12.1 s instead of 27.4 s (decoding is bound by reading the weights). Answers can differ
    from fp32's, and from one batch to the next (the activation scale is taken over the batch)."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layers = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip)}
    with warnings.catch_warnings():  # torch.ao's deprecation notices, once per model
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, layers, inplace=True)


def local_model_folder(path: str | Path) -> Path:
    """A local Hugging Face model folder (one with a ``config.json``).

    Raises:
        BackendUnavailableError: naming the folder when it is not one.
    """
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise BackendUnavailableError(f"{p} is not a Hugging Face model folder (no config.json)")
    return p


class ModelPool:
    """Loads each local causal LM once and hands the same instance to every expert that names it.

    Two engines run them (``settings.local_engine``, at ``local_precision=int8``):

    * ``ctranslate2`` (default): a CTranslate2 int8 copy of the folder (:mod:`experts.ct2`, converted once).
      Every call without an adapter — greedy or sampled, with a stop predicate or streamed — is a row
      for the model's decoding thread, which takes what is queued (waiting ``batch_window_s`` for the rest
      of a query's sub-tasks), decodes up to ``max_batch`` rows of one temperature (and one cached prefix,
      ``cache_prefix``) together and hands each
      row back (or streams it) as it ends: its ``max_tokens``, end of sequence, its stop predicate or its
      cancel event. Decoding on a CPU is bound by reading the weights, so a batch of two costs about what
      one row does (measured in ``benchmarks/local_precision.py``);
    * ``transformers``: torch models, fp32 or dynamic int8 (:func:`quantize_int8`). Greedy calls without a
      stop predicate or adapter are batched by the same decoding thread (left padding); the others, and
      every LoRA adapter (always on an fp32 copy, whatever the engine), run one at a time under the
      model's lock: HF models are not safe to call from several threads at once.

    Args:
        settings: where the model store is; ``settings.torch_threads`` sets torch's threads and
            ``settings.llm_threads`` CTranslate2's; ``settings.local_precision`` (``int8`` or ``fp32``) how the
            weights are held and ``settings.local_engine`` what runs them at int8.
        batch_window_s: how long the first of several concurrent calls waits for the others.
        max_batch: most calls decoded together.
    """

    def __init__(self, settings: Settings, *, batch_window_s: float = 0.03, max_batch: int = 8):
        self.settings = settings
        self.threads = settings.torch_threads
        self.precision = settings.local_precision
        self.engine = "transformers"
        if settings.local_precision == "int8" and settings.local_engine == "ctranslate2":
            from experts import ct2

            if ct2.available():
                self.engine = "ctranslate2"
            else:
                log.warning("ctranslate2 is not installed: the in-process LLMs run on transformers (slower)")
        self.batch_window_s, self.max_batch = batch_window_s, max_batch
        self._models: dict[tuple[str, str], tuple[Any, Any, threading.Lock]] = {}
        self._ct2: dict[str, Any] = {}  # folder -> experts.ct2.CT2Model
        self._pending: dict[tuple[str, str], list[Row]] = {}  # per (folder, precision or "ct2"), under _cond
        self._workers: dict[tuple[str, str], threading.Thread] = {}
        self._cond = threading.Condition()
        self._peft: dict[str, Any] = {}  # base folder -> the PeftModel wrapping that base (adapters loaded)
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(_close_pool, weakref.ref(self))  # decoding threads end before the interpreter does

    def close(self) -> None:
        """End the decoding threads (rows still queued fail with a clear error) and drop the loaded models.
        Idempotent; called at interpreter exit too, so no native thread outlives its model."""
        with self._cond:
            self._closed = True
            stranded = [r for rows in self._pending.values() for r in rows]
            self._pending.clear()
            self._cond.notify_all()
            workers = list(self._workers.values())
        for r in stranded:
            r.error = BackendError("the model pool was closed")
            r.done.set()
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout=10)
        with self._lock:
            self._ct2.clear()
            self._models.clear()
            self._peft.clear()

    def resolve(self, model: str | None = None, path: str | None = None) -> Path:
        """The model folder: ``path`` (checked) or the store model ``model`` (pulled and verified once)."""
        if path:
            return local_model_folder(path)
        if not model:
            raise BackendUnavailableError("hf backend needs backend_kwargs 'model' (store name) or 'path'")
        from core.store import ModelStore

        try:
            return Path(ModelStore(self.settings).ensure(model))
        except Exception as exc:
            raise BackendUnavailableError(f"cannot get model {model!r} from the model store: {exc}") from exc

    def get(self, folder: Path, precision: str | None = None) -> tuple[Any, Any, threading.Lock]:
        """(tokenizer, model, lock) of ``folder`` at ``precision`` (default: the pool's), loaded once."""
        key = (str(folder.resolve()), precision or self.precision)
        with self._lock:
            if key not in self._models:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                torch.set_num_threads(self.threads)
                log.info("loading causal LM", extra={"folder": key[0], "precision": key[1]})
                tok = AutoTokenizer.from_pretrained(key[0])
                model = AutoModelForCausalLM.from_pretrained(key[0], dtype=torch.float32)
                model.eval()
                if key[1] == "int8":
                    model = quantize_int8(model)
                self._models[key] = (tok, model, threading.Lock())
            return self._models[key]

    def ct2_model(self, folder: Path) -> Any:
        """The :class:`experts.ct2.CT2Model` of ``folder`` (converted on first use, then loaded once)."""
        key = str(folder.resolve())
        with self._lock:
            if key not in self._ct2:
                from experts.ct2 import CT2Model

                log.info("loading causal LM", extra={"folder": key, "precision": "int8", "engine": "ctranslate2"})
                self._ct2[key] = CT2Model.load(self.settings, folder.resolve())
            return self._ct2[key]

    def _uses_ct2(self, adapter: tuple[str, Path] | None) -> bool:
        return self.engine == "ctranslate2" and adapter is None

    def _select(self, folder: Path, model: Any, adapter: tuple[str, Path] | None) -> tuple[Any, Any]:
        """(model to call, context to call it in) for ``adapter`` = (name, folder) or the bare base.

        Call with the model's lock held: loading or switching an adapter changes the shared model.
        """
        import contextlib

        key = str(folder.resolve())
        peft_model = self._peft.get(key)
        if adapter is None:  # the bare base: adapters (if any were injected) off
            return model, (peft_model.disable_adapter() if peft_model is not None else contextlib.nullcontext())
        name, path = adapter
        from peft import PeftModel

        if peft_model is None:
            log.info("loading adapter", extra={"adapter": name, "folder": str(path)})
            peft_model = self._peft[key] = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            peft_model.eval()
        elif name not in peft_model.peft_config:
            log.info("loading adapter", extra={"adapter": name, "folder": str(path)})
            peft_model.load_adapter(str(path), adapter_name=name)
        peft_model.set_adapter(name)
        return peft_model, contextlib.nullcontext()

    def generate(
        self, folder: Path, messages: list[dict[str, str]], *, max_tokens: int, temperature: float, prefill: str = "",
        cancel: threading.Event | None = None, stop_when: Callable[[str], bool] | None = None,
        adapter: tuple[str, Path] | None = None, cache_prefix: bool = False,
    ) -> str:
        """Chat-template the messages, optionally prefill the assistant turn, decode the continuation.

        ``cancel`` is checked while waiting for the model's lock and after every generated token;
        ``stop_when(continuation so far)`` ends the generation early once it holds (e.g. the JSON closed);
        ``adapter`` = (name, folder): a LoRA adapter on this base, loaded once and switched to for this call
        (always on the fp32 copy: adapters do not wrap quantised layers). A greedy call with neither joins
        the model's batch (see the class docstring). ``cache_prefix``: every message but the last is a prefix
        that other calls share (the router LLM's instructions and examples); on CTranslate2 the model state
        after it is computed once and kept.

        Raises:
            GenerationCancelledError: ``cancel`` was set before the answer was complete.
        """
        if self._uses_ct2(adapter):
            tok = self.ct2_model(folder).tokenizer
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
            shared = (tok.apply_chat_template(messages[:-1], tokenize=False)
                      if cache_prefix and len(messages) > 1 else "")
            row = Row(prompt, max_tokens, temperature=temperature, cancel=cancel, stop_when=stop_when,
                      static_prefix=shared)
            self._wait(self._submit(folder, "ct2", row), row, folder)
            return row.text
        import torch

        precision = "fp32" if adapter is not None else self.precision
        tok, model, lock = self.get(folder, precision)
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill
        if temperature <= 0 and stop_when is None and adapter is None:
            row = Row(prompt, max_tokens, cancel=cancel)
            self._wait(self._submit(folder, precision, row), row, folder)
            return row.text
        inputs = tok(prompt, return_tensors="pt")
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id or tok.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False)
        criteria = []
        if cancel is not None:
            criteria.append(_stop_on(cancel))
        if stop_when is not None:
            criteria.append(_stop_when(stop_when, tok, inputs["input_ids"].shape[1]))
        if criteria:
            kwargs["stopping_criteria"] = criteria
        _acquire(lock, cancel, f"model {folder.name}")
        try:
            runner, ctx = self._select(folder, model, adapter)
            with torch.inference_mode(), ctx:
                out = runner.generate(**inputs, **kwargs)
        finally:
            lock.release()
        if _cancelled(cancel):
            raise GenerationCancelledError(f"generation on {folder.name} cancelled after "
                                           f"{out.shape[1] - inputs['input_ids'].shape[1]} tokens")
        return tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def _submit(self, folder: Path, engine: str, row: Row) -> tuple[str, str]:
        """Queue ``row`` for the decoding thread of (folder, ``engine``: a precision or ``ct2``), starting it if
        needed; returns the queue's key."""
        key = (str(folder.resolve()), engine)
        with self._cond:
            if self._closed:
                raise BackendUnavailableError("the model pool was closed")
            self._pending.setdefault(key, []).append(row)
            worker = self._workers.get(key)
            if worker is None or not worker.is_alive():
                worker = threading.Thread(target=self._serve, args=(key, folder, engine), daemon=True,
                                          name=f"decode:{folder.name}:{engine}")
                self._workers[key] = worker
                worker.start()
            self._cond.notify_all()
        return key

    def _unqueue(self, key: tuple[str, str], row: Row) -> bool:
        """Take ``row`` off its queue if it is still waiting there; whether it was."""
        with self._cond:
            queued = row in self._pending.get(key, [])
            if queued:
                self._pending[key].remove(row)
        return queued

    def _wait(self, key: tuple[str, str], row: Row, folder: Path) -> None:
        """Wait until ``row`` is done (a cancel while it is still queued takes it off the queue).

        Raises:
            GenerationCancelledError: the row's cancel event was set first.
            BackendError: decoding failed.
        """
        while not row.done.wait(0.05):
            if row.is_cancelled() and self._unqueue(key, row):
                raise GenerationCancelledError(f"cancelled while waiting for model {folder.name} "
                                               "(busy with another request)")
        _raise_for(row, folder)

    def _serve(self, key: tuple[str, str], folder: Path, engine: str) -> None:
        """The decoding thread of one model: take what is queued (after ``batch_window_s``), decode it as one
        batch under the model's lock, repeat; leave after a minute with nothing queued."""
        try:
            if engine == "ct2":
                ct2, tok, model, lock = self.ct2_model(folder), None, None, threading.Lock()
            else:
                tok, model, lock = self.get(folder, engine)
        except BaseException as exc:  # (it was loaded by the caller; this is belt and braces)
            with self._cond:
                waiting, self._pending[key] = self._pending.get(key, []), []
                self._workers.pop(key, None)
            for r in waiting:
                r.error = BackendError(f"loading {folder.name} failed: {exc}")
                r.done.set()
            return
        while True:
            with self._cond:
                if not self._cond.wait_for(lambda: self._pending.get(key) or self._closed, timeout=60.0) \
                        or self._closed:
                    if self._workers.get(key) is threading.current_thread():
                        del self._workers[key]
                    return
            with lock:
                time.sleep(self.batch_window_s)  # let the other sub-tasks of this query join
                with self._cond:
                    queue = self._pending.get(key, [])
                    if not queue:  # its rows were cancelled while the window was open
                        continue
                    same = [r for r in queue if r.batch_key == queue[0].batch_key][: self.max_batch]
                    batch, self._pending[key] = same, [r for r in queue if r not in same]
                if engine == "ct2":
                    ct2.decode(batch)
                    continue
                # adapters wrap only the fp32 copy: there, switch them off for the plain experts' batch
                runner, ctx = self._select(folder, model, None) if engine == "fp32" else (model, nullcontext())
                with ctx:
                    _decode(tok, runner, batch)

    def stream(
        self, folder: Path, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
        cancel: threading.Event | None = None, timeout_s: float | None = None, adapter: tuple[str, Path] | None = None,
    ) -> Iterator[str]:
        """Like :meth:`generate`, but yield the decoded text as it is produced (a transformers
        ``TextIteratorStreamer``; generation runs in a helper thread holding the model's lock).

        Closing the iterator early stops the generation within a decoding step and releases the lock.

        Raises:
            GenerationCancelledError: ``cancel`` was set.
            BackendError: generation failed, or no new text came for ``timeout_s`` seconds.
        """
        if self._uses_ct2(adapter):
            yield from self._stream_ct2(folder, messages, max_tokens=max_tokens, temperature=temperature,
                                        cancel=cancel, timeout_s=timeout_s)
            return
        import queue

        import torch
        from transformers import TextIteratorStreamer

        tok, model, lock = self.get(folder, "fp32" if adapter is not None else None)
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tok(prompt, return_tensors="pt")
        stop = threading.Event()  # ours: set when the consumer leaves, never the caller's event
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=timeout_s)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id or tok.eos_token_id,
            "streamer": streamer, "stopping_criteria": [_stop_on(AnyEvent(stop, cancel))],
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
        _acquire(lock, cancel, f"model {folder.name}")
        failure: list[BaseException] = []

        def run() -> None:
            try:
                runner, ctx = self._select(folder, model, adapter)
                with torch.inference_mode(), ctx:
                    runner.generate(**inputs, **kwargs)
            except BaseException as exc:  # reported to the consumer, which re-raises it
                failure.append(exc)
                streamer.end()
            finally:
                lock.release()

        worker = threading.Thread(target=run, name=f"stream:{folder.name}", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if _cancelled(cancel):
                    raise GenerationCancelledError(f"generation on {folder.name} cancelled")
                if piece:
                    yield piece
        except queue.Empty:
            raise BackendError(f"no new text from {folder.name} for {timeout_s:g}s") from None
        finally:
            stop.set()
            worker.join()
        if failure:
            raise BackendError(f"generation on {folder.name} failed: {failure[0]}") from failure[0]
        if _cancelled(cancel):
            raise GenerationCancelledError(f"generation on {folder.name} cancelled")


    def _stream_ct2(self, folder: Path, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                    cancel: threading.Event | None, timeout_s: float | None) -> Iterator[str]:
        """:meth:`stream` on the CTranslate2 engine: the row joins the model's batch like any other and its
        pieces arrive through a queue as they are decoded."""
        import queue

        tok = self.ct2_model(folder).tokenizer
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pieces: queue.SimpleQueue[str] = queue.SimpleQueue()
        stop = threading.Event()  # ours: set when the consumer leaves, never the caller's event
        row = Row(prompt, max_tokens, temperature=temperature, cancel=AnyEvent(stop, cancel), on_text=pieces.put)
        key = self._submit(folder, "ct2", row)
        last = time.monotonic()
        try:
            while True:
                try:
                    piece = pieces.get(timeout=0.05)
                except queue.Empty:
                    if row.done.is_set() and pieces.empty():
                        break
                    if _cancelled(cancel) and self._unqueue(key, row):
                        raise GenerationCancelledError(f"cancelled while waiting for model {folder.name}") from None
                    if timeout_s is not None and time.monotonic() - last > timeout_s:
                        raise BackendError(f"no new text from {folder.name} for {timeout_s:g}s") from None
                    continue
                last = time.monotonic()
                if _cancelled(cancel):
                    raise GenerationCancelledError(f"generation on {folder.name} cancelled")
                if piece:
                    yield piece
        finally:
            stop.set()
            self._unqueue(key, row)
        _raise_for(row, folder)


def _close_pool(ref: weakref.ref[ModelPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.close()


def _raise_for(row: Row, folder: Path) -> None:
    """Raise what ended a finished ``row`` badly, if anything did.

    Raises:
        GenerationCancelledError: its cancel event ended it (its partial text is not returned).
        BackendError: decoding failed (the cause is chained).
    """
    if row.cancelled:
        raise GenerationCancelledError(f"generation on {folder.name} cancelled after {row.generated} tokens")
    if isinstance(row.error, BackendError):
        raise row.error
    if row.error is not None:
        raise BackendError(f"generation on {folder.name} failed: {type(row.error).__name__}: {row.error}") from row.error


def _decode(tok: Any, model: Any, batch: list[Row]) -> None:
    """Greedy-decode ``batch`` together (left padding). A row is handed back the moment it ends (its own
    ``max_tokens``, end of sequence, or its cancel event), not when the whole batch does."""
    import torch
    from transformers import StoppingCriteria

    if not batch:
        return
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tok.eos_token_id])

    def finish(r: Row, new: Any) -> None:
        ids = [int(t) for t in new[: r.max_tokens]]
        while ids and ids[-1] in eos_ids:
            ids.pop()
        r.generated = len(ids)
        if _cancelled(r.cancel):
            r.cancelled = True
        else:
            r.text = tok.decode(ids, skip_special_tokens=True)
        r.done.set()

    try:
        enc = [tok(r.prompt)["input_ids"] for r in batch]
        width = max(len(ids) for ids in enc)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in enc])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in enc])

        class _RowDone(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                made = input_ids.shape[1] - width
                done = []
                for i, r in enumerate(batch):
                    if not r.done.is_set() and (made >= r.max_tokens or _cancelled(r.cancel)
                                                or int(input_ids[i, -1]) in eos_ids):
                        finish(r, input_ids[i, width:])
                    done.append(r.done.is_set())
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False,
                                 max_new_tokens=max(r.max_tokens for r in batch), pad_token_id=pad,
                                 stopping_criteria=[_RowDone()])
        for i, r in enumerate(batch):
            if not r.done.is_set():
                finish(r, out[i, width:])
    except BaseException as exc:  # every caller still waiting hears of it
        for r in batch:
            if not r.done.is_set():
                r.error = BackendError(f"batched generation failed: {type(exc).__name__}: {exc}")
                r.done.set()


class _LocalBackend(ExpertBackend):
    """An in-process model: it runs on the :class:`ModelPool` it was built with (a backend built
    without one — to validate a spec — can say whether it is configured, not run)."""

    _pool: ModelPool | None

    @property
    def pool(self) -> ModelPool:
        if self._pool is None:
            raise BackendUnavailableError(f"{self.name} expert {self.spec.name!r} was built without a model pool")
        return self._pool


class HFBackend(_LocalBackend):
    """A local Hugging Face causal LM (``backend_kwargs``: ``model`` store name or ``path``)."""

    name = "hf"

    def __init__(self, spec: ExpertSpec, *, pool: ModelPool | None = None, **kwargs: Any):
        super().__init__(spec)
        self._pool = pool
        self.model = spec.backend_kwargs.get("model")
        self.path = spec.backend_kwargs.get("path")
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = local_model_folder(self.path) if self.path else self.pool.resolve(self.model)
        return self._folder

    @property
    def adapter(self) -> tuple[str, Path] | None:
        """The LoRA adapter to switch on for each call, as (name, folder); the plain model has none."""
        return None

    def _call_kwargs(self, max_tokens, temperature, cancel) -> tuple[Path, dict[str, Any]]:
        adapter, folder = self.adapter, self.folder  # a bad path or adapter is reported before the missing pool
        kwargs = dict(max_tokens=max_tokens, temperature=temperature, cancel=cancel)
        if adapter is not None:
            kwargs["adapter"] = adapter
        return folder, kwargs

    def generate(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> str:
        try:
            folder, kwargs = self._call_kwargs(max_tokens, temperature, cancel)
            return self.pool.generate(folder, self.messages_for(messages), **kwargs).strip()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{self.name} expert {self.spec.name!r} failed: {exc}") from exc

    def stream(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> Iterator[str]:
        try:
            folder, kwargs = self._call_kwargs(max_tokens, temperature, cancel)
            first = True
            for piece in self.pool.stream(folder, self.messages_for(messages), **kwargs):
                if first:  # like generate(), which strips the answer
                    piece = piece.lstrip()
                    first = not piece
                if piece:
                    yield piece
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"{self.name} expert {self.spec.name!r} failed: {exc}") from exc

    def health(self, *, timeout_s: float = 2.0) -> tuple[bool, str]:
        """The folder (``path``) or the pulled store model (``model``) is complete; nothing is pulled."""
        from experts.health import check_model_folder, check_store_model

        if self.path:
            return check_model_folder(Path(self.path))
        if not self.model:
            return False, "hf backend needs backend_kwargs 'model' (store name) or 'path'"
        return check_store_model(self.pool.settings, self.model)


SHIPPED_PREFIX = "shipped:"
SHIPPED_ADAPTERS = Path(__file__).resolve().parent / "data" / "adapters"


def adapter_path(ref: str) -> Path:
    """Where an adapter reference points: ``shipped:<domain>`` (one of the adapters installed with the
    package) or a path; not checked (:func:`adapter_folder` checks)."""
    return SHIPPED_ADAPTERS / ref[len(SHIPPED_PREFIX):] if ref.startswith(SHIPPED_PREFIX) else Path(ref).expanduser()


def adapter_folder(ref: str) -> Path:
    """An adapter folder: ``shipped:<domain>`` (one of the adapters installed with the package) or a path.

    Raises:
        BackendUnavailableError: naming the folder when it holds no adapter.
    """
    p = adapter_path(ref)
    if not (p / "adapter_config.json").is_file() or not (p / "adapter_model.safetensors").is_file():
        raise BackendUnavailableError(f"{p} is not a LoRA adapter folder (adapter_config.json + "
                                      "adapter_model.safetensors)")
    return p


class PeftBackend(HFBackend):
    """A LoRA adapter served in process on a shared base model (``backend_kwargs``: ``adapter`` — a
    folder or ``shipped:<domain>`` —, ``base`` — the model-store name of the base, default ``qwen-0.5b``
    — or ``path``, a base model folder)."""

    name = "peft"
    synonyms = ("lora",)

    def __init__(self, spec: ExpertSpec, *, pool: ModelPool | None = None, **kwargs: Any):
        super().__init__(spec, pool=pool)
        ref = spec.backend_kwargs.get("adapter")
        if not ref:
            raise BackendUnavailableError("peft backend needs backend_kwargs 'adapter' (a folder or shipped:<domain>)")
        self.adapter_ref = str(ref)
        self.model = spec.backend_kwargs.get("base") or "qwen-0.5b"
        self.adapter_name = spec.name.replace("-", "_").replace(".", "_")

    @property
    def adapter(self) -> tuple[str, Path]:
        return self.adapter_name, adapter_folder(self.adapter_ref)

    def health(self, *, timeout_s: float = 2.0) -> tuple[bool, str]:
        """The adapter folder is complete and the base model is present (nothing is pulled)."""
        try:
            folder = adapter_folder(self.adapter_ref)
        except BackendUnavailableError as exc:
            return False, str(exc)
        ok, detail = super().health(timeout_s=timeout_s)
        return ok, f"adapter {folder.name}: {detail}" if ok else detail


class OpenAIBackend(ExpertBackend):
    """A remote OpenAI-compatible chat endpoint (``backend_kwargs``: ``base_url``, ``model``,
    optional ``timeout`` and ``retries``)."""

    name = "openai"

    def __init__(self, spec: ExpertSpec, **kwargs: Any):
        super().__init__(spec)
        kw = spec.backend_kwargs
        if not kw.get("base_url") or not kw.get("model"):
            raise BackendUnavailableError("openai backend needs backend_kwargs 'base_url' and 'model'")
        self.base_url = str(kw["base_url"]).rstrip("/")
        self.model = str(kw["model"])
        self.timeout = float(kw.get("timeout", 60.0))
        self.retries = int(kw.get("retries", 1))
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from core.http import OpenAICompatClient

            self._client = OpenAICompatClient(self.base_url, self.model, timeout=self.timeout, retries=self.retries)
        return self._client

    def generate(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> str:
        """With ``cancel``, the request's connection is closed as soon as ``cancel`` is set: the call ends
        at once and the server stops generating (vLLM aborts a request whose client went away)."""
        if _cancelled(cancel):
            raise GenerationCancelledError(f"remote expert {self.spec.name!r}: cancelled before the request")
        try:
            if cancel is None:
                return self.client.chat(self.messages_for(messages), max_tokens=max_tokens,
                                        temperature=temperature).strip()
            return self._chat_cancellable(self.messages_for(messages), max_tokens, temperature, cancel).strip()
        except GenerationCancelledError:
            raise
        except Exception as exc:
            raise BackendError(f"remote expert {self.spec.name!r} at {self.base_url} failed: {exc}") from exc

    def _chat_cancellable(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                          cancel: threading.Event) -> str:
        """One chat completion on an asyncio loop of this thread, so that setting ``cancel`` can cancel the
        request mid-read (a blocking socket read cannot be interrupted); ``retries`` on connection errors
        and 429/5xx like :class:`core.http.OpenAICompatClient`."""
        import asyncio

        import httpx

        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}

        async def call() -> str:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as http:
                error: Exception | None = None
                for _ in range(self.retries + 1):
                    task = asyncio.ensure_future(http.post("/chat/completions", json=payload))
                    while not task.done():
                        await asyncio.wait({task}, timeout=0.05)
                        if cancel.is_set() and not task.done():
                            task.cancel()  # closes the connection
                            raise GenerationCancelledError(f"remote expert {self.spec.name!r}: request aborted")
                    try:
                        r = task.result()
                    except httpx.TransportError as exc:
                        error = exc
                        continue
                    if r.status_code == 429 or r.status_code >= 500:
                        error = BackendError(f"{r.status_code} from {self.base_url}")
                        continue
                    if r.status_code >= 400:
                        raise BackendError(f"{self.base_url} answered {r.status_code}: {r.text[:300]}")
                    try:
                        return r.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        raise BackendError(f"malformed chat completion from {self.base_url}: {r.text[:300]}") from exc
                raise BackendError(f"no answer after {self.retries + 1} attempts: {error}")

        return asyncio.run(call())

    def stream(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> Iterator[str]:
        """Server-sent events from the endpoint; leaving early or ``cancel`` closes the connection, which
        makes vLLM abort the request."""
        if _cancelled(cancel):
            raise GenerationCancelledError(f"remote expert {self.spec.name!r}: cancelled before the request")
        try:
            first = True
            for piece in self.client.chat_stream(self.messages_for(messages), max_tokens=max_tokens,
                                                 temperature=temperature, cancel=cancel):
                if first:
                    piece = piece.lstrip()
                    first = not piece
                if piece:
                    yield piece
        except Exception as exc:
            raise BackendError(f"remote expert {self.spec.name!r} at {self.base_url} failed: {exc}") from exc
        if _cancelled(cancel):
            raise GenerationCancelledError(f"remote expert {self.spec.name!r}: stream cancelled")

    def health(self, *, timeout_s: float = 2.0) -> tuple[bool, str]:
        """``GET {base_url}/models`` answers 200 within ``timeout_s``."""
        import httpx

        url = f"{self.base_url}/models"
        try:
            r = httpx.get(url, timeout=timeout_s)
            return r.status_code == 200, f"GET {url} -> {r.status_code}"
        except httpx.HTTPError as exc:
            return False, f"GET {url}: {type(exc).__name__}: {exc}"


class QRHBackend(_LocalBackend):
    """A QRH student checkpoint (``backend_kwargs``: ``checkpoint``, the folder written by
    ``QRHModel.save_pretrained``; optional ``tokenizer``: a model-store
    name or folder whose tokenizer the student shares). Loaded on first use from ``experts.qrh``."""

    name = "qrh"

    def __init__(self, spec: ExpertSpec, *, pool: ModelPool | None = None, **kwargs: Any):
        super().__init__(spec)
        ckpt = spec.backend_kwargs.get("checkpoint")
        if not ckpt:
            raise BackendUnavailableError("qrh backend needs backend_kwargs 'checkpoint'")
        self.checkpoint = Path(ckpt).expanduser()
        self._pool = pool
        self._model: Any = None
        self._tok: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                try:
                    from experts import qrh
                except ImportError as exc:
                    raise BackendUnavailableError(f"QRH model code (experts/qrh.py) is not available: {exc}") from exc
                if not self.checkpoint.exists():
                    raise BackendUnavailableError(f"QRH checkpoint {self.checkpoint} does not exist")
                self._model = qrh.QRHModel.from_pretrained(
                    self.checkpoint if self.checkpoint.is_dir() else self.checkpoint.parent
                ).eval()
                from transformers import AutoTokenizer

                tok_src = self.spec.backend_kwargs.get("tokenizer")
                folder = (local_model_folder(tok_src) if tok_src and Path(tok_src).exists()
                          else self.pool.resolve(tok_src or "qwen-0.5b"))
                self._tok = AutoTokenizer.from_pretrained(str(folder))
            return self._model, self._tok

    def generate(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> str:
        """Decode one token per ``QRHModel.generate`` call so ``cancel`` is checked between tokens
        (the student has no KV cache: each step re-reads the whole context either way)."""
        import torch

        model, tok = self._load()
        try:
            prompt = tok.apply_chat_template(self.messages_for(messages), tokenize=False, add_generation_prompt=True)
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            out = ids
            with torch.inference_mode():
                for _ in range(max_tokens):
                    if _cancelled(cancel):
                        raise GenerationCancelledError(f"QRH expert {self.spec.name!r}: generation cancelled after "
                                                       f"{out.shape[1] - ids.shape[1]} tokens")
                    out = model.generate(out, max_new_tokens=1, temperature=temperature)
            return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"QRH expert {self.spec.name!r} failed: {exc}") from exc

    def health(self, *, timeout_s: float = 2.0) -> tuple[bool, str]:
        """The QRH model code is present and the checkpoint folder's config and weights are readable."""
        import importlib.util

        from experts.health import check_model_folder

        try:
            if importlib.util.find_spec("experts.qrh") is None:
                return False, "experts/qrh.py not present"
        except ImportError as exc:
            return False, str(exc)
        return check_model_folder(self.checkpoint if self.checkpoint.is_dir() else self.checkpoint.parent)


class ServedBackend(ExpertBackend):
    """An ``hf`` expert whose model a running vLLM server serves: answered by the server (concurrent requests
    are batched there) while ``reachable()`` says it is up, in process otherwise (logged).

    Built by the router for experts whose ``model`` is the router LLM's (see
    :meth:`router.pipeline.Router.from_settings`), not chosen by name in the registry.

    Args:
        spec: the expert (backend ``hf``).
        base_url: the server's OpenAI-compatible root (``.../v1``); ``served_name``: its model name there.
        reachable: cheap, cached reachability of that server.
        pool: the in-process model pool of the fallback.
    """

    name = "served"

    def __init__(self, spec: ExpertSpec, *, base_url: str, served_name: str, reachable: Callable[[], bool],
                 pool: ModelPool | None = None, timeout: float = 120.0, **kwargs: Any):
        super().__init__(spec)
        remote = spec.model_copy(update={"backend": "openai", "backend_kwargs": {
            "base_url": base_url, "model": served_name, "timeout": timeout, "retries": 0}})
        self.remote = OpenAIBackend(remote)
        self.local = HFBackend(spec, pool=pool)
        self.reachable = reachable

    def _pick(self) -> ExpertBackend:
        if self.reachable():
            return self.remote
        log.info("served model unreachable: expert answers in process", extra={"expert": self.spec.name})
        return self.local

    def generate(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> str:
        return self._pick().generate(messages, max_tokens=max_tokens, temperature=temperature, cancel=cancel)

    def stream(self, messages, *, max_tokens=128, temperature=0.0, cancel=None) -> Iterator[str]:
        return self._pick().stream(messages, max_tokens=max_tokens, temperature=temperature, cancel=cancel)

    def health(self, *, timeout_s: float = 2.0) -> tuple[bool, str]:
        return self.remote.health(timeout_s=timeout_s) if self.reachable() else self.local.health(timeout_s=timeout_s)


backend_resolver: Resolver[ExpertBackend] = Resolver(
    ExpertBackend, [HFBackend, OpenAIBackend, QRHBackend, PeftBackend], suffix="backend", kind="expert backend")


def make_backend(spec: ExpertSpec, **kwargs: Any) -> ExpertBackend:
    """Build the backend an expert names; extra kwargs (e.g. ``pool``) go to its constructor.

    Raises:
        BackendUnavailableError: unknown backend name (naming the valid ones) or unusable settings.
    """
    try:
        cls = backend_resolver.lookup(spec.backend)
    except UnknownComponentError as exc:
        raise BackendUnavailableError(str(exc)) from None
    return cls(spec, **kwargs)
