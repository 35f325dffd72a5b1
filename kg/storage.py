"""On-disk format, atomic saves, the cached loader and exports.

A graph is one gzip-compressed, tab-separated text file ``<domain>.kg.tsv.gz``::

    #qsef-kg	1
    #meta	{"domain": "law", "sources": {...}, "counts": {...}}
    N	<id>	<label>	<synonyms joined by \\x1f>	<definition>	<source>	<attrs JSON or empty>
    ...
    E	<head>	<relation>	<tail>	<source>
    ...

Line 1 names the format and its version; fields escape backslash, tab, newline and ``\\x1f`` with a
backslash. Readers refuse unknown versions and report malformed rows as ``file:line: problem``.

Saves write a temporary file beside the target, fsync it, keep the previous file as ``<name>.bak``
and rename the new one into place, so a crash or a failed command never leaves a half-written graph.

Where graphs live: the shipped defaults in ``kg/data/`` (read-only), and user-curated copies in
``$QSEF_HOME/kg/`` which, when present, win over the shipped ones.

Loading: :func:`load_graph` keeps each graph file's parsed rows as a snapshot in
``$QSEF_HOME/kg/cache/graph-<domain>-<digest>-f<format>.npz`` (see :mod:`kg.snapshot`), so a new process reads
arrays instead of parsing text and builds the networkx graph only if it walks or edits it.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.domains import DOMAINS
from core.store.fetch import sha256_file
from kg.errors import GraphError, GraphFormatError
from kg.model import Edge, KnowledgeGraph, Node, check_domain
from kg.snapshot import SNAPSHOT_FORMAT, EdgeRow, GraphRows, GraphSnapshot, SnapshotError, gc_paused

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

FORMAT_NAME = "#qsef-kg"
FORMAT_VERSION = 1
SUFFIX = ".kg.tsv.gz"
SYN_SEP = "\x1f"
DATA_DIR = Path(__file__).resolve().parent / "data"

_ESC = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", SYN_SEP: "\\u"}
_UNESC = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "u": SYN_SEP}


def _escape(s: str) -> str:
    if not any(c in s for c in _ESC):
        return s
    return "".join(_ESC.get(c, c) for c in s)


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    out, it = [], iter(s)
    for c in it:
        if c == "\\":
            nxt = next(it, "")
            if nxt not in _UNESC:
                raise ValueError(f"bad escape sequence \\{nxt}")
            out.append(_UNESC[nxt])
        else:
            out.append(c)
    return "".join(out)


# --------------------------------------------------------------------- reading
def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="\n")
    return open(path, encoding="utf-8", newline="\n")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); decoding errors name the file."""
    try:
        with _open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                yield n, line.rstrip("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # truncated gzip, bad bytes
        raise GraphFormatError(path, 0, f"cannot read: {exc}") from exc


def read_graph(path: str | Path, *, domain: str | None = None) -> KnowledgeGraph:
    """Read a graph file.

    Args:
        path: a ``.kg.tsv.gz`` file (plain, uncompressed files in the same format are accepted too).
        domain: override the domain recorded in the file.

    Raises:
        FileNotFoundError: when the file does not exist.
        GraphFormatError: naming the file and line of the first malformed row.
    """
    return read_rows(path, domain=domain).build()



def _json_object(text: str, path: Path | str, n: int, what: str) -> dict:
    """``text`` parsed as a JSON object, or a :class:`GraphFormatError` naming ``what``, the file and the line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GraphFormatError(path, n, f"{what} {'are' if what.endswith('s') else 'is'} not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise GraphFormatError(path, n, f"{what} must be a JSON object")
    return value

def read_rows(path: str | Path, *, domain: str | None = None) -> GraphRows:
    """The rows of a graph file in file order (what :func:`read_graph` builds its graph from).

    Raises:
        FileNotFoundError, GraphFormatError: as :func:`read_graph`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"graph file {path} does not exist")
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise GraphFormatError(path, 1, f"empty file; expected a '{FORMAT_NAME}\\t{FORMAT_VERSION}' header")
    head = first[1].split("\t")
    if head[0] != FORMAT_NAME or len(head) != 2:
        raise GraphFormatError(path, 1, f"not a QSEF graph file: expected '{FORMAT_NAME}\\t<version>' header")
    if head[1] != str(FORMAT_VERSION):
        raise GraphFormatError(
            path, 1, f"unsupported format version {head[1]!r}; this reader knows {FORMAT_VERSION}"
        )
    meta: dict[str, Any] = {}
    started = False
    node_rows: dict[str, Node] = {}
    edge_rows: list[EdgeRow] = []
    attrs_memo: dict[str, dict[str, Any]] = {"": {}}
    dom = domain
    with gc_paused():  # hundreds of thousands of rows and no cycles among them: no collector passes
        for n, line in lines:
            if not line:
                continue
            kind, _, rest = line.partition("\t")
            if kind == "#meta":
                if started:
                    raise GraphFormatError(path, n, "#meta must come before the node and edge rows")
                meta = _json_object(rest, path, n, "#meta")
                continue
            if kind.startswith("#"):
                continue
            if not started:
                started = True
                dom = domain or str(meta.get("domain", ""))
            fields = rest.split("\t")
            raw_syns = fields[2] if kind == "N" and len(fields) > 2 else ""
            escaped = "\\" in rest
            if escaped:
                try:
                    fields = [_unescape(f) for f in fields]
                    # split before unescaping: an escaped separator belongs to the synonym
                    synonyms = tuple(_unescape(x) for x in raw_syns.split(SYN_SEP)) if raw_syns else ()
                except ValueError as exc:
                    raise GraphFormatError(path, n, str(exc)) from exc
            else:
                synonyms = tuple(raw_syns.split(SYN_SEP)) if raw_syns else ()
            if kind == "N":
                if len(fields) != 6:
                    raise GraphFormatError(
                        path, n, f"node row needs 7 tab-separated fields, got {len(fields) + 1}"
                    )
                nid, label, _, definition, source, attrs = fields
                if not nid:
                    raise GraphFormatError(path, n, "node row has an empty id")
                if nid in node_rows:
                    raise GraphFormatError(path, n, f"duplicate node id {nid!r}")
                parsed_attrs = attrs_memo.get(attrs)
                if parsed_attrs is None:
                    parsed_attrs = _json_object(attrs, path, n, "node attrs")
                    if len(attrs_memo) < 4096:  # identical attrs (e.g. {"pos": "n"}) share one read-only dict
                        attrs_memo[attrs] = parsed_attrs
                node_rows[nid] = Node(nid, label, synonyms, definition, dom, source, parsed_attrs)
            elif kind == "E":
                if len(fields) != 4:
                    raise GraphFormatError(
                        path, n, f"edge row needs 5 tab-separated fields, got {len(fields) + 1}"
                    )
                h, rel, t, source = fields
                if not h or not t or not rel:
                    raise GraphFormatError(path, n, "edge row has an empty head, relation or tail")
                # unknown relations and dangling endpoints are kept so `validate` can report them
                edge_rows.append((h, t, rel, source))
            else:
                raise GraphFormatError(path, n, f"unknown row kind {kind!r}; expected N, E or #meta")
    return GraphRows(dom or str(meta.get("domain", "")), meta, list(node_rows.values()), edge_rows)


