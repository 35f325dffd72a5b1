"""Do the shipped LoRA domain experts answer in-domain multiple-choice questions better than their base?

    python benchmarks/distill_mc.py --stage speed            # s/question, full vs last-position letter path
    python benchmarks/distill_mc.py --stage score [--ood 16]  # score base + 5 adapters (cached, resumable)
    python benchmarks/distill_mc.py --stage shared [--ood 8]  # the same MMLU scores, ~1.5-2x faster (below)
    python benchmarks/distill_mc.py --stage report [--ood 16] # the numbers, from the answer cache only

The base (``qwen-0.5b``) and each adapter of ``experts/data/adapters/<domain>/`` (merged into the base,
fp32) answer in the Qwen family's prompt format, the dev-set choice of ``benchmarks/answer_quality.py
--stage dev`` (:func:`qwen_format`; a letter form, as the shared path below scores letters only), on the graded
MMLU rows (:func:`benchmarks.answer_quality.graded_rows`: 80 per domain, never used as history or calibration).
In-domain: each adapter on its own domain's 80; out-of-domain: each adapter on the first ``--ood`` graded rows
of every other domain. ``--sets bigbench,bsdquiz`` adds the in-domain rows of
those answer sets. Everything goes through :class:`experts.answers.AnswerScorer`, whose cache keeps each
adapter's scores apart from the base's (and lets an interrupted run resume).

``--stage shared`` writes the same cache entries faster: the shipped adapters change decoder layers 16-23
only, so the base's layers 0-15 run once per question and each adapter reruns just its merged top layers
from that hidden state. It first rescores questions already scored through the merged adapter model and
stops if any score differs by more than 1e-3.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import save
from core.settings import Settings

BASE = "qwen-0.5b"
DOMAINS = ("code", "law", "medicine", "finance", "general")
REPORT = Path(__file__).resolve().parent / "reports" / "distill_mc.md"


def qwen_format(settings: Settings):
    """The prompt format every score here uses: the Qwen family's dev-set choice, as ``answer_quality.py``'s
    report uses it for the fleet (so the base's answers here are the fleet's qwen-0.5b answers).

    Raises:
        SystemExit: no dev-set choice has been made yet, or it is a cloze form (the shared path scores letters).
    """
    from benchmarks.answer_quality import chosen_formats, formats_file

    if not formats_file(settings).is_file():
        raise SystemExit(f"no dev-set prompt format choice in {formats_file(settings)}: run "
                         "`benchmarks/answer_quality.py --stage dev qwen-1.5b qwen-0.5b` first")
    fmt = chosen_formats(settings, [BASE])[BASE]
    if fmt.form != "letter":
        raise SystemExit(f"the Qwen family's dev-set format is {fmt.name}; this benchmark scores letter forms only")
    return fmt


def adapter_scorer(settings: Settings, domain: str):
    from experts.answers import expert_scorer

    return expert_scorer(f"{domain}-lora", settings=settings)


def base_scorer(settings: Settings):
    from experts.answers import AnswerScorer

    return AnswerScorer(BASE, settings=settings)


def mmlu_by_domain(settings: Settings) -> dict[str, list[dict]]:
    from benchmarks.answer_quality import graded_rows

    by: dict[str, list[dict]] = {d: [] for d in DOMAINS}
    for r in graded_rows(settings):
        by[r["domain"]].append(r)
    return by


def set_by_domain(settings: Settings, name: str) -> dict[str, list[dict]]:
    from benchmarks.answer_quality import set_rows

    by: dict[str, list[dict]] = {}
    for r in set_rows(settings, name):
        by.setdefault(r["domain"], []).append(r)
    return by


def plan(settings: Settings, ood: int, sets: list[str], rounds: int = 2) -> list[tuple[str, str, list[dict]]]:
    """``(scorer, block, rows)`` in scoring order: the in-domain questions in ``rounds`` slices, each slice
    scored by the base and then the adapter of every domain (a run cut short holds paired answers of every
    domain), then the out-of-domain blocks, then the extra sets."""
    by = mmlu_by_domain(settings)
    out = []
    for k in range(rounds):
        for d in DOMAINS:
            n = len(by[d])
            part = by[d][k * n // rounds:(k + 1) * n // rounds]
            out += [("base", f"mmlu:{d}", part), (d, f"mmlu:{d}", part)]
    for d in DOMAINS:
        out.append((d, "mmlu:ood", [r for e in DOMAINS if e != d for r in by[e][:ood]]))
    for name in sets:
        for d, rows in set_by_domain(settings, name).items():
            if d in DOMAINS:
                out += [("base", f"{name}:{d}", rows), (d, f"{name}:{d}", rows)]
    return out


def blocks(settings: Settings, ood: int, sets: list[str]) -> dict[tuple[str, str], list[dict]]:
    """``(adapter domain, block) -> rows`` of every comparison (in-domain blocks whole)."""
    by = mmlu_by_domain(settings)
    out = {(d, f"mmlu:{d}"): by[d] for d in DOMAINS}
    for d in DOMAINS:
        out[(d, "mmlu:ood")] = [r for e in DOMAINS if e != d for r in by[e][:ood]]
    for name in sets:
        for d, rows in set_by_domain(settings, name).items():
            if d in DOMAINS:
                out[(d, f"{name}:{d}")] = rows
    return out


def stage_speed(settings: Settings, n: int = 16) -> dict:
    """Seconds per question of the letter form, the full ``(B, L, V)`` log-softmax path and the
    last-position path, alternated batch by batch on the same questions; and their largest difference."""
    from experts.answers import MCQuestion
    from router.answers import to_questions

    by = mmlu_by_domain(settings)
    rows = [r for group in zip(*by.values(), strict=False) for r in group][:n]
    qs: list[MCQuestion] = to_questions(rows)
    fmt = qwen_format(settings)
    sc = base_scorer(settings)
    sc.load()
    sc._score_letter(qs[:1], fmt.chat)  # warm-up
    t = {"full": 0.0, "last": 0.0}
    res: dict[str, list] = {"full": [], "last": []}
    for s in range(0, len(qs), sc.batch_size):
        part = qs[s:s + sc.batch_size]
        for name, fast in (("full", False), ("last", True)) if (s // sc.batch_size) % 2 == 0 else \
                (("last", True), ("full", False)):
            t0 = time.perf_counter()
            res[name] += sc._score_letter(part, fmt.chat, fast=fast)
            t[name] += time.perf_counter() - t0
    diff = max(abs(a - b) for ra, rb in zip(res["full"], res["last"], strict=True) for a, b in zip(ra, rb, strict=True))
    same = sum(int(max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__))
               for a, b in zip(res["full"], res["last"], strict=True))
    out = {"n_questions": len(qs), "batch_size": sc.batch_size, "model": BASE, "format": fmt.name,
           "s_per_question": {k: round(v / len(qs), 3) for k, v in t.items()},
           "speedup": round(t["full"] / t["last"], 3), "max_abs_score_diff": diff, "same_argmax": same,
           "torch_threads": settings.torch_threads}
    print(json.dumps(out))
    return out


def stage_score(settings: Settings, ood: int, sets: list[str]) -> None:
    from experts.answers import ModelLoadError
    from router.answers import to_questions

    fmt = qwen_format(settings)
    scorers: dict[str, object] = {}
    for who, block, rows in plan(settings, ood, sets):
        if who not in scorers:
            scorers[who] = base_scorer(settings) if who == "base" else adapter_scorer(settings, who)
        sc = scorers[who]
        qs = to_questions(rows)
        n_new = len(qs) - len(set(sc.cached(fmt)) & {q.key for q in qs})
        if not n_new:
            continue
        for other, o in scorers.items():  # the base and one adapter in memory at a time
            if other not in (who, "base"):
                o.unload()
        t0 = time.perf_counter()
        try:
            sc.score(qs, fmt)
        except ModelLoadError as exc:
            print(json.dumps({"scorer": who, "error": str(exc)}), flush=True)
            continue
        dt = time.perf_counter() - t0
        print(json.dumps({"scorer": who, "block": block, "n": len(qs), "newly_scored": n_new,
                          "seconds": round(dt, 1), "s_per_q": round(dt / n_new, 2), "time": time.strftime("%H:%M:%S")}),
              flush=True)


def adapter_layers(settings: Settings, domain: str) -> tuple[int, list]:
    """``(first, layers)``: the decoder layers the adapter of ``domain`` changes (its ``layers_to_transform``,
    a contiguous top range), taken from the base with the adapter merged in; the rest is the base's."""
    sc = adapter_scorer(settings, domain)
    cfg = json.loads((sc.adapter / "adapter_config.json").read_text())
    idx = sorted(cfg.get("layers_to_transform") or [])
    sc.load()
    n = len(sc._lm.model.layers)
    if not idx or idx != list(range(idx[0], n)) or cfg.get("modules_to_save"):
        raise SystemExit(f"{domain}: the shared-prefix path needs an adapter on a top range of layers only")
    layers = list(sc._lm.model.layers[idx[0]:])
    sc.unload()
    return idx[0], layers


