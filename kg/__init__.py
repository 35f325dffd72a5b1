"""Domain knowledge graphs: typed concepts and relations that ground QSEF's semantic signals.

A *knowledge graph* here is a set of concepts (nodes with a label, synonyms, a short definition, the
source they came from) joined by typed relations (``is_a``, ``instance_of``, ``part_of``,
``related``, ``see_also``, ``in_domain``, ``antonym_of``). There is one graph per domain —
``medicine``, ``law``, ``code``, ``finance``, ``general`` — built by importers from real offline
sources (HPO, ICD-10-CM, MeSH drug trees, WordNet, US courts, licence categories, GCIDE, FOLDOC,
the GnuCash glossary) and shipped compressed in ``kg/data/``. Users curate their own copies with
``qsef kg ...``; a copy in ``$QSEF_HOME/kg/`` wins over the shipped default.

QSEF asks three kinds of question of a graph:

* **Which concepts does a text mention?** :func:`link` matches normalised labels and synonyms
  (longest match, common words filtered), with an optional embedding fallback.
* **How far apart are two sets of concepts?** :meth:`KnowledgeGraph.path_distance` (capped,
  bidirectional multi-source BFS, normalised to [0, 1]), :meth:`KnowledgeGraph.lca_distance`
  (lowest common ancestor depth over is_a), :func:`embedding_distance` (trained TransE/RotatE
  vectors, see :mod:`kg.embeddings`).
* **How conceptual / how covered is a text?** :func:`concept_density` (share of tokens inside linked
  concepts) and :func:`coverage` (share of the text's concepts that the graph knows).

Example:
    >>> import kg
    >>> law = kg.load_graph(Settings(), "law")      # settings: where user-curated copies live
    >>> mentions = kg.link("The appellate court reversed the verdict for breach of contract.", law)
    >>> [m.label for m in mentions]                               # doctest: +SKIP
    ['appellate court', 'verdict', 'breach of contract']
    >>> anchors = law.anchors(20)                                 # expert-profile anchor concepts
    >>> law.path_distance([m.node_id for m in mentions], anchors, cap=6)   # doctest: +SKIP
    0.16666666666666666
    >>> kg.concept_density("The court reversed the verdict.", law)          # doctest: +SKIP
    0.4

Heavy dependencies (pykeen, torch, sentence-transformers) are imported only by the functions that
need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.domains import DOMAINS
from kg.errors import GraphError, GraphFormatError, SourceUnavailable
from kg.linking import Mention, concept_density, coverage, link
from kg.model import RELATIONS, Edge, KnowledgeGraph, Node, Relation
from kg.storage import graph_path, load_all, load_graph, read_graph, save_graph, write_graph

if TYPE_CHECKING:
    from core.settings import Settings
    from kg.embeddings import KGEmbeddings


def embedding_distance(sources: Any, targets: Any, embeddings: KGEmbeddings) -> float:
    """Cosine distance between the mean KG-embedding vectors of two concept sets, in [0, 1]
    (see :func:`kg.embeddings.embedding_distance`; ``embeddings`` from :func:`load_embeddings`)."""
    from kg.embeddings import embedding_distance as _impl

    return _impl(sources, targets, embeddings)


def load_embeddings(settings: Settings, domain: str, model: str | None = None) -> KGEmbeddings:
    """Trained embeddings of a domain graph (user-trained first, then shipped); see :mod:`kg.embeddings`."""
    from kg.embeddings import load_embeddings as _impl

    return _impl(settings, domain, model)


__all__ = [
    "DOMAINS",
    "RELATIONS",
    "Edge",
    "GraphError",
    "GraphFormatError",
    "KnowledgeGraph",
    "Mention",
    "Node",
    "Relation",
    "SourceUnavailable",
    "concept_density",
    "coverage",
    "embedding_distance",
    "graph_path",
    "link",
    "load_all",
    "load_embeddings",
    "load_graph",
    "read_graph",
    "save_graph",
    "write_graph",
]
