"""``qsef demo`` — the main job on the embedded defaults, end to end, for a newcomer to watch.

1. start the router LLM (``settings.router_model``, Qwen2.5-Coder-0.5B by default) under vLLM on loopback;
2. route a handful of compound questions: the router LLM splits each into sub-tasks (JSON schema),
   QSEF scores every expert per sub-task, the best expert answers — printed with the TE breakdown;
3. stop the server (unless ``--keep-server``).
"""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="start the stack and route a few compound questions (embedded defaults)")
    parser.add_argument("--model", help="router LLM served by vLLM (model-store name; default settings.router_model)")
    parser.add_argument("--no-vllm", action="store_true", help="use the in-process router LLM instead of a vLLM server")
    parser.add_argument("--keep-server", action="store_true", help="leave the vLLM server running afterwards")
    parser.add_argument("--json", action="store_true", help="one JSON object per routed query")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from api.commands.route import run_demo
    from router.llm.server import VLLMServer
    from router.pipeline import Router

    settings = args.settings
    server = None
    if not args.no_vllm:
        model = args.model or settings.router_model
        server = VLLMServer(model, settings=settings)
        print(f"[1/3] starting vLLM ({model}, float32, eager) on {server.base_url}: 1-4 min on a small CPU ...", flush=True)
        started = time.perf_counter()
        server.start()
        print(f"      healthy after {time.perf_counter() - started:.0f} s", flush=True)
        settings = settings.model_copy(update={"router_backend": "vllm", "router_model": model, "llm_url": server.base_url})
    try:
        print("[2/3] routing compound questions: decompose -> QSEF score -> best expert answers", flush=True)
        router = Router.from_settings(settings)
        try:
            print("      loading QSEF: expert profiles, domain graphs, seed history ...", flush=True)
            started = time.perf_counter()
            router.scorer.warm()  # else the first question pays for it, in silence
            print(f"      ready after {time.perf_counter() - started:.0f} s", flush=True)
            run_demo(router=router, as_json=args.json)
        finally:
            router.close()
    finally:
        if server is not None and not args.keep_server:
            print("[3/3] stopping vLLM", flush=True)
            server.stop()
    return 0
