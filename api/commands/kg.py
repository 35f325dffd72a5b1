"""``qsef kg import|stats|validate|add|remove|merge|dedupe|export|diff|link|embed`` — curate domain graphs.

Commands that change a graph load the domain's current graph (the user copy in ``$QSEF_HOME/kg`` or
the shipped default), apply the change to a copy in memory, check it, and only then save it as the user
copy — atomically, keeping the previous file as ``.bak``. Any error before the save leaves the stored
graph as it was. Files the commands write (exports, embeddings) must lie inside the data directory.

Exit codes: 0 success; 1 ``validate`` found errors; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.domains import DOMAINS


def register(subparsers: argparse._SubParsersAction) -> None:
    from kg.importers import IMPORTERS  # light: no heavy imports at module level
    from kg.model import RELATIONS

    parser = subparsers.add_parser("kg", help="curate the domain knowledge graphs")
    sub = parser.add_subparsers(dest="kg_command", metavar="ACTION", required=True)

    imp = sub.add_parser("import", help="import a source (or a graph/triples/nodes file) into a domain graph")
    imp.add_argument(
        "source",
        metavar="SOURCE",
        help=f"importer ({', '.join(sorted(IMPORTERS))}), 'all', or a .kg.tsv.gz/.tsv/.jsonl file",
    )
    imp.add_argument("--domain", required=True, choices=DOMAINS)
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(handler=_import)

    st = sub.add_parser("stats", help="counts per domain (all domains by default)")
    st.add_argument("--domain", action="append", choices=DOMAINS, help="repeatable")
    st.add_argument("--file", type=Path, help="a graph file instead of the domain graphs")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=_stats)

    va = sub.add_parser(
        "validate",
        help="dangling edges, is_a cycles, empty/duplicate labels, unknown relations (every graph by default)",
    )
    _target(va, required=False)
    va.add_argument("--json", action="store_true")
    va.add_argument("--max-per-kind", type=int, default=20)
    va.set_defaults(handler=_validate)

    add = sub.add_parser("add", help="add a node, an edge, or nodes/triples from a file")
    add.add_argument("--domain", required=True, choices=DOMAINS)
    add.add_argument("--node", metavar="ID")
    add.add_argument("--label")
    add.add_argument("--synonym", action="append", default=[], help="repeatable")
    add.add_argument("--definition", default="")
    add.add_argument("--replace", action="store_true", help="update the node if the id exists")
    add.add_argument(
        "--edge", nargs=3, metavar=("HEAD", "RELATION", "TAIL"), help=f"relation: {', '.join(RELATIONS)}"
    )
    add.add_argument(
        "--nodes",
        type=Path,
        metavar="FILE.jsonl",
        help='one {"id", "label", "synonyms", "definition"} a line',
    )
    add.add_argument("--triples", type=Path, metavar="FILE.tsv", help="head<TAB>relation<TAB>tail a line")
    add.set_defaults(handler=_add)

    rm = sub.add_parser("remove", help="remove a node (with its edges), an edge, or triples from a file")
    rm.add_argument("--domain", required=True, choices=DOMAINS)
    rm.add_argument("--node", metavar="ID", action="append", default=[], help="repeatable")
    rm.add_argument("--edge", nargs=3, metavar=("HEAD", "RELATION", "TAIL"))
    rm.add_argument("--triples", type=Path, metavar="FILE.tsv")
    rm.set_defaults(handler=_remove)

    me = sub.add_parser("merge", help="merge other graphs (files or domains) into a domain graph")
    me.add_argument("others", nargs="+", metavar="GRAPH", help="a domain name or a .kg.tsv.gz file")
    me.add_argument("--domain", required=True, choices=DOMAINS)
    me.add_argument("--json", action="store_true")
    me.set_defaults(handler=_merge)

    de = sub.add_parser("dedupe", help="merge duplicate concepts")
    de.add_argument("--domain", required=True, choices=DOMAINS)
    from kg.curation import DEDUPE_KEYS

    de.add_argument("--by", choices=DEDUPE_KEYS, default="label+definition")
    de.add_argument("--dry-run", action="store_true")
    de.add_argument("--json", action="store_true")
    de.set_defaults(handler=_dedupe)

    ex = sub.add_parser("export", help="export as TSV triples or JSON")
    _target(ex)
    ex.add_argument("--format", choices=["tsv", "json"], default="tsv")
    ex.add_argument("--out", default="-", help="'-' for stdout, or a path inside $QSEF_HOME/kg/exports")
    ex.set_defaults(handler=_export)

    di = sub.add_parser("diff", help="what changed between two graphs")
    di.add_argument("a", metavar="A", help="domain, 'shipped:DOMAIN' or a graph file")
    di.add_argument("b", metavar="B", help="domain, 'shipped:DOMAIN' or a graph file")
    di.add_argument("--limit", type=int, default=50, help="items listed per change kind")
    di.add_argument("--json", action="store_true")
    di.set_defaults(handler=_diff)

    li = sub.add_parser("link", help="link a text to concepts of a domain graph")
    li.add_argument("text")
    li.add_argument("--domain", required=True, choices=DOMAINS)
    li.add_argument("--fallback", action="store_true", help="also use the embedding fallback (loads MiniLM)")
    li.add_argument("--json", action="store_true")
    li.set_defaults(handler=_link)

    from kg.embeddings import MODELS

    em = sub.add_parser(
        "embed", help="train KG embeddings (pykeen) and report MRR / Hits@10 on held-out triples"
    )
    em.add_argument(
        "--domain",
        required=True,
        choices=[*DOMAINS, "nations"],
        help="'nations': pykeen's bundled sanity dataset",
    )
    em.add_argument("--model", default="TransE", choices=sorted(MODELS))
    em.add_argument("--dim", type=int, default=64)
    em.add_argument("--epochs", type=int, default=30)
    em.add_argument(
        "--max-triples", type=int, default=40000, help="subsample larger graphs to this many triples"
    )
    em.add_argument("--seed", type=int, default=0)
    em.add_argument("--no-save", action="store_true")
    em.add_argument("--json", action="store_true")
    em.set_defaults(handler=_embed)


def _target(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--domain", choices=DOMAINS)
    g.add_argument("--file", type=Path, help="a graph file")


# ------------------------------------------------------------------- helpers
def _print(data: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))
    else:
        print(text if text is not None else json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _load_target(args: argparse.Namespace):
    from kg.storage import load_graph, read_graph

    if getattr(args, "file", None):
        return read_graph(args.file)
    return load_graph(args.settings, args.domain, cache=False)


def _working_copy(settings: Any, domain: str):
    """The domain graph as stored now (fresh read: the object is ours to change)."""
    from kg.storage import load_graph

    return load_graph(settings, domain, cache=False)


def _save(settings: Any, graph) -> Path:
    """Refuse to save a graph with new structural errors; then save atomically as the user copy."""
    from kg.curation import validate
    from kg.errors import GraphError
    from kg.storage import save_graph

    errors = [
        i for i in validate(graph, max_per_kind=3) if i.severity == "error" and i.kind != "duplicate_node"
    ]
    if errors:
        raise GraphError(f"refusing to save the {graph.domain} graph: {errors[0].message}")
    return save_graph(settings, graph)


def _spec(settings: Any, spec: str):
    from kg.storage import read_graph, shipped_path

    if spec.startswith("shipped:"):
        return read_graph(shipped_path(spec.split(":", 1)[1]))
    if spec in DOMAINS:
        return _working_copy(settings, spec)
    return read_graph(Path(spec))


# ------------------------------------------------------------------- handlers
def _import(args: argparse.Namespace) -> int:
    from kg.curation import add_edges, add_nodes, merge
    from kg.importers import IMPORTERS, build_domain, import_source
    from kg.storage import read_graph, read_nodes_jsonl, read_triples

    src = args.source
    if src == "all":
        graph = build_domain(args.settings, args.domain)
        result: dict[str, Any] = {
            "rebuilt": args.domain,
            "nodes": graph.number_of_nodes(),
            "edges": graph.number_of_edges(),
        }
    elif src in IMPORTERS:
        graph = _working_copy(args.settings, args.domain)
        result = {"source": src, **import_source(args.settings, graph, src)}
    else:
        path = Path(src)
        if not path.is_file():
            from kg.errors import GraphError

            raise GraphError(
                f"{src!r} is neither a registered importer ({', '.join(sorted(IMPORTERS))}, all) nor a file"
            )
        graph = _working_copy(args.settings, args.domain)
        if path.name.endswith((".kg.tsv.gz", ".kg.tsv")):
            result = {"file": str(path), **merge(graph, read_graph(path))}
        elif path.suffix == ".jsonl":
            result = {
                "file": str(path),
                "nodes_added": add_nodes(graph, read_nodes_jsonl(path), source="user"),
            }
        else:
            result = {"file": str(path), "edges_added": add_edges(graph, read_triples(path))}
    saved = _save(args.settings, graph)
    result["saved"] = str(saved)
    _print(
        result,
        args.json,
        f"imported {src} into {args.domain}: " + ", ".join(f"{k}={v}" for k, v in result.items()),
    )
    return 0


def _stats(args: argparse.Namespace) -> int:
    from kg.curation import stats
    from kg.storage import graph_path, load_graph, read_graph

    if args.file:
        out = {str(args.file): stats(read_graph(args.file))}
    else:
        out = {}
        for d in args.domain or DOMAINS:
            s = stats(load_graph(args.settings, d))
            s["file"] = str(graph_path(args.settings, d))
            out[d] = s
    if args.json:
        _print(out, True)
    else:
        for name, s in out.items():
            rels = ", ".join(f"{k} {v}" for k, v in s["edges_by_relation"].items())
            srcs = ", ".join(f"{k} {v}" for k, v in s["nodes_by_source"].items())
            print(
                f"{name}: {s['nodes']} nodes ({s['linkable_nodes']} linkable), {s['edges']} edges, "
                f"{s['connected_components']} components, max is_a depth {s['max_isa_depth']}"
            )
            print(f"  sources: {srcs}\n  relations: {rels}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from kg.curation import issue_counts, validate
    from kg.storage import load_graph

    if args.file or args.domain:
        targets = [(str(args.file or args.domain), lambda: _load_target(args))]
    else:  # every installed graph: the user copy where there is one, else the shipped default
        targets = [(d, lambda d=d: load_graph(args.settings, d, cache=False)) for d in DOMAINS]
    reports = []
    for name, load in targets:  # one graph in memory at a time
        issues = validate(load(), max_per_kind=args.max_per_kind)
        errors = [i for i in issues if i.severity == "error"]
        reports.append((name, issues, not errors, issue_counts(issues)))
    ok = all(r[2] for r in reports)
    if args.json:
        as_dicts = [
            {"graph": name, "ok": good, "counts": counts, "issues": [i.to_dict() for i in issues]}
            for name, issues, good, counts in reports
        ]
        _print(as_dicts[0] if len(as_dicts) == 1 else {"ok": ok, "graphs": as_dicts}, True)
    else:
        for name, issues, good, counts in reports:
            prefix = f"{name}: " if len(reports) > 1 else ""
            for i in issues:
                print(f"{prefix}{i.severity}: {i.kind}: {i.message}")
            print(
                f"{prefix}{'ok' if good else 'INVALID'}: "
                + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no issues")
            )
    return 0 if ok else 1


def _add(args: argparse.Namespace) -> int:
    from kg.curation import add_edges, add_nodes
    from kg.errors import GraphError
    from kg.model import Edge, Node
    from kg.storage import read_nodes_jsonl, read_triples

    if not (args.node or args.edge or args.nodes or args.triples):
        raise GraphError(
            "nothing to add: give --node ID --label L, --edge HEAD REL TAIL, --nodes FILE or --triples FILE"
        )
    graph = _working_copy(args.settings, args.domain)
    n_nodes = n_edges = 0
    if args.node:
        if not args.label:
            raise GraphError("--node needs --label")
        n_nodes += add_nodes(
            graph,
            [Node(args.node, args.label, tuple(args.synonym), args.definition, source="user")],
            replace_existing=args.replace,
        )
    if args.nodes:
        n_nodes += add_nodes(graph, read_nodes_jsonl(args.nodes), replace_existing=args.replace)
    if args.edge:
        n_edges += add_edges(graph, [Edge(*args.edge, "user")])
    if args.triples:
        n_edges += add_edges(graph, read_triples(args.triples))
    saved = _save(args.settings, graph)
    print(f"added {n_nodes} node(s) and {n_edges} edge(s) to {args.domain}; saved {saved}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from kg.curation import remove_edges
    from kg.errors import GraphError
    from kg.model import Edge
    from kg.storage import read_triples

    if not (args.node or args.edge or args.triples):
        raise GraphError("nothing to remove: give --node ID, --edge HEAD REL TAIL or --triples FILE")
    graph = _working_copy(args.settings, args.domain)
    n_edges = 0
    for nid in args.node:
        n_edges += graph.remove_node(nid)
    if args.edge:
        n_edges += remove_edges(graph, [Edge(*args.edge)])
    if args.triples:
        n_edges += remove_edges(graph, read_triples(args.triples))
    saved = _save(args.settings, graph)
    print(f"removed {len(args.node)} node(s) and {n_edges} edge(s) from {args.domain}; saved {saved}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from kg.curation import merge

    graph = _working_copy(args.settings, args.domain)
    results = {spec: merge(graph, _spec(args.settings, spec)) for spec in args.others}
    saved = _save(args.settings, graph)
    _print(
        {"merged": results, "saved": str(saved)},
        args.json,
        "\n".join(f"merged {k}: {v}" for k, v in results.items()) + f"\nsaved {saved}",
    )
    return 0


def _dedupe(args: argparse.Namespace) -> int:
    from kg.curation import dedupe, find_duplicates

    graph = _working_copy(args.settings, args.domain)
    if args.dry_run:
        groups = find_duplicates(graph, by=args.by)
        _print(
            {"groups": groups, "count": len(groups)},
            args.json,
            "\n".join(" = ".join(g) for g in groups) + f"\n{len(groups)} duplicate group(s) (dry run)",
        )
        return 0
    merged = dedupe(graph, by=args.by)
    saved = _save(args.settings, graph) if merged else None
    _print(
        {"merged": merged, "count": len(merged), "saved": str(saved) if saved else None},
        args.json,
        f"merged {len(merged)} duplicate group(s)" + (f"; saved {saved}" if saved else ""),
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from kg.storage import atomic_write, export_json, export_triples_tsv

    graph = _load_target(args)
    chunks = export_json(graph) if args.format == "json" else export_triples_tsv(graph)
    if args.out == "-":
        for chunk in chunks:
            sys.stdout.write(chunk)
        return 0
    target = args.settings.confine(args.out, under="kg/exports")
    out = atomic_write(target, chunks, compress=target.suffix == ".gz", backup=False)
    print(
        f"exported {graph.domain} ({graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges) to {out}"
    )
    return 0


def _diff(args: argparse.Namespace) -> int:
    from kg.curation import diff

    d = diff(_spec(args.settings, args.a), _spec(args.settings, args.b))
    if args.json:
        _print(d.to_dict(limit=args.limit), True)
    else:
        print(f"{args.a} -> {args.b}: " + ", ".join(f"{k} {v}" for k, v in d.summary().items()))
        for kind, items in d.to_dict(limit=args.limit).items():
            if kind != "summary":
                for item in items:
                    print(f"  {kind}: {item if isinstance(item, str) else ' '.join(item)}")
    return 0


def _link(args: argparse.Namespace) -> int:
    import kg

    graph = kg.load_graph(args.settings, args.domain)
    mentions = kg.link(args.text, graph, fallback=args.fallback, settings=args.settings)
    rows = [
        {
            "text": m.text,
            "node_id": m.node_id,
            "label": m.label,
            "start": m.start,
            "end": m.end,
            "score": m.score,
            "method": m.method,
        }
        for m in mentions
    ]
    if args.json:
        _print(
            {"mentions": rows, "concept_density": kg.concept_density(args.text, graph, mentions=mentions)},
            True,
        )
    else:
        for r in rows:
            print(
                f"{r['start']:>4}-{r['end']:<4} {r['text']!r} -> {r['node_id']} ({r['label']}) {r['score']:.2f} {r['method']}"
            )
    return 0


def _embed(args: argparse.Namespace) -> int:
    from kg.embeddings import train_embeddings

    result = train_embeddings(
        args.settings,
        args.domain,
        model=args.model,
        dim=args.dim,
        epochs=args.epochs,
        max_triples=args.max_triples,
        seed=args.seed,
        save=not args.no_save,
    )
    _print(
        result,
        args.json,
        f"{args.domain} {args.model}: MRR {result['mrr']:.4f}, Hits@10 {result['hits_at_10']:.4f} "
        f"({result['triples']['train']} train / {result['triples']['test']} test triples, {result['train_seconds']:.0f}s)"
        + (f"; saved {result['path']}" if result.get("path") else ""),
    )
    return 0
