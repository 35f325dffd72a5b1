"""Sentence encoder E(t): batched, cached, loaded lazily.

``Encoder.encode(texts)`` returns L2-normalised float32 rows ``(N, dim)``. Texts already seen are
served from an in-memory LRU cache keyed by the exact text, so the scoring hot path pays the
transformer forward only once per distinct sub-task. Large fixed text sets (corpora, evaluation
sets) can be cached on disk with :func:`encode_cached`.

Example:
    >>> enc = get_encoder(Settings())  # all-MiniLM-L6-v2 from the model store
    >>> enc.encode(["What is a tort?"]).shape
    (1, 384)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

#: Model-store names this module knows, with their embedding width.
ENCODER_DIMS = {"minilm": 384, "mpnet": 768}


def resolve_model_path(settings: Settings, name: str) -> Path:
    """Local sentence-transformers folder for an encoder name, from the model store (pulled and
    hash-checked once)."""
    from core.store import ModelStore

    return Path(ModelStore(settings).ensure(name))


class MeanPoolEncoder:
    """A sentence-transformers folder of the plain kind — Transformer, mean Pooling, optional Normalize, no lower
    casing (MiniLM, mpnet) — run with transformers alone: the same vectors as ``SentenceTransformer`` without
    importing sentence-transformers and, through it, scikit-learn (about a third of a cold ``qsef score``).

    Args:
        folder: the sentence-transformers model folder.
    """

    _MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling")

    @classmethod
    def supports(cls, folder: Path) -> bool:
        """Whether ``folder`` holds exactly that pipeline (anything else is left to sentence-transformers)."""
        try:
            modules = json.loads((folder / "modules.json").read_text())
            types = [m["type"] for m in modules]
            pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
            st_cfg = json.loads((folder / "sentence_bert_config.json").read_text())
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return False
        modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
        return (tuple(types[:2]) == cls._MODULES and types[2:] in ([], ["sentence_transformers.models.Normalize"])
                and modes == {"pooling_mode_mean_tokens"} and not st_cfg.get("do_lower_case", False))

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.net = AutoModel.from_pretrained(str(folder)).eval()
        self.max_seq_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.normalize = len(json.loads((folder / "modules.json").read_text())) > 2
        self.dim = int(self.net.config.hidden_size)

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], *, batch_size: int = 64, normalize_embeddings: bool = False,
               **_ignored: Any) -> np.ndarray:
        """``(N, dim)`` float32: token states averaged over the attention mask, unit rows when normalising."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_seq_length, return_tensors="pt")
                states = self.net(**batch).last_hidden_state  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, T, 1)
                vec = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
                if self.normalize or normalize_embeddings:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                out.append(vec.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


class Encoder:
    """Batched sentence encoder with an LRU cache keyed by text.

    Args:
        name: model-store name (``minilm`` default, ``mpnet``) or a local folder path.
        batch_size: texts per forward pass.
        cache_size: number of distinct texts kept in memory.
        model: an already-built object with ``encode(list[str], ...) -> ndarray`` (tests inject fakes).
        settings: where the model store is and how many torch threads to use (needed unless ``model``
            is given or ``name`` is a local folder).
    """

    def __init__(self, name: str = "minilm", *, batch_size: int = 64, cache_size: int = 50_000,
                 model: Any = None, settings: Settings | None = None) -> None:
        self.name = name
        self.settings = settings
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._model = model
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.forward_calls = 0  # number of texts actually sent through the model

    # -- model ---------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from core.settings import configure_torch_threads

            if self.settings is not None:
                configure_torch_threads(self.settings)
            if Path(self.name).is_dir():
                path = Path(self.name)
            elif self.settings is None:
                raise ValueError(f"encoder {self.name!r} needs settings to find the model store")
            else:
                path = resolve_model_path(self.settings, self.name)
            if MeanPoolEncoder.supports(path):
                self._model = MeanPoolEncoder(path)
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(path), device="cpu")
        return self._model

    @property
    def dim(self) -> int:
        if self.name in ENCODER_DIMS and self._model is None:
            return ENCODER_DIMS[self.name]
        return int(self.model.get_sentence_embedding_dimension())

    # -- encoding ------------------------------------------------------------------------------
    def _forward(self, texts: list[str]) -> np.ndarray:
        self.forward_calls += len(texts)
        out = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        out = np.asarray(out, dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def prime(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Put vectors computed earlier (e.g. by :func:`encode_cached`) into the in-memory cache, so
        later :meth:`encode` calls on these texts skip the model."""
        with self._lock:
            for t, v in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
                self._cache[t] = v
                self._cache.move_to_end(t)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def encode(self, texts: Sequence[str], *, use_cache: bool = True) -> np.ndarray:
        """Encode texts to unit vectors.

        Args:
            texts: N strings.
            use_cache: look up and fill the in-memory cache.

        Returns:
            float32 array ``(N, dim)``, rows L2-normalised.
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not use_cache:
            return self._forward(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            fresh = self._forward(missing)
            with self._lock:
                for t, v in zip(missing, fresh, strict=True):
                    self._cache[t] = v
                    self._cache.move_to_end(t)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            lookup = dict(zip(missing, fresh, strict=True))
        else:
            lookup = {}
        with self._lock:
            rows = []
            for t in texts:
                if t in lookup:
                    rows.append(lookup[t])
                else:
                    self._cache.move_to_end(t)
                    rows.append(self._cache[t])
        return np.stack(rows).astype(np.float32, copy=False)


def texts_digest(texts: Sequence[str]) -> str:
    """Stable SHA-256 over a list of texts (order matters)."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


#: Embeddings shipped with the package for fixed text lists every installation encodes alike (the default
#: profiles' corpus samples, the seed history's MMLU questions): float16 safetensors named like the cache
#: files, each carrying the full SHA-256 of its texts. ``encode_cached`` copies one into the cache instead
#: of encoding when the texts and the encoder match (minutes of CPU on a cold machine).
SHIPPED_EMBEDDINGS = Path(__file__).resolve().parent / "data" / "embeddings"


def _cache_stem(texts: Sequence[str], encoder: Encoder, name: str) -> str:
    return f"{name}-{Path(encoder.name).name}-{texts_digest(texts)[:16]}"


def _from_shipped(stem: str, texts: Sequence[str], shipped_dir: Path) -> np.ndarray | None:
    """The shipped embeddings of exactly these texts (float32), or ``None`` (none, or not these texts)."""
    path = shipped_dir / f"{stem}.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arr = fh.get_tensor("embeddings").astype(np.float32)
    except Exception as exc:  # a damaged shipped file: encode instead, say why
        log.warning("shipped embeddings unreadable; encoding instead", extra={"path": str(path), "error": str(exc)[:200]})
        return None
    if meta.get("sha256") != texts_digest(texts) or arr.ndim != 2 or arr.shape[0] != len(texts):
        log.warning("shipped embeddings are of other texts; encoding instead", extra={"path": str(path)})
        return None
    return arr


def ship_cached(texts: Sequence[str], *, encoder: Encoder, cache_dir: Path, name: str,
                dest: Path = SHIPPED_EMBEDDINGS) -> Path:
    """Write the cached embeddings of ``texts`` (encoding them if needed) as a shipped float16 file.

    Rounding to float16 moves cosine similarities by ~1e-3; every installation that starts from the shipped
    file gets the same vectors, so profiles built from them are identical across machines.
    """
    from safetensors.numpy import save_file

    arr = encode_cached(texts, encoder=encoder, cache_dir=cache_dir, name=name)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{_cache_stem(texts, encoder, name)}.safetensors"
    tmp = out.with_suffix(".tmp")
    save_file({"embeddings": arr.astype(np.float16)}, str(tmp),
              metadata={"sha256": texts_digest(texts), "n": str(len(texts)), "encoder": Path(encoder.name).name})
    tmp.replace(out)
    return out


def encode_cached(texts: Sequence[str], *, encoder: Encoder, cache_dir: Path, name: str = "texts",
                  on_progress: Callable[[int, int], None] | None = None,
                  shipped_dir: Path | None = SHIPPED_EMBEDDINGS) -> np.ndarray:
    """Encode a fixed text list once and keep the result on disk (``.npy`` + JSON sidecar, no pickle).

    The file name carries the encoder name and a digest of the texts, so a changed list or encoder
    never reuses stale vectors. On a cache miss, embeddings shipped in ``shipped_dir`` for exactly these
    texts and this encoder (:data:`SHIPPED_EMBEDDINGS`, checked by the texts' full SHA-256) are copied
    into the cache instead of encoding.

    Args:
        on_progress: when the texts must be encoded, called as ``on_progress(done, total)`` after each
            batch (the texts are then sent in batches of ``encoder.batch_size``).
        shipped_dir: where shipped embeddings are looked up (``None``: never).

    Returns:
        float32 array ``(N, dim)``.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_dir / _cache_stem(texts, encoder, name)
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.is_file() and meta.is_file():
        arr = np.load(npy, allow_pickle=False)
        if arr.shape[0] == len(texts):
            return arr
    shipped = _from_shipped(stem.name, texts, shipped_dir) if shipped_dir is not None else None
    if shipped is not None:
        arr = shipped
        if on_progress is not None:
            on_progress(len(texts), len(texts))
    elif on_progress is None:
        arr = encoder.encode(list(texts), use_cache=False)
    else:
        step = max(1, getattr(encoder, "batch_size", 64))
        parts = []
        for start in range(0, len(texts), step):
            parts.append(encoder.encode(list(texts[start : start + step]), use_cache=False))
            on_progress(min(start + step, len(texts)), len(texts))
        arr = np.concatenate(parts) if parts else encoder.encode([], use_cache=False)
    tmp = stem.with_suffix(".tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    tmp.replace(npy)
    meta.write_text(json.dumps({"n": len(texts), "encoder": encoder.name, "sha256": texts_digest(texts)}))
    return arr


@lru_cache(maxsize=4)
def get_encoder(settings: Settings, name: str | None = None) -> Encoder:
    """The shared encoder for a configuration (default model: ``settings.encoder_model``); one per
    (settings, name), so every engine of one configuration reuses its in-memory cache."""
    return Encoder(name or settings.encoder_model, settings=settings)
