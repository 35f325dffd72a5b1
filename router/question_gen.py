"""Everyday questions generated from the domain graphs' concepts (and corpus passages) by the router LLM.

The seed history is MMLU: exam questions. A user asks "How do I center a div?" or "What does a credit score
of 680 mean for a mortgage?", and nothing in MMLU looks like that. This module samples concepts from each
domain's knowledge graph (label + definition where the graph has one) and a few passages of each domain
corpus, asks a small instruction-tuned LLM to write the short question a real user might ask about each,
and keeps the ones that pass :func:`filter_candidates`:

* a plausible length, one line, a question or a request (:func:`is_request`);
* no label leak ("a finance question about ...", "domain", "category": :func:`leaks_label`);
* on topic: the concept's name appears in the question, or the question's embedding is close to the
  concept's (:data:`MIN_TOPIC_COSINE`);
* not an evaluation row: exact (normalised) or near-duplicate (:data:`EVAL_NEAR_DUP`) matches of any
  evaluation set (MMLU graded side, routing held-out and blind sets, BIG-bench, bsdquiz, the compound
  queries and their sentences) are dropped;
* not a duplicate of a question already kept (exact, then cosine :data:`NEAR_DUP`).

Everything is seeded: concept and passage sampling (per domain), style assignment, greedy decoding. The
shipped result is ``qsef/data/graph_questions.jsonl`` with its manifest (sha256, counts, model, prompt
version); :mod:`qsef.graph_questions` loads and verifies it.

    PYTHONPATH=. python -m router.question_gen [--per-domain 150] [--keep 500] [--model qwen-0.5b]

The filter thresholds were set by reading generated questions, never by routing accuracy on any set.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.domains import DOMAINS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from core.settings import Settings

log = logging.getLogger(__name__)

PROMPT_VERSION = "graphq-v1"
MIN_WORDS, MAX_WORDS = 4, 32
MIN_TOPIC_COSINE = 0.35  # question vs "label: definition" (MiniLM); below it and without the label: off topic
NEAR_DUP = 0.92  # cosine between two kept questions
EVAL_NEAR_DUP = 0.90  # cosine to any evaluation row

#: What the person is asking about, per domain (said in the prompt so the LLM reads the concept's sense).
DOMAIN_CONTEXT = {
    "medicine": "their health",
    "law": "the law",
    "code": "programming",
    "finance": "money and business",
    "general": "everyday life",
}

#: Share of each domain's graph concepts drawn from each graph source (the rest of a small source's share
#: goes to the others); courts and ICD-10-CM codes are many but make few everyday questions.
SOURCE_SHARES = {
    "medicine": {"hpo": 0.35, "drugs": 0.3, "wordnet": 0.2, "icd10cm": 0.15},
    "law": {"wordnet": 0.35, "gcide-law": 0.35, "licenses": 0.15, "courts": 0.15},
    "code": {"foldoc": 0.85, "wordnet": 0.15},
    "finance": {"wordnet": 0.7, "gcide-finance": 0.2, "gnucash": 0.1},
    "general": {"wordnet": 1.0},
}

#: Question styles; each seed asks for three of them (rotated by a seeded shuffle), one question per line.
STYLES = {
    "howto": "a practical how-to question (How do I / How can I ...)",
    "why": "a why question",
    "whatis": "a plain what-is or what-does-it-mean question",
    "imperative": "a request starting with a verb (Explain, Write, Show, Help, Compare, List ...)",
    "personal": "a question about the asker's own situation (starting with I or My)",
}
PER_SEED = 3

SYSTEM = ("You write short, natural questions that real people type into a chat assistant. "
          "Reply with the numbered questions only: no answers, no preamble.")

_REQUEST_START = re.compile(
    r"^(how|why|what|when|where|which|who|whom|whose|is|are|am|was|were|do|does|did|can|could|should|would|"
    r"will|may|might|must|shall|has|have|had|explain|write|show|help|compare|list|describe|tell|give|"
    r"create|implement|define|summari[sz]e|calculate|find|suggest|recommend|name|outline|convert|fix|debug|"
    r"generate|provide|make|build|draft|please|i|i'm|i've|my|if|in|for)\b", re.I)
_LEAK = re.compile(r"\bdomain\b(?!\s+names?\b)|\bcategor(y|ies)\b|\btopic\s*:|\bgeneral knowledge\b|"
                   r"\b(medicine|law|code|finance|general) question\b", re.I)
_PREFIX = re.compile(r"^\s*(question|q|user|request|here is (a|the|one) question|sure[,!.]?)\s*[:\-–]\s*", re.I)


@dataclass(frozen=True)
class Seed:
    """What one question is written about: a graph concept or a corpus passage."""

    domain: str
    origin: str  # "graph" or "corpus"
    id: str  # the node id or the passage id
    label: str  # the concept's name or the passage's title
    text: str  # the concept's definition or the passage (cut)
    source: str  # graph source (wordnet, foldoc, ...) or corpus source


@dataclass(frozen=True)
class Candidate:
    """One generated question with its provenance."""

    text: str
    domain: str
    origin: str
    concept_id: str
    concept: str
    source: str
    style: str


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big"))


def normalise(text: str) -> str:
    """Lower case, letters and digits only, single spaces: the key of exact-duplicate checks."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def _usable(node: object) -> bool:
    attrs = node.attrs or {}
    label = node.label or ""
    if attrs.get("nolink") or attrs.get("subject") or not label or len(label) > 60 or node.id.startswith("KG:"):
        return False
    return not (node.source == "icd10cm" and node.id[len("ICD10CM:"):][:1] in "VWXY")  # external causes


