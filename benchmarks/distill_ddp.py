"""Data-parallel distillation on this CPU: tokens/s of one process vs ``torchrun --nproc_per_node 2`` (gloo).

Every run is ``qsef distill`` on the tiny synthetic recipe of the tests (``tests/distill/ddp_worker.py``:
64 training windows of 12 tokens, no teacher model) with the same seed and global batch, in a scratch
folder. Layouts: one process with 1 thread, one process with 2 threads (both cores through intra-op
threads), and 2 ranks with 1 thread each (``OMP_NUM_THREADS=1``). ``tokens_per_s`` is the recipe's
own training rate at the last step (global target tokens over training time; setup, teacher data and
the final evaluation excluded); ``wall_s`` is the whole command (interpreter, torchrun, rendezvous).
The loss-curve difference compares each run's per-step losses with the 1-process, 1-thread run.

    .venv/bin/python benchmarks/distill_ddp.py [--steps 100] [--sizes tiny wide]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distill" / "ddp_worker.py"
TORCHRUN = Path(sys.executable).with_name("torchrun")

SIZES = {  # model and global batch; the tests' tiny recipe is d_model 32, 2 layers
    "tiny": ["model.d_model=32", "model.n_layers=2", "optim.batch_size=8"],
    "wide": ["model.d_model=128", "model.n_layers=4", "optim.batch_size=32"],
}
LAYOUTS = {"1 process x 1 thread": (1, 1), "1 process x 2 threads": (1, 2), "2 ranks x 1 thread": (2, 1)}


def run_once(folder: Path, ranks: int, threads: int, overrides: list[str]) -> dict:
    config = folder / "tiny.yaml"
    config.write_text("domain: law\n")
    out = folder / "out"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "QSEF_HOME": str(folder / "home"), "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    launcher = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(ranks)] if ranks > 1 else [sys.executable]
    cmd = [*launcher, str(WORKER), str(config), str(out), f"threads={threads}", *overrides]
    load = os.getloadavg()[0]  # another job on the box shows up here
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    state = json.loads((out / "expert" / "trainer_state.json").read_text())
    last = state["history"][-1]
    return {"ranks": ranks, "threads_per_rank": threads, "load_avg_1m_before": round(load, 2),
            "tokens_per_s": last["tokens_per_s"], "wall_s": round(wall, 2),
            "final_loss": state["train_loss"][-1], "heldout_ppl": round(last["ppl"], 4),
            "tokens_seen": state["tokens_seen"], "train_loss": state["train_loss"]}


def main() -> None:
    from _common import save

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = ap.parse_args()
    results: dict[str, dict] = {}
    for size in args.sizes:
        overrides = [*SIZES[size], f"optim.steps={args.steps}", f"eval.every={args.steps}", "checkpoint.every=0",
                     "optim.warmup=10", "seed=0"]
        rows = {}
        for label, (ranks, threads) in LAYOUTS.items():
            with tempfile.TemporaryDirectory() as d:
                rows[label] = run_once(Path(d), ranks, threads, overrides)
            print(f"{size} {label}: {rows[label]['tokens_per_s']:.0f} tok/s, {rows[label]['wall_s']} s", flush=True)
        ref = rows["1 process x 1 thread"]["train_loss"]
        for row in rows.values():
            curve = row.pop("train_loss")
            row["max_rel_loss_diff_vs_1x1"] = max(abs(a - b) / abs(a) for a, b in zip(ref, curve, strict=True))
            row["speedup_vs_1x1"] = round(row["tokens_per_s"] / rows["1 process x 1 thread"]["tokens_per_s"], 3)
        results[size] = {"overrides": overrides, "runs": rows}
    save("distill_ddp", {
        "recipe": "tests/distill/ddp_worker.py: tiny synthetic data (64 windows x 12 tokens, vocabulary 99), "
                  "KD + alignment + resistance-weighted loss, difficulty sampler",
        "sizes": results,
        "note": "one measurement each on a 2-core box; tokens_per_s counts the global batch's target tokens "
                "over the training loop only",
    })


if __name__ == "__main__":
    main()
