"""Teachers and their disk cache: each teacher runs once per dataset.

* :class:`CausalLMTeacher` — a causal LM sharing its tokenizer with the student (default
  Qwen2.5-Coder-0.5B-Instruct). Logits are computed only for the student's kept tokens (a restricted
  output head), and the top-k of them are stored; the KD loss renormalises over those k.
* :class:`SentenceEncoderTeacher` — a sentence encoder (MiniLM, mpnet) giving one embedding per
  text, the target of the alignment loss.
* :class:`TeacherCache` — safetensors files under ``$QSEF_HOME/cache/distill`` keyed by a hash of
  everything that determines the output (teacher, vocabulary, inputs, k).

    >>> teacher = CausalLMTeacher("qwen-0.5b", settings=Settings())
    >>> out = teacher.topk(ids, kept, k=32)      # {"topk_idx": (N,T,k) int32, "topk_logits": (N,T,k) fp16, ...}
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


def resolve_model_folder(settings: Settings, name_or_path: str) -> Path:
    """A model-store name (``qwen-0.5b``, ``minilm``, ``mpnet``…) or a local folder -> folder."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    from core.store import ModelStore

    return Path(ModelStore(settings).ensure(name_or_path))


def load_tokenizer(settings: Settings, name_or_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_folder(settings, name_or_path)))


def same_tokenizer(a, b) -> bool:
    """True when two tokenizers map every string to the same ids (same vocabulary and merges)."""
    return a.get_vocab() == b.get_vocab()


class CausalLMTeacher:
    """A causal LM teacher restricted to the student's vocabulary.

    Args:
        name: model-store name or HF folder.
        dtype: ``"bfloat16"`` (faster on CPU) or ``"float32"``.
        threads: torch threads while the teacher runs (None = leave as is).
        settings: where the model store is.
    """

    def __init__(self, name: str = "qwen-0.5b", *, settings: Settings, dtype: str = "bfloat16",
                 threads: int | None = None):
        self.name, self.dtype, self.threads = name, getattr(torch, dtype), threads
        self.settings = settings
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            folder = resolve_model_folder(self.settings, self.name)
            self._model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=self.dtype).eval()
        return self._model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.inference_mode()
    def topk(self, ids: torch.Tensor, kept: torch.Tensor, k: int = 32, *, batch_size: int = 8,
             progress: bool = True) -> dict[str, torch.Tensor]:
        """Top-k next-token logits over the kept vocabulary, and mean-pooled final hidden states.

        Args:
            ids: (N, T) tokenizer ids (padding at the end is harmless: the teacher is causal).
            kept: (V - 1,) kept tokenizer ids, sorted; student id = position in ``kept`` + 1.
            k: logits kept per position.
        Returns:
            ``topk_idx`` (N, T, k) int32 student ids, ``topk_logits`` (N, T, k) float16,
            ``hidden`` (N, H) float32 mean over positions of the last hidden state.
        """
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            model = self.model
            w = model.get_output_embeddings().weight[kept]  # (V-1, H): the restricted head
            idx_out, val_out, hid_out = [], [], []
            t0, n_done = time.perf_counter(), 0
            for s in range(0, ids.shape[0], batch_size):
                h = model.model(input_ids=ids[s:s + batch_size]).last_hidden_state  # (b, T, H)
                logits = F.linear(h, w).float()  # (b, T, V-1)
                val, idx = logits.topk(k, dim=-1)
                idx_out.append((idx + 1).to(torch.int32))
                val_out.append(val.to(torch.float16))
                hid_out.append(h.float().mean(1))
                n_done += h.shape[0] * h.shape[1]
                if progress:
                    log.info("teacher %s: %d/%d windows, %.0f tok/s", self.name, min(s + batch_size, ids.shape[0]),
                             ids.shape[0], n_done / (time.perf_counter() - t0))
            return {"topk_idx": torch.cat(idx_out), "topk_logits": torch.cat(val_out), "hidden": torch.cat(hid_out)}
        finally:
            torch.set_num_threads(old)

    @torch.inference_mode()
    def target_nll(self, ids: torch.Tensor, kept: torch.Tensor, *, batch_size: int = 8) -> dict[str, torch.Tensor]:
        """Negative log-likelihood of each next token, over the full and over the kept vocabulary.

        The kept-vocabulary view is the student's output space: the kept ids, plus one "unknown"
        class that holds the probability of every other id. A teacher perplexity over that view
        compares directly with the student's perplexity.

        Args:
            ids: (N, T + 1) tokenizer ids; position t predicts ``ids[:, t + 1]``.
            kept: (V - 1,) kept tokenizer ids, sorted.
        Returns:
            ``full`` and ``kept`` (N, T) float32 NLLs in nats (mask padding yourself).
        """
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            is_kept = torch.zeros(self.model.get_output_embeddings().weight.shape[0], dtype=torch.bool)
            is_kept[kept] = True
            full, in_kept = [], []
            for s in range(0, ids.shape[0], batch_size):
                x = ids[s:s + batch_size]
                logp = F.log_softmax(self.model(input_ids=x[:, :-1]).logits.float(), -1)  # (b, T, V_tok)
                target = x[:, 1:, None]
                nll_full = -logp.gather(-1, target)[..., 0]
                unknown = -logp.masked_fill(is_kept, float("-inf")).logsumexp(-1)  # NLL of the unknown class
                full.append(nll_full)
                in_kept.append(torch.where(is_kept[target[..., 0]], nll_full, unknown))
            return {"full": torch.cat(full), "kept": torch.cat(in_kept)}
        finally:
            torch.set_num_threads(old)

    def close(self) -> None:
        self._model = None


class SentenceEncoderTeacher:
    """A sentence-transformers encoder (``minilm`` 384-d, ``mpnet`` 768-d): texts -> (N, D) unit vectors."""

    def __init__(self, name: str = "minilm", *, settings: Settings):
        self.name = name
        self.settings = settings
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(resolve_model_folder(self.settings, self.name)), device="cpu")
        return self._model

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        emb = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_tensor=True, show_progress_bar=False)
        return emb.float().cpu()

    def close(self) -> None:
        self._model = None


class TeacherCache:
    """Teacher outputs on disk as safetensors, keyed by the hash of what determines them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(*parts) -> str:
        h = hashlib.sha256()
        for p in parts:
            if isinstance(p, torch.Tensor):
                h.update(p.contiguous().numpy().tobytes())
                h.update(str((p.dtype, tuple(p.shape))).encode())
            else:
                h.update(repr(p).encode())
            h.update(b"\x00")
        return h.hexdigest()[:24]

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}.safetensors"

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file, save_file

        p = self.path(kind, key)
        if p.is_file():
            return load_file(str(p))
        out = compute()
        tmp = p.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in out.items()}, str(tmp))
        tmp.replace(p)  # atomic: a crash never leaves a half-written cache entry
        log.info("cached %s outputs at %s", kind, p)
        return out
