"""Answering multiple-choice questions by log-likelihood — how an expert's answer quality is measured.

Two prompt forms, as in lm-evaluation-harness:

* ``letter`` (MMLU's form): the choices are listed in the prompt as ``A. …``, ``B. …``; the score of a
  choice is the log-probability of its letter as the next token after ``Answer:``;
* ``cloze``: the prompt is the question alone; the score of a choice is the log-likelihood of its text
  as the continuation, divided by its length in characters (lm-eval's ``acc_norm``).

Each form runs either as raw text or wrapped in the model's chat template (``chat=True``: the prompt is
the user turn, the answer is scored at the start of the assistant turn). :class:`PromptFormat` names
one of the four; its :attr:`~PromptFormat.hash` changes whenever the template text changes.

Scores are cached on disk (``$QSEF_HOME/cache/answers/<model>/<format-hash>.jsonl``), one JSON line per
question keyed by a hash of the question and its choices, so a question is never scored twice by the
same model in the same format; an interrupted run resumes where it stopped.

Example:
    >>> scorer = AnswerScorer("smollm2-135m", settings=settings)
    >>> q = MCQuestion("What is 2 + 2?", ("3", "4", "5"), answer=1, domain="general")
    >>> scorer.score([q], PromptFormat("letter", chat=False))        # (1, 3) log-likelihoods
    >>> scorer.predict([q], PromptFormat("letter", chat=False))      # [1]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["FORMS", "LETTERS", "AnswerScorer", "MCQuestion", "ModelLoadError", "PromptFormat", "all_formats",
           "expert_family", "expert_scorer", "model_family"]

FORMS = ("letter", "cloze")
LETTERS = "ABCDEFGHIJ"
_FORMAT_VERSION = 1  # bump when the scoring code (not just the template text) changes meaning

_LETTER_HEAD = "The following is a multiple choice question (with answer){about}.\n\n"
_LETTER_BODY = "{question}\n{options}\nAnswer:"
_CHAT_LETTER_TAIL = "\n\nAnswer with the letter of the correct option only."
_CLOZE_BODY = "Question: {question}\nAnswer:"


class ModelLoadError(RuntimeError):
    """An expert's model could not be loaded (missing, corrupt, out of memory)."""


