"""Teacher capture throughput, old path vs new, side by side in one run (the 0.5B teacher).

* ``old``: :meth:`distill.teachers.CausalLMTeacher.topk` as the QRH recipe runs it (bf16, top-k over
  a 4096-id kept vocabulary, batch 8, results kept in memory);
* ``new-transformers``: :func:`distill.capture.capture_topk` with the batched fp32
  :class:`distill.capture.TransformersCapture` (full-vocabulary log-softmax top-k, written to
  verified memory-mapped shards);
* ``new-vllm`` (with ``--vllm-url``): the same capture through a running vLLM server's
  ``prompt_logprobs``.

Same windows (real code-corpus text, ``--windows`` x ``--seq-len``), same k, same threads. The paths
alternate (old, new, old, new ...) over ``--repeats`` rounds so load changes on a shared box hit both.

    PYTHONPATH=. .venv/bin/python benchmarks/distill_capture.py [--windows 8 --seq-len 128 --repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="qwen-0.5b")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--vllm-url", default=None, help="e.g. http://127.0.0.1:8041/v1 (server already running)")
    ap.add_argument("--vllm-model", default=None)
    args = ap.parse_args()

    import torch
    from _common import save

    from core.settings import Settings
    from distill import data as D
    from distill.capture import TransformersCapture, VLLMCapture, capture_topk, tokenizer_sha256
    from distill.teachers import CausalLMTeacher, load_tokenizer, resolve_model_folder

    torch.set_num_threads(args.threads)
    settings = Settings()
    tok = load_tokenizer(settings, args.teacher)
    texts = D.load_texts(settings, "code", "train", limit=200, seed=0)
    toks = D.tokenize(texts, tok)
    w = D.pack_windows(texts, toks, args.seq_len, max_windows=args.windows)
    ids = w.ids[:, :-1]
    kept = D.build_vocabulary(toks, 4096, always=[tok.eos_token_id])
    n_tok = ids.numel()

    old = CausalLMTeacher(args.teacher, settings=settings, dtype="bfloat16", threads=args.threads)
    new = TransformersCapture(resolve_model_folder(settings, args.teacher), dtype="float32", batch_size=8,
                              threads=args.threads)
    paths = {"old_bf16_kept_vocab": lambda: old.topk(ids, kept, args.k, batch_size=8, progress=False)}
    tmp = Path(tempfile.mkdtemp(prefix="capture-bench-"))
    h = tokenizer_sha256(tok)

    def run_new(backend, name):
        folder = tmp / name
        shutil.rmtree(folder, ignore_errors=True)  # time the capture, not a read of an earlier one
        return capture_topk(backend, ids, folder, k=args.k, teacher=args.teacher, tokenizer_sha256=h, progress=False)

    paths["new_transformers_fp32_shards"] = lambda: run_new(new, "tf")
    if args.vllm_url:
        vb = VLLMCapture(args.vllm_url, args.vllm_model or args.teacher, batch_size=8)
        paths["new_vllm_prompt_logprobs"] = lambda: run_new(vb, "vllm")
    # warm-up: load every model once (not timed)
    _ = old.model, new.model
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            print(f"{name}: {n_tok / times[name][-1]:.1f} tok/s", flush=True)
    # agreement: the new path's top-1 equals a fp32 forward's argmax (sanity, not timed)
    read = run_new(new, "check")
    rows = {name: {"tokens": n_tok, "seconds": [round(x, 2) for x in ts],
                   "tokens_per_s_median": round(n_tok / statistics.median(ts), 1)} for name, ts in times.items()}
    base = rows["old_bf16_kept_vocab"]["tokens_per_s_median"]
    for r in rows.values():
        r["speedup_vs_old"] = round(r["tokens_per_s_median"] / base, 2)
    shutil.rmtree(tmp, ignore_errors=True)
    save("distill_capture", {
        "teacher": args.teacher, "windows": args.windows, "seq_len": args.seq_len, "k": args.k,
        "threads": args.threads, "repeats": args.repeats, "paths": rows,
        "new_path_top1_shape": list(read.topk_ids.shape),
        "vllm": "measured" if args.vllm_url else "not run (no vLLM server started in this run)",
        "target": ">= 5x the old path's tokens/s"})


if __name__ == "__main__":
    main()
