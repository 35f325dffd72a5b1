"""CTranslate2: the default in-process engine for greedy and sampled generation on a CPU.

Why: decoding a small causal LM on a CPU is bound by reading the weights once per generated token.
CTranslate2 holds them as int8 (per-row scales, all linear layers) with fused kernels and a
KV cache of its own, so a whole batch of rows costs about what one row does. Measured here side by
side with the transformers engine by ``benchmarks/local_precision.py`` (perplexity on held-out text,
a 64-token answer alone and two decoded together).

What this module holds:

* :func:`converted_folder` — the CTranslate2 copy of a Hugging Face model folder, converted once
  (``ctranslate2.converters.TransformersConverter``, int8) into ``<home>/engines/ct2/`` under a name
  that carries a digest of the source folder's files, so a re-pulled model is converted again.
  Conversion writes into a temp folder and renames it into place (a crash leaves no half model), under
  a file lock (two processes wait for one conversion);
* :func:`decode_threads` — how many intra-op threads answer fastest on this machine, measured once (one
  thread against ``llm_threads``, a short greedy decode each) and remembered beside the converted copies:
  decoding one token at a time is a chain of small matrix-vector products, and on some 2-core VMs two
  threads decode a third *slower* than one (``benchmarks/decode_threads.py``) while they still help the
  long prompts of teacher capture and answer scoring;
* :class:`CT2Model` — one loaded ``ctranslate2.Generator`` and its tokenizer, and :meth:`CT2Model.decode`,
  which decodes a batch of :class:`Row` requests together. Every generated token reaches a per-row
  callback, so each row ends on its own (its ``max_tokens``, end of sequence, its ``stop_when``
  predicate or its cancel event), is handed back the moment it does, and can stream its text.

Adapters (LoRA) are not converted: those experts keep the transformers engine
(:class:`experts.backends.ModelPool` decides).

Example:
    >>> model = CT2Model.load(settings, Path("~/.local/share/qsef/models/qwen-0.5b").expanduser())
    >>> row = Row(prompt, max_tokens=64)            # prompt: the chat-templated text
    >>> model.decode([row]); row.text
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["CT2Model", "Row", "available", "converted_folder", "decode_threads"]

FORMAT = "ct2-int8-v1"  # bump when the conversion changes: old copies are then converted again
_QUANTIZATION = "int8"


def available() -> bool:
    """Whether the ``ctranslate2`` package is importable here (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ctranslate2") is not None


def source_digest(folder: Path) -> str:
    """A digest of a model folder's contents: its store manifest (per-file SHA-256) when it has one, else the
    name, size and modification time of each file (cheap; a rewritten file changes it)."""
    manifest = folder / "manifest.json"
    h = hashlib.sha256(FORMAT.encode())
    if manifest.is_file():
        h.update(manifest.read_bytes())
    else:
        for p in sorted(folder.iterdir()):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def converted_folder(settings: Settings, folder: Path) -> Path:
    """The CTranslate2 int8 copy of the Hugging Face model ``folder``, converted on first use (about 30 s for
    Qwen2.5-0.5B here, logged) and reused while the source folder is unchanged.

    Raises:
        RuntimeError: the conversion failed (nothing is kept); the message names the folder.
    """
    folder = folder.resolve()
    root = settings.path("engines", "ct2")
    final = root / f"{folder.name}-{source_digest(folder)}"
    if (final / "model.bin").is_file():
        return final
    with _locked(root / f".{folder.name}.lock"):
        if (final / "model.bin").is_file():  # another process converted it while we waited
            return final
        from ctranslate2.converters import TransformersConverter

        for stale in root.glob(f"{folder.name}-*"):  # copies of an older source or format, or a broken one
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=root))
        started = time.perf_counter()
        log.warning("converting %s to CTranslate2 int8 (once; about 30 s per 0.5B parameters)", folder.name)
        try:
            TransformersConverter(str(folder), low_cpu_mem_usage=True).convert(
                str(work / "model"), quantization=_QUANTIZATION, force=True)
            (work / "model" / "SOURCE.json").write_text(json.dumps(
                {"source": str(folder), "digest": source_digest(folder), "format": FORMAT}, indent=2))
            os.replace(work / "model", final)
        except Exception as exc:
            raise RuntimeError(f"converting {folder} to CTranslate2 failed: {type(exc).__name__}: {exc}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("converted to CTranslate2", extra={"model": folder.name,
                                                    "seconds": round(time.perf_counter() - started, 1)})
    return final


_PROBE_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                   {"role": "user", "content": "Explain how photosynthesis works in plants."}]
PROBE_TOKENS = 24  # greedy tokens per timed decode of the thread probe (about 1 s for a 0.5B model here)


