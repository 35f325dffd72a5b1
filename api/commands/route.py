"""``qsef serve``, ``qsef route QUERY``, ``qsef eval decompose FILE`` — the router from the command line.

Also :func:`run_demo`, the README demo: routes a handful of compound questions on the embedded
defaults and prints, per sub-task, the chosen expert, its TE breakdown and the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

DEMO_QUERIES = (
    "What are the common side effects of metformin, and how do I read a CSV file in Python with pandas?",
    "Explain what a non-compete clause is. Also, what is the difference between a stock and a bond?",
    "My landlord kept my deposit without reason; can I sue him? And how much should I save each month "
    "to retire at 60?",
    "What is the capital of Australia?",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    from qsef.selection import selection_strategy_resolver  # numpy only
    from router.llm import router_llm_resolver  # light: the resolvers name the choices

    serve = subparsers.add_parser("serve", help="run the HTTP API (FastAPI + uvicorn) on settings.host:port")
    serve.add_argument("--host", help="bind address (default settings.host, loopback)")
    serve.add_argument("--port", type=int, help="port (default settings.port)")
    serve.add_argument("--router-llm", choices=router_llm_resolver.choices, help="override settings.router_backend")
    serve.add_argument("--workers", type=int, default=1,
                       help="router worker processes (uvicorn); more than 1 needs the shared PostgreSQL store "
                            "(QSEF_DATABASE_URL)")
    serve.add_argument("--run-dir", help="with --workers N: folder for the resolved settings, the metrics files and "
                                         "the health prober's lock (default $QSEF_HOME/run/serve-PORT)")
    serve.set_defaults(handler=_serve)

    route = subparsers.add_parser("route", help="route a (compound) query: sub-tasks, chosen experts, answers, timings")
    route.add_argument("query", metavar="QUERY", nargs="?")
    route.add_argument("--json", action="store_true", help="print one JSON object")
    _router_args(route)
    route.add_argument("--strategy", choices=selection_strategy_resolver.options, default="argmax")
    route.add_argument("--k", type=int, default=2, help="experts per sub-task (top_k, cost_aware)")
    route.add_argument("--cost-lambda", type=float, default=0.1)
    route.add_argument("--tau", type=float, default=0.0, help="low-confidence threshold on the best expert's P = TE/sum(TE) (0 = off)")
    route.add_argument("--no-answer", action="store_true", help="decompose and score only; do not call experts")
    route.add_argument("--max-tokens", type=int, default=128, help="answer length per sub-task")
    route.add_argument("--demo", action="store_true", help="route the README's demo questions instead of QUERY")
    route.set_defaults(handler=_route)

    from api.commands.score import eval_subparsers

    dec = eval_subparsers(subparsers).add_parser(
        "decompose", help='decompose rows {"query","domains"} and print {"n","count_accuracy","domain_set_accuracy"}')
    dec.add_argument("file", metavar="FILE.jsonl")
    dec.add_argument("--json", action="store_true", help="print one JSON object")
    _router_args(dec)
    dec.add_argument("--splitter", action="store_true", help="clause splitter only (no router LLM)")
    dec.add_argument("--domains", choices=("hint", "qsef"), default="hint",
                     help="predicted domains from the decomposer's hints or from QSEF's top expert")
    dec.add_argument("--concurrency", type=int, default=4, help="queries decomposed at once")
    dec.add_argument("--limit", type=int, help="first N rows only")
    dec.add_argument("--rows", action="store_true", help="include per-row predictions in --json output")
    dec.set_defaults(handler=_eval_decompose)


def _router_args(p: argparse.ArgumentParser) -> None:
    from router.llm import router_llm_resolver

    p.add_argument("--llm", choices=router_llm_resolver.choices, help="router LLM backend (default settings.router_backend)")
    p.add_argument("--model", help="router LLM model (store name / served name; default settings.router_model)")
    p.add_argument("--llm-url", help="OpenAI-compatible base URL of a running router LLM (with --llm openai)")


def _settings(args: argparse.Namespace):
    s = args.settings
    changes: dict[str, Any] = {}
    if getattr(args, "llm", None):
        changes["router_backend"] = "vllm" if args.llm == "openai" else args.llm
    if getattr(args, "model", None):
        changes["router_model"] = args.model
    if getattr(args, "llm_url", None):
        changes["llm_url"] = args.llm_url
    return s.model_copy(update=changes) if changes else s


def _serve(args: argparse.Namespace) -> int:
    """One process, or ``--workers N`` uvicorn workers sharing the PostgreSQL store.

    Each worker holds its own models, score micro-batcher and limits (``max_routes``, the feedback rate
    limit are per worker); the registry and the feedback log are shared, so it takes ``QSEF_DATABASE_URL``:
    with the embedded SQLite files N workers would each keep their own history in memory and fight over
    one file, so more than one worker is refused there.
    """
    import uvicorn

    settings = _settings(args)
    if args.workers < 1:
        print(f"qsef serve: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.workers > 1 and not settings.database_url:
        print(f"qsef serve: --workers {args.workers} needs the shared store: set QSEF_DATABASE_URL to a PostgreSQL "
              "database (postgresql://USER:PASSWORD@HOST:PORT/DBNAME); with the embedded SQLite files the "
              "workers would not share the registry and feedback history. Or run one worker.", file=sys.stderr)
        return 2
    if settings.database_url:
        _check_database(settings.database_url)  # unreachable: one line, exit 2 (DatabaseUnavailableError)
    if args.router_llm:
        settings = settings.model_copy(update={"router_backend": "vllm" if args.router_llm == "openai"
                                               else args.router_llm})
    host, port = args.host or settings.host, args.port or settings.port
    if settings.router_backend == "vllm" and not settings.llm_url:
        _start_vllm_in_background(settings)
    print(f"qsef: serving on http://{host}:{port} with {args.workers} worker(s) (docs at /docs)", file=sys.stderr)
    if args.workers == 1:
        from api.main import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, workers=1)
        return 0
    from api.main import RUN_DIR_ENV

    run_dir = _worker_run_dir(settings, port, args.run_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")  # read by prometheus-client in each worker
    os.environ[RUN_DIR_ENV] = str(run_dir)
    # a worker imports torch and loads the encoder before it answers uvicorn's liveness ping; on a busy host
    # that takes longer than uvicorn's default 5 s, after which the supervisor would kill and restart it
    uvicorn.run("api.main:app_factory", factory=True, host=host, port=port, workers=args.workers, log_config=None,
                timeout_worker_healthcheck=300)
    return 0


def _check_database(url: str) -> None:
    """Connect once before any worker starts. Raises DatabaseUnavailableError (one line at the CLI)."""
    from core.db import Database

    db = Database(url)
    try:
        db.check()
    finally:
        db.close()


def _worker_run_dir(settings, port: int, given: str | None = None):
    """``given`` or ``$QSEF_HOME/run/serve-PORT``: the resolved settings (0600: they may hold the API key),
    an empty metrics folder (stale files of a previous run would be summed), the health prober's lock."""
    import shutil
    from pathlib import Path

    run_dir = Path(given).resolve() if given else settings.path("run", f"serve-{port}")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "metrics", ignore_errors=True)
    (run_dir / "metrics").mkdir()
    target = run_dir / "settings.json"
    tmp = run_dir / "settings.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(settings.model_dump_json())
    os.replace(tmp, target)
    return run_dir


