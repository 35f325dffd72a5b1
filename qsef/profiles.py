"""Expert profiles: what QSEF knows about an expert before it has answered anything.

A profile holds the expert's domain, the centroid ``c_e`` of its domain texts (for ``D_emb``), a BM25
index over its domain corpus (for ``C_sparsity``), its knowledge-graph anchors ``A_e`` (for ``D_kg``),
its size (for ``C_model``) and its cost (for cost-aware selection). The five default domain profiles
(medicine, law, code, finance, general) are built from the domain corpora and cached on disk under
:func:`profiles_dir` (one folder per encoder) as JSON + safetensors + bm25s arrays — never pickle.

Example:
    >>> profiles = default_profiles(Settings())                  # built once, then loaded from disk
    >>> [p.name for p in profiles]
    ['medicine', 'law', 'code', 'finance', 'general']
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.domains import DOMAINS, valid_domain_name
from core.store.fetch import sha256_file

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

PROFILE_FORMAT = 2
#: Sub-topic prototypes per default profile (spherical k-means over the embedded corpus sample).
N_PROTOTYPES = 16
#: Parameter count of the default experts' LLM (Qwen2.5-0.5B).
DEFAULT_EXPERT_PARAMS = 0.5e9


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Lower-cased word tokens without English stopwords — the one tokenizer used for BM25."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


KEYNESS_SMOOTHING = 0.5
"""Additive pseudo-count per reference-vocabulary word in :meth:`LexicalIndex.keyness`."""


class LexicalIndex:
    """The lexical view of an expert's corpus: a BM25 index (``bm25s``) and its word counts.

    Two relevance scores of a text to the corpus, both in [0, 1]:

    * :meth:`keyness` — how characteristic the text's words are of this corpus compared with a
      reference corpus (the pooled default domain corpora, :func:`reference_terms`): the mean over the
      text's distinct words of ``r / (1 + r)`` with ``r = P(word | corpus) / P(word | reference)``, both
      with additive smoothing. 0.5 means "as common here as anywhere"; a word the corpus never uses
      pulls toward 0, a word mostly used by this corpus toward 1. Comparable across corpora of any
      size, and measured to transfer to questions unlike the corpora (see ``benchmarks/routing_mmlu.py``).
    * :meth:`relevance` — the mean of the top-``k`` BM25 scores divided by the largest score a query of
      that length can reach in this corpus (every query token with the corpus' highest IDF at saturated
      term frequency). Bounded, but nearly constant in practice (about 0.03 for real questions).
    """

    def __init__(self, retriever: Any, n_docs: int, *, top_k: int = 3, terms: dict[str, int] | None = None) -> None:
        self.retriever = retriever
        self.n_docs = n_docs
        self.top_k = top_k
        self.terms = terms
        self.n_terms = sum(terms.values()) if terms else 0
        self._vocab = set(getattr(retriever, "vocab_dict", {}) or {})
        k1 = float(getattr(retriever, "k1", 1.5))
        idf_max = float(np.log(1.0 + (n_docs - 1 + 0.5) / (1 + 0.5)))
        self._unit = max((k1 + 1.0) * idf_max, 1e-6)

    @classmethod
    def build(cls, passages: Sequence[str], *, top_k: int = 3) -> LexicalIndex:
        import bm25s

        tokenized = bm25s.tokenize(list(passages), stopwords="en", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokenized, show_progress=False)
        words = {i: w for w, i in tokenized.vocab.items()}
        ids, counts = np.unique(np.fromiter((i for doc in tokenized.ids for i in doc), dtype=np.int64),
                                return_counts=True)
        terms = {words[int(i)]: int(n) for i, n in zip(ids, counts, strict=True) if words[int(i)]}
        return cls(retriever, len(passages), top_k=top_k, terms=terms)

    def relevance(self, texts: Sequence[str], *, tokens: Sequence[list[str]] | None = None) -> np.ndarray:
        """Normalised BM25 relevance of each text to the corpus: ``(T,)`` in [0, 1].

        ``tokens`` (from :func:`tokenize`) lets a caller tokenize once for several indexes.
        """
        out = np.zeros(len(texts), dtype=np.float32)
        for i, toks in enumerate(tokens if tokens is not None else tokenize(texts)):
            toks = list(dict.fromkeys(toks))
            if not toks:
                continue
            known = [t for t in toks if t in self._vocab]
            if not known:
                continue
            scores = self.retriever.get_scores(known)
            k = min(self.top_k, scores.shape[0])
            top = np.partition(scores, -k)[-k:]
            out[i] = float(top.mean()) / (self._unit * len(toks))
        return np.clip(out, 0.0, 1.0)

    def keyness(self, tokens: Sequence[list[str]], reference: ReferenceTerms) -> np.ndarray:
        """How characteristic each token list is of this corpus against ``reference``: ``(T,)`` in [0, 1]
        (0.5 for a text with no word the reference knows).

        Raises:
            ValueError: when the index has no word counts (built before they were kept).
        """
        if self.terms is None:
            raise ValueError("this BM25 index has no word counts; rebuild the profile")
        a, v = KEYNESS_SMOOTHING, reference.vocabulary
        own, ref = self.n_terms + a * v, reference.total + a * v
        out = np.full(len(tokens), 0.5, dtype=np.float32)
        for i, toks in enumerate(tokens):
            known = [t for t in dict.fromkeys(toks) if t in reference.counts]
            if known:
                r = np.array([(self.terms.get(t, 0) + a) / own / ((reference.counts[t] + a) / ref) for t in known])
                out[i] = float(np.mean(r / (1.0 + r)))
        return out

    def save(self, folder: Path) -> None:
        self.retriever.save(str(folder), show_progress=False)
        (folder / "lexical.json").write_text(json.dumps({"n_docs": self.n_docs, "top_k": self.top_k}))
        if self.terms is not None:
            (folder / "terms.json").write_text(json.dumps(self.terms, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s

        meta = json.loads((folder / "lexical.json").read_text())
        retriever = bm25s.BM25.load(str(folder), load_corpus=False)
        terms_file = folder / "terms.json"
        terms = json.loads(terms_file.read_text()) if terms_file.is_file() else None
        return cls(retriever, meta["n_docs"], top_k=meta["top_k"], terms=terms)


@dataclass(frozen=True)
class ReferenceTerms:
    """Word counts of a reference corpus, the background :meth:`LexicalIndex.keyness` compares against."""

    counts: dict[str, int]
    total: int
    vocabulary: int

    @classmethod
    def pooled(cls, indexes: Sequence[LexicalIndex]) -> ReferenceTerms:
        """The sum of several corpora's counts (indexes without counts are skipped)."""
        counts: dict[str, int] = {}
        for index in indexes:
            for word, n in (index.terms or {}).items():
                counts[word] = counts.get(word, 0) + n
        return cls(counts, sum(counts.values()), len(counts))


