"""The load cache of the domain graphs: a graph file's rows as flat numpy arrays, read back without parsing.

Reading ``general.kg.tsv.gz`` (118k concepts, 177k relations) means decompressing, splitting and
unescaping half a million lines and building a networkx graph of about a million Python objects —
seconds per process. A :class:`GraphSnapshot` holds the same rows as a handful of arrays in one ``.npz``
file under ``$QSEF_HOME/kg/cache/``: every string column is one UTF-8 blob plus character offsets, every
relation an index into those columns. Loading it is a few ``memcpy``s, and the graph it gives
(:meth:`GraphSnapshot.graph`) is *deferred*: node lookups (``graph.get``), ``in``, sizes and the query
index (:class:`kg.index.GraphIndex`, built straight from the edge arrays) are served from the arrays,
and the networkx graph is built only when something walks or edits it (``graph.g``). A ``qsef score``
touches a few dozen concepts, so it never pays for the rest.

Safety and freshness:

* the file is plain arrays read with ``allow_pickle=False`` — never unpickled, so a planted cache file can
  at worst be wrong, not run code;
* it is named and stamped with the SHA-256 of the graph file it was made from and :data:`SNAPSHOT_FORMAT`;
  an edited graph file has another digest, so it is parsed afresh and a new snapshot written;
* writes go to a temporary file beside the target and ``os.replace`` it, so readers never see half a file;
* anything wrong with a snapshot (truncated, foreign, inconsistent) raises :class:`SnapshotError` from
  :meth:`GraphSnapshot.load`; :func:`kg.storage.load_graph` then logs a warning and re-parses the graph.

Example:
    >>> rows = GraphRows("law", {}, [Node("x:a", "a")], [])
    >>> snap = GraphSnapshot.from_rows(rows, source_sha256="0" * 64)
    >>> snap.save(tmp / "graph-law.npz")
    >>> again = GraphSnapshot.load(tmp / "graph-law.npz", source_sha256="0" * 64, domain="law")
    >>> again.graph().get("x:a").label
    'a'
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from kg.model import HIERARCHICAL, KnowledgeGraph, Node, add_edge_rows

#: Version of the snapshot layout; bump it when the arrays, their meaning or :class:`GraphRows` change.
SNAPSHOT_FORMAT = 1

#: ``(head, tail, relation, source)`` of one relation row, in file order.
EdgeRow = tuple[str, str, str, str]


class SnapshotError(ValueError):
    """A snapshot file that cannot be used (unreadable, another format or graph file, inconsistent)."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Switch the cyclic garbage collector off while building many objects that form no cycles.

    Every few hundred new containers the collector scans the young objects, and now and then all of
    them; building a large graph (hundreds of thousands of dicts and tuples) spends seconds there for
    nothing. Safe with threads: the collector is switched back on by whoever switched it off.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class GraphRows:
    """A graph file's content in file order — what :func:`kg.storage.read_graph` parses.

    Attributes:
        domain: the graph's domain (the nodes carry it too).
        meta: the ``#meta`` object.
        nodes: the concepts, in file order.
        edges: the relations, in file order; endpoints without a node row ("dangling") are kept.
    """

    domain: str
    meta: dict[str, Any]
    nodes: list[Node]
    edges: list[EdgeRow]

    def dangling(self) -> list[str]:
        """Edge endpoints without a node row, in the order they first appear (heads before tails)."""
        known = {n.id for n in self.nodes}
        heads = (e[0] for e in self.edges if e[0] not in known)
        tails = (e[1] for e in self.edges if e[1] not in known)
        return list(dict.fromkeys([*heads, *tails]))

    def build(self) -> KnowledgeGraph:
        """The :class:`KnowledgeGraph` of these rows: nodes in file order, then dangling endpoints, then edges."""
        with gc_paused():
            graph = KnowledgeGraph(self.domain, meta=self.meta)
            g = graph.g
            g.add_nodes_from((n.id, {"node": n}) for n in self.nodes)
            g.add_nodes_from(self.dangling())
            add_edge_rows(g, self.edges)
        return graph


