"""``qsef demo`` — the main job on the embedded defaults, end to end, for a newcomer to watch.

1. load the router LLM (``settings.router_model``, Qwen2.5-Coder-0.5B by default): in process at
   ``settings.local_precision`` on ``settings.local_engine`` (int8 on CTranslate2 by default: on a CPU it decodes
   faster than fp32, measured in ``benchmarks/local_precision.py``), or with ``--vllm`` under a vLLM server on
   loopback (what
   ``qsef serve`` uses; started here, and stopped afterwards unless ``--keep-server``);
2. route a handful of compound questions: the router LLM splits each into sub-tasks, QSEF scores every
   expert per sub-task, the best expert answers (the sub-tasks of one question decoded together) —
   printed with the TE breakdown and the time of each stage.
"""

from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="load the stack and route a few compound questions (embedded defaults)")
    parser.add_argument("--model", help="router LLM (model-store name; default settings.router_model)")
    parser.add_argument("--vllm", action="store_true", help="serve the router LLM with vLLM instead of in process")
    parser.add_argument("--no-vllm", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    parser.add_argument("--keep-server", action="store_true", help="with --vllm: leave the server running afterwards")
    parser.add_argument("--json", action="store_true", help="one JSON object per routed query")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from api.commands.route import run_demo
    from router.llm.server import VLLMServer
    from router.pipeline import Router

    settings = args.settings
    model = args.model or settings.router_model
    server = None
    if args.vllm:
        server = VLLMServer(model, settings=settings)
        print(f"[1/2] starting vLLM ({model}, float32, eager) on {server.base_url}: 1-4 min on a small CPU ...",
              flush=True)
        started = time.perf_counter()
        server.start()
        print(f"      healthy after {time.perf_counter() - started:.0f} s", flush=True)
        settings = settings.model_copy(update={"router_backend": "vllm", "router_model": model,
                                               "llm_url": server.base_url})
    else:
        settings = settings.model_copy(update={"router_backend": "transformers", "router_model": model})
    try:
        router = Router.from_settings(settings)
        try:
            engine = " on CTranslate2" if getattr(router.dispatcher.pool, "engine", "") == "ctranslate2" else ""
            where = "vLLM" if server else f"in process, {settings.local_precision}{engine}"
            print(f"[{'2/2' if server else '1/2'}] loading the router LLM ({model}, {where}), expert profiles, "
                  "domain graphs and seed history ...", flush=True)
            started = time.perf_counter()
            router.scorer.warm()  # else the first question pays for it, in silence
            router.decomposer.decompose("What is GDP? And how do I sort a list in Python?")  # loads the LLM
            print(f"      ready after {time.perf_counter() - started:.0f} s", flush=True)
            if not server:
                print("[2/2] routing compound questions: decompose -> QSEF score -> best expert answers", flush=True)
            run_demo(router=router, as_json=args.json)
        finally:
            router.close()
    finally:
        if server is not None and not args.keep_server:
            print("stopping vLLM", flush=True)
            server.stop()
    return 0