class DamagedProfileError(ValueError):
    """A saved profile cannot be read; the message names the file."""


@dataclass
class ExpertProfile:
    """Everything QSEF scores an expert on.

    Attributes:
        name: unique expert name.
        domain: the domain label (also the routing label in evaluation).
        centroid: unit vector ``(dim,)``, the normalised mean embedding of the domain texts.
        prototypes: unit rows ``(P, dim)``: centres of the domain's sub-topics (spherical k-means over
            the same texts), or ``None``. A domain is rarely one blob in embedding space — "git rebase"
            and "list comprehension" are both code but far apart — so ``D_emb`` also measures the
            distance to the nearest sub-topic, not only to the mean.
        params: parameter count (capacity for ``C_model``).
        cost: relative cost per call (cost-aware selection).
        kg_domain: which domain graph grounds ``D_kg`` (usually ``domain``); ``None`` for none.
        kg_anchors: anchor node ids ``A_e`` in that graph.
        lexical: BM25 index and word counts of the domain corpus, or ``None`` (then ``C_sparsity`` is
            flagged ``bm25_missing``).
        encoder: encoder name the centroid was computed with.
        meta: free-form provenance (corpus size, digest, build date).
    """

    name: str
    domain: str
    centroid: np.ndarray
    params: float = DEFAULT_EXPERT_PARAMS
    cost: float = 1.0
    kg_domain: str | None = None
    kg_anchors: list[str] = field(default_factory=list)
    lexical: LexicalIndex | None = None
    encoder: str = "minilm"
    meta: dict[str, Any] = field(default_factory=dict)
    prototypes: np.ndarray | None = None

    def __post_init__(self) -> None:
        c = np.asarray(self.centroid, dtype=np.float32).reshape(-1)
        self.centroid = c / max(float(np.linalg.norm(c)), 1e-12)
        if self.prototypes is not None:
            p = np.asarray(self.prototypes, dtype=np.float32).reshape(-1, c.shape[0])
            self.prototypes = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)

    def with_centroid(self, centroid: np.ndarray, **changes: Any) -> ExpertProfile:
        """A copy with another centroid (and any other field changed); the BM25 index is shared."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(centroid=centroid, **changes)
        return ExpertProfile(**d)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``profile.json``, ``centroid.safetensors`` and ``bm25/`` into ``folder``."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"centroid": self.centroid}
        if self.prototypes is not None:
            tensors["prototypes"] = self.prototypes
        save_file(tensors, str(folder / "centroid.safetensors"))
        if self.lexical is not None:
            bm = folder / "bm25"
            if bm.exists():
                shutil.rmtree(bm)
            bm.mkdir()
            self.lexical.save(bm)
        d = {k: v for k, v in asdict(self).items() if k not in ("centroid", "lexical", "prototypes")}
        d["format"] = PROFILE_FORMAT
        (folder / "profile.json").write_text(json.dumps(d, indent=2))

    @classmethod
    def load(cls, folder: Path) -> ExpertProfile:
        """Read a profile written by :meth:`save`.

        Raises:
            DamagedProfileError: a file is missing, unreadable or does not hold what a profile needs
                (it names the file); callers rebuild or skip the profile.
        """
        from safetensors.numpy import load_file

        current = folder / "profile.json"
        try:
            d = json.loads(current.read_text())
            if not isinstance(d, dict):
                raise ValueError(f"expected a JSON object, got {type(d).__name__}")
            if d.pop("format", None) not in (1, PROFILE_FORMAT):  # format 1: no prototypes yet
                raise ValueError("unknown profile format; rebuild it")
            unknown = set(d) - set(cls.__dataclass_fields__)
            if unknown or not isinstance(d.get("name"), str) or not isinstance(d.get("domain"), str):
                raise ValueError(f"needs string 'name' and 'domain' and no unknown keys {sorted(unknown)}")
            if not isinstance(d.get("meta", {}), dict) or not isinstance(d.get("kg_anchors", []), list):
                raise ValueError("'meta' must be an object and 'kg_anchors' a list")
            current = folder / "centroid.safetensors"
            tensors = load_file(str(current))
            if "centroid" not in tensors:
                raise ValueError("no 'centroid' tensor")
            current = folder / "bm25"
            lexical = LexicalIndex.load(current) if (current / "lexical.json").is_file() else None
            current = folder
            return cls(centroid=tensors["centroid"], prototypes=tensors.get("prototypes"), lexical=lexical, **d)
        except DamagedProfileError:
            raise
        except Exception as exc:  # safetensors, bm25s, numpy and json each raise their own error types
            raise DamagedProfileError(f"damaged profile file {current}: {type(exc).__name__}: {exc}") from exc


def corpus_passages(settings: Settings, domain: str, *, split: str = "train") -> list[str]:
    """Passages of a domain corpus (``corpora``; already passage-sized), title first."""
    from corpora import load_corpus

    out = []
    for doc in load_corpus(settings, domain, split=split):
        body = f"{doc.title}. {doc.text}" if getattr(doc, "title", None) else doc.text
        if len(body.split()) >= 5:
            out.append(body)
    return out


def corpus_fingerprint(domain: str) -> str:
    """What a domain corpus is made of, cheaply: cache format and source names (a profile built from an
    older corpus is rebuilt when a source is added or the processing changes)."""
    from corpora.build import CACHE_FORMAT
    from corpora.sources import sources_for

    return f"format={CACHE_FORMAT};sources=" + ",".join(s.name for s in sources_for(domain))


def kg_anchors(settings: Settings, domain: str, k: int = 50) -> tuple[str | None, list[str]]:
    """Anchor concepts of a domain graph, or ``(None, [])`` when the graph is not available (logged)."""
    try:
        import kg

        g = kg.load_graph(settings, domain)
        return domain, list(g.anchors(k))
    except Exception as exc:  # a missing graph degrades D_kg, explicitly flagged at scoring time
        log.warning("no knowledge graph for profile", extra={"domain": domain, "error": str(exc)[:200]})
        return None, []


def build_domain_profile(domain: str, *, settings: Settings, encoder: Any = None,
                         passages: Sequence[str] | None = None,
                         name: str | None = None, params: float = DEFAULT_EXPERT_PARAMS, cost: float = 1.0,
                         n_anchors: int = 50, centroid_sample: int = 1000, seed: int = 0,
                         on_stage: Callable[..., None] | None = None) -> ExpertProfile:
    """Build one expert profile from a domain corpus.

    The BM25 index covers every passage; the centroid is the mean embedding of a seeded sample of
    ``centroid_sample`` passages (a mean of a thousand unit vectors is stable, and encoding whole
    corpora on two CPU cores would take tens of minutes) and the prototypes are that sample's
    :func:`prototypes`.

    Args:
        domain: domain label; its corpus comes from ``corpora`` unless ``passages`` is given.
        settings: where the corpora, graphs and embedding cache live.
        encoder: a :class:`qsef.encoder.Encoder` (default: the settings' encoder).
        passages: texts to use instead of the corpus (tests, custom experts).
        name: expert name (default: the domain).
        on_stage: called with the name of each of the :data:`BUILD_STAGES` as it starts, and during
            ``encode`` as ``on_stage("encode", done, total)`` after each batch (progress bars).
    """
    from qsef.encoder import get_encoder

    if not valid_domain_name(domain):  # the domain becomes part of a cache file name
        raise ValueError(f"invalid domain name {domain!r}: lower-case letters, digits, '_' or '-' only")
    stage = on_stage or (lambda *_args: None)
    encoder = encoder or get_encoder(settings)
    from_corpus = passages is None
    stage("corpus")
    passages = corpus_passages(settings, domain) if from_corpus else list(passages)
    if not passages:
        raise ValueError(f"no texts to build a profile for domain {domain!r}")
    sample = centroid_sample_of(passages, centroid_sample, seed=seed)
    from qsef.encoder import encode_cached

    stage("encode")
    emb = encode_cached(sample, encoder=encoder, name=f"profile-{domain}",  # on disk: rebuilds skip the encoder
                        cache_dir=settings.path("cache", "embeddings"),
                        on_progress=lambda done, total: stage("encode", done, total) if on_stage else None)
    stage("prototypes")
    protos = prototypes(emb, seed=seed)
    stage("anchors")
    kg_domain, anchors = kg_anchors(settings, domain, n_anchors)
    stage("bm25")
    lexical = LexicalIndex.build(passages)
    from qsef.encoder import texts_digest

    return ExpertProfile(
        name=name or domain, domain=domain, centroid=emb.mean(axis=0), prototypes=protos,
        params=params, cost=cost,
        kg_domain=kg_domain, kg_anchors=anchors, lexical=lexical,
        encoder=encoder.name,
        meta={"n_passages": len(passages), "n_centroid": len(sample), "corpus_sha256": texts_digest(passages),
              **({"corpus": corpus_fingerprint(domain)} if from_corpus else {})},
    )


def centroid_sample_of(passages: Sequence[str], n: int = 1000, *, seed: int = 0) -> list[str]:
    """The seeded sample of ``n`` passages a profile's centroid and prototypes are computed from (all of
    them when there are fewer): the texts whose embeddings :func:`build_domain_profile` encodes."""
    return list(passages) if len(passages) <= n else random.Random(seed).sample(list(passages), n)


def prototypes(embeddings: np.ndarray, k: int = N_PROTOTYPES, *, seed: int = 0) -> np.ndarray:
    """``(min(k, N), dim)`` unit sub-topic centres: spherical k-means (faiss) over unit rows ``(N, dim)``."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    k = max(1, min(k, x.shape[0]))
    if k == x.shape[0]:
        return x.copy()
    km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, spherical=True, verbose=False)
    km.train(x)
    c = km.centroids.astype(np.float32)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def profiles_dir(settings: Settings, encoder_name: str | None = None) -> Path:
    """Where the default profiles built with an encoder live: ``$QSEF_HOME/profiles/<encoder>/``.

    Centroids and prototypes only make sense in their encoder's space (MiniLM has 384 dimensions, mpnet
    768), so each encoder gets its own folder.
    """
    name = Path(encoder_name or settings.encoder_model).name
    return settings.path("profiles", name)