# ------------------------------------------------------------------------ string columns
def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One UTF-8 blob (uint8) and the ``len + 1`` character offsets of its strings."""
    offsets = np.zeros(len(strings) + 1, dtype=np.int64)
    if strings:
        np.cumsum([len(s) for s in strings], out=offsets[1:])
    blob = np.frombuffer("".join(strings).encode("utf-8"), dtype=np.uint8)
    return blob, offsets


class _Column:
    """A packed string column, decoded once; ``column[i]`` is the i-th string."""

    __slots__ = ("offsets", "text")

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, name: str) -> None:
        try:
            self.text = blob.tobytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SnapshotError(f"column {name} is not UTF-8: {exc}") from exc
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(self.text) \
                or (np.diff(offsets) < 0).any():
            raise SnapshotError(f"column {name} has inconsistent offsets")
        self.offsets = offsets.tolist()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.text[self.offsets[i] : self.offsets[i + 1]]

    def all(self) -> list[str]:
        text, off = self.text, self.offsets
        return [text[a:b] for a, b in pairwise(off)]


_COLUMNS = ("ids", "labels", "definitions", "sources", "synonyms", "attrs", "relations", "edge_sources")
_INTS = ("synonym_ptr", "attr_index", "head", "tail", "rel", "edge_source",
         "neighbour_ptr", "neighbours", "parent_ptr", "parents")


def _csr_adjacency(n: int, head: np.ndarray, tail: np.ndarray, rel: np.ndarray,
                   relations: Sequence[str]) -> dict[str, np.ndarray]:
    """Undirected neighbours (sorted, without repeats) and is_a/instance_of parents (in edge order) of ``n``
    ids as compressed rows: the neighbours of id ``i`` are ``neighbours[neighbour_ptr[i]:neighbour_ptr[i + 1]]``."""
    h, t = head.astype(np.int64), tail.astype(np.int64)
    pairs = np.unique(np.concatenate([h * n + t, t * n + h]))
    hier = np.array([r in HIERARCHICAL for r in relations] + [False], dtype=bool)
    mask = hier[rel] if len(rel) else np.zeros(0, dtype=bool)
    order = np.argsort(h[mask], kind="stable")
    out = {}
    for name, src, dst in (("neighbour", pairs // n, pairs % n), ("parent", h[mask][order], t[mask][order])):
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=ptr[1:])
        out[f"{name}_ptr"], out[f"{name}s"] = ptr, dst.astype(np.int32)
    return out


class RaggedRows(Sequence):
    """Rows of ints stored compressed (offsets + values); ``rows[i]`` is a tuple, like a list of tuples."""

    __slots__ = ("_ptr", "_values")

    def __init__(self, ptr: np.ndarray, values: np.ndarray) -> None:
        self._ptr, self._values = ptr.tolist(), values.tolist()

    def __len__(self) -> int:
        return len(self._ptr) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return tuple(self._values[self._ptr[i] : self._ptr[i + 1]])

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        v, p = self._values, self._ptr
        return (tuple(v[a:b]) for a, b in pairwise(p))


class GraphSnapshot:
    """A graph's rows as arrays (see the module docstring); build with :meth:`from_rows` or :meth:`load`.

    Node ``i`` (``i < n_nodes``) is the i-th node row; ids ``n_nodes ..`` are the dangling endpoints. Edge ``k``
    is ``ids[head[k]] -relations[rel[k]]-> ids[tail[k]]`` asserted by ``edge_sources[edge_source[k]]``.
    """

    def __init__(self, header: dict[str, Any], columns: dict[str, _Column], ints: dict[str, np.ndarray]) -> None:
        self.header = header
        self.domain: str = header["domain"]
        self.meta: dict[str, Any] = header["meta"]
        self._col = columns
        self._int = ints
        self.ids: list[str] = columns["ids"].all()
        self.n_nodes = len(columns["labels"])
        self.pos: dict[str, int] = {nid: i for i, nid in enumerate(self.ids)}
        self._nodes: dict[int, Node] = {}
        self._attrs: dict[int, dict[str, Any]] = {-1: {}}
        self._check()

    # ----------------------------------------------------------------- writing
    @classmethod
    def from_rows(cls, rows: GraphRows, *, source_sha256: str) -> GraphSnapshot:
        """The snapshot of parsed rows; ``source_sha256`` is the digest of the file they came from."""
        ids = [n.id for n in rows.nodes] + rows.dangling()
        pos = {nid: i for i, nid in enumerate(ids)}
        attrs: dict[str, int] = {}
        attr_idx = np.full(len(rows.nodes), -1, dtype=np.int32)
        syn_ptr = np.zeros(len(rows.nodes) + 1, dtype=np.int64)
        synonyms: list[str] = []
        for i, node in enumerate(rows.nodes):
            synonyms.extend(node.synonyms)
            syn_ptr[i + 1] = len(synonyms)
            if node.attrs:
                key = json.dumps(dict(node.attrs), sort_keys=True, ensure_ascii=False)
                attr_idx[i] = attrs.setdefault(key, len(attrs))
        relations: dict[str, int] = {}
        edge_sources: dict[str, int] = {}
        n_edges = len(rows.edges)
        head, tail = np.empty(n_edges, dtype=np.int32), np.empty(n_edges, dtype=np.int32)
        rel, esrc = np.empty(n_edges, dtype=np.int32), np.empty(n_edges, dtype=np.int32)
        for k, (h, t, r, s) in enumerate(rows.edges):
            head[k], tail[k] = pos[h], pos[t]
            rel[k] = relations.setdefault(r, len(relations))
            esrc[k] = edge_sources.setdefault(s, len(edge_sources))
        strings = {
            "ids": ids, "labels": [n.label for n in rows.nodes], "definitions": [n.definition for n in rows.nodes],
            "sources": [n.source for n in rows.nodes], "synonyms": synonyms, "attrs": list(attrs),
            "relations": list(relations), "edge_sources": list(edge_sources),
        }
        columns = {name: _Column(*_pack(values), name) for name, values in strings.items()}
        header = {"format": SNAPSHOT_FORMAT, "source_sha256": source_sha256, "domain": rows.domain,
                  "meta": rows.meta}
        ints = {"synonym_ptr": syn_ptr, "attr_index": attr_idx, "head": head, "tail": tail, "rel": rel,
                "edge_source": esrc}
        ints.update(_csr_adjacency(len(ids), head, tail, rel, list(relations)))
        return cls(header, columns, ints)

    def save(self, path: str | Path) -> Path:
        """Write the snapshot atomically (temp file beside ``path``, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "header": np.frombuffer(json.dumps(self.header, sort_keys=True).encode("utf-8"), dtype=np.uint8)}
        for name, col in self._col.items():
            arrays[f"{name}.blob"] = np.frombuffer(col.text.encode("utf-8"), dtype=np.uint8)
            arrays[f"{name}.offsets"] = np.asarray(col.offsets, dtype=np.int64)
        arrays.update(self._int)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; the cache is an ordinary file of the data dir
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return path

    # ----------------------------------------------------------------- reading
    @classmethod
    def load(cls, path: str | Path, *, source_sha256: str, domain: str) -> GraphSnapshot:
        """Read a snapshot made from the graph file with digest ``source_sha256`` for ``domain``.

        Raises:
            FileNotFoundError: no such file.
            SnapshotError: anything else that makes it unusable (damaged, another format, graph or domain).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except FileNotFoundError:
            raise
        except Exception as exc:  # a damaged zip/npy raises many kinds (BadZipFile, ValueError, EOFError, ...)
            raise SnapshotError(f"unreadable graph snapshot {path}: {exc}") from exc
        try:
            header = json.loads(arrays["header"].tobytes().decode("utf-8"))
            if not isinstance(header, dict):
                raise SnapshotError("header is not a JSON object")
            if header.get("format") != SNAPSHOT_FORMAT:
                raise SnapshotError(f"format {header.get('format')!r}, expected {SNAPSHOT_FORMAT}")
            if header.get("source_sha256") != source_sha256 or header.get("domain") != domain:
                raise SnapshotError("made from another graph file or domain")
            if not isinstance(header.get("meta"), dict):
                raise SnapshotError("header has no meta object")
            columns = {name: _Column(arrays[f"{name}.blob"], arrays[f"{name}.offsets"], name) for name in _COLUMNS}
            ints = {name: arrays[name] for name in _INTS}
            return cls(header, columns, ints)
        except SnapshotError as exc:
            raise SnapshotError(f"graph snapshot {path}: {exc}") from None
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"graph snapshot {path}: {exc}") from exc

    def _check(self) -> None:
        """Raise :class:`SnapshotError` unless every array agrees with the columns it indexes."""
        n_ids, n, i = len(self.ids), self.n_nodes, self._int
        if n > n_ids or len(self.pos) != n_ids:
            raise SnapshotError("node ids are missing or repeated")
        if len(self._col["definitions"]) != n or len(self._col["sources"]) != n or len(i["attr_index"]) != n:
            raise SnapshotError("node columns differ in length")
        ptr = i["synonym_ptr"]
        if len(ptr) != n + 1 or ptr[0] != 0 or ptr[-1] != len(self._col["synonyms"]) or (np.diff(ptr) < 0).any():
            raise SnapshotError("synonym offsets are inconsistent")
        if len(i["attr_index"]) and not (i["attr_index"].min() >= -1 and i["attr_index"].max() < len(self._col["attrs"])):
            raise SnapshotError("attribute index out of range")
        n_edges = len(i["head"])
        if any(len(i[k]) != n_edges for k in ("tail", "rel", "edge_source")):
            raise SnapshotError("edge arrays differ in length")
        for key, bound in (("head", n_ids), ("tail", n_ids), ("rel", len(self._col["relations"])),
                           ("edge_source", len(self._col["edge_sources"])), ("neighbours", n_ids), ("parents", n_ids)):
            if len(i[key]) and not (i[key].min() >= 0 and i[key].max() < bound):
                raise SnapshotError(f"{key} index out of range")
        for name in ("neighbour", "parent"):
            ptr = i[f"{name}_ptr"]
            if len(ptr) != n_ids + 1 or ptr[0] != 0 or ptr[-1] != len(i[f"{name}s"]) or (np.diff(ptr) < 0).any():
                raise SnapshotError(f"{name} offsets are inconsistent")

    # ----------------------------------------------------------------- nodes and edges
    def node_at(self, i: int) -> Node:
        """Node row ``i`` (built on first use, then the same object every time)."""
        node = self._nodes.get(i)
        if node is None:
            col, ptr = self._col, self._int["synonym_ptr"]
            synonyms = tuple(col["synonyms"][k] for k in range(int(ptr[i]), int(ptr[i + 1])))
            a = int(self._int["attr_index"][i])
            attrs = self._attrs.get(a)
            if attrs is None:  # identical attrs share one read-only dict, as read_graph does
                attrs = self._attrs[a] = json.loads(col["attrs"][a])
            node = Node(self.ids[i], col["labels"][i], synonyms, col["definitions"][i], self.domain,
                        col["sources"][i], attrs)
            self._nodes[i] = node
        return node

    def get(self, node_id: str) -> Node | None:
        """The node with this id, ``None`` for an unknown id or a dangling endpoint."""
        i = self.pos.get(node_id)
        return None if i is None or i >= self.n_nodes else self.node_at(i)

    @property
    def n_edges(self) -> int:
        return len(self._int["head"])

    def edge_rows(self) -> list[EdgeRow]:
        """Every relation as ``(head, tail, relation, source)``, in file order."""
        ids, rels, srcs = self.ids, self._col["relations"].all(), self._col["edge_sources"].all()
        i = self._int
        return [(ids[h], ids[t], rels[r], srcs[s])
                for h, t, r, s in zip(i["head"].tolist(), i["tail"].tolist(), i["rel"].tolist(),
                                      i["edge_source"].tolist(), strict=True)]

    def rows(self) -> GraphRows:
        """The parsed rows back, equal to what :func:`kg.storage.read_graph` parsed from the graph file."""
        with gc_paused():
            nodes = [self.node_at(i) for i in range(self.n_nodes)]
            return GraphRows(self.domain, self.meta, nodes, self.edge_rows())

    def graph(self) -> KnowledgeGraph:
        """A deferred :class:`KnowledgeGraph` of this snapshot (see :meth:`KnowledgeGraph.deferred`)."""
        return KnowledgeGraph.deferred(self)

    def networkx(self) -> Any:
        """The full ``networkx.MultiDiGraph``, as :meth:`GraphRows.build` makes it."""
        return self.rows().build().g

    def adjacency(self) -> tuple[RaggedRows, RaggedRows]:
        """``(undirected neighbours, is_a/instance_of parents)`` per id, as :class:`kg.index.GraphIndex` keeps them
        (neighbours sorted, parents in the file order of their edges), read from the precomputed arrays."""
        i = self._int
        return RaggedRows(i["neighbour_ptr"], i["neighbours"]), RaggedRows(i["parent_ptr"], i["parents"])