def shared_scores(base, adapters: dict[str, tuple[int, list]], qs: list, who: dict[str, list[str]],
                  chat: bool) -> dict:
    """Letter-form scores (with the chat template when ``chat``) of the base and of the adapters ``who[q.key]``
    on ``qs``, sharing the base's lower layers (which the adapters do not change): ``{scorer: {key: scores}}``. The base runs once per batch; an
    adapter reruns only its own top layers from the captured hidden state, then the base's norm and head at
    the last position (what :meth:`AnswerScorer._last_logprobs` computes on the merged model)."""
    import torch

    lm = base._lm
    first = {f for f, _ in adapters.values()}
    assert len(first) == 1, first
    first = first.pop()
    letter_ids = base.letter_ids(chat)
    seen: dict = {}

    def grab(module, args, kwargs):
        seen["h"], seen["kw"] = args[0] if args else kwargs["hidden_states"], dict(kwargs)

    handle = lm.model.layers[first].register_forward_pre_hook(grab, with_kwargs=True)
    out: dict[str, dict] = {"base": {}}
    order = sorted(range(len(qs)), key=lambda i: len(qs[i].question))
    try:
        for s in range(0, len(order), base.batch_size):
            idx = order[s:s + base.batch_size]
            seqs = [base._clip(base._encode(base._letter_context(qs[i], chat)), qs[i]) for i in idx]
            lp = base._last_logprobs(seqs)
            last = torch.tensor([len(x) - 1 for x in seqs])
            for b, i in enumerate(idx):
                out["base"][qs[i].key] = [float(lp[b, letter_ids[k]]) for k in range(len(qs[i].choices))]
            names = sorted({a for i in idx for a in who.get(qs[i].key, [])})
            kw = {k: v for k, v in seen["kw"].items() if k not in ("hidden_states", "cache", "past_key_values")}
            kw["use_cache"] = False
            for a in names:
                h = seen["h"]
                with torch.no_grad():
                    for layer in adapters[a][1]:
                        h = layer(h, **kw)
                    h = lm.model.norm(h)[torch.arange(len(seqs)), last]
                    alp = torch.log_softmax(lm.get_output_embeddings()(h).float(), -1)
                for b, i in enumerate(idx):
                    if a in who.get(qs[i].key, []):
                        out.setdefault(a, {})[qs[i].key] = [float(alp[b, letter_ids[k]])
                                                            for k in range(len(qs[i].choices))]
    finally:
        handle.remove()
    return out


