"""Tune our LoRA recipe for ``benchmarks/distill_trl.py`` without touching its held-out windows: a small grid of
config overrides, each trained on the comparison's exact training windows (seed 0 by default) and scored on a
*validation* split (``data.validation_docs``: law documents from the corpus' train split, none of them one of
the training documents; the held-out documents are the corpus' other split). The teacher runs once (its
captures of the train / held-out / validation windows are cached and reused by ``distill_trl.py``).

Validation metric: perplexity (``DistillRecipe.evaluate``); with ``--validation-kl`` the teacher is also captured
on the validation windows and KL(teacher || student) at T 1 on its top-k + rest and top-1 agreement are added
(without it the teacher does not run on them: on a busy 2-core box that capture costs as much as a grid point).
``--then-seeds 1 2``: afterwards, the grid point with the lowest validation perplexity (the selection rule, fixed
in advance) is trained again at those seeds and kept the same way, for ``distill_trl.py --ours-from``. Saves ``results/<OUT>.json`` (one row per grid point, the
per-step training losses included; ``<OUT>.partial.jsonl`` as it goes). Each grid point's adapter is kept in
``$QSEF_HOME/cache/distill-trl-tune/<name>-s<seed>/`` with ``ours.json`` and ``windows.npz``, in the form
``distill_trl.py --ours-from`` scores on the held-out windows without training it again (the same training run).

    PYTHONPATH=. .venv/bin/python benchmarks/distill_trl_tune.py [--only NAME ...] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from _common import save
from distill_trl import _config, add_budget_arguments

RESULTS = Path(__file__).resolve().parent / "results"
PURE_KD = ["loss.kd_weight=1.0", "loss.lambda_resist=0.0", "temperature={start: 1.0, end: 1.0, kind: constant}"]
FLAT = ["sampler.name=epoch", "curriculum=null"]  # each window once, in a shuffled order (as TRL's loader)
GRID: dict[str, list[str]] = {
    "shipped": [],  # expert.yaml as distill_trl.py runs it
    "kd_T1_epoch": [*PURE_KD, *FLAT],
    "kd+0.25lm_T1_epoch": [*PURE_KD, "loss.lambda_resist=0.25", *FLAT],
    "kd+0.25lm_T1_epoch_lr1e-3_wu4": [*PURE_KD, "loss.lambda_resist=0.25", *FLAT, "optim.lr=0.001", "optim.warmup=4"],
    "kd_T1_shipped_sampling": PURE_KD,  # pure KD, but the shipped curriculum + difficulty sampler
    "shipped_lr1e-3_wu4": ["optim.lr=0.001", "optim.warmup=4"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser)
    parser.add_argument("--validation-docs", type=int, default=200)
    parser.add_argument("--validation-windows", type=int, default=16)
    parser.add_argument("--only", nargs="+", choices=list(GRID), help="grid points to run (default all, in order)")
    parser.add_argument("--validation-kl", action="store_true", help="capture the teacher on the validation windows too")
    parser.add_argument("--then-seeds", type=int, nargs="*", default=[],
                        help="train the lowest-validation-ppl grid point again at these seeds (kept adapters)")
    parser.add_argument("--out", default="distill_trl_tune")
    args = parser.parse_args()

    import numpy as np
    import torch

    from core.settings import Settings
    from distill.recipe import DistillRecipe, apply_override, prepare_data

    settings = Settings()
    def config(seed: int) -> dict:
        cfg = _config(argparse.Namespace(**{**vars(args), "seed": seed}))
        for o in (f"data.validation_docs={args.validation_docs}", f"data.max_windows.validation={args.validation_windows}",
                  "checkpoint.every=0", "eval.every=0"):
            cfg = apply_override(cfg, o)
        return cfg

    base_cfg = config(args.seed)
    t0 = time.perf_counter()
    if args.validation_kl:
        prepared = prepare_data(base_cfg, settings=settings)
    else:  # the teacher captures train + held-out only; the validation windows are built the same way, uncaptured
        from distill import data as D
        from distill.teachers import load_tokenizer

        prepared = prepare_data(apply_override(base_cfg, "data.validation_docs=0"), settings=settings)
        dc, tok = base_cfg["data"], load_tokenizer(settings, base_cfg["teacher"]["name"])
        docs = D.load_texts(settings, base_cfg["domain"], "train", limit=dc["validation_docs"], seed=dc["seed"] + 1,
                            exclude={t.id for t in prepared["train"].texts})
        val = D.pack_windows(docs, D.tokenize(docs, tok), dc["seq_len"], max_windows=args.validation_windows)
        val.resistance = torch.tensor([D.resistance(docs[int(j)].text) for j in val.doc_index])
        prepared["validation"] = val
        n, T = val.ids[:, :-1].shape
        k = base_cfg["teacher"]["top_k"]  # a placeholder teacher (uniform over ids 0..k-1): its KL / top-1 are not used
        for t in prepared["teacher"].values():
            t["validation"] = {"topk_idx": torch.arange(k, dtype=torch.int32).expand(n, T, k).contiguous(),
                               "topk_logits": torch.full((n, T, k), -math.log(k + 1), dtype=torch.float16)}
    t_prep = time.perf_counter() - t0
    train_ids = {t.id for t in prepared["train"].texts}
    val_ids = {t.id for t in prepared["validation"].texts}
    assert not train_ids & val_ids, "validation documents overlap the training documents"
    # the recipe evaluates "heldout": hand it the validation split under that name, so no held-out number is seen
    tuned = {**prepared, "heldout": prepared["validation"],
             "teacher": {n: {"train": t["train"], "heldout": t["validation"]} for n, t in prepared["teacher"].items()}}
    partial = RESULTS / f"{args.out}.partial.jsonl"
    rows, base_val = [], None
    plan = [(name, args.seed) for name in args.only or list(GRID)]
    i = 0
    while i < len(plan):
        name, seed = plan[i]
        i += 1
        cfg = config(seed)
        for o in GRID[name]:
            cfg = apply_override(cfg, o)
        keep = settings.path("cache", "distill-trl-tune", f"{name}-s{seed}")
        cfg = apply_override(cfg, f"output_dir={keep}")
        rec = DistillRecipe(cfg, settings=settings, prepared=tuned)
        rec.setup()
        if base_val is None:
            base_val = rec.evaluate(base=True)
        t1 = time.perf_counter()
        ev = rec.train()
        wall = time.perf_counter() - t1
        rec.save_checkpoint()
        train, held = prepared["train"], prepared["heldout"]  # the real held-out windows, for distill_trl.py only
        np.savez(keep / "windows.npz", train_ids=train.ids.numpy(), train_valid=train.valid.numpy(),
                 heldout_ids=held.ids[: args.heldout_windows].numpy(),
                 heldout_valid=held.valid[: args.heldout_windows].numpy())
        (keep / "ours.json").write_text(json.dumps({
            "adapter": str(keep), "setup_and_capture_s": None, "train_wall_s": round(wall, 1),
            "target_tokens": int(rec.tokens_seen), "tokens_per_s": round(rec.train_tokens_per_s, 1),
            "peak_rss_mib": None, "recipe_metrics": {}, "train_windows": len(train), "trained_by": "distill_trl_tune.py",
            "tune_name": name, "overrides": GRID[name],
            "config": {k: cfg[k] for k in ("student", "teacher", "loss", "temperature", "sampler", "curriculum",
                                           "optim", "seed")}}, default=str))
        row = {"name": name, "overrides": GRID[name], "seed": seed, "validation_ppl": round(ev["ppl"], 3),
               "validation_kl": round(ev["kl_to_teacher"], 4) if args.validation_kl else None,
               "validation_top1": round(ev["top1_agreement"], 4) if args.validation_kl else None,
               "validation_tokens": ev["tokens"], "train_wall_s": round(wall, 1),
               "tokens_per_s": round(rec.train_tokens_per_s, 1),
               "train_loss": [round(x, 4) for x in rec.train_loss]}
        rec.cleanup()
        rows.append(row)
        with partial.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "train_loss"}), file=sys.stderr, flush=True)
        if i == len(plan) and args.then_seeds and all(p[1] == args.seed for p in plan):
            best = min((r for r in rows if r["seed"] == args.seed), key=lambda r: r["validation_ppl"])["name"]
            print(f"selected {best} (lowest validation ppl); training it at seeds {args.then_seeds}", file=sys.stderr,
                  flush=True)
            plan += [(best, s) for s in args.then_seeds]
    save(args.out, {"args": vars(args), "prepare_s": round(t_prep, 1),
                    "validation": {"docs": len(prepared["validation"].texts), "windows": len(prepared["validation"]),
                                   "overlap_with_training_docs": 0},
                    "base_validation": {"ppl": round(base_val["ppl"], 4), "tokens": base_val["tokens"]},
                    "selection_rule": "lowest validation ppl at seed " + str(args.seed), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
