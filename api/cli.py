"""The ``qsef`` command line: one parser, subcommands contributed by ``api/commands/<area>.py``.

Each area module exposes ``register(subparsers)``; its handlers import heavy libraries (torch,
transformers, pykeen, sentence-transformers) only when they run, so ``qsef --help`` stays fast.
Handlers return an exit code; library errors become one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Order is the order of `qsef --help`. Modules that do not exist (yet) are skipped.
COMMAND_MODULES = ("demo", "models", "llm", "corpora", "kg", "score", "route", "experts", "distill")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qsef-kd")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qsef",
        description="Route queries across small domain experts by QSEF transmission efficiency; distil those experts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override QSEF_LOG_LEVEL")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"api.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"api.commands.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from qsef.logs import setup_logging
    from qsef.settings import get_settings

    try:
        settings = get_settings()
    except Exception as exc:  # invalid QSEF_* values or config file
        print(f"qsef: invalid settings: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or settings.log_level, settings.log_format)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("qsef: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError, LookupError) as exc:
        # domain errors (ModelStoreError, ServerError, LLMError, GraphError, ...) derive from these
        print(f"qsef: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
