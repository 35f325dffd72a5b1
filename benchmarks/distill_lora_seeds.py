"""Seed statistics of the shipped LoRA build: seed 0 (the exported adapter, ``distill_lora.partial.jsonl``) and
the extra seeds that ``distill_lora.py --no-export seed=N`` appended to ``distill_lora_seeds.partial.jsonl``.

Per domain, over the seeds of the current recipe (rows whose held-out data hash and teacher equal seed 0's; a
row without a recorded teacher was taught by the recipe's default, the 0.5B base itself): the held-out
ppl ratio to the base, mean ± 95% t interval; a Welch test of the adapter's held-out ppl against the base's
(the base is the same model on the same windows at every seed, so its variance is 0 and Welch reduces to a
one-sample t test of the adapter's ppl against the base ppl); a one-sided one-sample t test of the ratio
against the 0.85 target (H1: mean ratio < 0.85).

    PYTHONPATH=. .venv/bin/python benchmarks/distill_lora_seeds.py [--out distill_lora_seeds_retuned]

Where runs of the same recipe without KD exist (``distill_lora.py --no-export --suffix nokd-s<N> ...
loss.kd_weight=0.0``), it also compares KD with no KD per domain (:func:`kd_versus_no_kd`). It writes
``results/<out>.json`` (with the command, machine and date) and prints the tables as markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
TARGET = 0.85


def ci95(xs: list[float]) -> tuple[float, float]:
    import numpy as np
    from scipy import stats

    a = np.asarray(xs, dtype=float)
    if len(a) < 2:
        return float(a.mean()), float("nan")
    return float(a.mean()), float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))


DEFAULT_TEACHER = "qwen-0.5b"  # the recipe's teacher when rows did not record one yet (self-KD); fixed, by history


def teacher_of(row: dict) -> str:
    """The teacher a build row was taught by (rows written before the teacher was recorded: the default)."""
    return row.get("config", {}).get("teacher") or DEFAULT_TEACHER


def summarize(seed0: dict[str, dict], extra: list[dict]) -> dict:
    from scipy import stats

    out = {}
    for d, r0 in seed0.items():
        runs = [{"seed": r0.get("config", {}).get("seed", 0), **{k: r0[k] for k in
                 ("heldout_ppl", "base_heldout_ppl", "ppl_ratio_to_base", "tokens_seen", "wall_s", "train_tokens_per_s")}}]
        h0, t0 = r0.get("heldout_sha256"), teacher_of(r0)
        for r in extra:
            if r["domain"] == d and "error" not in r and (h0 is None or r.get("heldout_sha256") == h0) \
                    and teacher_of(r) == t0 and r["seed"] not in {x["seed"] for x in runs}:
                runs.append({k: r[k] for k in ("seed", "heldout_ppl", "base_heldout_ppl", "ppl_ratio_to_base",
                                               "tokens_seen", "wall_s", "train_tokens_per_s")})
        ratios = [x["ppl_ratio_to_base"] for x in runs]
        ppl = [x["heldout_ppl"] for x in runs]
        base = [x["base_heldout_ppl"] for x in runs]
        m, h = ci95(ratios)
        row = {"teacher": t0, "n": len(runs), "seeds": [x["seed"] for x in runs], "runs": runs, "ratio_mean": round(m, 4),
               "ratio_ci95_half": None if h != h else round(h, 4), "heldout_ppl_mean": round(ci95(ppl)[0], 3),
               "base_heldout_ppl": base[0], "at_or_below_target_runs": sum(x <= TARGET for x in ratios)}
        if len(runs) > 1:
            row["welch_p_vs_base"] = float(stats.ttest_ind(ppl, base, equal_var=False).pvalue)
            row["p_ratio_below_0.85_one_sided"] = float(stats.ttest_1samp(ratios, TARGET, alternative="less").pvalue)
        out[d] = row
    return out


def kd_versus_no_kd(domains: dict[str, dict], candidates: list[dict], seed0: dict[str, dict]) -> dict:
    """KD vs no KD per domain: the seeds pooled by :func:`summarize` (the shipped recipe) against the
    ``--no-export --suffix nokd-s<N>`` runs of the same recipe with ``loss.kd_weight=0`` (plain resistance-weighted
    LM on the same windows; rows in ``distill_lora_candidates.partial.jsonl`` with the same teacher setting and
    held-out hash). Ratio = mean KD held-out ppl / mean no-KD held-out ppl; Welch's t test between the two."""
    from scipy import stats

    out = {}
    for d, kd in domains.items():
        h0 = seed0[d].get("heldout_sha256")
        nokd = [r for r in candidates if r["domain"] == d and "error" not in r
                and r.get("config", {}).get("kd_weight") == 0.0 and teacher_of(r) == kd["teacher"]
                and (h0 is None or r.get("heldout_sha256") == h0)]
        if not nokd:
            continue
        a, b = [x["heldout_ppl"] for x in kd["runs"]], [x["heldout_ppl"] for x in nokd]
        mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
        row = {"kd_seeds": kd["seeds"], "no_kd_seeds": [r["config"]["seed"] for r in nokd],
               "kd_ppl_mean": round(mean_a, 3), "no_kd_ppl_mean": round(mean_b, 3), "no_kd_ppl": b,
               "base_heldout_ppl": kd["base_heldout_ppl"], "ratio_kd_over_no_kd": round(mean_a / mean_b, 4)}
        if len(a) > 1 and len(b) > 1:
            row["welch_p"] = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        out[d] = row
    return out