def _sha256(path: Path) -> str | None:
    """SHA-256 of a file, or ``None`` when it does not exist."""
    return sha256_file(path) if path.is_file() else None


def _encoder_digest(settings: Settings, encoder_name: str) -> str:
    """The encoder's weights, by the hash of its model-store manifest (which lists every file's SHA-256)."""
    folder = Path(encoder_name)
    if not folder.is_dir():
        try:
            from core.store import ModelStore

            folder = ModelStore(settings).folder(encoder_name)
        except (ImportError, LookupError, ValueError, RuntimeError):  # not a store model (a test encoder)
            return f"name:{encoder_name}"
    return _sha256(folder / "manifest.json") or f"name:{encoder_name}"


def profile_inputs(settings: Settings, domain: str, encoder_name: str) -> dict[str, str | None]:
    """Digests of what a default profile is built from; it is rebuilt exactly when one of them changes.

    ``corpus`` is the domain's corpus cache file (``None`` when it is not built: nothing to compare),
    ``encoder`` the encoder's weights, ``build`` this module's build parameters. The graph the anchors
    come from is :func:`graph_digest`: when only it changes, only the anchors are recomputed. Hashing
    the files costs tens of milliseconds, so this runs on every load.
    """
    from corpora.build import cache_path

    return {
        "build": f"format={PROFILE_FORMAT};prototypes={N_PROTOTYPES};{corpus_fingerprint(domain)}",
        "corpus": _sha256(cache_path(settings, domain)),
        "encoder": _encoder_digest(settings, encoder_name),
    }


