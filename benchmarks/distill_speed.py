"""QRH student vs its teacher on this CPU: parameters, tokens/s (scoring and greedy generation), peak memory.

Each model runs in its own subprocess (same thread count) so peak RSS is its own. The student is
the benchmark student (width 128, 4 layers, vocabulary 4096); speed does not depend on its weights.

    .venv/bin/python benchmarks/distill_speed.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from core.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH, SEQ, PROMPT, NEW = 8, 64, 32, 32


def _measure(forward, generate, repeats: int) -> dict:
    import resource

    import torch

    ids = torch.randint(10, 4000, (BATCH, SEQ))
    prompt = torch.randint(10, 4000, (1, PROMPT))
    with torch.inference_mode():
        forward(ids[:1, :8])  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            forward(ids)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        generate(prompt)
        gen = time.perf_counter() - t
    return {"score_tokens_per_s": BATCH * SEQ / min(times), "generate_tokens_per_s": NEW / gen,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(which: str, threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if which == "student":
        from experts.qrh import QRHConfig, QRHModel

        m = QRHModel(QRHConfig(vocab_size=4096, d_model=128, n_layers=4, n_heads=8, max_seq_len=64)).eval()
        n = m.num_parameters()
        out = _measure(lambda x: m(x), lambda p: m.generate(p, NEW), repeats)
    else:
        from transformers import AutoModelForCausalLM

        from distill.teachers import resolve_model_folder

        dtype = {"teacher_fp32": torch.float32, "teacher_bf16": torch.bfloat16}[which]
        m = AutoModelForCausalLM.from_pretrained(str(resolve_model_folder(Settings(), "qwen-0.5b")), dtype=dtype).eval()
        n = sum(p.numel() for p in m.parameters())
        out = _measure(lambda x: m(input_ids=x).logits,
                       lambda p: m.generate(p, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False), repeats)
    return {"model": which, "params": n, "threads": threads, **out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.repeats)))
        return
    from distill_common import save

    rows = {}
    for which in ("student", "teacher_fp32", "teacher_bf16"):
        out = subprocess.run([sys.executable, __file__, "--child", which, "--threads", str(args.threads),
                              "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
        rows[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(rows[which], flush=True)
    s, t = rows["student"], rows["teacher_fp32"]
    ratios = {"params_share": s["params"] / t["params"],
              "score_speedup_vs_fp32": s["score_tokens_per_s"] / t["score_tokens_per_s"],
              "score_speedup_vs_bf16": s["score_tokens_per_s"] / rows["teacher_bf16"]["score_tokens_per_s"],
              "generate_speedup_vs_fp32": s["generate_tokens_per_s"] / t["generate_tokens_per_s"],
              "memory_share": s["peak_rss_mb"] / t["peak_rss_mb"]}
    print(ratios)
    save("distill_speed", {"rows": rows, "ratios": ratios,
                           "setup": f"scoring: batch {BATCH} x {SEQ} tokens (best of repeats); generation: greedy "
                                    f"{NEW} new tokens after a {PROMPT}-token prompt, batch 1 (teacher with KV cache, "
                                    "student recomputes its context)"})


if __name__ == "__main__":
    main()