def read_triples(path: str | Path) -> list[Edge]:
    """Read a triples file: ``head<TAB>relation<TAB>tail[<TAB>source]`` per line (``#`` comments).

    Raises:
        GraphFormatError: naming the file and line of a malformed row or an unknown relation.
    """
    from kg.model import RELATIONS

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"triples file {path} does not exist")
    out: list[Edge] = []
    for n, line in _lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) not in (3, 4):
            raise GraphFormatError(
                path,
                n,
                f"expected 3 or 4 tab-separated fields (head, relation, tail[, source]), got {len(fields)}",
            )
        h, rel, t = (f.strip() for f in fields[:3])
        if not h or not rel or not t:
            raise GraphFormatError(path, n, "empty head, relation or tail")
        if rel not in RELATIONS:
            raise GraphFormatError(path, n, f"unknown relation {rel!r}; allowed: {', '.join(RELATIONS)}")
        out.append(Edge(h, rel, t, fields[3].strip() if len(fields) == 4 else "user"))
    return out


def read_nodes_jsonl(path: str | Path) -> list[Node]:
    """Read nodes from JSON lines: ``{"id", "label", "synonyms"?, "definition"?, "attrs"?}`` per line.

    Raises:
        GraphFormatError: naming the file and line of a malformed row.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nodes file {path} does not exist")
    out: list[Node] = []
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GraphFormatError(path, n, f"invalid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise GraphFormatError(path, n, "each line must be a JSON object")
        nid, label = row.get("id"), row.get("label")
        if not isinstance(nid, str) or not nid.strip():
            raise GraphFormatError(path, n, "missing or empty 'id'")
        if not isinstance(label, str) or not label.strip():
            raise GraphFormatError(path, n, "missing or empty 'label'")
        syns = row.get("synonyms", [])
        if not isinstance(syns, list) or not all(isinstance(s, str) for s in syns):
            raise GraphFormatError(path, n, "'synonyms' must be a list of strings")
        attrs = row.get("attrs", {})
        if not isinstance(attrs, dict):
            raise GraphFormatError(path, n, "'attrs' must be an object")
        out.append(
            Node(
                nid,
                label,
                tuple(syns),
                str(row.get("definition", "")),
                source=str(row.get("source", "user")),
                attrs=attrs,
            )
        )
    return out


# --------------------------------------------------------------------- writing
def _rows(graph: KnowledgeGraph) -> Iterator[str]:
    meta = dict(graph.meta)
    meta["domain"] = graph.domain
    meta["counts"] = {"nodes": graph.number_of_nodes(), "edges": graph.number_of_edges()}
    yield f"{FORMAT_NAME}\t{FORMAT_VERSION}\n"
    yield f"#meta\t{json.dumps(meta, sort_keys=True, ensure_ascii=False)}\n"
    for node in sorted(graph.nodes(), key=lambda x: x.id):
        attrs = json.dumps(dict(node.attrs), sort_keys=True, ensure_ascii=False) if node.attrs else ""
        syns = SYN_SEP.join(_escape(s) for s in node.synonyms)
        yield (
            "\t".join(
                (
                    "N",
                    _escape(node.id),
                    _escape(node.label),
                    syns,
                    _escape(node.definition),
                    _escape(node.source),
                    _escape(attrs),
                )
            )
            + "\n"
        )
    for e in sorted(graph.edges(), key=lambda x: (x.head, x.relation, x.tail)):
        yield (
            "\t".join(("E", _escape(e.head), _escape(e.relation), _escape(e.tail), _escape(e.source))) + "\n"
        )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, chunks: Iterator[str], *, compress: bool, backup: bool = True) -> Path:
    """Write text atomically: temp file in the same folder, fsync, keep ``.bak``, rename into place.

    If writing fails, the temp file is removed and the target is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; saved graphs are ordinary files
        with os.fdopen(fd, "wb") as raw:
            if compress:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                    writer = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
                    for chunk in chunks:
                        writer.write(chunk)
                    writer.flush()
                    writer.detach()
            else:
                writer = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
                for chunk in chunks:
                    writer.write(chunk)
                writer.flush()
                writer.detach()
            raw.flush()
            os.fsync(raw.fileno())
        if backup and path.exists():
            bak = path.with_name(path.name + ".bak")
            shutil.copy2(path, bak.with_name(bak.name + ".tmp"))
            os.replace(bak.with_name(bak.name + ".tmp"), bak)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_graph(graph: KnowledgeGraph, path: str | Path, *, backup: bool = True) -> Path:
    """Save a graph atomically (gzip unless ``path`` does not end in ``.gz``); keeps ``<path>.bak``."""
    path = Path(path)
    return atomic_write(path, _rows(graph), compress=path.suffix == ".gz", backup=backup)


