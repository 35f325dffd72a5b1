"""Query-time structures derived from a :class:`~kg.model.KnowledgeGraph`, built once per graph version.

* integer ids and an undirected adjacency list (tuples of ints) for breadth-first search;
* is_a/instance_of parents and node depths for lowest-common-ancestor distances;
* PageRank centrality for anchor concepts.

Everything here is read-only; the graph drops its index on any mutation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from kg.model import HIERARCHICAL

if TYPE_CHECKING:
    from kg.model import KnowledgeGraph


class GraphIndex:
    """Integer adjacency, hierarchy depths and centrality for one graph version."""

    def __init__(self, graph: KnowledgeGraph) -> None:
        self.version = graph.version
        self._graph = graph
        self.adj: Sequence[tuple[int, ...]]  # a list of tuples, or the snapshot's compressed rows
        self.parents: Sequence[tuple[int, ...]]
        if graph.snapshot is not None:  # a deferred graph: straight from the snapshot's edge arrays
            self.ids: list[str] = graph.snapshot.ids
            self.pos: dict[str, int] = graph.snapshot.pos
            self.adj, self.parents = graph.snapshot.adjacency()
        else:
            g = graph.g
            self.ids = list(g.nodes)
            self.pos = {n: i for i, n in enumerate(self.ids)}
            adj: list[set[int]] = [set() for _ in self.ids]
            parents: list[list[int]] = [[] for _ in self.ids]
            pos = self.pos
            for h, t, rel in g.edges(keys=True):
                i, j = pos[h], pos[t]
                adj[i].add(j)
                adj[j].add(i)
                if rel in HIERARCHICAL:
                    parents[i].append(j)
            self.adj = [tuple(s) for s in adj]
            self.parents = [tuple(p) for p in parents]
        self._depth: np.ndarray | None = None
        self._pagerank: np.ndarray | None = None
        self._ancestors = lru_cache(maxsize=65536)(self._ancestors_uncached)

    # ------------------------------------------------------------ path distance
    def _known(self, ids: Iterable[str]) -> set[int]:
        pos = self.pos
        return {pos[i] for i in ids if i in pos}

    def path_length(self, sources: Iterable[str], targets: Iterable[str], cap: int = 6) -> int | None:
        """Bidirectional multi-source BFS; None when either set is empty or no path within ``cap``."""
        src, dst = self._known(sources), self._known(targets)
        if not src or not dst:
            return None
        if src & dst:
            return 0
        adj = self.adj
        seen_s, seen_t = set(src), set(dst)
        front_s, front_t = src, dst
        ds = dt = 0
        while ds + dt < cap and front_s and front_t:
            # expand the side whose frontier has fewer edges to scan
            cost_s = sum(len(adj[u]) for u in front_s)
            cost_t = sum(len(adj[u]) for u in front_t)
            if cost_s <= cost_t:
                nxt = set()
                for u in front_s:
                    for v in adj[u]:
                        if v not in seen_s:
                            if v in seen_t:
                                return ds + dt + 1
                            seen_s.add(v)
                            nxt.add(v)
                front_s, ds = nxt, ds + 1
            else:
                nxt = set()
                for u in front_t:
                    for v in adj[u]:
                        if v not in seen_t:
                            if v in seen_s:
                                return ds + dt + 1
                            seen_t.add(v)
                            nxt.add(v)
                front_t, dt = nxt, dt + 1
        return None

    def path_distance(self, sources: Iterable[str], targets: Iterable[str], cap: int = 6) -> float:
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        length = self.path_length(sources, targets, cap)
        return 1.0 if length is None else min(1.0, length / cap)

    # ------------------------------------------------------------- hierarchy
    @property
    def depth(self) -> np.ndarray:
        """Depth of each node in the is_a hierarchy (roots 1; nodes outside it 0).

        The depth is the shortest distance to a root plus one, computed top-down by BFS.
        """
        if self._depth is None:
            n = len(self.ids)
            children: list[list[int]] = [[] for _ in range(n)]
            has_parent = np.zeros(n, dtype=bool)
            in_hierarchy = np.zeros(n, dtype=bool)
            for i, ps in enumerate(self.parents):
                if ps:
                    has_parent[i] = True
                    in_hierarchy[i] = True
                    for p in ps:
                        children[p].append(i)
                        in_hierarchy[p] = True
            depth = np.zeros(n, dtype=np.int32)
            frontier = [i for i in range(n) if in_hierarchy[i] and not has_parent[i]]
            for i in frontier:
                depth[i] = 1
            d = 1
            while frontier:
                d += 1
                nxt = []
                for u in frontier:
                    for c in children[u]:
                        if depth[c] == 0:
                            depth[c] = d
                            nxt.append(c)
                frontier = nxt
            # nodes only on cycles never got a depth from a root; give them one so distances stay defined
            depth[(depth == 0) & in_hierarchy] = 1
            self._depth = depth
        return self._depth

    def _ancestors_uncached(self, i: int) -> dict[int, int]:
        """Ancestor -> upward distance, including the node itself at distance 0."""
        out = {i: 0}
        frontier = [i]
        d = 0
        parents = self.parents
        while frontier:
            d += 1
            nxt = []
            for u in frontier:
                for p in parents[u]:
                    if p not in out:
                        out[p] = d
                        nxt.append(p)
            frontier = nxt
        return out

    def lca(self, a: str, b: str) -> str | None:
        """The deepest common is_a ancestor of two nodes (ties: the one closest to both)."""
        if a not in self.pos or b not in self.pos:
            return None
        best = self._lca(self.pos[a], self.pos[b])
        return None if best is None else self.ids[best]

    def _lca(self, i: int, j: int) -> int | None:
        anc_i, anc_j = self._ancestors(i), self._ancestors(j)
        if len(anc_i) > len(anc_j):
            anc_i, anc_j = anc_j, anc_i
        depth = self.depth
        best, best_key = None, None
        for c, d in anc_i.items():
            if c in anc_j:
                key = (int(depth[c]), -(d + anc_j[c]))
                if best_key is None or key > best_key:
                    best, best_key = c, key
        return best

    def lca_distance(self, a: str, b: str) -> float:
        if a not in self.pos or b not in self.pos:
            return 1.0
        i, j = self.pos[a], self.pos[b]
        if i == j:
            return 0.0
        c = self._lca(i, j)
        if c is None:
            return 1.0
        depth = self.depth
        di, dj, dc = int(depth[i]), int(depth[j]), int(depth[c])
        if di + dj == 0:
            return 1.0
        return float(min(1.0, max(0.0, 1.0 - 2.0 * dc / (di + dj))))

    # ------------------------------------------------------------ centrality
    @property
    def pagerank(self) -> np.ndarray:
        """PageRank over the undirected graph (power iteration on a sparse matrix, damping 0.85)."""
        if self._pagerank is None:
            from scipy import sparse

            n = len(self.ids)
            rows = np.fromiter((i for i, nb in enumerate(self.adj) for _ in nb), dtype=np.int64)
            cols = np.fromiter((j for nb in self.adj for j in nb), dtype=np.int64)
            deg = np.array([len(nb) for nb in self.adj], dtype=np.float64)
            vals = 1.0 / deg[rows] if len(rows) else np.zeros(0)
            m = sparse.csr_matrix((vals, (cols, rows)), shape=(n, n))  # column-stochastic
            r = np.full(n, 1.0 / max(n, 1))
            dangling = deg == 0
            for _ in range(100):
                r_new = 0.85 * (m @ r + r[dangling].sum() / n) + 0.15 / n
                if np.abs(r_new - r).sum() < 1e-9:
                    r = r_new
                    break
                r = r_new
            self._pagerank = r
        return self._pagerank

    def anchors(self, k: int) -> list[str]:
        """Top-``k`` PageRank concepts, with per-source quotas proportional to each source's size.

        Without quotas one hub-heavy source (HPO's "Abnormal ... concentration" classes, FOLDOC's
        acronym lists) takes every slot; quotas keep the anchors representative of the whole domain.
        """
        if k <= 0:
            return []
        pr = self.pagerank
        by_source: dict[str, list[int]] = {}
        for i, nid in enumerate(self.ids):
            node = self._graph.get(nid)
            if node is None or node.attrs.get("nolink") or node.attrs.get("synthetic"):
                continue
            by_source.setdefault(node.source, []).append(i)
        total = sum(len(v) for v in by_source.values())
        if total == 0:
            return []
        # largest-remainder apportionment of k slots, at least one per source while slots last
        shares = {s: k * len(v) / total for s, v in by_source.items()}
        quota = {s: int(x) for s, x in shares.items()}
        for s in sorted(shares, key=lambda s: (quota[s] > 0, -(shares[s] - quota[s]))):
            if sum(quota.values()) >= k:
                break
            quota[s] += 1
        picked: list[int] = []
        for s, members in by_source.items():
            members.sort(key=lambda i: -pr[i])
            picked.extend(members[: quota[s]])
        picked.sort(key=lambda i: -pr[i])
        return [self.ids[i] for i in picked[:k]]