def sample_concepts(settings: Settings, domain: str, n: int, *, seed: int = 0) -> list[Seed]:
    """``n`` concepts of ``domain``'s graph, drawn per source by :data:`SOURCE_SHARES`, seeded.

    WordNet nodes with a usage frequency (``attrs["freq"]``) are drawn first (common words make everyday
    questions); a definition that only redirects ("See X.") is dropped.
    """
    import kg

    graph = kg.load_graph(settings, domain)
    by_source: dict[str, list] = {}
    for node in graph.nodes():
        if _usable(node):
            by_source.setdefault(node.source, []).append(node)
    shares = {s: w for s, w in SOURCE_SHARES[domain].items() if by_source.get(s)}
    total = sum(shares.values())
    picked: list = []
    short = 0
    for s in sorted(shares, key=lambda s: len(by_source[s])):  # small sources first: their shortfall moves on
        want = round(n * shares[s] / total) + short
        pool = sorted(by_source[s], key=lambda x: x.id)
        rng = _rng(PROMPT_VERSION, domain, s, seed)
        rng.shuffle(pool)
        if s == "wordnet":
            pool.sort(key=lambda x: not (x.attrs or {}).get("freq"))  # stable: shuffled order within each group
        take = pool[:want]
        short = want - len(take)
        picked.extend(take)
    out = []
    for node in picked[:n]:
        definition = (node.definition or "").strip()
        if re.match(r"^see\b", definition, re.I):
            definition = ""
        out.append(Seed(domain, "graph", node.id, node.label, definition[:300], node.source))
    return out


def sample_passages(settings: Settings, domain: str, n: int, *, seed: int = 0, pool: int = 5000) -> list[Seed]:
    """``n`` passages of ``domain``'s training corpus (from its first ``pool`` in the corpus's fixed order), seeded."""
    from corpora import load_corpus

    docs = [d for d in load_corpus(settings, domain, split="train", max_docs=pool) if len(d.text) >= 80]
    _rng(PROMPT_VERSION, domain, "corpus", seed).shuffle(docs)
    return [Seed(domain, "corpus", d.id, d.title or "", " ".join(d.text.split())[:400], d.source) for d in docs[:n]]