def graph_digest(settings: Settings, domain: str) -> str | None:
    """SHA-256 of the graph file :func:`kg.load_graph` reads for ``domain`` (``None`` when there is none)."""
    try:
        from kg.storage import graph_path

        return _sha256(graph_path(settings, domain))
    except (FileNotFoundError, LookupError, ValueError):
        return None


#: What :func:`build_domain_profile` reports to ``on_stage``, in order.
BUILD_STAGES = ("corpus", "encode", "prototypes", "anchors", "bm25")


def _changed(stored: dict[str, Any], now: dict[str, str | None]) -> list[str]:
    """Names of the inputs whose digest differs (an input that cannot be hashed now is not compared)."""
    return sorted(k for k, v in now.items() if v is not None and stored.get(k) != v)


def default_profiles(settings: Settings, *, rebuild: bool = False, encoder: Any = None,
                     domains: Sequence[str] = DOMAINS, progress: bool | None = None,
                     build: bool = True) -> list[ExpertProfile]:
    """The five default domain profiles, built from the corpora on first use and cached on disk.

    A stored profile is reused while :func:`profile_inputs` match the digests recorded when it was
    built; when only the graph changed (:func:`graph_digest`), only its anchors are recomputed.

    Args:
        settings: where the profiles, corpora, graphs and encoder live.
        rebuild: build every profile again.
        encoder: the encoder (default: the settings' encoder).
        domains: which default profiles.
        progress: show a progress bar on stderr while building (``None``: only when stderr is a terminal).
        build: build the missing or stale ones (minutes each); ``False`` raises instead.

    Raises:
        LookupError: ``build=False`` and a profile would have to be built (it names the domains).
    """
    out = []
    enc_name = getattr(encoder, "name", None) or settings.encoder_model
    root = profiles_dir(settings, enc_name)
    todo: list[str] = []
    for d in domains:
        folder = root / d
        prof = None
        if not rebuild and (folder / "profile.json").is_file():
            try:
                prof = ExpertProfile.load(folder)
            except (ValueError, KeyError, OSError) as exc:  # older format or damaged files (named): rebuild
                log.warning("rebuilding expert profile", extra={"domain": d, "reason": str(exc)[:300]})
        if prof is not None and (prof.prototypes is None or prof.lexical is None or prof.lexical.terms is None):
            log.info("rebuilding expert profile (no prototypes or word counts)", extra={"domain": d})
            prof = None
        if prof is not None and prof.meta.get("corpus") != corpus_fingerprint(d):
            log.info("rebuilding expert profile (its corpus changed)", extra={"domain": d})
            prof = None
        dirty = False
        if prof is not None:
            inputs = profile_inputs(settings, d, enc_name)
            if "inputs" not in prof.meta:  # built before digests were recorded: adopt the current ones
                prof.meta["inputs"], dirty = inputs, True
            elif changed := _changed(prof.meta["inputs"], inputs):
                log.info("rebuilding expert profile (inputs changed)", extra={"domain": d, "changed": changed})
                prof = None
        if prof is not None:
            kg_now = graph_digest(settings, d)
            if prof.kg_domain is None or (kg_now is not None and prof.meta.get("kg_sha256") != kg_now):
                # graphs may have appeared or been curated since the profile was built
                prof.kg_domain, prof.kg_anchors = kg_anchors(settings, d)
                prof.meta["kg_sha256"] = kg_now
                dirty = dirty or prof.kg_domain is not None
            if dirty:
                prof.save(folder)
        else:
            todo.append(d)
        out.append(prof)
    if todo and not build:
        raise LookupError(f"default expert profiles not built under {root}: {', '.join(todo)} "
                          "(`make setup` builds them)")
    if todo:
        from core.progress import progress as progress_bar

        with progress_bar(total=len(todo) * len(BUILD_STAGES), desc="expert profiles", enabled=progress) as bar:
            for d in todo:
                log.info("building default expert profile", extra={"domain": d})

                def on_stage(name: str, done: int = 0, total: int = 0, d: str = d) -> None:
                    if name != BUILD_STAGES[0] and not done:
                        bar.update(1)
                    bar.set_postfix_str(f"{d}: {name}" + (f" {done}/{total}" if total else ""))

                prof = build_domain_profile(d, settings=settings, encoder=encoder, on_stage=on_stage)
                bar.update(1)
                prof.meta["inputs"] = profile_inputs(settings, d, enc_name)
                prof.meta["kg_sha256"] = graph_digest(settings, d)
                prof.save(root / d)
                out[list(domains).index(d)] = prof
    return out


_REFERENCE: dict[str, ReferenceTerms] = {}


def reference_terms(settings: Settings, encoder: Any = None) -> ReferenceTerms:
    """The pooled word counts of the five default domain corpora: the fixed background against which
    ``C_sparsity`` measures how characteristic a text's words are of any expert's corpus (so an
    expert's score does not depend on which other experts are being scored). Loaded once; never built
    here (a scoring call must not start minutes of corpus and profile building).

    Raises:
        LookupError: the default profiles are not built in this data directory.
    """
    key = str(profiles_dir(settings, getattr(encoder, "name", None)))
    if key not in _REFERENCE:
        profiles = default_profiles(settings, encoder=encoder, build=False)
        indexes = [p.lexical for p in profiles if p.lexical is not None]
        _REFERENCE[key] = ReferenceTerms.pooled(indexes)
    return _REFERENCE[key]