@dataclass(frozen=True)
class MCQuestion:
    """One multiple-choice question with its gold answer (index into ``choices``)."""

    question: str
    choices: tuple[str, ...]
    answer: int
    domain: str
    id: str = ""

    @property
    def key(self) -> str:
        """Hash of the text the models see (question and choices), the cache key of its scores."""
        blob = json.dumps([self.question, list(self.choices)], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


@dataclass(frozen=True)
class PromptFormat:
    """A prompt form (``letter`` or ``cloze``) with or without the model's chat template."""

    form: str
    chat: bool

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown prompt form {self.form!r}; choose from {', '.join(FORMS)}")

    @property
    def name(self) -> str:
        return f"{self.form}-{'chat' if self.chat else 'raw'}"

    @property
    def hash(self) -> str:
        """Changes with the template text and the scoring version (part of the cache key)."""
        blob = json.dumps([_FORMAT_VERSION, self.form, self.chat, _LETTER_HEAD, _LETTER_BODY, _CHAT_LETTER_TAIL,
                           _CLOZE_BODY])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def parse(cls, text: str) -> PromptFormat:
        """``"letter-chat"`` -> ``PromptFormat("letter", True)``."""
        form, _, mode = text.partition("-")
        if mode not in ("chat", "raw"):
            raise ValueError(f"prompt format {text!r} must be <letter|cloze>-<chat|raw>")
        return cls(form, mode == "chat")


def all_formats() -> list[PromptFormat]:
    return [PromptFormat(f, c) for f in FORMS for c in (False, True)]


def model_family(model: str) -> str:
    """``"qwen-1.5b"`` -> ``"qwen"``: the prompt format is chosen once per family."""
    return model.split("-", 1)[0]


def _peft_spec(name: str, registry: Any = None) -> Any:
    """The ``peft`` expert spec called ``name``: from ``registry`` (enabled or not), else a shipped adapter
    (``<domain>-lora``); ``None`` for any other name."""
    if registry is not None:
        try:
            spec = registry.get(name)
        except Exception:  # an unknown name is simply not a registered adapter
            spec = None
        if spec is not None:
            return spec if spec.backend == "peft" else None
    if not name.endswith("-lora"):
        return None
    from experts.registry import shipped_adapters

    return next((s for s in shipped_adapters() if s.name == name), None)


def expert_scorer(name: str, *, settings: Settings, registry: Any = None, **kwargs: Any) -> AnswerScorer:
    """The :class:`AnswerScorer` of an answer expert: a model-store name, or a ``peft`` expert (a registered
    one, enabled or not, or a shipped ``<domain>-lora``) — its base with its adapter merged in."""
    spec = _peft_spec(name, registry)
    if spec is None:
        return AnswerScorer(name, settings=settings, **kwargs)
    from experts.backends import adapter_path  # not checked here: AnswerScorer.load reports a bad folder

    kw = spec.backend_kwargs
    return AnswerScorer(kw.get("base") or "qwen-0.5b", settings=settings,
                        adapter=adapter_path(str(kw.get("adapter", ""))), adapter_name=name, **kwargs)


def expert_family(name: str, registry: Any = None) -> str:
    """The prompt-format family of an answer expert: its base model's for a ``peft`` expert."""
    spec = _peft_spec(name, registry)
    return model_family(spec.backend_kwargs.get("base") or "qwen-0.5b" if spec is not None else name)


def letter_prompt(q: MCQuestion) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
    return _LETTER_BODY.format(question=q.question.strip(), options=options)


class AnswerScorer:
    """Scores questions with one local HF causal LM from the model store.

    Args:
        model: a model-store name (``qwen-1.5b``, ``qwen-0.5b``, ``smollm2-135m``).
        settings: where the model store and the cache live, and ``torch_threads``.
        batch_size: prompts per forward pass.
        max_tokens: prompts longer than this are cut from the left (the question's start), flagged in
            the log; MMLU's longest mapped question is ~900 tokens.
        cache_dir: override of ``$QSEF_HOME/cache/answers``.
        adapter: a PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) for
            ``model``: it is merged into the base (fp32) on load, and its scores are cached apart from the
            base's (:attr:`model_id` names the adapter and a hash of its weights).
        adapter_name: the adapter's name in :attr:`model_id` and in errors (default: the folder's name).
    """

    def __init__(self, model: str, *, settings: Settings, batch_size: int = 4, max_tokens: int = 1536,
                 cache_dir: Path | None = None, adapter: Path | str | None = None,
                 adapter_name: str | None = None) -> None:
        self.model = model
        self.adapter = Path(adapter).expanduser() if adapter is not None else None
        self.adapter_name = adapter_name or (self.adapter.name if self.adapter is not None else None)
        self._adapter_hash: str | None = None
        self.settings = settings
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.cache_root = Path(cache_dir) if cache_dir else settings.path("cache", "answers")
        self._lm: Any = None
        self._tok: Any = None
        self.load_seconds: float | None = None

    # -- model ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load tokenizer and model (float32, eval mode).

        Raises:
            ModelLoadError: whatever went wrong, with the model's name.
        """
        if self._lm is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        t0 = time.perf_counter()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from core.settings import configure_torch_threads
            from core.store import ModelStore

            configure_torch_threads(self.settings)
            path = ModelStore(self.settings).ensure(self.model)
            self._tok = AutoTokenizer.from_pretrained(path)
            self._lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        except Exception as exc:
            raise ModelLoadError(f"model {self.model!r} could not be loaded: {type(exc).__name__}: {exc}") from exc
        if self.adapter is not None:
            try:
                self._lm = self._merge_adapter(self._lm)
            except Exception as exc:
                self._lm = self._tok = None
                raise ModelLoadError(f"adapter {self.adapter_name!r} ({self.adapter}) could not be loaded on "
                                     f"{self.model!r}: {type(exc).__name__}: {exc}") from exc
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self.load_seconds = time.perf_counter() - t0

    def _merge_adapter(self, base: Any) -> Any:
        """``base`` with the LoRA adapter merged into its weights (one plain model: no per-call LoRA cost)."""
        from peft import PeftModel

        self._check_adapter()
        return PeftModel.from_pretrained(base, str(self.adapter)).merge_and_unload().eval()

    def _check_adapter(self) -> None:
        assert self.adapter is not None
        for f in ("adapter_config.json", "adapter_model.safetensors"):
            if not (self.adapter / f).is_file():
                raise ModelLoadError(f"adapter {self.adapter_name!r}: {self.adapter / f} is missing (a LoRA adapter "
                                     "folder holds adapter_config.json + adapter_model.safetensors)")

    @property
    def model_id(self) -> str:
        """Model name plus its pinned checkpoint hash (a re-pinned model gets a new cache); with an adapter,
        plus ``+<adapter name>@<hash of its weights>`` (a retrained adapter gets a new cache).

        Raises:
            ModelLoadError: the adapter's weights file cannot be read.
        """
        from core.store import CATALOG

        spec = CATALOG.get(self.model)
        base = f"{self.model}@{spec.sha256[:12]}" if spec is not None else self.model
        if self.adapter is None:
            return base
        if self._adapter_hash is None:
            self._check_adapter()
            h = hashlib.sha256()
            try:
                with (self.adapter / "adapter_model.safetensors").open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            except OSError as exc:
                raise ModelLoadError(f"adapter {self.adapter_name!r} ({self.adapter}) unreadable: {exc}") from exc
            self._adapter_hash = h.hexdigest()[:12]
        return f"{base}+{self.adapter_name}@{self._adapter_hash}"

    # -- prompts ----------------------------------------------------------------------------------
    def _chat(self, user: str) -> str:
        return self._tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)

    def _letter_context(self, q: MCQuestion, chat: bool) -> str:
        body = letter_prompt(q)
        if chat:
            return self._chat(body + _CHAT_LETTER_TAIL)
        return _LETTER_HEAD.format(about="") + body

    def _cloze_context(self, q: MCQuestion, chat: bool) -> str:
        return self._chat(q.question.strip()) if chat else _CLOZE_BODY.format(question=q.question.strip())

    def _encode(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False)["input_ids"]

    # -- scoring ----------------------------------------------------------------------------------
    def _batch(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        """``(input_ids, attention_mask)`` of a right-padded batch."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask

    def _forward(self, seqs: list[list[int]]) -> Any:
        """Log-softmax over a right-padded batch: ``(B, L, V)``."""
        import torch

        ids, mask = self._batch(seqs)
        with torch.no_grad():
            return torch.log_softmax(self._lm(input_ids=ids, attention_mask=mask).logits.float(), -1)

    def _last_logprobs(self, seqs: list[list[int]]) -> Any:
        """Log-softmax at each sequence's last position only: ``(B, V)``.

        The model's body runs on the batch and its LM head only on the ``B`` hidden states that are
        needed (the full ``(B, L, V)`` logits of a 151k vocabulary cost more than a layer). Equal to
        ``_forward(seqs)[b, len(seqs[b]) - 1]`` up to float rounding (right padding: a row's last real
        position never sees the pads). Models whose head does more than a projection (logit scaling or
        soft-capping in the config) take the full path.
        """
        import torch

        cfg = getattr(self._lm, "config", None)
        body = getattr(self._lm, "get_decoder", lambda: None)()
        head = getattr(self._lm, "get_output_embeddings", lambda: None)()
        if body is None or head is None or any(getattr(cfg, k, None) not in (None, 1.0) for k in
                                               ("final_logit_softcapping", "logit_scale", "logits_scaling")):
            lp = self._forward(seqs)
            return torch.stack([lp[b, len(s) - 1] for b, s in enumerate(seqs)])
        ids, mask = self._batch(seqs)
        last = torch.tensor([len(s) - 1 for s in seqs])
        with torch.no_grad():
            hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, L, H)
            picked = hidden[torch.arange(len(seqs)), last]  # (B, H)
            return torch.log_softmax(head(picked).float(), -1)

    def _clip(self, ids: list[int], q: MCQuestion) -> list[int]:
        if len(ids) > self.max_tokens:
            log.warning("prompt cut from the left", extra={"model": self.model, "question": q.key,
                                                           "tokens": len(ids)})
            return ids[-self.max_tokens:]
        return ids

    def letter_ids(self, chat: bool) -> list[int]:
        """The token scored for each answer letter: raw text continues "Answer:" with " A"; the chat
        template's assistant turn starts with "A"."""
        return [self._encode(LETTERS[k] if chat else " " + LETTERS[k])[0] for k in range(len(LETTERS))]

    def _score_letter(self, qs: Sequence[MCQuestion], chat: bool, *, fast: bool = True) -> list[list[float]]:
        """``fast=False``: the full ``(B, L, V)`` log-softmax (the reference the fast path is tested against)."""
        letter_ids = self.letter_ids(chat)
        out: list[list[float]] = []
        order = sorted(range(len(qs)), key=lambda i: len(qs[i].question))  # similar lengths share a batch
        res: dict[int, list[float]] = {}
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            seqs = [self._clip(self._encode(self._letter_context(qs[i], chat)), qs[i]) for i in idx]
            if fast:
                lp = self._last_logprobs(seqs)
            else:
                full = self._forward(seqs)
                lp = [full[b, len(seqs[b]) - 1] for b in range(len(seqs))]
            for b, i in enumerate(idx):
                last = lp[b]
                res[i] = [float(last[letter_ids[k]]) for k in range(len(qs[i].choices))]
        out = [res[i] for i in range(len(qs))]
        return out

    def _score_cloze(self, qs: Sequence[MCQuestion], chat: bool) -> list[list[float]]:
        out = []
        for q in qs:
            ctx = self._cloze_context(q, chat)
            ctx_ids = self._encode(ctx)
            seqs, spans = [], []
            for c in q.choices:
                cont = c.strip() if chat else " " + c.strip()
                whole = self._encode(ctx + cont)
                n_ctx = len(ctx_ids)
                if whole[:n_ctx] != ctx_ids:  # the join merged tokens: score the continuation on its own
                    whole = ctx_ids + self._encode(cont)
                n_cont = max(len(whole) - n_ctx, 1)
                whole = whole[-self.max_tokens:] if len(whole) > self.max_tokens else whole
                n_cont = min(n_cont, len(whole) - 1)
                seqs.append(whole)
                spans.append((n_cont, max(len(cont), 1)))
            row = []
            for s in range(0, len(seqs), self.batch_size):
                lp = self._forward(seqs[s:s + self.batch_size])
                for b, seq in enumerate(seqs[s:s + self.batch_size]):
                    n_cont, n_chars = spans[s + b]
                    pos = range(len(seq) - n_cont, len(seq))
                    ll = sum(float(lp[b, p - 1, seq[p]]) for p in pos)
                    row.append(ll / n_chars)
            out.append(row)
        return out

    # -- cache ------------------------------------------------------------------------------------
    def cache_file(self, fmt: PromptFormat) -> Path:
        d = self.cache_root / self.model_id.replace("@", "_").replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{fmt.name}-{fmt.hash}.jsonl"

    def cached(self, fmt: PromptFormat) -> dict[str, list[float]]:
        """Question key -> scores already on disk (a torn last line from a killed run is skipped)."""
        path = self.cache_file(fmt)
        out: dict[str, list[float]] = {}
        if not path.is_file():
            return out
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                out[rec["q"]] = [float(x) for x in rec["scores"]]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        return out

    def score(self, questions: Sequence[MCQuestion], fmt: PromptFormat, *, chunk: int = 16,
              progress: bool = False) -> list[list[float]]:
        """Log-likelihood score of every choice of every question (higher = more likely).

        Cached questions are read from disk; the rest are scored in chunks of ``chunk`` and appended to
        the cache as they finish.

        Returns:
            one list of ``len(q.choices)`` floats per question, in input order.

        Raises:
            ModelLoadError: when the model is needed and cannot be loaded.
        """
        have = self.cached(fmt)
        todo = [q for q in dict((q.key, q) for q in questions).values() if q.key not in have]
        if todo:
            self.load()
            path = self.cache_file(fmt)
            fn = self._score_letter if fmt.form == "letter" else self._score_cloze
            t0 = time.perf_counter()
            for s in range(0, len(todo), chunk):
                part = todo[s:s + chunk]
                rows = fn(part, fmt.chat)
                with path.open("a", encoding="utf-8") as fh:
                    for q, r in zip(part, rows, strict=True):
                        fh.write(json.dumps({"q": q.key, "scores": [round(x, 5) for x in r]}) + "\n")
                        have[q.key] = r
                if progress:
                    done = s + len(part)
                    log.info("scored", extra={"model": self.model, "format": fmt.name, "done": done,
                                              "of": len(todo), "s_per_q": round((time.perf_counter() - t0) / done, 2)})
        return [have[q.key][: len(q.choices)] for q in questions]

    def predict(self, questions: Sequence[MCQuestion], fmt: PromptFormat, **kwargs: Any) -> np.ndarray:
        """Index of the highest-scoring choice per question: ``(N,)``."""
        return np.array([int(np.argmax(r)) for r in self.score(questions, fmt, **kwargs)], dtype=np.int64)

    # -- cost -------------------------------------------------------------------------------------
    def seconds_per_100_tokens(self, prompts: Sequence[str], *, new_tokens: int = 32) -> float:
        """Greedy generation time per 100 generated tokens on this machine (chat template, no early stop)."""
        import torch

        self.load()
        total_t, total_n = 0.0, 0
        for p in prompts:
            ids = self._tok(self._chat(p), return_tensors="pt", add_special_tokens=False)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = self._lm.generate(**ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        do_sample=False, pad_token_id=self._tok.pad_token_id)
            total_t += time.perf_counter() - t0
            total_n += out.shape[1] - ids["input_ids"].shape[1]
        return 100.0 * total_t / max(total_n, 1)

    def unload(self) -> None:
        self._lm = None
        self._tok = None