def _probe_tokens_per_s(path: Path, prompt: list[str], threads: int) -> float:
    """Tokens/s of ``threads`` intra-op threads on the converted model ``path``: the best of two timed greedy
    decodes of :data:`PROBE_TOKENS` tokens after one warm-up."""
    import ctranslate2

    generator = ctranslate2.Generator(str(path), device="cpu", compute_type=_QUANTIZATION, intra_threads=threads)
    kwargs = {"max_length": PROBE_TOKENS, "min_length": PROBE_TOKENS, "sampling_topk": 1,
              "include_prompt_in_result": False}
    generator.generate_batch([prompt], **{**kwargs, "max_length": 4, "min_length": 4})
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        generator.generate_batch([prompt], **kwargs)
        best = min(best, time.perf_counter() - started)
    del generator
    return PROBE_TOKENS / best


def _machine_key(path: Path) -> str:
    """What a measured thread count holds for: the converted model, the CPU model and the usable cores."""
    cpu = "unknown cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{path.name}|{cpu}|{cores} cores"


def decode_threads(settings: Settings, path: Path, tokenizer: Any = None) -> int:
    """The intra-op thread count a CTranslate2 model answers with: ``settings.decode_threads`` when set; else
    the faster of 1 and ``settings.llm_threads`` at greedy decoding, measured once for this converted model on
    this CPU (about 5 s for a 0.5B model, logged) and kept in ``<home>/engines/ct2/decode_threads.json``.

    Args:
        path: the converted model folder (:func:`converted_folder`).
        tokenizer: the source model's tokenizer, for the probe prompt (loaded from the source when None).

    An unreadable record is measured again (with a warning), never trusted or fatal. Delete the file, or set
    ``QSEF_DECODE_THREADS``, after moving to other hardware under the same CPU name.
    """
    if settings.decode_threads is not None:
        return settings.decode_threads
    candidates = sorted({1, settings.llm_threads})
    if len(candidates) == 1:
        return candidates[0]
    record_path = settings.path("engines", "ct2") / "decode_threads.json"
    key = _machine_key(path)
    with _locked(record_path.with_name(".decode_threads.lock")):
        records: dict[str, Any] = {}
        if record_path.is_file():
            try:
                records = json.loads(record_path.read_text())
                if not isinstance(records, dict):
                    raise ValueError("not a JSON object")
                known = records.get(key)
                if known is not None and int(known["threads"]) in candidates:
                    return int(known["threads"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring %s (%s): measuring the decode threads again", record_path, exc)
                records = {}
        if tokenizer is None:
            from transformers import AutoTokenizer

            source = json.loads((path / "SOURCE.json").read_text())["source"]
            tokenizer = AutoTokenizer.from_pretrained(source)
        prompt = tokenizer.convert_ids_to_tokens(tokenizer(tokenizer.apply_chat_template(
            _PROBE_MESSAGES, tokenize=False, add_generation_prompt=True))["input_ids"])
        speed = {t: _probe_tokens_per_s(path, prompt, t) for t in candidates}
        best = max(candidates, key=lambda t: speed[t])
        records[key] = {"threads": best, "tokens_per_s": {str(t): round(v, 1) for t, v in speed.items()},
                        "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = record_path.with_name(f".{record_path.name}.tmp")
        tmp.write_text(json.dumps(records, indent=2, sort_keys=True))
        os.replace(tmp, record_path)
    log.info("decode threads measured", extra={"model": path.name, "threads": best,
                                               "tokens_per_s": records[key]["tokens_per_s"]})
    return best


@dataclass(eq=False)
class Row:
    """One generation request in a batch.

    Args:
        prompt: the chat-templated prompt (and any prefill of the assistant turn).
        max_tokens: most tokens to generate.
        temperature: 0 = greedy; otherwise sampling at that temperature (rows are batched with rows of
            the same temperature only).
        cancel: set from another thread to end the row (it then fails with ``cancelled``).
        stop_when: ends the row once it holds for the text generated so far (e.g. a JSON object closed).
        on_text: called with each new piece of text as it is decoded (streaming); never with a partial
            UTF-8 character.
        static_prefix: the start of ``prompt`` that many calls share (a long system prompt and its examples):
            the model state after it is computed once and reused (CTranslate2's ``cache_static_prompt``);
            rows are batched with rows of the same prefix only.

    After :meth:`CT2Model.decode`: ``done`` is set and ``text`` holds the answer, ``generated`` the number
    of tokens, ``cancelled`` whether the cancel event ended it, ``error`` a failure.
    """

    prompt: str
    max_tokens: int
    temperature: float = 0.0
    cancel: Any = None
    stop_when: Callable[[str], bool] | None = None
    on_text: Callable[[str], None] | None = None
    static_prefix: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    text: str = ""
    generated: int = 0
    cancelled: bool = False
    error: BaseException | None = None
    _ids: list[int] = field(default_factory=list)
    _sent: int = 0

    def is_cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    @property
    def batch_key(self) -> tuple[float, str]:
        """Rows decode together only when these agree (one sampling setting, one cached prefix per batch)."""
        return self.temperature, self.static_prefix


class CT2Model:
    """A CTranslate2 generator and the tokenizer of its source folder.

    Args:
        generator: a loaded ``ctranslate2.Generator``.
        tokenizer: the Hugging Face tokenizer of the source folder.
        eos_ids: token ids that end an answer (the tokenizer's and the generation config's).
    """

    def __init__(self, generator: Any, tokenizer: Any, eos_ids: set[int]):
        self.generator, self.tokenizer, self.eos_ids = generator, tokenizer, eos_ids
        self.end_tokens = tokenizer.convert_ids_to_tokens(sorted(eos_ids))

    @classmethod
    def load(cls, settings: Settings, folder: Path, *, threads: int | None = None) -> CT2Model:
        """Convert ``folder`` if needed (:func:`converted_folder`) and load it on the CPU with ``threads``
        intra-op threads (default :func:`decode_threads`: what answers fastest here; pass
        ``settings.llm_threads`` for work that is mostly long prompts, such as scoring)."""
        import ctranslate2
        from transformers import AutoTokenizer, GenerationConfig

        path = converted_folder(settings, folder)
        tok = AutoTokenizer.from_pretrained(str(folder))
        eos: set[int] = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        with contextlib.suppress(OSError, ValueError):
            configured = GenerationConfig.from_pretrained(str(folder)).eos_token_id
            eos |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        generator = ctranslate2.Generator(str(path), device="cpu", compute_type=_QUANTIZATION,
                                          intra_threads=threads or decode_threads(settings, path, tok))
        return cls(generator, tok, eos)

    def _inputs(self, rows: list[Row]) -> tuple[list[list[str]], list[str] | None]:
        """(prompt tokens per row, the shared static prompt's tokens or None). The prefix is used only where it
        tokenises the same alone as inside every prompt (else the whole prompt goes in, uncached)."""
        tok = self.tokenizer
        full = [tok(r.prompt)["input_ids"] for r in rows]
        prefix = rows[0].static_prefix
        if prefix:
            head = tok(prefix)["input_ids"]
            if all(r.prompt.startswith(prefix) and ids[: len(head)] == head and len(ids) > len(head)
                   for r, ids in zip(rows, full, strict=True)):
                return ([tok.convert_ids_to_tokens(ids[len(head):]) for ids in full],
                        tok.convert_ids_to_tokens(head))
        return [tok.convert_ids_to_tokens(ids) for ids in full], None

    def decode(self, rows: list[Row]) -> None:
        """Decode ``rows`` together (they must share one :attr:`Row.batch_key`); each row's ``done`` is set the
        moment it ends. A failure is recorded on every row still running; this never raises."""
        if not rows:
            return
        tok = self.tokenizer

        def finish(row: Row) -> None:
            if not row.done.is_set():
                row.generated = len(row._ids)
                row.text = tok.decode(row._ids, skip_special_tokens=True)
                if row.on_text is not None and len(row.text) > row._sent:
                    row.on_text(row.text[row._sent:])
                    row._sent = len(row.text)
                row.done.set()

        def step(result: Any) -> bool:
            row = rows[result.batch_id]
            if row.done.is_set():
                return True
            if row.is_cancelled():
                row.cancelled = True
                finish(row)
                return True
            ended = result.token_id in self.eos_ids
            if not ended:
                row._ids.append(result.token_id)
            ended = ended or result.is_last or len(row._ids) >= row.max_tokens
            if not ended and (row.on_text is not None or row.stop_when is not None):
                text = tok.decode(row._ids, skip_special_tokens=True)
                if row.stop_when is not None and row.stop_when(text):
                    ended = True
                elif row.on_text is not None and not text.endswith("\ufffd") and len(text) > row._sent:
                    row.on_text(text[row._sent:])  # (a trailing U+FFFD is half a character: wait for the rest)
                    row._sent = len(text)
            if ended:
                finish(row)
            return ended

        temperature = rows[0].temperature
        sampling = {"sampling_topk": 1} if temperature <= 0 else {"sampling_topk": 0,
                                                                   "sampling_temperature": temperature}
        try:
            prompts, static = self._inputs(rows)
            if static is not None:
                sampling.update(static_prompt=static, cache_static_prompt=True)
            self.generator.generate_batch(
                prompts, max_length=max(r.max_tokens for r in rows), include_prompt_in_result=False,
                end_token=self.end_tokens, callback=step, **sampling)
        except BaseException as exc:  # every row still running hears of it
            for r in rows:
                if not r.done.is_set():
                    r.error = exc
                    r.done.set()
            return
        for r in rows:
            finish(r)

    def score(self, windows: list[list[int]]) -> list[list[float]]:
        """Log-probability of each token of each window given the ones before it (the first has none)."""
        results = self.generator.score_batch([self.tokenizer.convert_ids_to_tokens(w) for w in windows])
        return [list(r.log_probs) for r in results]
