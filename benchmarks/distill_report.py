"""Build benchmarks/reports/distill.md and its plots from the distill_* result files.

    .venv/bin/python benchmarks/distill_report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_common import REPORTS, RESULTS


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def ci95(xs):
    import numpy as np
    from scipy import stats

    xs = np.asarray(xs, dtype=float)
    m = float(xs.mean())
    if len(xs) < 2:
        return m, float("nan")
    h = float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / np.sqrt(len(xs)))
    return m, h


def kd_section(res: dict, tag: str = "") -> tuple[list[str], dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    seen, runs = set(), []
    for r in res["runs"]:  # parallel runners may both finish the same (variant, seed): keep the first
        if (r["variant"], r["seed"]) not in seen:
            seen.add((r["variant"], r["seed"]))
            runs.append(r)
    variants = [v for v in res["variants"] if any(r["variant"] == v for r in runs)]
    by = {v: sorted([r for r in runs if r["variant"] == v], key=lambda r: r["seed"]) for v in variants}
    out, numbers = [], {}
    cfg = res["config"]
    out.append(f"Data: domain `{cfg['domain']}` (curriculum general -> {cfg['domain']}), "
               f"{res['data']['train_windows']} training windows and {res['data']['heldout_windows']} held-out windows of "
               f"{cfg['data']['seq_len']} tokens; kept vocabulary {cfg['model']['vocab_size']} "
               f"(held-out token coverage {res['data']['coverage']:.3f}); teacher top-{cfg['teacher']['top_k']} logits "
               f"cached once. Student: width {cfg['model']['d_model']}, {cfg['model']['n_layers']} layers, "
               f"{cfg['model']['n_heads']} heads; {runs[0]['steps']} steps x batch {cfg['optim']['batch_size']}.\n")
    out.append("| variant | seeds | params | held-out ppl (mean ± 95% CI) | top-1 agreement | KL to teacher | CKA (Qwen) | CKA (MiniLM) | train s |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        rs = by[v]
        ppl, a, kl = (ci95([r[k] for r in rs]) for k in ("ppl", "top1_agreement", "kl_to_teacher"))
        cka, ckm = ci95([r["cka_teacher_lm"] for r in rs]), ci95([r["cka_minilm"] for r in rs])
        secs = ci95([r["train_seconds"] for r in rs])[0]
        numbers[v] = {"ppl": ppl, "agree": a, "kl": kl, "cka_lm": cka, "cka_minilm": ckm, "n": len(rs)}
        fmt = lambda m, h, p=3: f"{m:.{p}f} ± {h:.{p}f}" if h == h else f"{m:.{p}f}"  # noqa: E731
        out.append(f"| {v} | {len(rs)} | {rs[0]['params']:,} | {fmt(*ppl, 2)} | {fmt(*a)} | {fmt(*kl)} | {fmt(*cka)} | "
                   f"{fmt(*ckm)} | {secs:.0f} |")
    out.append("")
    if "kd" in by and "no_kd" in by and len(by["kd"]) > 1 and len(by["no_kd"]) > 1:
        kd, nokd = [r["ppl"] for r in by["kd"]], [r["ppl"] for r in by["no_kd"]]
        ka, na = [r["top1_agreement"] for r in by["kd"]], [r["top1_agreement"] for r in by["no_kd"]]
        t_w = stats.ttest_ind(kd, nokd, equal_var=False)
        t_p = stats.ttest_rel(kd, nokd) if len(kd) == len(nokd) else None
        a_w = stats.ttest_ind(ka, na, equal_var=False)
        ratio = (sum(kd) / len(kd)) / (sum(nokd) / len(nokd))
        numbers["kd_vs_no_kd"] = {"ppl_ratio": ratio, "welch_p": float(t_w.pvalue),
                                  "paired_p": float(t_p.pvalue) if t_p else None, "agree_welch_p": float(a_w.pvalue)}
        out.append(f"**KD vs no KD** (same student, data, steps; seeds {[r['seed'] for r in by['kd']]}): perplexity ratio "
                   f"KD / no-KD = **{ratio:.3f}** (target ≤ 0.9); Welch t-test p = {t_w.pvalue:.3g}"
                   + (f", paired t-test (same seeds) p = {t_p.pvalue:.3g}" if t_p else "")
                   + f". Top-1 agreement with the teacher: KD {sum(ka) / len(ka):.3f} vs no-KD {sum(na) / len(na):.3f}, "
                   f"Welch p = {a_w.pvalue:.3g}.\n")
    if "kd" in by:
        base = ci95([r["ppl"] for r in by["kd"]])[0]
        out.append("Ablations, each against the full model (`kd`): held-out perplexity ratio variant / full "
                   "(> 1: the variant is worse):\n")
        for v in variants:
            if v in ("kd",):
                continue
            m = ci95([r["ppl"] for r in by[v]])[0]
            out.append(f"- `{v}`: {m / base:.3f}")
        out.append("")

    multi = [v for v in variants if v.startswith("two_teachers_") or v == "teacher_1.5b_only"]
    if "kd" in by and multi and len(by["kd"]) > 1:
        sec, numbers["multi_teacher"] = multi_teacher_paragraph(by, ["kd", *multi], tag)
        out += sec

    if "kd" in by and "alignment_off" in by:
        f, o = numbers["kd"], numbers["alignment_off"]
        out.append(f"**Linear CKA** between the student's mean-pooled final hidden states and the teacher representations on "
                   f"the held-out windows: with the alignment loss (full model) Qwen {f['cka_lm'][0]:.3f}, MiniLM "
                   f"{f['cka_minilm'][0]:.3f}; without it (`alignment_off`) Qwen {o['cka_lm'][0]:.3f}, MiniLM "
                   f"{o['cka_minilm'][0]:.3f}. The CE-only student (`no_kd`) has Qwen "
                   f"{numbers.get('no_kd', f)['cka_lm'][0]:.3f}, MiniLM {numbers.get('no_kd', f)['cka_minilm'][0]:.3f}.\n")
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    ms = [numbers[v]["ppl"][0] for v in variants]
    hs = [numbers[v]["ppl"][1] if numbers[v]["ppl"][1] == numbers[v]["ppl"][1] else 0 for v in variants]
    ax[0].bar(range(len(variants)), ms, yerr=hs, capsize=3, color=["C2" if v == "kd" else "C0" for v in variants])
    ax[0].set_xticks(range(len(variants)), variants, rotation=40, ha="right")
    ax[0].set_ylabel("held-out perplexity (lower is better)")
    ax[0].set_title("QRH student: KD and ablations")
    ma = [numbers[v]["agree"][0] for v in variants]
    ax[1].bar(range(len(variants)), ma, color=["C2" if v == "kd" else "C1" for v in variants])
    ax[1].set_xticks(range(len(variants)), variants, rotation=40, ha="right")
    ax[1].set_ylabel("top-1 agreement with teacher")
    fig.tight_layout()
    fig.savefig(REPORTS / f"distill_kd_ablations{tag}.png", dpi=110)
    out.append(f"![KD and ablations](distill_kd_ablations{tag}.png)\n")
    return out, numbers


def multi_teacher_paragraph(by: dict, variants: list[str], tag: str = "") -> tuple[list[str], dict]:
    """Single 0.5B teacher vs two real LM teachers (0.5B + 1.5B) under each aggregation operator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    base = [r["ppl"] for r in by["kd"]]
    out = ["**Multi-teacher (two real LMs).** Qwen2.5-Coder-0.5B + Qwen2.5-Coder-1.5B (same tokenizer, equal "
           "weights, each tempered at the annealed T, then aggregated), against the single 0.5B teacher (`kd`) "
           "and the 1.5B teacher alone. Same student, data, steps and seeds; KL, agreement and CKA are "
           "measured against the 0.5B teacher for every row. Welch t-test against `kd`:\n",
           "| variant | held-out ppl (mean ± 95% CI) | ratio to `kd` | Welch p vs `kd` | paired p (same seeds) | "
           "top-1 agreement |",
           "|---|---|---|---|---|---|"]
    numbers = {}
    for v in variants:
        ppl = [r["ppl"] for r in by[v]]
        m, h = ci95(ppl)
        agree = ci95([r["top1_agreement"] for r in by[v]])[0]
        p = float(stats.ttest_ind(ppl, base, equal_var=False).pvalue) if v != "kd" and len(ppl) > 1 else None
        same_seeds = [r["seed"] for r in by[v]] == [r["seed"] for r in by["kd"]]
        pp = float(stats.ttest_rel(ppl, base).pvalue) if v != "kd" and same_seeds and len(ppl) > 1 else None
        numbers[v] = {"ppl": [m, h], "ratio": m / ci95(base)[0], "welch_p_vs_kd": p, "paired_p_vs_kd": pp,
                      "n": len(ppl)}
        fmt_p = lambda x: "–" if x is None else f"{x:.3g}"  # noqa: E731
        out.append(f"| {v} | {m:.2f} ± {h:.2f} | {m / ci95(base)[0]:.3f} | {fmt_p(p)} | {fmt_p(pp)} | {agree:.3f} |")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ms = [numbers[v]["ppl"][0] for v in variants]
    hs = [numbers[v]["ppl"][1] for v in variants]
    ax.bar(range(len(variants)), ms, yerr=hs, capsize=3, color=["C2" if v == "kd" else "C4" for v in variants])
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
    ax.set_ylabel("held-out perplexity (95% CI)")
    ax.set_title("single 0.5B teacher vs 0.5B + 1.5B teachers")
    fig.tight_layout()
    fig.savefig(REPORTS / f"distill_multi_teacher{tag}.png", dpi=110)
    out.append("")
    teachers = _load("distill_kd_teachers")
    if teachers:
        t = teachers["teachers"]
        best = min(x["ppl"][0] for x in numbers.values())
        numbers["teacher_ppl"] = t
        out.append("Teacher perplexity on the same held-out windows and targets, over the kept vocabulary (the "
                   "students' output space) / the full vocabulary: "
                   + "; ".join(f"{n} {v['kept']:.2f} / {v['full']:.2f}" for n, v in t.items())
                   + f". The best student here is {best / min(v['kept'] for v in t.values()):.0f}x the better "
                   "teacher (kept vocabulary).\n")
    out += [f"![multi-teacher](distill_multi_teacher{tag}.png)", ""]
    return out, numbers


