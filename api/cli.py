"""The ``qsef`` command line: one parser, subcommands contributed by ``api/commands/<area>.py``.

Each area module exposes ``register(subparsers)``; its handlers import heavy libraries (torch,
transformers, pykeen, sentence-transformers) only when they run, so ``qsef --help`` stays fast.
Handlers return an exit code; library errors become one clear line on stderr and exit code 2.
:func:`main` builds the one :class:`core.settings.Settings` and hands it to the handler as ``args.settings``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Every top-level command: the area modules that register it, and its one-line help for `qsef --help`.
# Only the modules a command needs are imported (their registries pull numpy, networkx ...), so
# `qsef --help` and `qsef models ...` stay fast. Order is the order of `qsef --help`.
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "demo": (("demo",), "start the stack and route a few compound questions (embedded defaults)"),
    "route": (("route",), "route a (compound) query: sub-tasks, chosen experts, answers, timings"),
    "score": (("score",), "QSEF score breakdown of a text against every candidate expert"),
    "serve": (("route",), "run the HTTP API (FastAPI + uvicorn)"),
    "eval": (("score", "route"), "evaluate routing and decomposition on labelled JSONL files"),
    "calibrate": (("score",), "fit the QSEF weights on labelled rows (conditional logit, k-fold CV)"),
    "experts": (("experts",), "list, show, add or remove experts in the registry"),
    "kg": (("kg",), "curate the domain knowledge graphs"),
    "corpora": (("corpora",), "build and inspect the domain text corpora"),
    "distill": (("distill",), "distil a QRH domain expert from a teacher (YAML config + key=value overrides)"),
    "models": (("models",), "pull, verify and locate the pinned models"),
    "llm": (("llm",), "run the router LLM's vLLM server (OpenAI-compatible, loopback)"),
    "fleet": (("fleet",), "start/stop the vLLM expert servers a fleet file describes and register their experts"),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The first positional word of ``argv`` (skipping ``--log-level VALUE``), if it names a command."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--log-level":
            skip = True
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qsef-kd")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0+unknown"


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``qsef`` parser: the full subcommand of the command named in ``argv``, one-line stubs for the rest."""
    parser = argparse.ArgumentParser(
        prog="qsef",
        description="Route queries across small domain experts by QSEF transmission efficiency; distil those experts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override QSEF_LOG_LEVEL")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _command_in(argv)
    if chosen is None:
        for name, (_, help_text) in COMMANDS.items():
            subparsers.add_parser(name, help=help_text)
        return parser
    for module in COMMANDS[chosen][0]:
        importlib.import_module(f"api.commands.{module}").register(subparsers)
    return parser


def _one_line(exc: Exception) -> str:
    """A settings error as one line: ``field: problem; field: problem`` for pydantic's errors."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: "
                             f"{str(e['msg']).removeprefix('Value error, ')}" for e in errors())
        except Exception:  # not pydantic's shape: the plain message below
            pass
    return " ".join(str(exc).split())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from core.logs import setup_logging
    from core.settings import Settings

    try:
        settings = Settings()  # built once here and handed to the handler as args.settings
    except Exception as exc:  # invalid QSEF_* values or config file
        print(f"qsef: invalid settings: {_one_line(exc)}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or settings.log_level, settings.log_format)
    args.settings = settings
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a reader that went away (`| head`) shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # like other CLIs: no traceback when the reader closes the pipe early; stdout goes to /dev/null so
        # the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except KeyboardInterrupt:
        print("qsef: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError, LookupError) as exc:
        # domain errors (ModelStoreError, ServerError, LLMError, GraphError, ...) derive from these
        print(f"qsef: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
