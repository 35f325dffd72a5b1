"""Shared setup of the distillation benchmarks: one prepared dataset (teacher run once), cached."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPORTS = Path(__file__).parent / "reports"

# The benchmark student and data: short windows, a few-M-parameter student, cached teacher top-k.
BENCH_OVERRIDES = [
    "domain=code",
    "data.train_docs=120", "data.heldout_docs=48", "data.seq_len=64", "data.max_windows_per_doc=1",
    "model.vocab_size=4096", "model.d_model=128", "model.n_layers=4", "model.n_heads=8", "model.max_seq_len=64",
    "teacher.top_k=32", "teacher.batch_size=8", "threads=1",  # 1 thread: 2 spin on a busy box
    "optim.steps=300", "optim.batch_size=16", "optim.lr=0.003", "optim.warmup=20",
    "eval.every=0", "eval.max_windows=48", "checkpoint.every=0", "checkpoint.resume=false",
    "register=false", "profile.enabled=false", "progress=false",
]


def bench_config(*extra: str):
    from distill.recipe import load_config

    return load_config(None, [*BENCH_OVERRIDES, *extra])


def machine() -> dict:
    import os

    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(sys.argv), "machine": machine(), **payload}
    p = RESULTS / f"{name}.json"
    p.write_text(json.dumps(payload, indent=2, default=str))
    print(f"saved {p}")
    return p


def run_recipe(cfg: dict, settings) -> tuple:
    """Set up and train one recipe, save its checkpoint and finish it (evaluation, export):
    ``(recipe, finish() info, set-up seconds, training seconds)``. On success the caller cleans up
    (``recipe.cleanup()``) once it has read ``recipe.data``; on a failure this does, then re-raises."""
    from distill.recipe import DistillRecipe

    t0 = time.perf_counter()
    rec = DistillRecipe(cfg, settings=settings)
    try:
        rec.setup()
        t_setup = time.perf_counter() - t0
        result = rec.train()
        t_train = time.perf_counter() - t0 - t_setup
        rec.save_checkpoint()
        return rec, rec.finish(result), t_setup, t_train
    except BaseException:
        rec.cleanup()
        raise