def stage_shared(settings: Settings, ood: int, chunk: int = 8) -> None:
    """The in-domain and out-of-domain MMLU blocks of :func:`plan`, scored with :func:`shared_scores` (the
    same cache files as ``--stage score``); first checked against the merged-adapter scores already cached."""
    from router.answers import to_questions

    fmt = qwen_format(settings)
    base = base_scorer(settings)
    scorers = {d: adapter_scorer(settings, d) for d in DOMAINS}
    adapters = {d: adapter_layers(settings, d) for d in DOMAINS}
    base.load()
    have = {"base": base.cached(fmt), **{d: sc.cached(fmt) for d, sc in scorers.items()}}
    by = mmlu_by_domain(settings)
    # a check first: questions some adapter has scored through the merged model, rescored here
    check = [(d, q) for d in DOMAINS for q in to_questions(by[d]) if q.key in have[d]][:4]
    if check:
        got = shared_scores(base, adapters, [q for _, q in check], {q.key: [d] for d, q in check}, fmt.chat)
        diff = max(abs(a - b) for d, q in check for a, b in zip(got[d][q.key], have[d][q.key], strict=True))
        print(json.dumps({"check_vs_merged": len(check), "max_abs_diff": diff}), flush=True)
        if diff > 1e-3:
            raise SystemExit(f"shared-prefix scores differ from the merged adapter's by {diff}")
    todo: list[tuple] = []  # (question, adapters to score); the base too unless cached
    for k in range(2):
        for d in DOMAINS:
            n = len(by[d])
            for q in to_questions(by[d][k * n // 2:(k + 1) * n // 2]):
                todo.append((q, [d]))
    for d in DOMAINS:
        for e in DOMAINS:
            if e != d:
                for q in to_questions(by[e][:ood]):
                    todo.append((q, [d]))
    need: dict[str, list[str]] = {}
    qs_by_key: dict = {}
    for q, names in todo:
        for a in names:
            if q.key not in have[a] and a not in need.setdefault(q.key, []):
                need[q.key].append(a)
        if q.key not in have["base"] or need.get(q.key):
            qs_by_key.setdefault(q.key, q)
    keys = [k for k in qs_by_key if need.get(k) or k not in have["base"]]
    t0, done = time.perf_counter(), 0
    for s in range(0, len(keys), chunk):
        part = [qs_by_key[k] for k in keys[s:s + chunk]]
        got = shared_scores(base, adapters, part, {q.key: need.get(q.key, []) for q in part}, fmt.chat)
        for name, res in got.items():
            sc = base if name == "base" else scorers[name]
            with sc.cache_file(fmt).open("a", encoding="utf-8") as fh:
                for key, r in res.items():
                    if key not in have[name]:
                        fh.write(json.dumps({"q": key, "scores": [round(x, 5) for x in r]}) + "\n")
                        have[name][key] = r
        done += len(part)
        print(json.dumps({"done": done, "of": len(keys), "s_per_q": round((time.perf_counter() - t0) / done, 2),
                          "time": time.strftime("%H:%M:%S")}), flush=True)


# -- statistics -----------------------------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p: ``b`` pairs only the adapter got right, ``c`` only the base."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_diff(b: int, c: int, n: int, k1: int | None = None, k2: int | None = None) -> tuple[float, float, float]:
    """Adapter minus base accuracy on the same ``n`` questions with a 95% CI: Newcombe's (1998) method 10 for
    paired proportions (Wilson intervals of both, joined through the phi correlation) when the correct counts
    ``k1`` (adapter) and ``k2`` (base) are given, else a Wald interval. ``b``/``c``: only the adapter/base right."""
    d = (b - c) / n
    if k1 is None or k2 is None:
        se = math.sqrt(max((b + c) - (b - c) ** 2 / n, 0.0)) / n
        return d, d - 1.959964 * se, d + 1.959964 * se
    both = k1 - b
    neither = n - both - b - c
    p1, p2 = k1 / n, k2 / n
    (l1, u1), (l2, u2) = wilson(k1, n), wilson(k2, n)
    den = math.sqrt((both + b) * (c + neither) * (both + c) * (b + neither))
    phi = (both * neither - b * c) / den if den else 0.0
    lo = d - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    hi = d + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return d, max(lo, -1.0), min(hi, 1.0)


def detectable(disc: float, n: int) -> float:
    """The accuracy difference a two-sided 5% paired test detects with 80% power, for a discordant-pair
    rate ``disc`` (normal approximation: (z_.975 + z_.8) * sqrt(disc / n))."""
    return (1.959964 + 0.841621) * math.sqrt(disc / n)


def compare(settings: Settings, who: str, rows: list[dict]) -> dict | None:
    """Base vs adapter ``who`` on the ``rows`` both have answered (from the cache only; ``None``: none)."""
    import numpy as np

    from router.answers import to_questions

    fmt = qwen_format(settings)
    qs = to_questions(rows)
    caches = [sc.cached(fmt) for sc in (base_scorer(settings), adapter_scorer(settings, who))]
    qs = [q for q in qs if all(q.key in c for c in caches)]  # a run cut short: the questions both answered
    if not qs:
        return None
    res = [np.array([int(np.argmax(c[q.key][: len(q.choices)])) == q.answer for q in qs]) for c in caches]
    base, ad = res
    n = len(qs)
    b, c = int((ad & ~base).sum()), int((base & ~ad).sum())
    d, lo, hi = paired_diff(b, c, n, int(ad.sum()), int(base.sum()))
    return {"n": n, "n_planned": len(rows), "base_correct": int(base.sum()), "adapter_correct": int(ad.sum()),
            "base_acc": base.mean().item(), "adapter_acc": ad.mean().item(),
            "base_ci": wilson(int(base.sum()), n), "adapter_ci": wilson(int(ad.sum()), n),
            "only_adapter": b, "only_base": c, "mcnemar_p": mcnemar_exact(b, c),
            "diff": d, "diff_ci": (lo, hi), "detectable_80pct_power": detectable((b + c) / n, n),
            "discordant_upper95": wilson(b + c, n)[1]}


def pooled(parts: list[dict]) -> dict:
    """The blocks' paired counts added up (each adapter against the base on its own questions)."""
    n = sum(r["n"] for r in parts)
    kb, ka = sum(r["base_correct"] for r in parts), sum(r["adapter_correct"] for r in parts)
    b, c = sum(r["only_adapter"] for r in parts), sum(r["only_base"] for r in parts)
    d, lo, hi = paired_diff(b, c, n, ka, kb)
    return {"n": n, "n_planned": sum(r["n_planned"] for r in parts), "base_correct": kb, "adapter_correct": ka,
            "base_acc": kb / n, "adapter_acc": ka / n, "base_ci": wilson(kb, n), "adapter_ci": wilson(ka, n),
            "only_adapter": b, "only_base": c, "mcnemar_p": mcnemar_exact(b, c), "diff": d, "diff_ci": (lo, hi),
            "detectable_80pct_power": detectable((b + c) / n, n), "discordant_upper95": wilson(b + c, n)[1]}


def stage_report(settings: Settings, ood: int, sets: list[str], speed: dict | None) -> None:
    results: dict[str, dict] = {}
    for (who, block), rows in blocks(settings, ood, sets).items():
        results.setdefault(who, {})[block] = compare(settings, who, rows)
    for kind, pick in (("in-domain", lambda b: b.startswith("mmlu:") and b != "mmlu:ood"),
                       ("out-of-domain", lambda b: b == "mmlu:ood")):
        parts = [r for by in results.values() for b, r in by.items() if pick(b) and r is not None]
        if parts:
            results.setdefault("all", {})[f"mmlu:{kind} (pooled)"] = pooled(parts)
    adapter_ids = {d: adapter_scorer(settings, d).model_id for d in DOMAINS}
    out = {"base": base_scorer(settings).model_id, "format": qwen_format(settings).name,
           "ood_per_other_domain": ood, "sets": sets, "adapters": adapter_ids, "results": results}
    if speed:
        out["speed"] = speed
    save("distill_mc", out)
    print(table(results))


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def table(results: dict[str, dict]) -> str:
    """The report's markdown table: one row per (adapter, block) with paired answers."""
    lines = ["| adapter | questions | n | base acc [95% CI] | adapter acc [95% CI] | adapter - base [95% CI] | "
             "only adapter / only base right | answers changed, upper 95% | exact McNemar p | detectable (80% power) |",
             "|---|---|---:|---|---|---|---:|---:|---:|---:|"]
    for who, by in results.items():
        for block, r in by.items():
            if r is None:
                lines.append(f"| {who}-lora | {block} | 0 | not scored | | | | | | |")
                continue
            n = f"{r['n']}" + (f" of {r['n_planned']}" if r["n"] != r["n_planned"] else "")
            name = "all five" if who == "all" else f"{who}-lora"
            lines.append(
                f"| {name} | {block} | {n} | {_pct(r['base_acc'])} [{_pct(r['base_ci'][0])}, {_pct(r['base_ci'][1])}]"
                f" | {_pct(r['adapter_acc'])} [{_pct(r['adapter_ci'][0])}, {_pct(r['adapter_ci'][1])}]"
                f" | {100 * r['diff']:+.1f} [{100 * r['diff_ci'][0]:+.1f}, {100 * r['diff_ci'][1]:+.1f}]"
                f" | {r['only_adapter']} / {r['only_base']} | {_pct(r['discordant_upper95'])}% | {r['mcnemar_p']:.3g}"
                f" | {100 * r['detectable_80pct_power']:.1f} pts |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("speed", "score", "shared", "report"), required=True)
    ap.add_argument("--ood", type=int, default=16, help="out-of-domain questions per other domain")
    ap.add_argument("--sets", default="", help="extra answer sets, comma-separated (bigbench,bsdquiz)")
    ap.add_argument("--speed-json", help="--stage report: a --stage speed output line to include")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    sets = [s for s in args.sets.split(",") if s]
    if args.stage == "speed":
        stage_speed(settings)
    elif args.stage == "score":
        stage_score(settings, args.ood, sets)
    elif args.stage == "shared":
        stage_shared(settings, args.ood)
    else:
        speed = json.loads(Path(args.speed_json).read_text().strip().splitlines()[-1]) if args.speed_json else None
        stage_report(settings, args.ood, sets, speed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