def _start_vllm_in_background(settings) -> None:
    """Start (or attach to) the managed vLLM server for the router LLM without delaying the API: until it is
    healthy (minutes on a CPU), the router LLM and the experts on its model run in process, flagged in
    ``/health``. The server keeps running after ``qsef serve`` exits (``qsef llm stop`` ends it)."""
    import logging
    import threading

    from router.llm.server import VLLMServer

    log = logging.getLogger("api.serve")
    server = VLLMServer(settings.router_model, settings=settings)
    if server.healthy():
        log.info("router LLM: using the running vLLM server", extra={"url": server.base_url})
        return

    def start() -> None:
        try:
            server.start(timeout=1800)
            log.info("router LLM: vLLM server healthy; calls move to it", extra={"url": server.base_url})
        except Exception as exc:  # stays on the in-process fallback, which /health flags
            log.warning("router LLM: vLLM server did not start; staying in process", extra={"error": str(exc)[:300]})

    log.info("router LLM: starting the vLLM server in the background (in process meanwhile)",
             extra={"model": settings.router_model, "port": settings.llm_port, "log": str(server.log_file)})
    threading.Thread(target=start, name="vllm-start", daemon=True).start()


def _route(args: argparse.Namespace) -> int:
    from router.pipeline import RouteOptions, Router

    if not args.query and not args.demo:
        print("qsef route: give a QUERY (or --demo)", file=sys.stderr)
        return 2
    if args.query is not None and not args.query.strip():
        print("qsef route: QUERY is empty", file=sys.stderr)
        return 2
    opts = RouteOptions(strategy=args.strategy, k=args.k, cost_lambda=args.cost_lambda, tau=args.tau,
                        answer=not args.no_answer, max_tokens=args.max_tokens)
    router = Router.from_settings(_settings(args))
    try:
        if args.demo:
            return run_demo(router=router, options=opts, as_json=args.json)
        result = router.route(args.query, opts)
    finally:
        router.close()
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_result(result)
    return 0


