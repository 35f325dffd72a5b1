"""Teacher capture throughput and fidelity: today's path vs the capture backends, side by side in one run.

* ``old_bf16_kept_vocab``: :meth:`distill.teachers.CausalLMTeacher.topk` as the recipe ran the teacher
  before capture existed (bf16, top-k over a 4096-id kept vocabulary, results kept in memory);
* ``transformers_fp32``: :func:`distill.capture.capture_topk` with the batched fp32
  :class:`distill.capture.TransformersCapture` (full-vocabulary top-k log-probabilities, written to
  verified memory-mapped shards);
* ``ct2_<compute type>``: the same capture with :class:`distill.capture.CT2Capture` (the CTranslate2
  int8 copy, ``forward_batch`` log-probabilities);
* ``vllm_prompt_logprobs`` (with ``--vllm-url``): the same capture through a running vLLM server.

Same teacher, same held-out windows (``--windows`` x ``--seq-len``, packed from every domain's held-out
corpus), same k, same threads. The windows are cut into ``--rounds`` chunks and each round runs every
path on one chunk (the order rotating), so load changes on a shared box hit all paths alike. Models
are loaded and warmed up before timing; a new path's time includes writing and hashing its shards.

Fidelity (:func:`distill.capture.compare_topk`) of each non-fp32 capture to the fp32 one on those
windows: top-1 agreement, mean |d log p| of the fp32 top-1 token, KL on the fp32 top-k support.

    PYTHONPATH=. .venv/bin/python benchmarks/distill_capture.py --windows 10 --seq-len 256 --rounds 5 \
        --ct2-compute-types int8,float32      # the recorded run: about 9.5 min at load 6 on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DOMAINS = ("code", "law", "medicine", "finance", "general")
TARGET = 5.0


def held_out_windows(settings, tok, n: int, seq_len: int):
    """(n, seq_len) input ids: packed held-out text, as evenly as possible from every domain."""
    import torch

    from distill import data as D

    per = [n // len(DOMAINS) + (i < n % len(DOMAINS)) for i in range(len(DOMAINS))]
    rows, all_toks = [], []
    for domain, m in zip(DOMAINS, per, strict=True):
        if m == 0:
            continue
        texts = D.load_texts(settings, domain, "heldout", limit=400, seed=0)
        toks = D.tokenize(texts, tok)
        rows.append(D.pack_windows(texts, toks, seq_len, max_windows=m).ids[:, :-1])
        all_toks += toks
    return torch.cat(rows), all_toks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="qwen-0.5b")
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--old-batch", type=int, default=8, help="the recipe's teacher.batch_size default")
    ap.add_argument("--tf-batch", type=int, default=4)
    ap.add_argument("--ct2-batch", type=int, default=4)
    ap.add_argument("--ct2-compute-types", default="int8", help="comma-separated, e.g. int8,float32")
    ap.add_argument("--vllm-url", default=None, help="e.g. http://127.0.0.1:8041/v1 (server already running)")
    ap.add_argument("--vllm-model", default=None)
    args = ap.parse_args()

    import torch
    from _common import save

    from core.settings import Settings
    from distill import data as D
    from distill.capture import (
        CT2Capture,
        TransformersCapture,
        VLLMCapture,
        capture_topk,
        compare_topk,
        tokenizer_sha256,
    )
    from distill.teachers import CausalLMTeacher, load_tokenizer, resolve_model_folder

    torch.set_num_threads(args.threads)
    settings = Settings()
    load_start = os.getloadavg()
    tok = load_tokenizer(settings, args.teacher)
    ids, toks = held_out_windows(settings, tok, args.windows, args.seq_len)
    kept = D.build_vocabulary(toks, 4096, always=[tok.eos_token_id])
    chunks = list(torch.arange(len(ids)).chunk(args.rounds))
    folder = resolve_model_folder(settings, args.teacher)
    h = tokenizer_sha256(tok)
    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-"))

    old = CausalLMTeacher(args.teacher, settings=settings, dtype="bfloat16", threads=args.threads)
    backends = {"transformers_fp32": TransformersCapture(folder, dtype="float32", batch_size=args.tf_batch,
                                                         threads=args.threads)}
    for ct in args.ct2_compute_types.split(","):
        backends[f"ct2_{ct}"] = CT2Capture(folder, settings=settings, compute_type=ct, batch_size=args.ct2_batch,
                                           threads=args.threads)
    if args.vllm_url:
        backends["vllm_prompt_logprobs"] = VLLMCapture(args.vllm_url, args.vllm_model or args.teacher, batch_size=8)
    batch = {"old_bf16_kept_vocab": args.old_batch, **{n: b.batch_size for n, b in backends.items()}}

    def run_old(sel):
        return old.topk(ids[sel], kept, args.k, batch_size=args.old_batch, progress=False)

    def run_new(name, r, sel):
        out = tmp / name / str(r)
        shutil.rmtree(out, ignore_errors=True)  # time the capture, not a read of an earlier one
        return capture_topk(backends[name], ids[sel], out, k=args.k, teacher=args.teacher, tokenizer_sha256=h,
                            progress=False)

    warm = ids[:1, :32]  # load every model and run it once (not timed)
    old.topk(warm, kept, args.k, progress=False)
    for b in backends.values():
        b.topk(warm, args.k)

    names = ["old_bf16_kept_vocab", *backends]
    seconds = {n: 0.0 for n in names}
    caps: dict[str, list] = {n: [] for n in backends}
    rounds = []
    for r, sel in enumerate(chunks):
        order = names[r % len(names):] + names[:r % len(names)]
        row = {"windows": len(sel), "order": order, "tokens_per_s": {}}
        for name in order:
            t = time.perf_counter()
            if name == "old_bf16_kept_vocab":
                run_old(sel)
            else:
                caps[name].append(run_new(name, r, sel))
            dt = time.perf_counter() - t
            seconds[name] += dt
            row["tokens_per_s"][name] = round(len(sel) * args.seq_len / dt, 1)
        row["load_avg_1m"] = round(os.getloadavg()[0], 2)
        rounds.append(row)
        print(f"round {r + 1}/{len(chunks)}: " + ", ".join(f"{n} {v} tok/s" for n, v in row["tokens_per_s"].items())
              + f" (load {row['load_avg_1m']})", flush=True)

    n_tok = ids.numel()
    base = n_tok / seconds["old_bf16_kept_vocab"]
    paths = {}
    for name in names:
        tps = n_tok / seconds[name]
        paths[name] = {"tokens": n_tok, "seconds": round(seconds[name], 1), "tokens_per_s": round(tps, 1),
                       "speedup_vs_old": round(tps / base, 2), "batch_size": batch[name],
                       "engine": backends[name].engine() if name in backends else
                       {"backend": "CausalLMTeacher", "dtype": "bfloat16", "head": "4096 kept ids"}}

    def joined(name):
        return (torch.cat([c.topk_ids for c in caps[name]]), torch.cat([c.topk_logprobs for c in caps[name]]))

    ref = joined("transformers_fp32")
    fidelity = {f"{name}_vs_transformers_fp32": dataclasses.asdict(compare_topk(*ref, *joined(name)))
                for name in backends if name != "transformers_fp32"}
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'path':<24}{'tok/s':>9}{'x old':>8}{'seconds':>9}")
    for name, p in paths.items():
        print(f"{name:<24}{p['tokens_per_s']:>9}{p['speedup_vs_old']:>8}{p['seconds']:>9}")
    for name, f in fidelity.items():
        print(f"{name}: top-1 agreement {f['top1_agreement']:.3f}, mean |d log p| {f['top1_logprob_abs_diff']:.3f}, "
              f"KL(top-k) {f['kl_topk']:.4f}, fp32 top-1 outside top-k {f['outside_topk']:.4f}")
    best = max((n for n in backends), key=lambda n: paths[n]["speedup_vs_old"])
    x = paths[best]["speedup_vs_old"]
    verdict = (f"{best} reaches the target: {x}x the old path's tokens/s" if x >= TARGET else
               f"target missed: the fastest new path ({best}) is {x}x the old path's tokens/s")
    print(verdict)
    save("distill_capture", {
        "teacher": args.teacher, "windows": len(ids), "seq_len": args.seq_len, "k": args.k, "threads": args.threads,
        "rounds": rounds, "domains": list(DOMAINS), "split": "heldout", "paths": paths, "fidelity": fidelity,
        "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "vllm": "measured" if args.vllm_url else "not run (no vLLM server started in this run)",
        "target": f">= {TARGET:g}x the old path's tokens/s", "verdict": verdict})


if __name__ == "__main__":
    main()
