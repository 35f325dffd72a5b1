"""Curation operations behind ``qsef kg stats|validate|add|remove|merge|dedupe|diff``.

Every function works on an in-memory :class:`~kg.model.KnowledgeGraph`; the command line loads a copy,
calls these, and saves atomically only when everything succeeded — so a failed command never
touches the stored graph.

Example:
    >>> from kg.curation import validate
    >>> issues = validate(graph)                      # doctest: +SKIP
    >>> [i.kind for i in issues if i.severity == "error"]
    []
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from kg.errors import GraphError
from kg.model import HIERARCHICAL, RELATIONS, Edge, KnowledgeGraph, Node, check_relation
from kg.text import label_key

ISSUE_KINDS = (
    "dangling_edge",
    "isa_cycle",
    "empty_label",
    "unknown_relation",
    "duplicate_node",
    "duplicate_label",
)


@dataclass(frozen=True)
class Issue:
    """One validation finding.

    Attributes:
        kind: one of :data:`ISSUE_KINDS`.
        severity: ``error`` (the graph is broken) or ``warning`` (worth a look).
        message: human-readable description.
        ids: the node ids (or triple) involved.
    """

    kind: str
    severity: str
    message: str
    ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------ stats
def stats(graph: KnowledgeGraph) -> dict[str, Any]:
    """Counts that describe a graph: nodes, edges, per relation and source, components, hierarchy depth."""
    nodes = list(graph.nodes())
    und = graph.g.to_undirected(as_view=True)
    components = nx.number_connected_components(und) if len(graph.g) else 0
    depth = graph.index.depth
    return {
        "domain": graph.domain,
        "nodes": len(nodes),
        "edges": graph.number_of_edges(),
        "linkable_nodes": sum(1 for n in nodes if not n.attrs.get("nolink")),
        "with_definition": sum(1 for n in nodes if n.definition),
        "synonyms": sum(len(n.synonyms) for n in nodes),
        "nodes_by_source": dict(sorted(Counter(n.source for n in nodes).items())),
        "edges_by_relation": dict(sorted(Counter(rel for _, _, rel in graph.g.edges(keys=True)).items())),
        "connected_components": components,
        "isolated_nodes": sum(1 for n in graph.g if graph.g.degree(n) == 0),
        "max_isa_depth": int(depth.max()) if len(depth) else 0,
        "dangling_ids": len(graph.dangling()),
        "sources": {
            k: {f: v.get(f) for f in ("title", "licence", "version") if f in v}
            for k, v in graph.meta.get("sources", {}).items()
        },
    }


# --------------------------------------------------------------------- validate
def validate(graph: KnowledgeGraph, *, max_per_kind: int = 50) -> list[Issue]:
    """Find structural problems.

    * ``dangling_edge`` (error): an edge whose head or tail has no node row;
    * ``unknown_relation`` (error): an edge type outside :data:`kg.model.RELATIONS`;
    * ``isa_cycle`` (error): a cycle over is_a/instance_of;
    * ``empty_label`` (error): a node without a label;
    * ``duplicate_node`` (error): two nodes with the same normalised label and the same definition;
    * ``duplicate_label`` (warning): same normalised label, different definitions (polysemy is normal in
      WordNet, so this only warns, and only for labels shared within one source).

    Args:
        max_per_kind: at most this many issues are listed per kind (a summary issue says how many more).
    """
    issues: dict[str, list[Issue]] = {k: [] for k in ISSUE_KINDS}
    totals: Counter[str] = Counter()

    def report(issue: Issue) -> None:
        totals[issue.kind] += 1
        if len(issues[issue.kind]) < max_per_kind:
            issues[issue.kind].append(issue)

    dangling = set(graph.dangling())
    for h, t, rel in graph.g.edges(keys=True):
        if h in dangling or t in dangling:
            missing = [x for x in (h, t) if x in dangling]
            report(
                Issue(
                    "dangling_edge",
                    "error",
                    f"edge {h} -{rel}-> {t} points to missing node(s) {', '.join(missing)}",
                    (h, rel, t),
                )
            )
        if rel not in RELATIONS:
            report(
                Issue(
                    "unknown_relation",
                    "error",
                    f"edge {h} -{rel}-> {t} has unknown relation {rel!r}",
                    (h, rel, t),
                )
            )
    hier = nx.DiGraph()
    hier.add_edges_from((h, t) for h, t, rel in graph.g.edges(keys=True) if rel in HIERARCHICAL)
    for comp in nx.strongly_connected_components(hier):
        if len(comp) > 1:
            cyc = sorted(comp)
            report(
                Issue(
                    "isa_cycle",
                    "error",
                    f"is_a cycle through {len(cyc)} nodes: {' , '.join(cyc[:6])}{' …' if len(cyc) > 6 else ''}",
                    tuple(cyc),
                )
            )
    groups: dict[tuple[str, tuple[str, ...]], list[Node]] = {}
    for node in graph.nodes():
        if not node.label.strip():
            report(Issue("empty_label", "error", f"node {node.id} has an empty label", (node.id,)))
            continue
        groups.setdefault((node.source, label_key(node.label)), []).append(node)
    for (source, key), members in groups.items():
        if len(members) < 2 or not key:
            continue
        by_def: dict[str, list[str]] = {}
        for m in members:
            by_def.setdefault(" ".join(m.definition.lower().split()), []).append(m.id)
        for ids in by_def.values():
            if len(ids) > 1:
                report(
                    Issue(
                        "duplicate_node",
                        "error",
                        f"{len(ids)} {source} nodes share label {' '.join(key)!r} and definition: {', '.join(sorted(ids)[:6])}",
                        tuple(sorted(ids)),
                    )
                )
        if len(by_def) > 1:
            ids = sorted(m.id for m in members)
            report(
                Issue(
                    "duplicate_label",
                    "warning",
                    f"{len(ids)} {source} nodes share label {' '.join(key)!r}: {', '.join(ids[:6])}",
                    tuple(ids),
                )
            )
    out: list[Issue] = []
    for kind in ISSUE_KINDS:
        out.extend(issues[kind])
        extra = totals[kind] - len(issues[kind])
        if extra > 0:
            sev = issues[kind][0].severity
            out.append(Issue(kind, sev, f"... and {extra} more {kind} issue(s)"))
    return out


def issue_counts(issues: Iterable[Issue]) -> dict[str, int]:
    """Issues per kind, counting the '... and N more' summaries."""
    counts: Counter[str] = Counter()
    for i in issues:
        if i.message.startswith("... and "):
            counts[i.kind] += int(i.message.split()[2])
        else:
            counts[i.kind] += 1
    return dict(counts)


# ------------------------------------------------------------------ add/remove
def add_nodes(
    graph: KnowledgeGraph, nodes: Iterable[Node], *, replace_existing: bool = False, source: str = "user"
) -> int:
    """Add (or with ``replace_existing``, update) nodes; returns how many were written.

    Raises:
        GraphError: an existing id without ``replace_existing``, or an empty label.
    """
    n = 0
    for node in nodes:
        if not node.label.strip():
            raise GraphError(f"node {node.id!r} needs a non-empty label")
        graph.add_node(
            Node(
                node.id,
                node.label.strip(),
                tuple(node.synonyms),
                node.definition,
                graph.domain,
                node.source or source,
                dict(node.attrs),
            ),
            replace_existing=replace_existing,
        )
        n += 1
    return n


def add_edges(graph: KnowledgeGraph, edges: Iterable[Edge]) -> int:
    """Add triples between existing nodes; refuses unknown relations and is_a cycles; returns how many were new."""
    n = 0
    for e in edges:
        check_relation(e.relation)
        if graph.add_edge(e.head, e.relation, e.tail, e.source or "user", check_cycle=True):
            n += 1
    return n


def remove_edges(graph: KnowledgeGraph, edges: Iterable[Edge]) -> int:
    """Remove triples; every one must exist (GraphError names the first that does not)."""
    n = 0
    for e in edges:
        graph.remove_edge(e.head, e.relation, e.tail)
        n += 1
    return n


# ------------------------------------------------------------------------ merge
def merge(target: KnowledgeGraph, other: KnowledgeGraph) -> dict[str, int]:
    """Merge ``other`` into ``target`` (in place).

    New nodes are added; for nodes present in both, synonyms are unioned and an empty definition is
    filled in; edges whose ends exist after the merge are added (cycle-closing is_a edges refused and
    counted). Provenance of ``other``'s sources is recorded.
    """
    added = updated = 0
    for node in other.nodes():
        mine = target.get(node.id)
        if mine is None:
            target.add_node(
                Node(
                    node.id,
                    node.label,
                    node.synonyms,
                    node.definition,
                    target.domain,
                    node.source,
                    dict(node.attrs),
                )
            )
            added += 1
            continue
        syns = tuple(dict.fromkeys((*mine.synonyms, *(s for s in node.names() if s != mine.label))))
        definition = mine.definition or node.definition
        if syns != mine.synonyms or definition != mine.definition:
            target.update_node(node.id, synonyms=syns, definition=definition)
            updated += 1
    edges = skipped = cycles = 0
    for e in other.edges():
        if e.relation not in RELATIONS or e.head not in target or e.tail not in target:
            skipped += 1
            continue
        try:
            if target.add_edge(e.head, e.relation, e.tail, e.source, check_cycle=True):
                edges += 1
        except GraphError:
            cycles += 1
    for name, prov in other.meta.get("sources", {}).items():
        target.meta.setdefault("sources", {}).setdefault(name, prov)
    return {
        "nodes_added": added,
        "nodes_updated": updated,
        "edges_added": edges,
        "edges_skipped": skipped,
        "edges_refused_cycle": cycles,
    }


# ----------------------------------------------------------------------- dedupe
#: Ways :func:`find_duplicates` can decide that nodes are the same concept (CLI choices come from here).
DEDUPE_KEYS = ("label+definition", "source+label+definition", "label")


def find_duplicates(graph: KnowledgeGraph, *, by: str = "label+definition") -> list[list[str]]:
    """Groups of node ids that are the same concept.

    Args:
        by: ``label+definition`` (same normalised label and same or empty definition — safe),
            ``source+label+definition`` (same source, same normalised label and the very same definition,
            empty included — exactly what :func:`validate` reports as ``duplicate_node``; the graph build
            merges these) or ``label`` (same normalised label within one source — aggressive; merges
            WordNet senses).
    """
    if by not in DEDUPE_KEYS:
        raise GraphError(f"unknown dedupe key {by!r}; allowed: {', '.join(DEDUPE_KEYS)}")
    groups: dict[tuple, list[Node]] = {}
    for node in graph.nodes():
        key = label_key(node.label)
        if not key or node.attrs.get("synthetic"):
            continue
        if by == "label":
            groups.setdefault((node.source, key), []).append(node)
        elif by == "source+label+definition":
            groups.setdefault((node.source, key, " ".join(node.definition.lower().split())), []).append(node)
        else:
            groups.setdefault((key,), []).append(node)
    out: list[list[str]] = []
    for members in groups.values():
        if len(members) < 2:
            continue
        if by != "label+definition":
            out.append(sorted(m.id for m in members))
            continue
        by_def: dict[str, list[Node]] = {}
        empty: list[Node] = []
        for m in members:
            d = " ".join(m.definition.lower().split())
            (by_def.setdefault(d, []) if d else empty).append(m)
        if len(by_def) == 1:  # all non-empty definitions agree: empty ones join them
            only = next(iter(by_def.values()))
            group = only + empty
        elif not by_def:
            group = empty
        else:
            for same in by_def.values():
                if len(same) > 1:
                    out.append(sorted(m.id for m in same))
            continue
        if len(group) > 1:
            out.append(sorted(m.id for m in group))
    return sorted(out)


def merge_nodes(graph: KnowledgeGraph, ids: list[str]) -> str:
    """Fold several nodes into one (the best connected keeps its id); returns the kept id.

    The others' labels become synonyms, their edges are moved to the kept node (edges that would
    become self-loops or close an is_a cycle are dropped), and their ids are recorded in
    ``attrs["merged_from"]``.
    """
    nodes = [graph.node(i) for i in ids]
    keep = max(nodes, key=lambda n: (graph.g.degree(n.id), -len(n.id), n.id))
    syns = list(keep.synonyms)
    definition = keep.definition
    merged_from = list(keep.attrs.get("merged_from", []))
    moved: list[Edge] = []
    for n in nodes:
        if n.id == keep.id:
            continue
        syns.extend(s for s in n.names() if s != keep.label)
        definition = definition or n.definition
        merged_from.append(n.id)
        for h, t, rel, data in list(graph.g.in_edges(n.id, keys=True, data=True)) + list(
            graph.g.out_edges(n.id, keys=True, data=True)
        ):
            moved.append(
                Edge(keep.id if h == n.id else h, rel, keep.id if t == n.id else t, data.get("source", ""))
            )
        graph.remove_node(n.id)
    attrs = {**keep.attrs, "merged_from": merged_from}
    graph.update_node(keep.id, synonyms=tuple(dict.fromkeys(syns)), definition=definition, attrs=attrs)
    for e in moved:
        if e.head == e.tail or e.head not in graph or e.tail not in graph:
            continue
        with contextlib.suppress(GraphError):  # an edge that would close a cycle after the merge is dropped
            graph.add_edge(e.head, e.relation, e.tail, e.source, check_cycle=True)
    return keep.id


def dedupe(graph: KnowledgeGraph, *, by: str = "label+definition") -> list[dict[str, Any]]:
    """Merge every duplicate group (see :func:`find_duplicates`); returns what was merged into what."""
    out = []
    for group in find_duplicates(graph, by=by):
        kept = merge_nodes(graph, group)
        out.append({"kept": kept, "merged": [i for i in group if i != kept]})
    return out


# ------------------------------------------------------------------------- diff
@dataclass
class GraphDiff:
    """What changed from graph ``a`` to graph ``b``."""

    nodes_added: list[str] = field(default_factory=list)
    nodes_removed: list[str] = field(default_factory=list)
    nodes_changed: list[str] = field(default_factory=list)
    edges_added: list[tuple[str, str, str]] = field(default_factory=list)
    edges_removed: list[tuple[str, str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in asdict(self).items()}

    def to_dict(self, limit: int | None = None) -> dict[str, Any]:
        d = asdict(self)
        out: dict[str, Any] = {"summary": self.summary()}
        for k, v in d.items():
            out[k] = [list(x) if isinstance(x, tuple) else x for x in (v if limit is None else v[:limit])]
        return out


def diff(a: KnowledgeGraph, b: KnowledgeGraph) -> GraphDiff:
    """Nodes and triples added, removed or changed (label, synonyms, definition) from ``a`` to ``b``."""
    na = {n.id: n for n in a.nodes()}
    nb = {n.id: n for n in b.nodes()}
    ea = {e.triple for e in a.edges()}
    eb = {e.triple for e in b.edges()}
    changed = sorted(
        i
        for i in na.keys() & nb.keys()
        if (na[i].label, na[i].synonyms, na[i].definition) != (nb[i].label, nb[i].synonyms, nb[i].definition)
    )
    return GraphDiff(
        nodes_added=sorted(nb.keys() - na.keys()),
        nodes_removed=sorted(na.keys() - nb.keys()),
        nodes_changed=changed,
        edges_added=sorted(eb - ea),
        edges_removed=sorted(ea - eb),
    )
