"""Teacher capture: top-k next-token log-probabilities, written once to memory-mapped shards.

A pretrained student (``student.kind: hf``) learns from the teacher's full-vocabulary distribution,
kept as its top-k at each position. The teacher runs once per (teacher, tokenizer, data, k); its
output lives in a capture folder that later runs memory-map instead of recomputing:

    manifest.json                 teacher, engine, tokenizer_sha256, data_sha256, k, seq_len, windows, shards
    shard-00000.tokens.npy        (n, T) int32      the input token ids (what the shard was computed on)
    shard-00000.topk_ids.npy      (n, T, k) int32   tokenizer ids of the k most likely next tokens
    shard-00000.topk_logprobs.npy (n, T, k) float16 their log-probabilities (full-vocabulary softmax)

Writes are atomic (temporary file + rename) and the manifest is rewritten after every shard, so
an interrupted capture resumes at the first missing shard. Reading verifies everything: a
manifest for another teacher, engine (backend, dtype or compute type, library version, converted
copy), tokenizer, data set or k is discarded; a shard whose SHA-256 or token ids do not match is
recomputed (logged), never used.

Three capture backends (:data:`capture_resolver`):

* ``transformers``: batched forward (fp32 by default) under ``torch.inference_mode``; the output
  head, log-normaliser and top-k run on chunks of positions, so no (b, T, V) logits tensor is held;
* ``ct2``: the CTranslate2 int8 copy of the teacher (:func:`experts.ct2.converted_folder`),
  ``Generator.forward_batch(..., return_log_probs=True)`` on a batch of windows, then top-k. The
  fastest path on a CPU; int8 moves the numbers a little (:func:`compare_topk` measures how much,
  ``benchmarks/distill_capture.py`` reports it on held-out windows);
* ``vllm``: ``prompt_logprobs`` through a vLLM OpenAI-compatible server (``/v1/completions`` with
  token-id prompts, ``max_tokens=1``), as DistillKit captures logits.

    >>> backend = capture_resolver.make("ct2", folder=teacher_folder, settings=settings, threads=2)
    >>> cap = capture_topk(backend, ids, out_dir, k=32, teacher="qwen-1.5b", tokenizer_sha256=h)
    >>> cap.topk_ids.shape, cap.topk_logprobs.dtype        # (N, T, k), torch.float16 (memory-mapped)
    >>> compare_topk(reference_cap.topk_ids, reference_cap.topk_logprobs, cap.topk_ids, cap.topk_logprobs)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.resolver import Resolver
from core.store.fetch import sha256_file

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VERSION = 2  # 2: the manifest records the engine
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

    ``topk(ids, k)``: (b, T) int64 token ids -> ``(ids (b, T, k) int32, logprobs (b, T, k) float32)``,
    sorted by log-probability, over the full vocabulary. ``engine()``: what besides the teacher's
    name changes those numbers (recorded in the capture manifest and checked on read).
    """

    name: str
    batch_size: int = 8

    def topk(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def engine(self) -> dict[str, Any]:
        """The backend's identity in the manifest: its name plus what moves its numbers (dtype, versions)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release the model or connection (optional)."""


class TransformersCapture(CaptureBackend):
    """A local HF causal LM, fp32 by default, batched, under ``torch.inference_mode``.

    The decoder runs on a batch of windows; the output head, ``logsumexp`` and top-k then run on
    ``head_chunk`` positions at a time, so the (b, T, V) logits (0.6 GB for 4 x 256 positions of a
    152 k vocabulary) and their log-softmax copy are never held: log p = top-k logit - logsumexp.

    Args:
        folder: the model folder; ``dtype``: ``float32`` (fastest exact path on a CPU without bf16
            instructions) or ``bfloat16``;
        batch_size: windows per forward; threads: torch threads while it runs (None: as is);
        head_chunk: positions per output-head call (bounds memory at ``head_chunk`` x V floats).
    """

    name = "transformers"
    synonyms = ("hf", "torch")

    def __init__(self, folder: str | Path, *, dtype: str = "float32", batch_size: int = 8, threads: int | None = None,
                 head_chunk: int = 256, model: Any = None):
        self.folder, self.dtype, self.batch_size, self.threads = Path(folder), getattr(torch, dtype), batch_size, threads
        self.head_chunk = head_chunk
        self._model = model

    @property
    def model(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            self._model = AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=self.dtype).eval()
        return self._model

    def engine(self):
        import transformers

        return {"backend": self.name, "dtype": str(self.dtype).removeprefix("torch."),
                "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}

    @torch.inference_mode()
    def topk(self, ids, k):
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            model = self.model
            if getattr(model.config, "final_logit_softcapping", None):
                raise ValueError(f"{self.folder.name}: soft-capped logits are not the output head's; "
                                 "this backend applies the head itself")
            h = model.get_decoder()(input_ids=ids).last_hidden_state  # (b, T, H)
            flat = h.reshape(-1, h.shape[-1])  # (b*T, H)
            head = model.get_output_embeddings()
            vals, idxs = [], []
            for s in range(0, flat.shape[0], self.head_chunk):
                logits = head(flat[s:s + self.head_chunk]).float()  # (c, V)
                val, idx = logits.topk(k, dim=-1)
                vals.append(val - logits.logsumexp(-1, keepdim=True))
                idxs.append(idx.to(torch.int32))
            b, T = ids.shape
            return torch.cat(idxs).view(b, T, k), torch.cat(vals).view(b, T, k)
        finally:
            torch.set_num_threads(old)

    def close(self):
        self._model = None


class CT2Capture(CaptureBackend):
    """The CTranslate2 copy of a local HF causal LM (int8 weights, converted once by
    :func:`experts.ct2.converted_folder`): ``Generator.forward_batch`` with ``return_log_probs``
    gives the full-vocabulary log-softmax of a batch of windows, then top-k.

    ``forward_batch`` returns every position's (b, T, V) float32 log-probabilities at once (viewed
    without a copy), so ``batch_size`` bounds memory: 4 windows x 256 positions x 152 k ids = 0.6 GB.

    Args:
        folder: the HF model folder (the converted copy follows its contents); settings: where the
            converted copies live (``$QSEF_HOME/engines/ct2``) and the default ``llm_threads``;
        compute_type: CTranslate2's (``int8``, the default, fastest; ``float32`` computes on the
            dequantised int8 weights: closer to fp32, slower); batch_size: windows per call;
        threads: CTranslate2 intra-op threads (None: ``settings.llm_threads``).
    """

    name = "ct2"
    synonyms = ("ctranslate2",)

    def __init__(self, folder: str | Path, *, settings: Settings, compute_type: str = "int8", batch_size: int = 4,
                 threads: int | None = None):
        self.folder, self.settings, self.compute_type = Path(folder), settings, compute_type
        self.batch_size, self.threads = batch_size, threads or settings.llm_threads
        self._generator = None
        self._converted: Path | None = None

    @property
    def converted(self) -> Path:
        """The int8 copy's folder (converted on first use)."""
        if self._converted is None:
            from experts.ct2 import converted_folder

            self._converted = converted_folder(self.settings, self.folder)
        return self._converted

    @property
    def generator(self):
        if self._generator is None:
            import ctranslate2

            self._generator = ctranslate2.Generator(str(self.converted), device="cpu", compute_type=self.compute_type,
                                                    intra_threads=self.threads)
        return self._generator

    def engine(self):
        import ctranslate2

        # the converted copy's name carries the source folder's digest and the conversion format
        return {"backend": self.name, "compute_type": self.generator.compute_type, "ctranslate2": ctranslate2.__version__,
                "converted": self.converted.name}

    def topk(self, ids, k):
        import ctranslate2

        b, T = ids.shape
        x = ctranslate2.StorageView.from_array(np.ascontiguousarray(ids.numpy().astype(np.int32)))
        lengths = ctranslate2.StorageView.from_array(np.full(b, T, np.int32))
        out = self.generator.forward_batch(x, lengths, return_log_probs=True)  # (b, T, V) float32
        lp = torch.from_numpy(np.asarray(out))  # a view of CTranslate2's buffer; ``out`` keeps it alive
        val, idx = lp.topk(k, dim=-1)
        return idx.to(torch.int32), val

    def close(self):
        self._generator = None


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

    def engine(self):
        return {"backend": self.name, "model": self.model}  # the server's dtype is its own; name it in the model

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


@dataclass(frozen=True)
class CaptureFidelity:
    """How closely a capture's top-k matches a reference capture's (e.g. ct2 int8 vs fp32 transformers).

    ``top1_agreement``: share of positions where both rank the same token first;
    ``top1_logprob_abs_diff``: mean |log p_ref - log p| of the reference's top-1 token;
    ``kl_topk``: mean KL(p_ref || p) on the reference's top-k support, both renormalised there (a
    token outside the other capture's top k gets that capture's k-th log-probability, an upper bound);
    ``outside_topk``: share of the reference's top-1 tokens missing from the other capture's top k.
    """

    positions: int
    top1_agreement: float
    top1_logprob_abs_diff: float
    kl_topk: float
    outside_topk: float


def compare_topk(ref_ids: torch.Tensor, ref_logprobs: torch.Tensor, ids: torch.Tensor,
                 logprobs: torch.Tensor) -> CaptureFidelity:
    """Fidelity of one top-k capture to a reference, from the captures alone.

    Args:
        ref_ids / ref_logprobs: (..., k) the reference's top-k ids and log-probabilities, sorted;
        ids / logprobs: (..., k') the other capture's, sorted, same leading shape.
    Returns:
        a :class:`CaptureFidelity` averaged over every position.
    """
    ref_ids, ids = ref_ids.reshape(-1, ref_ids.shape[-1]).long(), ids.reshape(-1, ids.shape[-1]).long()
    ref_lp, lp = ref_logprobs.reshape(ref_ids.shape).float(), logprobs.reshape(ids.shape).float()
    match = ref_ids[:, :, None] == ids[:, None, :]  # (P, k, k')
    found = match.any(-1)  # (P, k): reference token j is in the other top k'
    floor = lp[:, -1:].expand_as(ref_lp)  # the other capture's k-th log p bounds any token it left out
    other = torch.where(found, (match * lp[:, None, :]).sum(-1), floor)  # (P, k) its log p at the ref's ids
    p = torch.log_softmax(ref_lp, -1)
    q = torch.log_softmax(other, -1)
    kl = (p.exp() * (p - q)).sum(-1)
    return CaptureFidelity(
        positions=int(ref_ids.shape[0]),
        top1_agreement=float((ref_ids[:, 0] == ids[:, 0]).float().mean()),
        top1_logprob_abs_diff=float((ref_lp[:, 0] - other[:, 0]).abs().mean()),
        kl_topk=float(kl.mean()),
        outside_topk=float((~found[:, 0]).float().mean()))


capture_resolver: Resolver[CaptureBackend] = Resolver(
    CaptureBackend, [TransformersCapture, CT2Capture, VLLMCapture], suffix="capture", default="transformers",
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
        k: log-probabilities kept per position; teacher / tokenizer_sha256: recorded and checked, as is
            ``backend.engine()`` (a capture by another engine, dtype or compute type is recomputed).
        shard_windows: windows per shard (the unit of resumption and verification).
    Returns:
        a :class:`Capture` whose tensors are memory-mapped from the shards.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    N, T = ids.shape
    want = {"version": VERSION, "teacher": teacher, "engine": backend.engine(), "tokenizer_sha256": tokenizer_sha256,
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
