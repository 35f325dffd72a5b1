"""``qsef llm install|serve|stop|status`` — the router LLM's vLLM server."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("llm", help="run the router LLM's vLLM server (OpenAI-compatible, loopback)")
    sub = parser.add_subparsers(dest="llm_command", metavar="ACTION", required=True)

    install = sub.add_parser("install", help="build the isolated vLLM environment (idempotent)")
    install.add_argument("--force", action="store_true")
    install.set_defaults(handler=_install)

    serve = sub.add_parser("serve", help="start the server, wait until healthy, record its pid")
    serve.add_argument("--model", help="model-store name (default: settings.router_model)")
    serve.add_argument("--port", type=int, help="loopback port (default: settings.llm_port)")
    serve.add_argument("--max-model-len", type=int, default=2048)
    serve.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for health")
    serve.set_defaults(handler=_serve)

    stop = sub.add_parser("stop", help="stop the server (SIGTERM, then SIGKILL)")
    stop.add_argument("--port", type=int)
    stop.set_defaults(handler=_stop)

    status = sub.add_parser("status", help="is it running and healthy")
    status.add_argument("--port", type=int)
    status.set_defaults(handler=_status)


def _server(args: argparse.Namespace):
    from router.llm.server import VLLMServer

    settings = args.settings
    return VLLMServer(getattr(args, "model", None) or settings.router_model, port=args.port, settings=settings,
                      max_model_len=getattr(args, "max_model_len", 2048))


def _install(args: argparse.Namespace) -> int:
    from router.llm.venv import ensure_env

    print(ensure_env(args.settings, force=args.force))
    return 0


def _serve(args: argparse.Namespace) -> int:
    server = _server(args)
    info = server.start(timeout=args.timeout)
    print(json.dumps({"pid": info.pid, "model": info.model, "base_url": info.base_url, "log": info.log}))
    return 0


def _stop(args: argparse.Namespace) -> int:
    stopped = _server(args).stop()
    print("stopped" if stopped else "not running")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _server(args).status()
    print(json.dumps(status))
    return 0 if status["healthy"] else 1
