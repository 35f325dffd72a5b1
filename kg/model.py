"""The graph model: typed nodes, typed edges and :class:`KnowledgeGraph`, a thin layer over networkx.

A graph is a ``networkx.MultiDiGraph`` whose nodes carry a frozen :class:`Node` (under the ``node``
attribute) and whose edges are keyed by their relation name, so one ``(head, relation, tail)`` triple
exists at most once. Edges always point from the specific to the general (``child -is_a-> parent``,
``part -part_of-> whole``).

Query-time structures (integer adjacency, is_a depths, PageRank, the linking automaton) live in
:class:`kg.index.GraphIndex`, built lazily and rebuilt after any mutation.

A graph loaded from the snapshot cache (:mod:`kg.snapshot`) starts *deferred*: lookups by id, sizes and
the index come from the snapshot's arrays, and the networkx graph is built on first access to
:attr:`KnowledgeGraph.g` (every walk and every edit goes through it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from core.domains import check_domain as _check_domain
from kg.errors import GraphError

if TYPE_CHECKING:
    from kg.index import GraphIndex
    from kg.snapshot import GraphSnapshot


@dataclass(frozen=True, slots=True)
class Relation:
    """A relation type.

    Attributes:
        name: the key used in files and on the command line.
        description: what ``head -name-> tail`` means.
        hierarchical: part of the is_a hierarchy used by :meth:`KnowledgeGraph.lca_distance`.
        symmetric: the direction carries no meaning.
    """

    name: str
    description: str
    hierarchical: bool = False
    symmetric: bool = False


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation("is_a", "head is a kind of tail (subclass)", hierarchical=True),
        Relation("instance_of", "head is an individual instance of class tail", hierarchical=True),
        Relation("part_of", "head is a part, member or substance of tail"),
        Relation("related", "head and tail are associated", symmetric=True),
        Relation("see_also", "the entry for head refers to tail"),
        Relation("in_domain", "head belongs to the topic or subject area tail"),
        Relation("antonym_of", "head is the opposite of tail", symmetric=True),
    )
}
HIERARCHICAL: frozenset[str] = frozenset(n for n, r in RELATIONS.items() if r.hierarchical)


def check_relation(name: str) -> str:
    """Return ``name`` if it is a known relation type.

    Raises:
        GraphError: naming the allowed relation types.
    """
    if name not in RELATIONS:
        raise GraphError(f"unknown relation {name!r}; allowed: {', '.join(RELATIONS)}")
    return name


def check_domain(domain: str) -> str:
    """Return ``domain`` if it is one of :data:`DOMAINS`.

    Raises:
        GraphError: naming the allowed domains.
    """
    return _check_domain(domain, error=GraphError)


@dataclass(frozen=True, slots=True)
class Node:
    """A concept.

    Attributes:
        id: stable identifier with a source prefix (``HP:0001250``, ``WN:court.n.02``, ``FOLDOC:lisp``).
        label: preferred name.
        synonyms: other names (used for linking).
        definition: short gloss, may be empty.
        domain: the domain graph it was built for.
        source: the importer (or ``user``) that contributed it.
        attrs: small extra facts (``freq``: usage frequency; ``nolink``: never link text to it; ``code``).
    """

    id: str
    label: str
    synonyms: tuple[str, ...] = ()
    definition: str = ""
    domain: str = ""
    source: str = ""
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        """The label followed by the synonyms."""
        return (self.label, *self.synonyms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "synonyms": list(self.synonyms),
            "definition": self.definition,
            "domain": self.domain,
            "source": self.source,
            "attrs": dict(self.attrs),
        }


@dataclass(frozen=True, slots=True)
class Edge:
    """A typed, directed triple ``head -relation-> tail`` with the importer that asserted it."""

    head: str
    relation: str
    tail: str
    source: str = ""

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.head, self.relation, self.tail)


def add_edge_rows(g: nx.MultiDiGraph, rows: Iterable[tuple[str, str, str, str]]) -> None:
    """Add keyed edges ``(head, tail, relation, source)`` between existing nodes of a ``MultiDiGraph``.

    Equivalent to ``g.add_edge(u, v, key=rel, source=src)`` per row, writing networkx's adjacency
    dicts directly: ``add_edges_from`` costs several seconds on the 177k-edge general graph.
    """
    succ, pred, factory = g._succ, g._pred, g.edge_key_dict_factory
    for u, v, rel, source in rows:
        keydict = succ[u].get(v)
        if keydict is None:
            keydict = factory()
            succ[u][v] = keydict
            pred[v][u] = keydict
        keydict[rel] = {"source": source}


class KnowledgeGraph:
    """One domain's concepts and typed relations.

    Example:
        >>> g = KnowledgeGraph("law")
        >>> g.add_node(Node("x:court", "court"))
        >>> g.add_node(Node("x:tribunal", "tribunal"))
        >>> g.add_edge("x:tribunal", "is_a", "x:court")
        >>> g.path_distance(["x:tribunal"], ["x:court"], cap=6)
        0.16666666666666666

    Args:
        domain: the domain name (one of :data:`DOMAINS` for shipped graphs; free-form for scratch graphs).
        meta: provenance (``sources``: importer name -> title, licence, url, version, counts).
    """

    def __init__(self, domain: str, *, meta: dict[str, Any] | None = None) -> None:
        self.domain = domain
        self.meta: dict[str, Any] = dict(meta or {})
        self._g: nx.MultiDiGraph | None = nx.MultiDiGraph()
        #: the snapshot a deferred graph is served from until :attr:`g` is first used, else ``None``
        self.snapshot: GraphSnapshot | None = None
        self._version = 0
        self._index: GraphIndex | None = None
        #: ``(SHA-256 of the file it was loaded from, version right after loading)``, or ``None``: while the
        #: version is unchanged, indexes derived from the graph may be cached on disk under that digest.
        self.origin: tuple[str, int] | None = None
        #: where such derived indexes go (the data directory's ``kg/cache`` of the graph's loader), or ``None``
        self.cache_dir: Path | None = None

    @classmethod
    def deferred(cls, snapshot: GraphSnapshot) -> KnowledgeGraph:
        """The graph of a snapshot, its networkx graph built only when :attr:`g` is first used."""
        graph = cls(snapshot.domain, meta=snapshot.meta)
        graph._g = None
        graph.snapshot = snapshot
        return graph

    @property
    def g(self) -> nx.MultiDiGraph:
        """The underlying ``networkx.MultiDiGraph`` (built from the snapshot on first use if deferred)."""
        if self._g is None:
            self._g = self.snapshot.networkx()
            self.snapshot = None  # from now on the networkx graph is the truth (it may be edited)
        return self._g

    @g.setter
    def g(self, value: nx.MultiDiGraph) -> None:
        self._g = value
        self.snapshot = None

    # ----------------------------------------------------------------- nodes
    def __len__(self) -> int:
        if self._g is None:
            return len(self.snapshot.ids)
        return self.g.number_of_nodes()

    def __contains__(self, node_id: object) -> bool:
        if self._g is None:
            return isinstance(node_id, str) and self.snapshot.get(node_id) is not None
        return node_id in self.g and "node" in self.g.nodes[node_id]

    def __repr__(self) -> str:
        return f"KnowledgeGraph(domain={self.domain!r}, nodes={self.number_of_nodes()}, edges={self.number_of_edges()})"

    @property
    def version(self) -> int:
        """Mutation counter; derived indexes are rebuilt when it changes."""
        return self._version

    def _touch(self) -> None:
        self._version += 1
        self._index = None

    def number_of_nodes(self) -> int:
        """Nodes with data (dangling edge endpoints are not counted)."""
        if self._g is None:
            return self.snapshot.n_nodes
        return sum(1 for _ in self.nodes())

    def number_of_edges(self) -> int:
        if self._g is None:
            return self.snapshot.n_edges
        return self.g.number_of_edges()

    def add_node(self, node: Node, *, replace_existing: bool = False) -> None:
        """Add a concept.

        Raises:
            GraphError: on an empty id, or when the id exists and ``replace_existing`` is false.
        """
        if not node.id or not node.id.strip():
            raise GraphError("node id must not be empty")
        if any(c in node.id for c in "\t\n\r"):
            raise GraphError(f"node id {node.id!r} must not contain tabs or newlines")
        if node.id in self and not replace_existing:
            raise GraphError(f"node {node.id!r} already exists")
        if node.domain != self.domain:
            node = replace(node, domain=self.domain)
        self.g.add_node(node.id, node=node)
        self._touch()

    def node(self, node_id: str) -> Node:
        """The :class:`Node` with this id.

        Raises:
            GraphError: when there is no such node.
        """
        node = self.get(node_id)
        if node is None:
            raise GraphError(f"no node {node_id!r} in the {self.domain} graph")
        return node

    def get(self, node_id: str) -> Node | None:
        if self._g is None:
            return self.snapshot.get(node_id)
        data = self.g.nodes.get(node_id)
        return None if data is None else data.get("node")

    def nodes(self) -> Iterator[Node]:
        for _, data in self.g.nodes(data=True):
            node = data.get("node")
            if node is not None:
                yield node

    def update_node(self, node_id: str, **changes: Any) -> Node:
        """Replace fields of an existing node (``label=``, ``synonyms=``, ``definition=``, ...)."""
        new = replace(self.node(node_id), **changes)
        self.g.nodes[node_id]["node"] = new
        self._touch()
        return new

    def remove_node(self, node_id: str) -> int:
        """Remove a node and its incident edges; returns how many edges went with it.

        Raises:
            GraphError: when there is no such node.
        """
        if node_id not in self.g:
            raise GraphError(f"no node {node_id!r} in the {self.domain} graph")
        n_edges = self.g.degree(node_id)
        self.g.remove_node(node_id)
        self._touch()
        return n_edges

    # ----------------------------------------------------------------- edges
    def add_edge(
        self,
        head: str,
        relation: str,
        tail: str,
        source: str = "",
        *,
        allow_dangling: bool = False,
        check_cycle: bool = False,
    ) -> bool:
        """Add ``head -relation-> tail``; returns False when the triple was already there.

        Args:
            allow_dangling: accept endpoints that are not (yet) nodes; importers add edges before all
                nodes exist, curation commands never do.
            check_cycle: refuse an is_a/instance_of edge that would close a cycle.

        Raises:
            GraphError: unknown relation, missing endpoint, self-loop, or a hierarchy cycle.
        """
        check_relation(relation)
        if head == tail:
            raise GraphError(f"self-loop {head!r} -{relation}-> {tail!r} is not allowed")
        if not allow_dangling:
            for end in (head, tail):
                if end not in self:
                    raise GraphError(f"no node {end!r} in the {self.domain} graph (add it first)")
        if self.g.has_edge(head, tail, key=relation):
            return False
        if check_cycle and relation in HIERARCHICAL and tail in self.g and self._reaches_up(tail, head):
            raise GraphError(f"{head!r} -{relation}-> {tail!r} would close a cycle in the is_a hierarchy")
        self.g.add_edge(head, tail, key=relation, source=source)
        self._touch()
        return True

    def _reaches_up(self, start: str, goal: str) -> bool:
        seen, stack = {start}, [start]
        while stack:
            u = stack.pop()
            if u == goal:
                return True
            for _, v, rel in self.g.out_edges(u, keys=True):
                if rel in HIERARCHICAL and v not in seen:
                    seen.add(v)
                    stack.append(v)
        return False

    def has_edge(self, head: str, relation: str, tail: str) -> bool:
        return self.g.has_edge(head, tail, key=relation)

    def remove_edge(self, head: str, relation: str, tail: str) -> None:
        """Remove one triple.

        Raises:
            GraphError: when the triple is not in the graph.
        """
        if not self.g.has_edge(head, tail, key=relation):
            raise GraphError(f"no edge {head!r} -{relation}-> {tail!r} in the {self.domain} graph")
        self.g.remove_edge(head, tail, key=relation)
        self._touch()

    def edges(self, relation: str | None = None) -> Iterator[Edge]:
        for h, t, rel, data in self.g.edges(keys=True, data=True):
            if relation is None or rel == relation:
                yield Edge(h, rel, t, data.get("source", ""))

    def parents(self, node_id: str) -> list[str]:
        """Direct is_a/instance_of parents."""
        return [t for _, t, rel in self.g.out_edges(node_id, keys=True) if rel in HIERARCHICAL]

    def children(self, node_id: str) -> list[str]:
        """Direct is_a/instance_of children."""
        return [h for h, _, rel in self.g.in_edges(node_id, keys=True) if rel in HIERARCHICAL]

    def neighbors(self, node_id: str) -> set[str]:
        """Adjacent nodes, ignoring direction and relation type."""
        return set(self.g.successors(node_id)) | set(self.g.predecessors(node_id))

    # ------------------------------------------------------------ whole graph
    def copy(self) -> KnowledgeGraph:
        """An independent copy (nodes are immutable, so they are shared)."""
        out = KnowledgeGraph(self.domain, meta=json.loads(json.dumps(self.meta)))
        out.g = self.g.copy()
        return out

    def dangling(self) -> list[str]:
        """Ids that appear in edges but have no node data."""
        return [n for n, data in self.g.nodes(data=True) if "node" not in data]

    def by_label(self) -> dict[str, list[str]]:
        """Normalised label -> node ids (all names, labels and synonyms)."""
        from kg.text import label_key

        out: dict[str, list[str]] = {}
        for node in self.nodes():
            for name in node.names():
                key = " ".join(label_key(name))
                if key:
                    out.setdefault(key, []).append(node.id)
        return out

    # ----------------------------------------------------- query-time signals
    @property
    def index(self) -> GraphIndex:
        """Derived structures for fast queries (built on first use, dropped on mutation)."""
        if self._index is None or self._index.version != self._version:
            from kg.index import GraphIndex

            self._index = GraphIndex(self)
        return self._index

    def path_distance(self, sources: Iterable[str], targets: Iterable[str], cap: int = 6) -> float:
        """Shortest undirected path between two concept sets, normalised by ``cap``.

        A bidirectional multi-source breadth-first search from all ``sources`` towards all ``targets``
        (relation types and directions ignored). Unknown ids are skipped.

        Args:
            sources: node ids (e.g. concepts linked in a text).
            targets: node ids (e.g. an expert's anchor concepts).
            cap: longest path that still counts as related.

        Returns:
            ``length / cap`` in [0, 1]; 0.0 when the sets share a node; 1.0 when either set is empty
            (after dropping unknown ids) or no path of length <= ``cap`` exists.
        """
        return self.index.path_distance(sources, targets, cap)

    def path_length(self, sources: Iterable[str], targets: Iterable[str], cap: int = 6) -> int | None:
        """Length of the shortest undirected path, or None when there is none within ``cap``."""
        return self.index.path_length(sources, targets, cap)

    def lca_distance(self, a: str, b: str) -> float:
        """Distance from the depth of the lowest common ancestor over is_a/instance_of (Wu–Palmer).

        ``1 - 2·depth(lca) / (depth(a) + depth(b))`` with depth counted in nodes from a root (a root has
        depth 1). 0.0 for the same node; 1.0 when the two share no ancestor or either id is unknown.
        """
        return self.index.lca_distance(a, b)

    def anchors(self, k: int = 20) -> list[str]:
        """The ``k`` most central linkable concepts (PageRank over the undirected graph).

        Suitable as an expert profile's KG anchors; synthetic roots and ``nolink`` nodes are skipped.
        """
        return self.index.anchors(k)
