"""Importers: one registry, one graph per domain from the installed offline sources.

Each importer reads one source (see :mod:`kg.importers.base` for the contract) and returns a
fragment; :func:`build_domain` merges the fragments of a domain's recipe into one
:class:`~kg.model.KnowledgeGraph`:

1. nodes are added (the first fragment to define an id wins, so WordNet ids shared by several
   importers resolve to one node);
2. edges are added when both ends exist (references to concepts outside the domain are dropped and
   counted), symmetric relations once;
3. is_a/instance_of cycles are broken by dropping the closing edge (counted);
   nodes of one source with the same normalised label and the same definition (a drug listed in
   singular and plural, WordNet's adverb and adjective of one gloss) are merged into one, so the graph
   passes :func:`kg.curation.validate` (merged ids are kept in ``attrs["merged_from"]``);
4. every top concept without a parent is put under the synthetic domain root ``KG:<domain>``;
5. concepts from different sources with the same unambiguous normalised label get a ``related``
   bridge edge, so the sources form one connected graph;
6. in domain graphs, one-word names that usually mean something else in ordinary English are
   flagged so the linker skips them (:func:`kg.importers.wordnet.mark_ambiguous_names`).

Provenance (title, licence, url, version, files, counts) is recorded per source in ``graph.meta``.

Example:
    >>> from kg.importers import build_domain, IMPORTERS
    >>> sorted(IMPORTERS)                               # doctest: +SKIP
    ['courts', 'drugs', 'foldoc', 'gcide-law', 'gnucash', 'hpo', 'icd10cm', 'licenses', 'wordnet']
    >>> graph = build_domain(Settings(), "law")         # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kg.errors import GraphError, SourceUnavailable
from kg.importers.base import Fragment, Importer
from kg.importers.code import FoldocImporter
from kg.importers.finance import GnuCashImporter
from kg.importers.law import CourtsImporter, GcideFinanceImporter, GcideLawImporter, LicensesImporter
from kg.importers.medicine import DrugsImporter, HPOImporter, ICD10CMImporter
from kg.importers.wordnet import WordNetImporter
from kg.model import HIERARCHICAL, RELATIONS, KnowledgeGraph, Node, check_domain

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


def _drugs() -> Importer:
    from kg.importers.wordnet import common_words

    try:
        words = common_words()
    except (OSError, SourceUnavailable):
        log.warning("WordNet not installed: drug brand names that are common words are kept")
        words = frozenset()
    return DrugsImporter(common_words=words)


# name -> factory; the one registry of importers (CLI choices come from it)
IMPORTERS: dict[str, Callable[[], Importer]] = {
    "hpo": HPOImporter,
    "icd10cm": ICD10CMImporter,
    "drugs": _drugs,
    "wordnet": WordNetImporter,
    "courts": CourtsImporter,
    "licenses": LicensesImporter,
    "gcide-law": GcideLawImporter,
    "gcide-finance": GcideFinanceImporter,
    "foldoc": FoldocImporter,
    "gnucash": GnuCashImporter,
}

# domain -> (required sources, optional sources); order matters (first definition of an id wins)
DOMAIN_SOURCES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "medicine": (("hpo", "icd10cm", "drugs", "wordnet"), ()),
    "law": (("wordnet", "courts", "licenses", "gcide-law"), ()),
    "code": (("foldoc", "wordnet"), ()),
    "finance": (("wordnet", "gcide-finance"), ("gnucash",)),
    "general": (("wordnet",), ()),
}


def get_importer(name: str) -> Importer:
    """Instantiate a registered importer.

    Raises:
        GraphError: naming the registered importers.
    """
    if name not in IMPORTERS:
        raise GraphError(f"unknown source {name!r}; registered importers: {', '.join(sorted(IMPORTERS))}")
    return IMPORTERS[name]()


def domain_root(domain: str) -> str:
    return f"KG:{domain}"


def _ensure_root(graph: KnowledgeGraph) -> str:
    rid = domain_root(graph.domain)
    if rid not in graph:
        graph.add_node(
            Node(
                rid,
                graph.domain,
                (),
                f"Root of the {graph.domain} knowledge graph.",
                graph.domain,
                "kg",
                {"nolink": True, "synthetic": True},
            )
        )
    return rid


def merge_fragment(graph: KnowledgeGraph, frag: Fragment) -> dict[str, int]:
    """Add a fragment's nodes and edges to ``graph`` (in place); returns counts.

    Nodes already present (same id) are kept; edges whose ends are missing are dropped; symmetric
    relations are stored once.
    """
    added_nodes = kept = 0
    for node in frag.nodes:
        if node.id in graph:
            kept += 1
            continue
        graph.add_node(
            Node(node.id, node.label, node.synonyms, node.definition, graph.domain, node.source, node.attrs)
        )
        added_nodes += 1
    added_edges = dropped = 0
    for e in frag.edges:
        if e.head not in graph or e.tail not in graph:
            dropped += 1
            continue
        if RELATIONS[e.relation].symmetric and graph.has_edge(e.tail, e.relation, e.head):
            continue
        if graph.add_edge(e.head, e.relation, e.tail, e.source):
            added_edges += 1
    root = _ensure_root(graph)
    for r in frag.roots:
        if r in graph and not graph.parents(r) and r != root:
            graph.add_edge(r, "is_a", root, "kg")
    return {
        "nodes": added_nodes,
        "nodes_already_present": kept,
        "edges": added_edges,
        "edges_dropped_missing_end": dropped,
    }


def break_cycles(graph: KnowledgeGraph) -> int:
    """Drop hierarchy edges that close is_a/instance_of cycles (iterative DFS); returns how many."""
    removed = 0
    color: dict[str, int] = {}
    for start in list(graph.g.nodes):
        if color.get(start):
            continue
        stack = [(start, iter(list(graph.g.out_edges(start, keys=True))))]
        color[start] = 1
        while stack:
            u, it = stack[-1]
            for _, v, rel in it:
                if rel not in HIERARCHICAL:
                    continue
                c = color.get(v, 0)
                if c == 1:  # back edge: closes a cycle
                    graph.remove_edge(u, rel, v)
                    removed += 1
                elif c == 0:
                    color[v] = 1
                    stack.append((v, iter(list(graph.g.out_edges(v, keys=True)))))
                    break
            else:
                color[u] = 2
                stack.pop()
    return removed


def _merge_duplicates(graph: KnowledgeGraph) -> int:
    """Merge what the validator calls ``duplicate_node`` (same source, label and definition); returns how many
    nodes were folded into others."""
    from kg.curation import dedupe

    merged = dedupe(graph, by="source+label+definition")
    return sum(len(m["merged"]) for m in merged)


def add_bridges(graph: KnowledgeGraph) -> int:
    """``related`` edges between concepts of different sources that share a normalised label.

    Only labels that name exactly one linkable concept within each source are bridged (WordNet's many
    senses of "court" are not guessed between).
    """
    from kg.text import label_key

    by_source: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for node in graph.nodes():
        if node.attrs.get("nolink") or not node.label:
            continue
        key = label_key(node.label)
        if key:
            by_source.setdefault(node.source, {}).setdefault(key, []).append(node.id)
    sources = sorted(by_source)
    added = 0
    for i, a in enumerate(sources):
        for b in sources[i + 1 :]:
            for key, ids_a in by_source[a].items():
                ids_b = by_source[b].get(key)
                if (
                    ids_b
                    and len(ids_a) == 1
                    and len(ids_b) == 1
                    and graph.add_edge(ids_a[0], "related", ids_b[0], "bridge")
                ):
                    added += 1
    return added


def build_domain(settings: Settings,
    domain: str, sources: Sequence[str] | None = None, *, optional: Sequence[str] | None = None
) -> KnowledgeGraph:
    """Build a domain graph from its registered sources.

    Args:
        domain: one of :data:`kg.model.DOMAINS`.
        sources: importer names (default: the domain's recipe in :data:`DOMAIN_SOURCES`).
        optional: sources skipped with a warning (recorded in the provenance) when not installed.

    Raises:
        SourceUnavailable: a required source is not installed.
    """
    check_domain(domain)
    req, opt = DOMAIN_SOURCES[domain]
    if sources is None:
        sources, optional = req, opt if optional is None else optional
    optional = tuple(optional or ())
    graph = KnowledgeGraph(
        domain,
        meta={"sources": {}, "built": _dt.date.today().isoformat(), "builder": "kg.importers.build_domain"},
    )
    _ensure_root(graph)
    for name in (*sources, *optional):
        importer = get_importer(name)
        if domain not in importer.domains:
            raise GraphError(
                f"importer {name!r} does not build the {domain} domain (it builds: {', '.join(importer.domains)})"
            )
        try:
            frag = importer.build(settings, domain)
        except SourceUnavailable as exc:
            if name not in optional:
                raise
            log.warning("optional source %s skipped: %s", name, exc)
            graph.meta["sources"][name] = {"title": importer.title, "unavailable": str(exc)}
            continue
        counts = merge_fragment(graph, frag)
        graph.meta["sources"][name] = {**frag.provenance, "counts": counts}
        log.info("imported %s into %s: %s", name, domain, counts)
    graph.meta["hierarchy_cycles_broken"] = break_cycles(graph)
    graph.meta["duplicates_merged"] = _merge_duplicates(graph)
    graph.meta["bridges"] = add_bridges(graph)
    if domain != "general":
        _flag_ambiguous_names(settings, graph)
    return graph


def _flag_ambiguous_names(settings: Settings, graph: KnowledgeGraph) -> None:
    from kg.importers.wordnet import mark_ambiguous_names

    try:
        graph.meta["ambiguous_names_flagged"] = mark_ambiguous_names(settings, graph)
    except SourceUnavailable as exc:
        log.warning("WordNet not installed: ambiguous one-word names are not flagged (%s)", exc)
        graph.meta["ambiguous_names_flagged"] = None


def import_source(settings: Settings, graph: KnowledgeGraph, name: str) -> dict[str, int]:
    """Re-import one source into an existing graph (in place): its old nodes and edges are replaced.

    As in :func:`build_domain`, the new nodes are bridged to the other sources' nodes that share their
    label and, in domain graphs, their ambiguous one-word names are flagged (removing the old nodes
    removed both).
    """
    importer = get_importer(name)
    if graph.domain not in importer.domains:
        raise GraphError(
            f"importer {name!r} does not build the {graph.domain} domain (it builds: {', '.join(importer.domains)})"
        )
    frag = importer.build(settings, graph.domain)
    for node in [n for n in graph.nodes() if n.source == name]:
        graph.remove_node(node.id)
    for e in [e for e in graph.edges() if e.source == name]:
        graph.remove_edge(e.head, e.relation, e.tail)
    counts = merge_fragment(graph, frag)
    graph.meta.setdefault("sources", {})[name] = {**frag.provenance, "counts": counts}
    graph.meta["hierarchy_cycles_broken"] = graph.meta.get("hierarchy_cycles_broken", 0) + break_cycles(graph)
    counts["duplicates_merged"] = _merge_duplicates(graph)
    add_bridges(graph)
    graph.meta["bridges"] = sum(1 for e in graph.edges("related") if e.source == "bridge")
    if graph.domain != "general":
        _flag_ambiguous_names(settings, graph)
    return counts


__all__ = [
    "DOMAIN_SOURCES",
    "IMPORTERS",
    "Fragment",
    "Importer",
    "build_domain",
    "get_importer",
    "import_source",
    "merge_fragment",
]
