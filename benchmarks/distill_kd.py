"""KD vs no KD (3 seeds) and ablations of the QRH student, on one cached dataset.

Every run uses the same student size, data (cached teacher top-k) and number of steps. Reports
held-out perplexity, top-1 agreement with the teacher, KL to the teacher and linear CKA between
student and teacher representations (Qwen mean-pooled last hidden state; MiniLM embedding).

    .venv/bin/python benchmarks/distill_kd.py [--seeds 0 1 2] [--variants kd no_kd ...] [--steps 300]

The ``two_teachers_*`` variants need Qwen2.5-Coder-1.5B's top-k over the windows: the first run
computes it (a few minutes on a quiet CPU, ~30 on a busy one) and caches it like the 0.5B teacher's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_common import RESULTS, bench_config, save

from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

BIG = "qwen-1.5b"  # Qwen2.5-Coder-1.5B-Instruct, the second LM teacher

VARIANTS: dict[str, list[str]] = {
    "kd": [],  # the full model: prime embedding, spectral mixing, quaternion, KD + MiniLM alignment + resistance
    "no_kd": ["loss.kd_weight=0", "loss.lambda_align=0"],  # same student, CE only
    "learned_embedding": ["model.embedding=learned"],
    "softmax_attention": ["model.mixer=attention"],
    "dense_linear": ["model.linear=dense"],
    "alignment_off": ["loss.lambda_align=0"],  # also "single teacher": the Qwen LM teacher alone
    "resistance_off": ["loss.resistance_weighting=false", "sampler.name=uniform"],
    "multi_view_kd": ["teacher.views=[{temperature_scale: 1.0, weight: 1.0}, {temperature_scale: 2.0, weight: 1.0}]",
                      "aggregation.name=arithmetic"],
    # two real LM teachers sharing the tokenizer: Qwen2.5-Coder-0.5B + 1.5B, equal weights, one operator each;
    # evaluation (KL, top-1 agreement, CKA) stays against the 0.5B teacher, as for every other variant
    **{f"two_teachers_{op}": [f"teacher.views=[{{teacher: qwen-0.5b, weight: 1.0}}, {{teacher: {BIG}, weight: 1.0}}]",
                              f"aggregation.name={op}"] for op in ("arithmetic", "geometric", "confidence")},
    "teacher_1.5b_only": [f"teacher.views=[{{teacher: {BIG}, weight: 1.0}}]"],  # the bigger teacher alone
}


def lm_teacher_views(variants) -> list[str]:
    """One override naming every LM teacher the variants use, so the data holds (and caches) each of them."""
    names: list[str] = []
    for v in variants:
        cfg = bench_config(*VARIANTS[v])
        for view in cfg["teacher"]["views"]:
            name = view.get("teacher") or cfg["teacher"]["name"]
            names += [name] if name not in names else []
    return [f"teacher.views=[{', '.join('{teacher: ' + n + '}' for n in names)}]"] if len(names) > 1 else []


def one_run(name: str, seed: int, data: dict, steps: int, extra: tuple[str, ...] = ()) -> dict:
    import torch

    from distill.metrics import linear_cka, pooled_hidden
    from distill.recipe import DistillRecipe

    cfg = bench_config(*extra, *VARIANTS[name], f"seed={seed}", f"optim.steps={steps}")
    r = DistillRecipe(cfg, settings=SETTINGS, prepared=data)
    t0 = time.perf_counter()
    r.setup()
    r.train()
    secs = time.perf_counter() - t0
    ev = r.evaluate()
    held = data["heldout"]
    s_ids = r.model.to_student_ids(held.ids[:, :-1])
    h = pooled_hidden(r.model, s_ids, held.valid)
    cka_lm = linear_cka(h, data["teacher"]["qwen-0.5b"]["heldout"]["hidden"])
    cka_enc = linear_cka(h, data["embeddings"]["minilm"]["heldout"]) if data["embeddings"] else None
    return {"variant": name, "seed": seed, **ev, "cka_teacher_lm": cka_lm, "cka_minilm": cka_enc,
            "params": r.model.num_parameters(), "train_seconds": round(secs, 1),
            "train_tokens_per_s": round(r.train_tokens_per_s, 1), "steps": steps,
            "threads": torch.get_num_threads()}


def teacher_ppl(data: dict, cfg: dict) -> dict:
    """Each LM teacher's held-out perplexity over the kept vocabulary (the students' output space) and the full one."""
    import math

    from distill.teachers import CausalLMTeacher

    held = data["heldout"]
    n = min(len(held), cfg["eval"]["max_windows"])
    m = held.valid[:n].float()
    out = {}
    for name in sorted(data["teacher"]):
        t = CausalLMTeacher(name, settings=SETTINGS, dtype=cfg["teacher"]["dtype"], threads=1)
        nll = t.target_nll(held.ids[:n], data["kept"])
        out[name] = {k: math.exp(float((v * m).sum() / m.sum())) for k, v in nll.items()}
        out[name]["tokens"] = int(m.sum())
        t.close()
        print(f"teacher {name}: held-out ppl {out[name]['kept']:.2f} (kept vocabulary), {out[name]['full']:.2f} (full)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="distill_kd")
    ap.add_argument("--summarize", action="store_true", help="only write the JSON from the finished runs")
    ap.add_argument("--set", nargs="*", default=[], metavar="key=value", help="overrides for every run")
    ap.add_argument("--teacher-ppl", action="store_true",
                    help="only measure each LM teacher's held-out perplexity -> distill_kd_teachers.json")
    args = ap.parse_args()

    from core.logs import setup_logging

    setup_logging("WARNING")
    from distill.recipe import prepare_data

    cfg = bench_config(*args.set, *lm_teacher_views(args.variants))
    t0 = time.perf_counter()
    data = prepare_data(cfg, settings=SETTINGS)  # teacher top-k (every LM teacher) + MiniLM embeddings: cached after the first run
    print(f"data: {len(data['train'])} train / {len(data['heldout'])} held-out windows of {cfg['data']['seq_len']} "
          f"tokens, vocabulary coverage {data['coverage']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.teacher_ppl:
        save("distill_kd_teachers", {"config": cfg, "teachers": teacher_ppl(data, cfg)})
        return
    partial = RESULTS / f"{args.out}.partial.jsonl"
    done = set()
    if partial.exists():
        rows = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
        done = {(r["variant"], r["seed"], r["steps"]) for r in rows}
    # KD vs no KD over all seeds first, then the ablations seed by seed: a run stopped early still
    # leaves the headline comparison complete (rows are appended as they finish)
    head = [v for v in ("kd", "no_kd") if v in args.variants]
    plan = [(v, s) for s in args.seeds for v in head]
    plan += [(v, s) for s in args.seeds for v in args.variants if v not in head]
    for name, seed in plan:
        if partial.exists():  # another process may share the plan: re-read before each run
            done = {(r["variant"], r["seed"], r["steps"]) for r in map(json.loads, partial.read_text().splitlines())}
        if args.summarize or (name, seed, args.steps) in done:
            continue
        row = one_run(name, seed, data, args.steps, tuple(args.set))
        print(json.dumps(row), flush=True)
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in partial.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["steps"] == args.steps]
    cfg = bench_config(*args.set, f"optim.steps={args.steps}")
    save(args.out, {"config": cfg, "data": {"train_windows": len(data["train"]), "heldout_windows": len(data["heldout"]),
                                            "coverage": data["coverage"]}, "variants": VARIANTS, "runs": rows})


if __name__ == "__main__":
    main()