def messages_for(seed: Seed, styles: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking for one question per style about ``seed`` (the system turn is shared)."""
    if seed.origin == "graph":
        about = f"Topic: {seed.label}" + (f"\nMeaning: {seed.text[:160]}" if seed.text else "")
    else:
        about = f"Passage: {seed.text[:300]}"
    wanted = "\n".join(f"{i}. {STYLES[st]}" for i, st in enumerate(styles, 1))
    ask = (f"{about}\nThe asker cares about {DOMAIN_CONTEXT[seed.domain]}.\n"
           f"Write {len(styles)} different short questions (under 25 words each) about this:\n{wanted}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ask}]


def split_numbered(text: str, n: int) -> list[str]:
    """The first ``n`` items of a numbered (or one-per-line) list, each :func:`clean`-ed; missing ones are ``""``."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    items = [clean(ln) for ln in lines][:n]
    return items + [""] * (n - len(items))


def clean(text: str) -> str:
    """The question in a raw generation: first non-empty line, without quotes, labels or list marks."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = _PREFIX.sub("", line)
    lead = re.match(r"^[^:?]{0,60}\bquestion\b[^:?]{0,30}:\s*(\S.*)$", line, re.I)  # "Sure, here is a question: ..."
    if lead:
        line = lead.group(1)
    line = re.sub(r"^(\d+[.)]|[-*•])\s+", "", line)
    line = line.strip().strip('"“”\'`*').strip()
    return " ".join(line.split())


def is_request(text: str) -> bool:
    """A question (ends with ``?``) or a request (starts like one), of :data:`MIN_WORDS`..:data:`MAX_WORDS` words."""
    words = text.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or len(text) > 220:
        return False
    if text.count("?") > 1 or "\n" in text:
        return False
    return text.endswith("?") or bool(_REQUEST_START.match(text))


def leaks_label(text: str, domain: str | None = None) -> bool:
    """The question names its routing class ("a law question", "domain", "category", "general knowledge") or
    copies the prompt's words for ``domain`` (:data:`DOMAIN_CONTEXT`, when they are several)."""
    if _LEAK.search(text):
        return True
    ctx = normalise(DOMAIN_CONTEXT.get(domain or "", ""))
    return len(ctx.split()) > 2 and f" {ctx} " in f" {normalise(text)} "


def mentions(text: str, label: str) -> bool:
    """The concept's name (normalised, or its head word when long enough) appears in the question."""
    q, name = f" {normalise(text)} ", normalise(label)
    if name and f" {name} " in q:
        return True
    words = [w for w in name.split() if len(w) >= 5]
    return bool(words) and all(f" {w}" in q for w in words[:2])


def eval_texts(settings: Settings) -> list[str]:
    """The texts of every evaluation set (and each compound query's sentences) that must not be generated."""
    from corpora import load_compound_queries, load_mmlu, load_routing_heldout
    from corpora.mcsets import load_answer_set

    texts = [r["text"] for r in load_mmlu(settings, split="graded")]
    texts += [r["text"] for r in load_routing_heldout()] + [r["text"] for r in load_routing_heldout(blind=True)]
    for name in ("bigbench", "bsdquiz"):
        texts += [r["question"] for r in load_answer_set(settings, name)]
    for row in load_compound_queries():
        texts.append(row["query"])
        texts += [s for s in re.split(r"(?<=[.?!])\s+", row["query"]) if len(s.split()) >= 3]
    return list(dict.fromkeys(t for t in texts if t and t.strip()))


@dataclass
class FilterReport:
    """How many candidates each filter dropped, and how many survived."""

    counts: Counter

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def filter_candidates(cands: Sequence[Candidate], *, encode: Callable[[list[str]], np.ndarray],
                      eval_rows: Sequence[str], eval_emb: np.ndarray | None = None,
                      seeds: dict[str, Seed] | None = None) -> tuple[list[Candidate], FilterReport]:
    """Keep the candidates that pass every filter, in input order (see the module docstring).

    Args:
        cands: generated questions (already :func:`clean`-ed).
        encode: texts -> unit-norm embeddings ``(N, dim)``.
        eval_rows: evaluation texts; eval_emb: their embeddings ``(E, dim)`` (encoded here when ``None``).
        seeds: concept id -> seed, for the on-topic check (skipped for candidates without one).

    Returns:
        the kept candidates and the per-filter drop counts (``kept`` among them).
    """
    counts: Counter = Counter()
    stage = []
    eval_keys = {normalise(t) for t in eval_rows}
    for c in cands:
        if not is_request(c.text):
            counts["not_a_request"] += 1
        elif leaks_label(c.text, c.domain):
            counts["label_leak"] += 1
        elif normalise(c.text) in eval_keys:
            counts["eval_exact"] += 1
        else:
            stage.append(c)
    if not stage:
        counts["kept"] = 0
        return [], FilterReport(counts)
    emb = np.asarray(encode([c.text for c in stage]), dtype=np.float32)
    if seeds:
        topic_txt = {k: f"{s.label}: {s.text}" if s.text else s.label for k, s in seeds.items()}
        keys = sorted(topic_txt)
        topic = dict(zip(keys, np.asarray(encode([topic_txt[k] for k in keys]), dtype=np.float32), strict=True))
    if eval_emb is None and eval_rows:
        eval_emb = np.asarray(encode(list(eval_rows)), dtype=np.float32)
    eval_max = (emb @ eval_emb.T).max(axis=1) if eval_emb is not None and len(eval_emb) else np.full(len(stage), -1.0)
    kept: list[Candidate] = []
    kept_emb: list[np.ndarray] = []
    seen: set[str] = set()
    for i, c in enumerate(stage):
        key = normalise(c.text)
        if eval_max[i] >= EVAL_NEAR_DUP:
            counts["eval_near_dup"] += 1
            continue
        seed = (seeds or {}).get(c.concept_id)
        if seed is not None and c.origin == "graph" and not mentions(c.text, seed.label) \
                and float(emb[i] @ topic[c.concept_id]) < MIN_TOPIC_COSINE:
            counts["off_topic"] += 1
            continue
        if key in seen:
            counts["duplicate"] += 1
            continue
        if kept_emb and float((np.stack(kept_emb) @ emb[i]).max()) >= NEAR_DUP:
            counts["near_duplicate"] += 1
            continue
        seen.add(key)
        kept.append(c)
        kept_emb.append(emb[i])
    counts["kept"] = len(kept)
    return kept, FilterReport(counts)


def load_llm(settings: Settings, model: str = "qwen-0.5b") -> object:
    """The generating LLM on the CTranslate2 engine (:class:`experts.ct2.CT2Model`). Keep the reference until
    the process is done with it: a run lost its output when the generator was destroyed mid-process
    (``std::system_error: Resource deadlock avoided``), so :func:`build` holds it to the end."""
    from core.store import ModelStore
    from experts.ct2 import CT2Model

    return CT2Model.load(settings, Path(ModelStore(settings).ensure(model)))


def generate_candidates(seeds: Sequence[Seed], *, llm: object, batch: int = 16, max_tokens: int = 96, seed: int = 0,
                        on_batch: Callable[[int, int], None] | None = None) -> list[Candidate]:
    """:data:`PER_SEED` greedy questions per seed, in styles rotated over a seeded shuffle, decoded in batches
    of ``batch`` seeds on the CTranslate2 engine (:class:`experts.ct2.CT2Model`; the system turn cached).
    One prompt asks for several questions because on a CPU the prompt, not the answer, costs most."""
    from experts.ct2 import Row

    tok = llm.tokenizer
    names = list(STYLES)
    order = list(range(len(seeds)))
    _rng(PROMPT_VERSION, "styles", seed).shuffle(order)
    styles = {j: [names[(rank + k) % len(names)] for k in range(PER_SEED)] for rank, j in enumerate(order)}
    prefix = tok.apply_chat_template([{"role": "system", "content": SYSTEM}], tokenize=False)
    out: list[Candidate] = []
    for start in range(0, len(seeds), batch):
        part = list(range(start, min(start + batch, len(seeds))))
        rows = [Row(tok.apply_chat_template(messages_for(seeds[j], styles[j]), tokenize=False,
                                            add_generation_prompt=True), max_tokens, static_prefix=prefix)
                for j in part]
        llm.decode(rows)
        for j, row in zip(part, rows, strict=True):
            if row.error is not None:
                raise RuntimeError(f"generation failed: {row.error}") from row.error
            s = seeds[j]
            for style, text in zip(styles[j], split_numbered(row.text, PER_SEED), strict=True):
                out.append(Candidate(text, s.domain, s.origin, s.id, s.label, s.source, style))
        if on_batch is not None:
            on_batch(min(start + batch, len(seeds)), len(seeds))
    return out


def _graph_ids(settings: Settings) -> dict[str, str]:
    """Domain -> ``<file name>@<sha256[:12]>`` of the graph file the concepts came from."""
    import kg

    out = {}
    for d in DOMAINS:
        path = kg.graph_path(settings, d)
        out[d] = f"{path.name}@{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"
    return out


def build(settings: Settings, *, per_domain: int = 200, keep: int = 500, corpus_share: float = 0.15,
          model: str = "qwen-0.5b", batch: int = 16, seed: int = 0, out_dir: Path | None = None) -> dict:
    """Sample, generate, filter and write ``graph_questions.jsonl`` + ``graph_questions.json`` (manifest).

    Args:
        per_domain: seeds per domain (``corpus_share`` of them corpus passages, the rest graph concepts).
        keep: most questions kept per domain (the first that pass, in generation order).
        out_dir: where both files go (default: the package data, ``qsef/data``).

    Returns:
        the manifest written.
    """
    from qsef.encoder import encode_cached, get_encoder
    from qsef.graph_questions import DATA_DIR, FILE_NAME, MANIFEST_NAME, file_sha256

    t0 = time.perf_counter()
    out_dir = Path(out_dir or DATA_DIR)
    seeds: list[Seed] = []
    for d in DOMAINS:
        n_corpus = round(per_domain * corpus_share)
        seeds += sample_concepts(settings, d, per_domain - n_corpus, seed=seed)
        seeds += sample_passages(settings, d, n_corpus, seed=seed)
    t_sample = time.perf_counter()
    print(f"sampled {len(seeds)} seeds in {t_sample - t0:.0f} s", flush=True)

    def progress(done: int, total: int) -> None:
        if done % (batch * 10) == 0 or done == total:
            print(f"  generated {done}/{total} ({time.perf_counter() - t_sample:.0f} s)", flush=True)

    # the raw generations are kept before filtering: a rerun (other filters, a crash after decoding) reuses them
    ckpt = settings.path("cache", "graphq") / f"candidates-{PROMPT_VERSION}-{model}-s{seed}-n{per_domain}-" \
        f"c{corpus_share}-{hashlib.sha256(json.dumps([asdict(x) for x in seeds]).encode()).hexdigest()[:12]}.jsonl"
    llm = None
    if ckpt.is_file():
        cands = [Candidate(**json.loads(line)) for line in ckpt.read_text(encoding="utf-8").splitlines() if line]
        print(f"reusing {len(cands)} generations from {ckpt}", flush=True)
    else:
        llm = load_llm(settings, model)
        cands = generate_candidates(seeds, llm=llm, batch=batch, seed=seed, on_batch=progress)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(asdict(c)) + "\n" for c in cands), encoding="utf-8")
        tmp.replace(ckpt)
    t_gen = time.perf_counter()
    encoder = get_encoder(settings)
    ev = eval_texts(settings)
    ev_emb = encode_cached(ev, encoder=encoder, cache_dir=settings.path("cache", "embeddings"), name="evalsets")
    by_id = {s.id: s for s in seeds}
    kept, report = filter_candidates(cands, encode=lambda t: encoder.encode(t), eval_rows=ev, eval_emb=ev_emb,
                                     seeds=by_id)
    per: dict[str, list[Candidate]] = {d: [] for d in DOMAINS}
    for c in kept:
        if len(per[c.domain]) < keep:
            per[c.domain].append(c)
    graphs = _graph_ids(settings)
    rows = []
    for d in DOMAINS:
        for c in per[d]:
            row = {"text": c.text, "domain": d, **{k: v for k, v in asdict(c).items() if k not in ("text", "domain")}}
            row.update(graph=graphs[d] if c.origin == "graph" else None, model=model, prompt_version=PROMPT_VERSION)
            rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    manifest = {
        "file": FILE_NAME, "sha256": file_sha256(path), "rows": len(rows),
        "per_domain": {d: len(per[d]) for d in DOMAINS},
        "generated_per_domain": dict(Counter(c.domain for c in cands)),
        "passed_filters_per_domain": dict(Counter(c.domain for c in kept)),
        "filters": report.as_dict(), "model": model, "engine": "ctranslate2 int8, greedy", "questions_per_seed": PER_SEED,
        "prompt_version": PROMPT_VERSION, "seed": seed, "per_domain_seeds": per_domain, "corpus_share": corpus_share,
        "keep": keep, "graphs": graphs, "thresholds": {"min_topic_cosine": MIN_TOPIC_COSINE, "near_dup": NEAR_DUP,
                                                        "eval_near_dup": EVAL_NEAR_DUP, "words": [MIN_WORDS, MAX_WORDS]},
        "eval_texts_checked": len(ev), "encoder": Path(encoder.name).name,
        "wall_s": {"sample": round(t_sample - t0, 1), "generate": round(t_gen - t_sample, 1),
                   "filter": round(time.perf_counter() - t_gen, 1)},
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    del llm  # held until the files are written (see load_llm)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-domain", type=int, default=200, help="seeds (concepts + passages) per domain")
    ap.add_argument("--keep", type=int, default=500, help="most questions kept per domain")
    ap.add_argument("--corpus-share", type=float, default=0.15, help="share of seeds that are corpus passages")
    ap.add_argument("--model", default="qwen-0.5b", help="model-store name of the generating LLM")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=None, help="default: qsef/data (the shipped copy)")
    args = ap.parse_args(argv)
    from core.logs import setup_logging
    from core.settings import Settings

    setup_logging("WARNING")
    manifest = build(Settings(), per_domain=args.per_domain, keep=args.keep, corpus_share=args.corpus_share,
                     model=args.model, batch=args.batch, seed=args.seed, out_dir=args.out_dir)
    print(json.dumps({k: manifest[k] for k in ("rows", "per_domain", "filters", "wall_s")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
