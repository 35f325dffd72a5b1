"""CTranslate2 intra-op threads: greedy decoding and long prompts, 1 thread against every core, side by side.

Why: an answer is decoded one token at a time, each a chain of small matrix-vector products over the int8
weights. Whether a second thread helps that depends on the machine (on some 2-core VMs it is slower), while
a long prompt (teacher capture, answer scoring) is one large matrix product per layer and gains from every
core. :func:`experts.ct2.decode_threads` measures the choice once per model and CPU; this script shows the
whole picture behind it, in one run and one process:

* ``decode_b1`` / ``decode_b2`` / ``decode_b4`` — seconds for 64 greedy tokens of 1, 2 and 4 answers decoded
  together (the micro-batcher puts a compound query's sub-tasks in one batch);
* ``prefill_447`` — seconds to read a 447-token prompt and produce one token.

Thread counts run in rotating order, ``--repeats`` times each, so both see the same machine load; the
median is reported. Saves ``benchmarks/results/decode_threads.json``.

    .venv/bin/python benchmarks/decode_threads.py [--model qwen-0.5b] [--threads 1 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy
from _common import save

QUESTIONS = ("Explain how photosynthesis works in plants.", "How do I read a CSV file in Python with pandas?")
LONG = "Summarise this: " + " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen-0.5b")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="default: 1 and llm_threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    import ctranslate2
    from transformers import AutoTokenizer

    from core.settings import Settings
    from core.store import ModelStore
    from experts.ct2 import converted_folder, decode_threads

    settings = Settings()  # a benchmark is an entry point: settings are built here
    source = Path(ModelStore(settings).ensure(args.model))
    path = converted_folder(settings, source)
    tok = AutoTokenizer.from_pretrained(str(source))
    threads = args.threads or sorted({1, settings.llm_threads})

    def prompt(question: str) -> list[str]:
        text = tok.apply_chat_template([{"role": "system", "content": "You are a helpful assistant."},
                                        {"role": "user", "content": question}], tokenize=False,
                                       add_generation_prompt=True)
        return tok.convert_ids_to_tokens(tok(text)["input_ids"])

    a, b, long = prompt(QUESTIONS[0]), prompt(QUESTIONS[1]), prompt(LONG)
    cases = {"decode_b1": ([a], args.tokens), "decode_b2": ([a, b], args.tokens),
             "decode_b4": ([a, b, a, b], args.tokens), f"prefill_{len(long)}": ([long], 1)}
    generators = {t: ctranslate2.Generator(str(path), device="cpu", compute_type="int8", intra_threads=t)
                  for t in threads}
    for g in generators.values():  # warm-up
        g.generate_batch([a], max_length=4, sampling_topk=1, include_prompt_in_result=False)
    seconds: dict[int, dict[str, list[float]]] = {t: {c: [] for c in cases} for t in threads}
    for rep in range(args.repeats):
        order = threads[rep % len(threads):] + threads[: rep % len(threads)]
        for case, (batch, n) in cases.items():
            for t in order:
                started = time.perf_counter()
                generators[t].generate_batch(batch, max_length=n, min_length=n, sampling_topk=1,
                                             include_prompt_in_result=False)
                seconds[t][case].append(round(time.perf_counter() - started, 3))
        print(f"repeat {rep + 1}/{args.repeats}: " + "  ".join(
            f"{t} thread(s) {seconds[t]['decode_b1'][-1]:.2f} s" for t in threads), file=sys.stderr)
    median = {t: {c: round(statistics.median(v), 3) for c, v in seconds[t].items()} for t in threads}
    print(f"{'case':14s}" + "".join(f"{str(t) + ' thread(s)':>14s}" for t in threads))
    for case in cases:
        print(f"{case:14s}" + "".join(f"{median[t][case]:14.2f}" for t in threads))
    chosen = decode_threads(settings, path, tok)
    print(f"experts.ct2.decode_threads chooses {chosen} (settings.decode_threads or its record)")
    save("decode_threads", {"model": args.model, "converted": path.name, "tokens": args.tokens,
                            "repeats": args.repeats, "median_s": median, "seconds": seconds,
                            "decode_threads_choice": chosen})
    return 0


if __name__ == "__main__":
    sys.exit(main())
