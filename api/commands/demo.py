"""``qsef demo`` — the main job on the embedded defaults, end to end, for a newcomer to watch."""

from __future__ import annotations

import argparse
import json
import time

DEMO_QUERIES = (
    "What are the common side effects of metformin, and how do I read a CSV file in Python with pandas?",
    "Explain what a non-compete clause is. Also, what is the difference between a stock and a bond?",
)

SUBTASK_SCHEMA = {
    "type": "object",
    "properties": {
        "subtasks": {
            "type": "array",
            "minItems": 1,
            "maxItems": 5,
            "items": {
                "type": "object",
                "properties": {
                    "subtask": {"type": "string"},
                    "domain": {"enum": ["medicine", "law", "code", "finance", "general"]},
                },
                "required": ["subtask", "domain"],
            },
        }
    },
    "required": ["subtasks"],
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="start the stack and route a few compound questions (embedded defaults)")
    parser.add_argument("--model", help="router LLM (model-store name; default settings.router_model)")
    parser.add_argument("--keep-server", action="store_true", help="leave the vLLM server running afterwards")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from qsef.settings import get_settings
    from router.llm.http_client import OpenAICompatClient
    from router.llm.server import VLLMServer

    settings = get_settings()
    model = args.model or settings.router_model
    server = VLLMServer(model, settings=settings)
    print(f"[1/3] starting vLLM ({model}, float32, eager) on {server.base_url} — 1–3 min on a small CPU ...", flush=True)
    started = time.perf_counter()
    server.start()
    print(f"      healthy after {time.perf_counter() - started:.0f} s", flush=True)
    try:
        client = OpenAICompatClient(server.base_url, model, timeout=600)
        print("[2/3] asking the router LLM to split compound queries into JSON sub-tasks", flush=True)
        for query in DEMO_QUERIES:
            t0 = time.perf_counter()
            text = client.chat(
                [
                    {"role": "system", "content": "Split the user's request into independent sub-tasks. "
                     "Domains: medicine, law, code, finance, general. Answer as JSON."},
                    {"role": "user", "content": query},
                ],
                json_schema=SUBTASK_SCHEMA,
                max_tokens=200,
            )
            print(f"\nQUERY: {query}\n  ({time.perf_counter() - t0:.1f} s)")
            print(json.dumps(json.loads(text), indent=2))
    finally:
        if not args.keep_server:
            print("[3/3] stopping vLLM", flush=True)
            server.stop()
    return 0