# --------------------------------------------------------------------- loading
def shipped_path(domain: str) -> Path:
    """The default graph shipped with the package."""
    return DATA_DIR / f"{check_domain(domain)}{SUFFIX}"


def user_dir(settings: Settings) -> Path:
    """``$QSEF_HOME/kg`` (created on demand): curated graphs, exports, embeddings, caches."""
    return settings.path("kg")


def user_path(settings: Settings, domain: str) -> Path:
    """Where the user-curated copy of a domain graph lives (may not exist)."""
    return user_dir(settings) / f"{check_domain(domain)}{SUFFIX}"


def graph_path(settings: Settings, domain: str) -> Path:
    """The file :func:`load_graph` reads: the user copy if present, else the shipped default.

    Raises:
        FileNotFoundError: when neither exists.
    """
    user = user_path(settings, domain)
    if user.is_file():
        return user
    shipped = shipped_path(domain)
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"no graph for domain {domain!r}: neither {user} nor {shipped} exists")


_CACHE: dict[str, tuple[tuple[str, int, int], KnowledgeGraph]] = {}
_CACHE_LOCK = threading.Lock()


def load_graph(settings: Settings, domain: str, *, cache: bool = True) -> KnowledgeGraph:
    """The graph of one domain: ``$QSEF_HOME/kg/<domain>.kg.tsv.gz`` if present, else the shipped one.

    Cached per file (path, size and mtime), so repeated calls are free and an edited file is re-read.
    Treat a cached graph as read-only; mutate a ``.copy()`` (or pass ``cache=False``). Across processes
    the parsed rows are kept as a snapshot keyed by the file's SHA-256 (:func:`snapshot_path`); a graph
    read from one is deferred (see :meth:`KnowledgeGraph.deferred`) and equal to a freshly parsed one.

    Raises:
        GraphError: unknown domain.
        FileNotFoundError: no graph file for the domain.
        GraphFormatError: the file is malformed.
    """
    path = graph_path(settings, domain)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if cache:
        with _CACHE_LOCK:
            hit = _CACHE.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
    digest = sha256_file(path)
    cache_dir = user_dir(settings) / "cache"
    graph = _load_snapshot_or_parse(path, domain, digest, cache_dir)
    graph.origin = (digest, graph.version)  # lets derived indexes be cached on disk
    graph.cache_dir = cache_dir
    if cache:
        with _CACHE_LOCK:
            _CACHE[str(path)] = (key, graph)
    return graph