def mixing_section(res: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, summ = res["rows"], res["summary"]
    out = [f"Setup: {res['setup']}.\n", "| length | spectral ms (best / median) | attention ms (best / median) | speed-up (best) | spectral extra MB | attention extra MB |",
           "|---|---|---|---|---|---|"]
    lengths = sorted({r["length"] for r in rows})
    by = {(r["mixer"], r["length"]): r for r in rows}
    for n in lengths:
        s, a = by[("spectral", n)], by[("attention", n)]
        out.append(f"| {n} | {s['min_ms']:.1f} / {s['ms']:.1f} | {a['min_ms']:.1f} / {a['ms']:.1f} | "
                   f"{a['min_ms'] / s['min_ms']:.2f}x | {s['peak_extra_mb']:.0f} | "
                   f"{a['peak_extra_mb']:.0f} |")
    import numpy as np

    slope = {m: float(np.polyfit(np.log(lengths), np.log([by[(m, n)]["min_ms"] for n in lengths]), 1)[0])
             for m in ("spectral", "attention")}
    big = [n for n in lengths if n >= 1024]
    slope_big = {m: float(np.polyfit(np.log(big), np.log([by[(m, n)]["min_ms"] for n in big]), 1)[0])
                 for m in ("spectral", "attention")} if len(big) > 1 else slope
    summ.update(slope_best=slope, slope_best_1024_up=slope_big)
    sp = by[("attention", 4096)]["min_ms"] / by[("spectral", 4096)]["min_ms"] if 4096 in lengths else float("nan")
    out.append(f"\nLog-log slope of time vs length (best times, all lengths): spectral {slope['spectral']:.2f}, "
               f"attention {slope['attention']:.2f}; from 1024 up: spectral {slope_big['spectral']:.2f}, attention "
               f"{slope_big['attention']:.2f}. Speed-up at 4096: **{sp:.2f}x** (target ≥ 5x).\n")
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for mixer in ("spectral", "attention"):
        ax[0].loglog(lengths, [by[(mixer, n)]["min_ms"] for n in lengths], "o-", label=mixer)
        ax[1].loglog(lengths, [max(by[(mixer, n)]["peak_extra_mb"], 0.1) for n in lengths], "o-", label=mixer)
    ax[0].set_xlabel("sequence length"), ax[0].set_ylabel("forward time, best of repeats (ms)"), ax[0].legend()
    ax[1].set_xlabel("sequence length"), ax[1].set_ylabel("peak extra memory (MB)"), ax[1].legend()
    fig.tight_layout()
    fig.savefig(REPORTS / "distill_mixing.png", dpi=110)
    out.append("![mixing scaling](distill_mixing.png)\n")
    return out


def speed_section(res: dict) -> list[str]:
    r, q = res["rows"], res["ratios"]
    out = [f"Setup: {res['setup']}; {r['student']['threads']} torch threads.\n",
           "| model | params | scoring tokens/s | generation tokens/s | peak RSS MB |", "|---|---|---|---|---|"]
    for k in ("student", "teacher_fp32", "teacher_bf16"):
        x = r[k]
        out.append(f"| {k} | {x['params']:,} | {x['score_tokens_per_s']:.0f} | {x['generate_tokens_per_s']:.1f} | "
                   f"{x['peak_rss_mb']:.0f} |")
    out.append(f"\nStudent / teacher parameters: **{100 * q['params_share']:.2f}%** (target ≤ 5%). Scoring speed-up: "
               f"**{q['score_speedup_vs_fp32']:.0f}x** vs fp32 teacher, {q['score_speedup_vs_bf16']:.0f}x vs bf16 "
               f"(target ≥ 20x). Generation speed-up {q['generate_speedup_vs_fp32']:.1f}x vs fp32, "
               f"{r['student']['generate_tokens_per_s'] / r['teacher_bf16']['generate_tokens_per_s']:.1f}x vs bf16. "
               f"Peak memory share (vs fp32 teacher) "
               f"{100 * q['memory_share']:.1f}%.\n")
    return out


def experts_section(res: dict) -> list[str]:
    out = [f"Command per domain: `{res['command_template']}`; {res['note']}\n",
           "| expert | params | steps done / planned | budget min | wall s | held-out ppl | KL to teacher | "
           "top-1 agreement | registered | checkpoint |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    out_notes: list[str] = []
    for e in res["experts"]:
        if "error" in e:
            out.append(f"| {e['domain']} | – | – | – | {e.get('wall_s', 0):.0f} | failed: {e['error'][:80]} | | | | |")
            continue
        ev = e["eval"]
        if e.get("resumed_after"):
            out_notes.append(f"- `{e['name']}`: first attempt failed after training ({e['resumed_after']}); "
                             "re-run resumed from its final checkpoint; wall time is the sum of both.")
        tr = e.get("training") or {}
        steps = f"{tr['steps_done']} / {tr['steps_planned']}" if tr else str(e["steps"])
        if tr.get("stopped_by_budget"):
            steps += " (budget)"
        budget = f"{tr['budget_minutes']:g}" if tr.get("budget_minutes") else "–"
        out.append(f"| {e['name']} | {e['params']:,} | {steps} | {budget} | {e['wall_s']:.0f} | {ev['ppl']:.1f} | "
                   f"{ev['kl_to_teacher']:.2f} | {ev['top1_agreement']:.3f} | {e.get('registered')} | `{e['output_dir']}` |")
    return [*out, "", *out_notes, ""]


def quality_section(res: dict) -> list[str]:
    """Per-domain student vs teacher perplexity on the same kept vocabulary, and generation samples."""
    import statistics

    out = ["Per domain: the expert's held-out windows (the config's `heldout_docs`, first `eval.max_windows`), "
           "perplexity over the kept vocabulary (kept ids + one unknown class; the teacher's mass outside the kept "
           "ids is summed into unknown) and over the full tokenizer vocabulary (the student's unknown mass spread "
           "evenly over the ids it does not keep). Teacher: Qwen2.5-Coder-0.5B-Instruct, bf16.\n"]
    labels = list(res["measurements"])
    out += ["| measurement | expert | training | tokens | unknown targets | student ppl (kept) | teacher ppl (kept) | "
            "student / teacher | student ppl (full) | teacher ppl (full) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label in labels:
        for r in res["measurements"][label]:
            tr = r["trained"]
            how = f"{tr['steps']} steps, {tr['model']['embedding']} embedding"
            if tr.get("corpus"):
                how = f"{tr['corpus']['windows']} windows, " + how
            if tr.get("training") and tr["training"].get("stopped_by_budget"):
                how += f" (budget stopped it at {tr['training']['steps_done']}/{tr['training']['steps_planned']})"
            out.append(f"| {label} | {r['expert']} | {how} | {r['tokens']} | {r['unknown_target_rate']:.3f} | "
                       f"{r['student_ppl_kept']:.1f} | {r['teacher_ppl_kept']:.1f} | {r['ppl_ratio_kept']:.1f}x | "
                       f"{r['student_ppl_full']:,.0f} | {r['teacher_ppl_full']:.1f} |")
    out.append("")
    kinds = None
    for label in labels:
        rows = res["measurements"][label]
        kinds = [k for k in rows[0]["samples"][0] if k not in ("prompt", "reference")] if rows[0]["samples"] else []
        summary = ", ".join(
            f"{k}: teacher ppl of the continuation {statistics.median(s[k]['teacher_ppl'] for r in rows for s in r['samples']):.0f}"
            f" (median), distinct bigrams {statistics.mean(s[k]['distinct_bigrams'] for r in rows for s in r['samples']):.2f}"
            for k in kinds)
        out.append(f"Generations ({label}; {res['prompt_tokens']}-token held-out prompt, {res['new_tokens']} new "
                   f"tokens, 3 per domain): {summary}.\n")
        out.append(f"<details><summary>samples ({label})</summary>\n")
        for r in rows:
            for i, smp in enumerate(r["samples"]):
                out.append(f"**{r['domain']} #{i + 1}** prompt: `{_one_line(smp['prompt'])}`\n")
                for k in kinds:
                    out.append(f"- {k} (teacher ppl {smp[k]['teacher_ppl']:.0f}, distinct bigrams "
                               f"{smp[k]['distinct_bigrams']:.2f}): `{_one_line(smp[k]['text'])}`")
                out.append("")
        out.append("</details>\n")
    return out


def budget_section(res: dict) -> list[str]:
    """A shipped config run with a budget too small for its steps: where it stopped, what it recorded."""
    out = [f"Command: `benchmarks/distill_budget.py` (a shipped config, `budget.minutes` overridden, scratch folder "
           f"and registry); {res['note']}.\n",
           "| run | config | budget min (reserve) | schedules follow | process wall min | steps done / planned | "
           "schedule step at stop | held-out ppl | files saved | registry description |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        tr = r["training"]
        out.append(f"| {r['label']} | {r['domain']}.yaml {' '.join(r.get('overrides', []))} | {tr['budget_minutes']:g} "
                   f"({tr['reserve_minutes']:g}) | {tr['schedule']} | {r['process_wall_minutes']:.2f} | "
                   f"{tr['steps_done']} / {tr['steps_planned']} | {tr['schedule_step']} | {r['eval']['ppl']:.1f} | "
                   f"{', '.join(f for f in r['files'] if f != 'profile')}, profile/ | {r['registered_description']} |")
    return [*out, ""]


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("`", "'")


def main() -> None:
    REPORTS.mkdir(parents=True, exist_ok=True)
    lines = ["# Distillation: QRH students vs their teacher", "",
             "Generated by `benchmarks/distill_report.py` from `benchmarks/results/distill_*.json`. Machine: 2 shared "
             "CPU cores (other engineers' jobs ran at the same time, load average 8-12), no GPU; absolute times are noisy.",
             ""]
    numbers = {}
    kd = _load("distill_kd")
    lines += ["## KD vs no KD, ablations, CKA", ""]
    if kd:
        sec, numbers = kd_section(kd)
        lines += sec
    else:
        lines += ["Not measured (no `distill_kd.json`).", ""]
    kd300 = _load("distill_kd_300")
    if kd300:
        lines += ["### Longer training: 300 steps (KD vs no KD; two teachers)", ""]
        sec, n300 = kd_section(kd300, "_300")
        lines += sec
        numbers["steps_300"] = n300
    for title, name, fn in (("Student vs teacher on this CPU", "distill_speed", speed_section),
                            ("Spectral mixing vs softmax attention", "distill_mixing", mixing_section),
                            ("Default experts", "distill_experts", experts_section),
                            ("Default experts: student vs teacher perplexity, and samples", "distill_quality",
                             quality_section),
                            ("Wall-clock budget", "distill_budget", budget_section)):
        lines += [f"## {title}", ""]
        res = _load(name)
        lines += fn(res) if res else ["Not measured.", ""]
    notes = RESULTS / "distill_notes.md"
    if notes.is_file():
        lines += ["## Notes, limits and what was not measured", "", notes.read_text()]
    (REPORTS / "distill.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "distill_summary.json").write_text(json.dumps(numbers, indent=2))
    print(f"wrote {REPORTS / 'distill.md'}")


if __name__ == "__main__":
    main()
