"""Teacher capture: top-k next-token log-probabilities, written once to memory-mapped shards.

A pretrained student (``student.kind: hf``) learns from the teacher's full-vocabulary distribution,
kept as its top-k at each position. The teacher runs once per (teacher, tokenizer, data, k); its
output lives in a capture folder that later runs memory-map instead of recomputing:

    manifest.json                 teacher, tokenizer_sha256, data_sha256, k, seq_len, windows, shards
    shard-00000.tokens.npy        (n, T) int32      the input token ids (what the shard was computed on)
    shard-00000.topk_ids.npy      (n, T, k) int32   tokenizer ids of the k most likely next tokens
    shard-00000.topk_logprobs.npy (n, T, k) float16 their log-probabilities (full-vocabulary softmax)

Writes are atomic (temporary file + rename) and the manifest is rewritten after every shard, so
an interrupted capture resumes at the first missing shard. Reading verifies everything: a
manifest for another teacher, tokenizer, data set or k is discarded; a shard whose SHA-256 or
token ids do not match is recomputed (logged), never used.

Two capture backends (:data:`capture_resolver`):

* ``transformers``: batched fp32 forward under ``torch.inference_mode`` (a batch of windows per
  call, log-softmax and top-k in one pass);
* ``vllm``: ``prompt_logprobs`` through a vLLM OpenAI-compatible server (``/v1/completions`` with
  token-id prompts, ``max_tokens=1``), as DistillKit captures logits.

    >>> backend = capture_resolver.make("transformers", folder=teacher_folder, threads=2)
    >>> cap = capture_topk(backend, ids, out_dir, k=32, teacher="qwen-1.5b", tokenizer_sha256=h)
    >>> cap.topk_ids.shape, cap.topk_logprobs.dtype        # (N, T, k), torch.float16 (memory-mapped)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.resolver import Resolver
from core.store.fetch import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VERSION = 1
ARRAYS = ("tokens", "topk_ids", "topk_logprobs")


def tokenizer_sha256(tokenizer) -> str:
    """Hash of a tokenizer's vocabulary (token -> id): equal hashes, equal token ids."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def data_sha256(ids: torch.Tensor) -> str:
    """Hash of the (N, T) input token ids (their values and shape)."""
    a = np.ascontiguousarray(ids.numpy().astype(np.int32))
    return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()


# ---------------------------------------------------------------------------------------- backends


