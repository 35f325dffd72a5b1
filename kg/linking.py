"""Entity linking: find graph concepts mentioned in free text.

Matching is exact over *normalised token sequences* (see :mod:`kg.text`): every linkable label and
synonym becomes a pattern in a token trie (nested dicts keyed by normalised tokens). A text is
tokenised once and the trie is walked from every token, so each pattern occurrence is found in
``O(tokens × longest match)`` dict lookups with token boundaries built in. (A character-level
Aho–Corasick automaton over a 100k-token alphabet was tried: pyahocorasick's per-node child lists
made building it take tens of seconds on the general graph.) Overlaps are resolved longest-match-first,
then leftmost.

Filters keep common words from flooding the output: stop words, single tokens shorter than 3
characters, numbers, a small blocklist, and one-word names the importers flagged as usually meaning
something else (``attrs["minor"]``, see :func:`kg.importers.wordnet.mark_ambiguous_names`) are never
linked on their own; all-caps acronyms (``CPU``, ``HIV``) only match all-caps text. The word before a
match picks between noun and verb senses ("to appeal" / "the appeal"). When one name fits several concepts (WordNet
senses), the sense most often tagged with that very name wins (``counts`` attribute: WordNet's SemCor
counts per name), then the concept whose preferred label it is, then the better connected one; the
others are kept in ``Mention.candidates``.

Unmatched noun-phrase-like spans can be linked by an embedding fallback (``fallback=True``, see
:mod:`kg.fallback`): nearest concept label by MiniLM cosine similarity above a threshold.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kg.snapshot import gc_paused
from kg.text import STOPWORDS, is_acronym, label_key, norm_token, tokenize

if TYPE_CHECKING:
    from core.settings import Settings
    from kg.model import KnowledgeGraph

# Generic words that exist as concepts in some domain graphs but are almost never meant as those
# concepts in running text (chosen on a development sample disjoint from the precision sample).
BLOCKLIST: frozenset[str] = frozenset()

_END = ""  # trie key marking the end of a name (no token is empty)
_CACHE_FORMAT = 2  # of the on-disk linker patterns; bump when _collect, _Entry or kg.text's normalisation change
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mention:
    """A concept found in a text.

    Attributes:
        node_id: the linked concept.
        label: its preferred label.
        start: character offset where the mention starts in the text.
        end: character offset just after it.
        score: confidence in (0, 1]: 1.0 for an unambiguous preferred-label match; 0.9 for a synonym;
            times the chosen sense's smoothed share of the name's usage counts when the name is
            ambiguous; for embedding matches, the cosine similarity.
        method: ``exact`` (preferred label), ``synonym`` or ``embedding``.
        text: the surface string ``text[start:end]``.
        candidates: other concepts the same name could mean.
    """

    node_id: str
    label: str
    start: int
    end: int
    score: float
    method: str
    text: str = ""
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Entry:
    node_id: str
    is_label: bool
    acronym: str | None  # case-sensitive surface required, when the name is an acronym
    count: int  # how often this name was used for this concept (WordNet sense counts; 0 if unknown)
    connectivity: float
    pos: str  # WordNet part of speech (n, v, a, s, r) or "" for other sources


def _linkable_key(name: str, key: tuple[str, ...], block: frozenset[str]) -> bool:
    if not key:
        return False
    if len(key) == 1:
        tok = key[0]
        if tok in STOPWORDS or tok in block or not any(c.isalpha() for c in tok):
            return False
        return len(tok) >= 3 or is_acronym(name.strip())
    return not all(t in STOPWORDS or not any(c.isalpha() for c in t) for t in key)


# the word before a match hints at its part of speech ("to appeal" vs "the appeal")
_VERB_CUES = frozenset(
    "to will would can could may might shall should must did does do not never i we they you he she".split()  # noqa: SIM905
)
_NOUN_CUES = frozenset(
    "the a an this these those his her its their our my your each every no of in on for with by from at".split()  # noqa: SIM905
)


def _prefer_pos(entries: tuple[_Entry, ...], previous: str) -> tuple[_Entry, ...]:
    """Move the senses whose part of speech fits the previous word to the front (order kept within)."""
    if previous in _VERB_CUES:
        fits = ("v",)
    elif previous in _NOUN_CUES:
        fits = ("n", "")
    else:
        return entries
    first = tuple(e for e in entries if e.pos in fits)
    if not first or len(first) == len(entries):
        return entries
    return first + tuple(e for e in entries if e.pos not in fits)


class Linker:
    """A compiled matcher for one graph version (build once, link many texts).

    Args:
        graph: the graph whose labels and synonyms are matched.
        block: extra single words never linked alone.
    """

    def __init__(
        self,
        graph: KnowledgeGraph,
        *,
        block: Iterable[str] = (),
        compiled: tuple[dict, int] | None = None,
    ) -> None:
        self.version = graph.version
        self.domain = graph.domain
        self._graph = graph
        self._source: Path | None = None  # the disk cache the trie's branches are still read from, if any
        if compiled is not None:  # a trie read back by load(): entries stay raw lists until first matched
            self._trie, self.n_patterns = compiled
            return
        patterns = self._collect(graph, block)
        trie: dict = {}
        for key, entries in patterns.items():
            entries.sort(key=lambda e: (-e.count, not e.is_label, -e.connectivity, e.node_id))
            node = trie
            for tok in key:
                node = node.setdefault(tok, {})
            node[_END] = tuple(entries)
        self._trie = trie
        self.n_patterns = len(patterns)

    @staticmethod
    def _collect(graph: KnowledgeGraph, block: Iterable[str]) -> dict[tuple[str, ...], list[_Entry]]:
        """Normalised name -> the concepts it can mean (the costly part: every name of every node)."""
        blocked = BLOCKLIST | frozenset(norm_token(w) for w in block)
        patterns: dict[tuple[str, ...], list[_Entry]] = {}
        succ, pred = graph.g._succ, graph.g._pred  # plain dicts: the degree view is slow at this scale
        for node in graph.nodes():
            if node.attrs.get("nolink"):
                continue
            connectivity = math.log1p(len(succ[node.id]) + len(pred[node.id]))
            counts = node.attrs.get("counts") or ()
            minor = set(node.attrs.get("minor") or ())
            pos = node.attrs.get("pos", "")
            seen: set[tuple[str, ...]] = set()
            for k, name in enumerate(node.names()):
                key = label_key(name)
                if key in seen or name in minor or not _linkable_key(name, key, blocked):
                    continue
                seen.add(key)
                acro = name.strip() if len(key) == 1 and is_acronym(name.strip()) else None
                count = counts[k] if k < len(counts) else 0
                patterns.setdefault(key, []).append(_Entry(node.id, k == 0, acro, count, connectivity, pos))
        return patterns

    def save(self, path: Path) -> None:
        """Write the compiled trie as JSON (atomically), for :meth:`load` to skip compiling it."""

        def plain(node: dict) -> dict:
            return {
                tok: [[e.node_id, e.is_label, e.acronym, e.count, e.connectivity, e.pos] for e in child]
                if tok == _END
                else plain(child)
                for tok, child in node.items()
            }

        # one JSON text per first token: load() reads only this flat map, and a branch is parsed the first
        # time a text contains its token (a score touches a few dozen of the general graph's 100k branches)
        branches = {tok: json.dumps(plain(child), separators=(",", ":")) for tok, child in self._trie.items()}
        data = {"format": _CACHE_FORMAT, "n_patterns": self.n_patterns, "trie": branches}
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        tmp.replace(path)

    @classmethod
    def load(cls, graph: KnowledgeGraph, path: Path) -> Linker:
        """The linker of ``graph`` from the trie :meth:`save` wrote for the very same graph file.

        The trie's branches stay JSON text until :meth:`link` first walks into them.

        Raises:
            OSError, ValueError, KeyError, TypeError: unreadable or of another format.
        """
        with gc_paused():
            data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"linker cache {path} has format {found!r}, expected {_CACHE_FORMAT}")
        trie = data["trie"]
        if not isinstance(trie, dict) or not all(isinstance(v, str) for v in trie.values()):
            raise ValueError(f"linker cache {path}: the trie is not a map of JSON branches")
        linker = cls(graph, compiled=(trie, int(data["n_patterns"])))
        linker._source = path
        return linker

    def _branch(self, token: str) -> dict | None:
        """The trie below a first token (parsed from the disk cache's JSON on first use)."""
        node = self._trie.get(token)
        if isinstance(node, str):
            try:
                node = json.loads(node)
                if not isinstance(node, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # damaged on disk: compile the trie afresh, drop the file for the next process
                log.warning("damaged linker cache; compiling the patterns again",
                            extra={"path": str(self._source), "reason": str(exc)[:200]})
                if self._source is not None:
                    self._source.unlink(missing_ok=True)
                fresh = Linker(self._graph)
                self._trie, self.n_patterns, self._source = fresh._trie, fresh.n_patterns, None
                return self._trie.get(token)
            self._trie[token] = node
        return node

    def link(self, text: str) -> list[Mention]:
        """Exact (normalised) matches, longest first, non-overlapping, in text order."""
        if not self.n_patterns or not text:
            return []
        toks = tokenize(text)
        if not toks:
            return []
        norm = [norm_token(t[2]) for t in toks]
        n = len(norm)
        trie = self._trie
        found: list[tuple[int, int, tuple[_Entry, ...]]] = []
        for i in range(n):
            node = self._branch(norm[i]) if norm[i] in trie else None
            trie = self._trie  # a damaged cache branch makes _branch compile a new trie
            j = i
            while node is not None:
                entries = node.get(_END)
                if entries is not None and entries and not isinstance(entries[0], _Entry):
                    entries = node[_END] = tuple(_Entry(*e) for e in entries)  # from the disk cache
                if entries is not None:
                    if j == i:  # one-token name: acronyms must match case-sensitively
                        surface = toks[i][2]
                        entries = tuple(e for e in entries if e.acronym is None or e.acronym == surface)
                    if len(entries) > 1 and i > 0:
                        entries = _prefer_pos(entries, toks[i - 1][2].lower())
                    if entries:
                        found.append((i, j, entries))
                j += 1
                if j >= n:
                    break
                node = node.get(norm[j])
        found.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        taken = [False] * len(toks)
        out: list[Mention] = []
        for start_tok, end_tok, entries in found:
            if any(taken[start_tok : end_tok + 1]):
                continue
            for i in range(start_tok, end_tok + 1):
                taken[i] = True
            best = entries[0]
            node = self._graph.get(best.node_id)
            if node is None:
                continue
            # Laplace-smoothed share of the chosen sense among the name's senses (1.0 when unambiguous)
            share = (best.count + 1) / sum(e.count + 1 for e in entries)
            score = (1.0 if best.is_label else 0.9) * share
            start, end = toks[start_tok][0], toks[end_tok][1]
            out.append(
                Mention(
                    node_id=best.node_id,
                    label=node.label,
                    start=start,
                    end=end,
                    score=round(score, 4),
                    method="exact" if best.is_label else "synonym",
                    text=text[start:end],
                    candidates=tuple(e.node_id for e in entries[1:]),
                )
            )
        out.sort(key=lambda m: m.start)
        return out


_LINKERS: dict[int, Linker] = {}
_LOCK = threading.Lock()


def _cache_path(graph: KnowledgeGraph) -> Path | None:
    """Where the linker of an unmodified loaded graph is kept: ``$QSEF_HOME/kg/cache/``, by file digest."""
    if graph.origin is None or graph.origin[1] != graph.version or graph.cache_dir is None:
        return None
    folder = graph.cache_dir
    folder.mkdir(parents=True, exist_ok=True)
    # the format is in the name, so processes of different versions sharing a data dir never overwrite each other's
    return folder / f"linker-{graph.domain}-{graph.origin[0][:16]}-f{_CACHE_FORMAT}.json"


def _build_linker(graph: KnowledgeGraph) -> Linker:
    """A linker for ``graph``: read from the disk cache when this graph file was compiled before."""
    path = _cache_path(graph)
    if path is not None and path.is_file():
        try:
            return Linker.load(graph, path)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged or older cache: compile again
            log.warning("rebuilding linker cache", extra={"path": str(path), "reason": str(exc)[:200]})
    linker = Linker(graph)
    if path is not None:
        try:
            linker.save(path)
        except OSError as exc:  # a read-only data dir only costs the next process the compile
            log.warning("cannot write linker cache", extra={"path": str(path), "reason": str(exc)[:200]})
    return linker


def get_linker(graph: KnowledgeGraph) -> Linker:
    """The cached :class:`Linker` of a graph (rebuilt when the graph has changed).

    In memory per graph object; on disk per graph file digest (see :attr:`KnowledgeGraph.origin`), so a
    new process skips collecting the names of every node (seconds on the large graphs).
    """
    with _LOCK:
        linker = _LINKERS.get(id(graph))
    if linker is None or linker.version != graph.version or linker._graph is not graph:
        linker = _build_linker(graph)
        with _LOCK:
            _LINKERS[id(graph)] = linker
    return linker


def link(
    text: str, graph: KnowledgeGraph, *, fallback: bool = False, min_score: float = 0.0,
    settings: Settings | None = None,
) -> list[Mention]:
    """Link a text to concepts of ``graph``.

    Args:
        text: free text.
        graph: the domain graph.
        fallback: also try the embedding fallback on unmatched noun-phrase-like spans (loads the
            MiniLM encoder on first use; see :mod:`kg.fallback`).
        settings: where the fallback's encoder and label cache live (required with ``fallback``).
        min_score: drop mentions scoring below this.

    Returns:
        Mentions in text order, non-overlapping.
    """
    mentions = get_linker(graph).link(text)
    if fallback:
        from kg.fallback import embedding_mentions

        if settings is None:
            raise ValueError("link(..., fallback=True) needs settings (the encoder and label cache live there)")
        mentions = sorted(mentions + embedding_mentions(text, graph, mentions, settings=settings),
                          key=lambda m: m.start)
    return [m for m in mentions if m.score >= min_score]


def concept_density(text: str, graph: KnowledgeGraph, *, mentions: list[Mention] | None = None) -> float:
    """Share of the text's word tokens covered by linked concepts, in [0, 1] (0.0 for empty text)."""
    toks = tokenize(text)
    if not toks:
        return 0.0
    if mentions is None:
        mentions = link(text, graph)
    covered = sum(1 for s, e, _ in toks if any(m.start <= s and e <= m.end for m in mentions))
    return covered / len(toks)


class _UnionLinker:
    """Links against several graphs at once; each span keeps every graph's concept ids."""

    def __init__(self, graphs: Mapping[str, KnowledgeGraph]) -> None:
        self.key = tuple((name, id(g), g.version) for name, g in sorted(graphs.items()))
        self.linkers = {name: get_linker(g) for name, g in graphs.items()}

    def spans(self, text: str) -> list[tuple[int, int, set[str]]]:
        per_graph = [
            (m.start, m.end, {m.node_id, *m.candidates})
            for lk in self.linkers.values()
            for m in lk.link(text)
        ]
        per_graph.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        out: list[tuple[int, int, set[str]]] = []
        for s, e, ids in per_graph:
            same = next((o for o in out if o[0] == s and o[1] == e), None)
            if same is not None:
                same[2].update(ids)
            elif not any(o[0] < e and s < o[1] for o in out):
                out.append((s, e, set(ids)))
        return sorted(out)


_UNION: _UnionLinker | None = None


def coverage(text: str, graph: KnowledgeGraph, graphs: Mapping[str, KnowledgeGraph]) -> float:
    """Share of the text's concept mentions, linked against the union of all graphs, found in ``graph``.

    The text is linked against every graph in ``graphs`` (e.g. :func:`kg.load_all`) plus ``graph``; overlapping mentions are resolved longest-first across
    graphs. A mention counts as covered when any concept id that name denotes is a node of ``graph``.

    Returns:
        A value in [0, 1]; 0.0 when nothing in the text links to any graph.
    """
    global _UNION
    graphs = dict(graphs)
    if not any(g is graph for g in graphs.values()):
        graphs[f"_{graph.domain}"] = graph
    key = tuple((name, id(g), g.version) for name, g in sorted(graphs.items()))
    union = _UNION
    if union is None or union.key != key:
        union = _UnionLinker(graphs)
        _UNION = union
    spans = union.spans(text)
    if not spans:
        return 0.0
    hit = sum(1 for _, _, ids in spans if any(i in graph for i in ids))
    return hit / len(spans)