def print_result(result: Any, out: TextIO = sys.stdout) -> None:
    """Human-readable route result: decomposition path, per sub-task expert + TE breakdown + answer."""
    flag = " (FLAGGED fallback: " + result.decomposition_reason[:120] + ")" if result.decomposition_flagged else ""
    print(f"query: {result.query}", file=out)
    print(f"decomposition: {result.decomposition_path}{flag} — {len(result.subtasks)} sub-task(s)", file=out)
    for s in result.subtasks:
        print(f"\n  [{s.index + 1}] {s.text}", file=out)
        low = "  LOW CONFIDENCE" if s.low_confidence else ""
        fb = f"  (fell back from {', '.join(s.selected)})" if s.fell_back else ""
        print(f"      expert: {s.expert}{fb}{low}   hint: {s.domain_hint}", file=out)
        cols = ("D_emb", "D_kg", "C_data", "C_model", "C_sparsity", "R")
        print("      " + "expert".ljust(12) + "".join(c.rjust(11) for c in (*cols, "TE", "P")), file=out)
        for sc in s.scores[:3]:
            vals = "".join(("-" if getattr(sc, c) is None else f"{getattr(sc, c):.3f}").rjust(11) for c in cols)
            te = f"{sc.TE:.3g}"  # TE's scale follows the fitted k1, k2
            print("      " + sc.expert[:12].ljust(12) + vals + te.rjust(11) + f"{sc.P:.2f}".rjust(11), file=out)
        print("      (P = TE / sum of TE over the candidates: the calibrated chance this expert is right)", file=out)
        if s.answer:
            answer = s.answer.strip().replace("\n", "\n        ")
            print(f"      answer: {answer}", file=out)
        for a in s.attempts:
            if not a.ok:
                what = "skipped" if a.skipped else "failed"
                print(f"      ! {a.expert} {what}: {a.error[:100]}", file=out)
    t = result.timings_ms
    print("\ntimings (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()), file=out)


def run_demo(*, router: Any, queries: tuple[str, ...] = DEMO_QUERIES, options: Any = None,
             as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """Route the demo questions with ``router`` (the caller builds and closes it) and print each
    result. Returns 0."""
    from router.pipeline import RouteOptions

    options = options or RouteOptions(max_tokens=64)
    print(f"router LLM: {router.decomposer.llm.describe()}; experts: "
          f"{', '.join(e.name for e in router.registry.list(enabled_only=True))}", file=out, flush=True)
    for q in queries:
        t0 = time.perf_counter()
        result = router.route(q, options)
        if as_json:
            print(json.dumps(result.model_dump()), file=out, flush=True)
        else:
            print("\n" + "=" * 100, file=out)
            print_result(result, out)
            print(f"({time.perf_counter() - t0:.1f} s)", file=out, flush=True)
    return 0


def _eval_decompose(args: argparse.Namespace) -> int:
    from router.evaluate import evaluate_decomposition, load_rows
    from router.pipeline import Router

    rows = load_rows(args.file)
    if args.limit:
        rows = rows[: args.limit]
    settings = _settings(args)
    if args.splitter:
        settings = settings.model_copy(update={"router_backend": "none"})
    router = Router.from_settings(settings)
    try:
        out = evaluate_decomposition(rows, router.decomposer, concurrency=args.concurrency,
                                     domain_source=args.domains,
                                     scorer=router.scorer if args.domains == "qsef" else None,
                                     use_llm=not args.splitter,
                                     keep_rows=args.rows)
    finally:
        router.close()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"n={out['n']}  count_accuracy={out['count_accuracy']:.3f}  "
              f"domain_set_accuracy={out['domain_set_accuracy']:.3f}  ({out['llm']})")
        print(f"paths: {out['paths']}  latency p50 {out['latency_ms']['p50']:.0f} ms")
    return 0