class CaptureBackend:
    """Computes top-k next-token log-probabilities for a batch of windows.

    ``topk(ids, k)``: (b, T) int64 token ids -> ``(ids (b, T, k) int32, logprobs (b, T, k) float32)``.
    """

    batch_size: int = 8

    def topk(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the model or connection (optional)."""


class TransformersCapture(CaptureBackend):
    """A local HF causal LM, fp32 by default, batched, under ``torch.inference_mode``.

    Args:
        folder: the model folder; ``dtype``: ``float32`` (fastest exact path on CPU) or ``bfloat16``;
        batch_size: windows per forward; threads: torch threads while it runs (None: as is).
    """

    name = "transformers"
    synonyms = ("hf", "torch")

    def __init__(self, folder: str | Path, *, dtype: str = "float32", batch_size: int = 8, threads: int | None = None,
                 model: Any = None):
        self.folder, self.dtype, self.batch_size, self.threads = Path(folder), getattr(torch, dtype), batch_size, threads
        self._model = model

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            self._model = AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=self.dtype).eval()
        return self._model

    @torch.inference_mode()
    def topk(self, ids, k):
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            logits = self.model(input_ids=ids).logits.float()  # (b, T, V)
            val, idx = torch.log_softmax(logits, -1).topk(k, dim=-1)
            return idx.to(torch.int32), val
        finally:
            torch.set_num_threads(old)

    def close(self):
        self._model = None


class VLLMCapture(CaptureBackend):
    """``prompt_logprobs`` from a vLLM OpenAI-compatible server (see ``router.llm.server.VLLMServer``).

    One ``/v1/completions`` request per window (token-id prompt, ``max_tokens=1``); vLLM batches
    concurrent requests, so ``batch_size`` windows are sent at once. vLLM returns, per prompt
    position after the first, the log-probabilities of the prompt token and of the top ``k``; the
    prediction *from* position t is the entry at t + 1, so the last position of a window (whose next
    token is not in the prompt) is taken from the one generated token's ``logprobs``.

    Args:
        base_url: server root ending in ``/v1``; model: its served model name.
    """

    name = "vllm"

    def __init__(self, base_url: str, model: str, *, batch_size: int = 8, timeout: float = 600.0):
        self.base_url, self.model, self.batch_size, self.timeout = base_url.rstrip("/"), model, batch_size, timeout

    def _one(self, client, row: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        body = {"model": self.model, "prompt": row, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": k,
                "logprobs": k}
        r = client.post(f"{self.base_url}/completions", json=body, timeout=self.timeout)
        r.raise_for_status()
        choice = r.json()["choices"][0]
        per_pos = list(choice.get("prompt_logprobs") or [])[1:]  # entry t+1 = distribution predicted at t
        last = (choice.get("logprobs") or {}).get("top_logprobs") or []
        per_pos.append(last[0] if last else None)
        return parse_prompt_logprobs(per_pos, k)

    def topk(self, ids, k):
        from concurrent.futures import ThreadPoolExecutor

        import httpx

        with httpx.Client() as client, ThreadPoolExecutor(max_workers=len(ids)) as ex:
            rows = list(ex.map(lambda row: self._one(client, row, k), ids.tolist()))
        return (torch.from_numpy(np.stack([r[0] for r in rows])), torch.from_numpy(np.stack([r[1] for r in rows])))


def parse_prompt_logprobs(per_pos: list, k: int) -> tuple[np.ndarray, np.ndarray]:
    """vLLM's per-position ``{token_id: {"logprob": x, ...}}`` (or ``{token_str: x}``) -> the top k
    ``(ids (T, k) int32, logprobs (T, k) float32)``, sorted by log-probability.

    A position with fewer than k entries is padded with id 0 at ``-inf``.

    Raises:
        ValueError: a position without entries, or keys that are not token ids.
    """
    ids = np.zeros((len(per_pos), k), np.int32)
    lps = np.full((len(per_pos), k), -np.inf, np.float32)
    for t, entry in enumerate(per_pos):
        if not entry:
            raise ValueError(f"vLLM returned no log-probabilities at position {t}")
        pairs = []
        for key, v in entry.items():
            lp = v["logprob"] if isinstance(v, dict) else float(v)
            try:
                pairs.append((int(key), float(lp)))
            except ValueError:
                raise ValueError(f"vLLM log-probability key {key!r} is not a token id; request token ids "
                                 "(return_tokens_as_token_ids)") from None
        pairs.sort(key=lambda p: -p[1])
        for j, (tid, lp) in enumerate(pairs[:k]):
            ids[t, j], lps[t, j] = tid, lp
    return ids, lps


capture_resolver: Resolver[CaptureBackend] = Resolver(
    CaptureBackend, [TransformersCapture, VLLMCapture], suffix="capture", default="transformers",
    kind="teacher capture backend")


# ---------------------------------------------------------------------------------------- shards


@dataclass
class Capture:
    """A finished capture: the (N, T, k) top-k ids and log-probabilities, read from the verified shards."""

    folder: Path
    manifest: dict
    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor
    rebuilt: list[int]  # shards recomputed in this call (empty when everything was on disk and valid)


def _shard_path(folder: Path, i: int, array: str) -> Path:
    return folder / f"shard-{i:05d}.{array}.npy"


def _write_npy(path: Path, a: np.ndarray) -> str:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, a)
    os.replace(tmp, path)
    return sha256_file(path)


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / MANIFEST)


def _shard_ok(folder: Path, i: int, entry: dict | None, tokens: np.ndarray) -> str | None:
    """None when shard ``i`` is complete and matches; else why not."""
    if entry is None:
        return "missing"
    for a in ARRAYS:
        p = _shard_path(folder, i, a)
        if not p.is_file():
            return f"{p.name} missing"
        if sha256_file(p) != entry["sha256"].get(a):
            return f"{p.name} does not match its SHA-256"
    if not np.array_equal(np.load(_shard_path(folder, i, "tokens"), mmap_mode="r"), tokens):
        return "token ids differ from the requested windows"
    return None


def capture_topk(backend: CaptureBackend, ids: torch.Tensor, folder: str | Path, *, k: int, teacher: str,
                 tokenizer_sha256: str, shard_windows: int = 64, progress: bool = True) -> Capture:
    """Top-k teacher log-probabilities of every window, from disk when a valid capture is there.

    Args:
        backend: computes missing shards (:data:`capture_resolver`).
        ids: (N, T) input token ids; position t's distribution predicts token t + 1.
        folder: the capture folder (created).
        k: log-probabilities kept per position; teacher / tokenizer_sha256: recorded and checked.
        shard_windows: windows per shard (the unit of resumption and verification).
    Returns:
        a :class:`Capture` whose tensors are memory-mapped from the shards.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    N, T = ids.shape
    want = {"version": VERSION, "teacher": teacher, "tokenizer_sha256": tokenizer_sha256,
            "data_sha256": data_sha256(ids), "k": int(k), "seq_len": int(T), "windows": int(N),
            "shard_windows": int(shard_windows)}
    manifest = {**want, "shards": {}}
    path = folder / MANIFEST
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            stale = [key for key, v in want.items() if old.get(key) != v]
        except (OSError, ValueError) as exc:
            old, stale = {}, [f"unreadable manifest ({exc})"]
        if stale:
            log.warning("capture %s: manifest differs in %s; recapturing", folder, ", ".join(stale))
        else:
            manifest["shards"] = old.get("shards", {})
    tokens_all = ids.numpy().astype(np.int32)
    n_shards = (N + shard_windows - 1) // shard_windows
    rebuilt, t0, done_tokens = [], time.perf_counter(), 0
    for i in range(n_shards):
        a, b = i * shard_windows, min((i + 1) * shard_windows, N)
        why = _shard_ok(folder, i, manifest["shards"].get(str(i)), tokens_all[a:b])
        if why is None:
            continue
        if why != "missing":
            log.warning("capture %s: shard %d %s; recomputing it", folder, i, why)
        top_ids, top_lp = [], []
        for s in range(a, b, backend.batch_size):
            ti, tl = backend.topk(ids[s:min(s + backend.batch_size, b)], k)
            top_ids.append(ti.numpy().astype(np.int32))
            top_lp.append(tl.float().numpy().astype(np.float16))
            done_tokens += ti.shape[0] * T
            if progress:
                log.info("capture %s: %d/%d windows, %.0f tok/s", teacher, min(s + backend.batch_size, b), N,
                         done_tokens / (time.perf_counter() - t0))
        arrays = {"tokens": tokens_all[a:b], "topk_ids": np.concatenate(top_ids),
                  "topk_logprobs": np.concatenate(top_lp)}
        sha = {name: _write_npy(_shard_path(folder, i, name), arr) for name, arr in arrays.items()}
        manifest["shards"][str(i)] = {"windows": [a, b], "sha256": sha}
        _write_manifest(folder, manifest)  # after every shard: an interrupted capture resumes here
        rebuilt.append(i)
    _write_manifest(folder, manifest)
    def read(name: str) -> torch.Tensor:  # shards memory-mapped, joined into one tensor
        return torch.from_numpy(np.concatenate([np.load(_shard_path(folder, i, name), mmap_mode="r")
                                                for i in range(n_shards)]))

    return Capture(folder, manifest, read("topk_ids"), read("topk_logprobs"), rebuilt)