def snapshot_path(cache_dir: Path, domain: str, digest: str) -> Path:
    """Where the snapshot of the graph file with SHA-256 ``digest`` lives (one per domain and file content)."""
    return cache_dir / f"graph-{domain}-{digest[:16]}-f{SNAPSHOT_FORMAT}.npz"


def _load_snapshot_or_parse(path: Path, domain: str, digest: str, cache_dir: Path) -> KnowledgeGraph:
    """The graph of ``path`` from its snapshot when there is a sound one, else parsed (and the snapshot written).

    A damaged or stale snapshot costs a warning and one parse, never an error; a data directory that
    cannot be written only costs the next process the parse as well.
    """
    snap_file = snapshot_path(cache_dir, domain, digest)
    if snap_file.is_file():
        try:
            return GraphSnapshot.load(snap_file, source_sha256=digest, domain=domain).graph()
        except (OSError, SnapshotError) as exc:
            log.warning("rebuilding graph snapshot", extra={"path": str(snap_file), "reason": str(exc)[:200]})
    rows = read_rows(path, domain=domain)
    graph = rows.build()
    try:
        GraphSnapshot.from_rows(rows, source_sha256=digest).save(snap_file)
    except OSError as exc:
        log.warning("cannot write graph snapshot", extra={"path": str(snap_file), "reason": str(exc)[:200]})
    return graph


def load_all(settings: Settings, domains: tuple[str, ...] = DOMAINS) -> dict[str, KnowledgeGraph]:
    """Every domain graph, keyed by domain (cached like :func:`load_graph`)."""
    return {d: load_graph(settings, d) for d in domains}


def save_graph(settings: Settings, graph: KnowledgeGraph) -> Path:
    """Save a domain graph as the user-curated copy in ``$QSEF_HOME/kg`` (atomic, with a backup)."""
    path = user_path(settings, graph.domain)
    out = write_graph(graph, path)
    with _CACHE_LOCK:
        _CACHE.pop(str(path), None)
    return out


def clear_cache() -> None:
    """Forget cached graphs (tests; after changing ``$QSEF_HOME``)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# --------------------------------------------------------------------- exports
def export_triples_tsv(graph: KnowledgeGraph) -> Iterator[str]:
    """``head<TAB>relation<TAB>tail<TAB>source`` lines with a header comment."""
    yield f"# {graph.domain} graph: head\trelation\ttail\tsource\n"
    for e in sorted(graph.edges(), key=lambda x: (x.head, x.relation, x.tail)):
        for f in (e.head, e.relation, e.tail):
            if "\t" in f or "\n" in f:
                raise GraphError(f"cannot export {f!r} as TSV: it contains a tab or newline")
        yield f"{e.head}\t{e.relation}\t{e.tail}\t{e.source}\n"


def export_json(graph: KnowledgeGraph) -> Iterator[str]:
    """One JSON document ``{"domain", "meta", "nodes": [...], "edges": [...]}``, streamed."""
    yield (
        '{"domain": '
        + json.dumps(graph.domain)
        + ', "meta": '
        + json.dumps(graph.meta, sort_keys=True)
        + ', "nodes": [\n'
    )
    first = True
    for node in sorted(graph.nodes(), key=lambda x: x.id):
        yield ("" if first else ",\n") + json.dumps(node.to_dict(), ensure_ascii=False, sort_keys=True)
        first = False
    yield '\n], "edges": [\n'
    first = True
    for e in sorted(graph.edges(), key=lambda x: (x.head, x.relation, x.tail)):
        yield ("" if first else ",\n") + json.dumps(
            {"head": e.head, "relation": e.relation, "tail": e.tail, "source": e.source}
        )
        first = False
    yield "\n]}\n"
