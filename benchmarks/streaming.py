"""Time to the first content token of a streamed chat completion vs the full answer's time (64-token answers).

One real ``qsef serve`` process on loopback with the default fleet (in-process experts on the pinned expert
model, the default engine; ``QSEF_ROUTER_BACKEND=none``, so single questions take the fast path, compound
ones the clause splitter, and no router LLM competes for the CPU). A two-part question is measured the same
way: its sub-tasks are generated together while the first streams. The official ``openai`` client asks the same single question with ``stream=True`` and
without, alternately; per streamed request it records the time to the first non-empty content delta and to
the last chunk, and the number of content chunks. Before this change the server sliced a finished answer, so
its first content came at about the full time (the non-streamed column measures that).

The server uses a fresh ``$QSEF_HOME`` whose models, corpora, graphs, caches and profiles are links to the
real data directory's, so nothing of a shared registry or feedback store changes. Saves
``benchmarks/results/streaming.json``.

    .venv/bin/python benchmarks/streaming.py [--runs 3] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy
from _common import save

QUESTION = "Explain in detail how a bill becomes a law in the United States, step by step."
COMPOUND = "What causes high blood pressure, and how do I reverse a linked list in Python?"
SHARED = ("models", "engines", "corpora", "kg", "profiles", "cache")


def _home() -> Path:
    from core.settings import Settings

    real = Settings().home
    home = Path(tempfile.mkdtemp(prefix="qsef-bench-streaming-"))
    for name in SHARED:
        (real / name).mkdir(parents=True, exist_ok=True)
        (home / name).symlink_to(real / name)
    return home


def _serve(port: int, home: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "QSEF_HOME": str(home), "QSEF_ROUTER_BACKEND": "none", "QSEF_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait(port: int, proc: subprocess.Popen, timeout: float = 900) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"qsef serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("qsef serve did not become healthy")


def _streamed(client, max_tokens: int, question: str = QUESTION) -> dict[str, float]:
    t0 = time.perf_counter()
    first = None
    pieces = 0
    text = []
    for chunk in client.chat.completions.create(model="qsef-router", max_tokens=max_tokens, stream=True,
                                                messages=[{"role": "user", "content": question}]):
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            pieces += 1
            text.append(content)
            if first is None:
                first = time.perf_counter() - t0
        last = chunk
    total = time.perf_counter() - t0
    routed = last.model_extra["qsef"]
    return {"first_content_s": round(first or total, 3), "total_s": round(total, 3),
            "ratio": round((first or total) / total, 3), "content_chunks": pieces,
            "answer_words": len("".join(text).split()), "experts": [s["expert"] for s in routed["subtasks"]],
            "decomposition_path": routed["decomposition_path"]}


def _whole(client, max_tokens: int, question: str = QUESTION) -> dict[str, float]:
    t0 = time.perf_counter()
    resp = client.chat.completions.create(model="qsef-router", max_tokens=max_tokens,
                                          messages=[{"role": "user", "content": question}])
    return {"total_s": round(time.perf_counter() - t0, 3),
            "answer_words": len(resp.choices[0].message.content.split())}


def _summary(streamed: list[dict], whole: list[dict]) -> dict[str, float]:
    return {
        "first_content_s_median": statistics.median(r["first_content_s"] for r in streamed),
        "streamed_total_s_median": statistics.median(r["total_s"] for r in streamed),
        "ratio_median": statistics.median(r["ratio"] for r in streamed),
        "non_streamed_total_s_median": statistics.median(r["total_s"] for r in whole),
    }


def main() -> int:
    import openai

    from core.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8057)
    args = parser.parse_args()
    home = _home()
    proc = _serve(args.port, home, home / "serve.log")
    try:
        ready_s = _wait(args.port, proc)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="unused", timeout=900,
                               max_retries=0)
        _whole(client, 8)  # warm-up: loads the expert model once, outside the measured runs
        streamed, whole, compound, compound_whole = [], [], [], []
        for i in range(args.runs):
            streamed.append(_streamed(client, args.max_tokens))
            whole.append(_whole(client, args.max_tokens))
            compound.append(_streamed(client, args.max_tokens, COMPOUND))
            compound_whole.append(_whole(client, args.max_tokens, COMPOUND))
            print(f"run {i + 1}: streamed {streamed[-1]}  non-streamed {whole[-1]}\n"
                  f"  compound: streamed {compound[-1]}  non-streamed {compound_whole[-1]}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    save("streaming", {
        "question": QUESTION,
        "max_tokens": args.max_tokens,
        "server": "qsef serve, QSEF_ROUTER_BACKEND=none, default fleet (in-process experts, default engine)",
        "local_engine": Settings().local_engine,
        "server_ready_s": round(ready_s, 1),
        "streamed": streamed,
        "non_streamed": whole,
        "summary": _summary(streamed, whole),
        "compound_question": COMPOUND,
        "compound_streamed": compound,
        "compound_non_streamed": compound_whole,
        "compound_summary": _summary(compound, compound_whole),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