def kd_table(rows: dict[str, dict]) -> str:
    """One row per domain: KD and no-KD held-out ppl (seeds), their ratio and Welch p."""
    lines = ["| domain | KD ppl mean (seeds) | no-KD ppl mean (seeds) | base ppl | KD / no-KD | Welch p |",
             "|---|---|---|---|---|---|"]
    for d, r in rows.items():
        p = r.get("welch_p")
        lines.append(f"| {d} | {r['kd_ppl_mean']:.2f} ({len(r['kd_seeds'])}) | {r['no_kd_ppl_mean']:.2f} "
                     f"({len(r['no_kd_seeds'])}) | {r['base_heldout_ppl']:.2f} | {r['ratio_kd_over_no_kd']:.3f} | "
                     f"{'—' if p is None else f'{p:.2g}'} |")
    return "\n".join(lines)


def markdown_table(domains: dict[str, dict]) -> str:
    """One row per domain: teacher, ratio per seed, mean ± 95% t, Welch p vs base, p(ratio < 0.85)."""
    def p(x: float | None) -> str:
        return "—" if x is None else f"{x:.2g}"

    lines = ["| domain | teacher | ratio per seed | mean ratio ± 95% t | held-out ppl mean (base) | Welch p vs base "
             "| p(ratio < 0.85) | seeds <= 0.85x |", "|---|---|---|---|---|---|---|---|"]
    for d, r in domains.items():
        per_seed = " / ".join(f"{x['ppl_ratio_to_base']:.3f} (s{x['seed']})" for x in r["runs"])
        half = "" if r["ratio_ci95_half"] is None else f" ± {r['ratio_ci95_half']:.3f}"
        lines.append(f"| {d} | {r['teacher']} | {per_seed} | {r['ratio_mean']:.3f}{half} | "
                     f"{r['heldout_ppl_mean']:.2f} ({r['base_heldout_ppl']:.2f}) | {p(r.get('welch_p_vs_base'))} | "
                     f"{p(r.get('p_ratio_below_0.85_one_sided'))} | {r['at_or_below_target_runs']} of {r['n']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="distill_lora_seeds_retuned")
    args = ap.parse_args()
    seed0: dict[str, dict] = {}
    for line in (RESULTS / "distill_lora.partial.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "error" not in r:
            seed0[r["domain"]] = r  # the latest row per domain: the exported adapter
    shipped = json.loads((RESULTS / "distill_lora.json").read_text()) if (RESULTS / "distill_lora.json").is_file() else {}
    p = RESULTS / "distill_lora_seeds.partial.jsonl"
    extra = [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []
    # seed 0's held-out hash lives in the adapter's meta.json (the build row does not carry it)
    root = Path(__file__).resolve().parents[1]
    for d, r in seed0.items():
        meta = root / "experts" / "data" / "adapters" / d / "meta.json"
        if meta.is_file():
            r["heldout_sha256"] = json.loads(meta.read_text())["data"]["heldout_sha256"]
    res = {"note": "seed 0 = the exported adapter (distill_lora.partial.jsonl); other seeds from "
                   "distill_lora.py --no-export seed=N with the same overrides (distill_lora_seeds.partial.jsonl), "
                   "same training and held-out windows (held-out data hash checked) and the same teacher, not exported",
           "build": shipped.get("build"), "target_ratio": TARGET, "domains": summarize(seed0, extra)}
    c = RESULTS / "distill_lora_candidates.partial.jsonl"
    candidates = [json.loads(x) for x in c.read_text().splitlines()] if c.is_file() else []
    res["kd_vs_no_kd"] = kd_versus_no_kd(res["domains"], candidates, seed0)
    from benchmarks._common import save

    print(f"saved {save(args.out, res)}")
    print(markdown_table(res["domains"]))
    if res["kd_vs_no_kd"]:
        print()
        print(kd_table(res["kd_vs_no_kd"]))


if __name__ == "__main__":
    main()
