"""Our distillation recipe against TRL's ``GKDTrainer`` on an equal budget: the same teacher, student, LoRA,
training windows, steps, batch, learning rate and seed.

* **ours**: ``distill/configs/lora/expert.yaml`` as shipped (LM loss, resistance-weighted, plus KD from the
  teacher's top-k log-probabilities captured once into shards; temperature annealing, curriculum and the
  difficulty sampler), with the teacher, windows and steps below;
* **TRL**: ``trl.experimental.gkd.GKDTrainer`` with ``lmbda=0`` (the fixed windows, no student samples),
  ``beta=0`` (forward KL on the teacher's full distribution) at temperature 1, the teacher run at every step
  — in its own environment (``benchmarks/peer_env.py``, on our torch / transformers / peft).

Each side trains in its own process (its peak resident memory is its own), from the same windows (ours
writes them; TRL reads them). Then both adapters and the untouched base are scored here, in one process, on
the same held-out windows (corpus documents disjoint from training): perplexity, token KL(teacher || student)
and top-1 agreement with the teacher, against the teacher's full fp32 distribution. Saves
``benchmarks/results/distill_trl.json`` and ``benchmarks/reports/distill_trl.md`` (``--out`` renames both).

    PYTHONPATH=. .venv/bin/python benchmarks/distill_trl.py [--domain law] [--steps 16] [--train-windows 32]
        [--set KEY=VALUE ...]   # overrides of our recipe on top of expert.yaml (recorded in the JSON and report)

``--set`` changes our side only, except ``optim.lr`` / ``optim.warmup`` / ``optim.weight_decay`` /
``optim.grad_clip``: TRL always trains with ours' optimiser settings, so both sides keep the same budget.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy
from _common import save

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "distill" / "configs" / "lora" / "expert.yaml"
TRL_REQUIREMENTS = ["trl==1.16.0", "datasets==5.2.0", "pyarrow==24.0.0", "dill==0.4.1", "multiprocess==0.70.19",
                    "xxhash==3.6.0"]


def _config(args: argparse.Namespace) -> dict:
    from distill.recipe import load_config

    return load_config(CONFIG, [
        f"domain={args.domain}", f"name={args.domain}-trlcmp", f"data.domains=[{args.domain}]",
        f"data.max_windows={{train: {args.train_windows}, heldout: {args.heldout_windows}}}",
        f"teacher.name={args.teacher}", "teacher.capture=transformers", "teacher.dtype=float32",
        f"optim.steps={args.steps}", f"optim.batch_size={args.batch_size}", f"eval.max_windows={args.heldout_windows}",
        f"seed={args.seed}", f"threads={args.threads}", "progress=false", "register=false", "checkpoint.resume=false",
        *(getattr(args, "set", None) or [])])


def run_ours(args: argparse.Namespace) -> dict:
    """Train our recipe (a child process of its own); write the windows for TRL and for scoring."""
    import numpy as np
    from distill_common import run_recipe

    from core.settings import Settings

    cfg = _config(args)
    rec, info, t_setup, t_train = run_recipe(cfg, Settings())
    train, held = rec.data["train"], rec.data["heldout"]
    np.savez(Path(args.work) / "windows.npz", train_ids=train.ids.numpy(), train_valid=train.valid.numpy(),
             heldout_ids=held.ids[: args.heldout_windows].numpy(), heldout_valid=held.valid[: args.heldout_windows].numpy())
    out = {"adapter": str(rec.output_dir), "setup_and_capture_s": round(t_setup, 1), "train_wall_s": round(t_train, 1),
           "target_tokens": int(info["metrics"]["tokens_seen"]), "tokens_per_s": round(rec.train_tokens_per_s, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "recipe_metrics": info["metrics"], "train_windows": len(train),
           "config": {k: cfg[k] for k in ("student", "teacher", "loss", "temperature", "sampler", "curriculum", "optim",
                                          "seed")}}
    rec.cleanup()
    return out


def ours_from(args: argparse.Namespace) -> dict:
    """Our side from ``distill_trl_tune.py``'s kept grid point ``args.ours_from`` (its adapter, ``ours.json`` and
    windows) instead of training it again: only when its config is the one this run would train."""
    import shutil

    d = Path(args.ours_from)
    ours = json.loads((d / "ours.json").read_text())
    want = _config(args)
    want = {k: want[k] for k in ours["config"]}
    if json.loads(json.dumps(want, default=str)) != ours["config"]:
        diff = [k for k in want if json.loads(json.dumps(want[k], default=str)) != ours["config"][k]]
        raise SystemExit(f"--ours-from {d}: its config differs from this run's in {diff}")
    shutil.copy(d / "windows.npz", Path(args.work) / "windows.npz")
    return {**ours, "reused_from": str(d)}


def run_trl(args: argparse.Namespace, ours: dict) -> dict:
    """Train GKDTrainer in the TRL peer environment on the windows ours wrote, with ours' LoRA and optimiser."""
    from peer_env import peer_python

    from core.settings import Settings
    from core.store import ModelStore

    settings = Settings()
    python = peer_python(settings, "trl", TRL_REQUIREMENTS, inherit=True)
    store, oc = ModelStore(settings), ours["config"]["optim"]
    spec = {"windows": str(Path(args.work) / "windows.npz"), "student": str(store.path("qwen-0.5b")),
            "teacher": str(store.path(args.teacher)), "out": str(Path(args.work) / "trl-adapter"),
            "lora": ours["config"]["student"]["lora"], "steps": args.steps, "batch_size": args.batch_size,
            "lr": oc["lr"], "warmup": oc["warmup"], "weight_decay": oc["weight_decay"], "grad_clip": oc["grad_clip"],
            "seed": args.seed, "threads": args.threads}
    (Path(args.work) / "trl-spec.json").write_text(json.dumps(spec))
    done = subprocess.run([str(python), str(ROOT / "benchmarks" / "peers" / "trl_gkd_run.py"),
                           str(Path(args.work) / "trl-spec.json")], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the TRL run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def score(args: argparse.Namespace, adapters: dict[str, str]) -> dict:
    """Held-out perplexity, KL(teacher || student) and top-1 agreement of the base and each adapter."""
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from core.settings import Settings
    from core.store import ModelStore

    torch.set_num_threads(args.threads)
    store = ModelStore(Settings())
    w = np.load(Path(args.work) / "windows.npz")
    ids, valid = torch.from_numpy(w["heldout_ids"]).long(), torch.from_numpy(w["heldout_valid"]).bool()
    import hashlib

    # the teacher's full held-out log-probabilities, fp32, cached on disk per window (exact: the same numbers as
    # recomputing them; a later seed's scoring then skips the teacher)
    key = hashlib.sha256(f"{args.teacher}|float32|".encode() + ids.numpy().tobytes() + valid.numpy().tobytes())
    t_cache = Settings().path("cache", "distill-trl-teacher", key.hexdigest()[:16])
    t_cache.mkdir(parents=True, exist_ok=True)
    cached = all((t_cache / f"{i}.npy").is_file() for i in range(len(ids)))
    teacher = None if cached else AutoModelForCausalLM.from_pretrained(str(store.path(args.teacher)),
                                                                       dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(str(store.path("qwen-0.5b")), dtype=torch.float32).eval()
    names = list(adapters)
    model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.eval()
    sums = {n: {"nll": 0.0, "kl": 0.0, "agree": 0, "n": 0} for n in ["base", *names]}
    teacher_nll = 0.0
    with torch.inference_mode():
        for i in range(len(ids)):
            x, ok = ids[i: i + 1, :-1], valid[i]
            target = ids[i, 1:][ok]
            path = t_cache / f"{i}.npy"
            if teacher is None:
                t_logp = torch.from_numpy(np.load(path))
            else:
                t_logp = torch.log_softmax(teacher(input_ids=x).logits[0].float(), -1)[ok]
                np.save(path.with_suffix(".tmp.npy"), t_logp.numpy())
                path.with_suffix(".tmp.npy").replace(path)
            t_top = t_logp.argmax(-1)
            teacher_nll += float(-t_logp.gather(1, target[:, None]).sum())
            for name in sums:
                if name == "base":
                    with model.disable_adapter():
                        logits = model(input_ids=x).logits[0]
                else:
                    model.set_adapter(name)
                    logits = model(input_ids=x).logits[0]
                s_logp = torch.log_softmax(logits.float(), -1)[ok]
                s = sums[name]
                s["nll"] += float(-s_logp.gather(1, target[:, None]).sum())
                s["kl"] += float((t_logp.exp() * (t_logp - s_logp)).sum())
                s["agree"] += int((s_logp.argmax(-1) == t_top).sum())
                s["n"] += int(ok.sum())
            print(f"scored held-out window {i + 1}/{len(ids)}", file=sys.stderr, flush=True)
    out: dict = {n: {"heldout_ppl": round(math.exp(s["nll"] / s["n"]), 3), "kl_to_teacher": round(s["kl"] / s["n"], 4),
                     "top1_agreement": round(s["agree"] / s["n"], 4), "heldout_tokens": s["n"]} for n, s in sums.items()}
    out["teacher_ppl"] = round(math.exp(teacher_nll / sums["base"]["n"]), 3)
    out["teacher_from_cache"] = cached
    return out


_SAME_TRL = ("domain", "teacher", "steps", "batch_size", "train_windows", "heldout_windows", "seed")


def reused_trl(args: argparse.Namespace, ours: dict) -> tuple[dict, dict, dict]:
    """TRL's row from an earlier run ``args.reuse_trl`` (results/<RUN>.json) instead of training it again: only
    when that run had the same data, steps, batch and seed and TRL trained with the optimiser settings that ours
    has now (TRL's side does not depend on our other settings). Returns (trl, its scores, the earlier base/teacher
    scores, which the caller checks against today's: the same held-out windows)."""
    prev = json.loads((ROOT / "benchmarks" / "results" / f"{args.reuse_trl}.json").read_text())
    for k in _SAME_TRL:
        if prev["args"][k] != getattr(args, k):
            raise SystemExit(f"--reuse-trl {args.reuse_trl}: its {k} is {prev['args'][k]!r}, this run's {getattr(args, k)!r}")
    for k in ("lr", "warmup", "weight_decay", "grad_clip"):
        if prev["ours"]["config"]["optim"][k] != ours["config"]["optim"][k]:
            raise SystemExit(f"--reuse-trl {args.reuse_trl}: TRL trained with optim.{k}="
                             f"{prev['ours']['config']['optim'][k]}, ours now has {ours['config']['optim'][k]}")
    if prev["ours"]["config"]["student"]["lora"] != ours["config"]["student"]["lora"]:
        raise SystemExit(f"--reuse-trl {args.reuse_trl}: another LoRA")
    trl = {**prev["trl"], "reused_from": args.reuse_trl, "reused_machine": prev["machine"]}
    return trl, prev["scores"]["trl"], {"base": prev["scores"]["base"], "teacher_ppl": prev["scores"]["teacher_ppl"]}


def write_report(result: dict, path: Path) -> None:
    ours, trl, sc = result["ours"], result["trl"], result["scores"]
    a = result["args"]
    lines = [
        "# Our distillation recipe vs TRL's GKDTrainer, equal budget", "",
        f"`benchmarks/distill_trl.py` ({result['machine']['date'][:10]}, {result['machine']['cpu']}, "
        f"{result['machine']['cores']} cores, load average {result['machine']['load_avg_1m']:.1f} at the start; other "
        "jobs ran on the machine: compare the rows with each other, not with other days).", "",
        f"Domain **{a['domain']}**; student Qwen2.5-Coder-0.5B-Instruct + LoRA (r {ours['config']['student']['lora']['r']}, "
        f"alpha {ours['config']['student']['lora']['alpha']}, last {ours['config']['student']['lora']['layers']} layers, "
        "all attention and MLP projections); teacher "
        f"{a['teacher']} (fp32); {ours['train_windows']} training windows of 256 tokens, {a['steps']} steps of "
        f"{a['batch_size']} windows, lr {ours['config']['optim']['lr']} (cosine, warm-up "
        f"{ours['config']['optim']['warmup']}), seed {a['seed']}; {sc['base']['heldout_tokens']} held-out tokens from "
        f"documents disjoint from training. Ours: {_describe_ours(ours['config'], a.get('set'))}. TRL "
        f"{trl['trl']}: GKDTrainer, lmbda 0, beta 0 (forward KL on the full vocabulary), temperature 1, the teacher "
        "forward at every step.", "",
        "| | held-out ppl | KL(teacher ‖ student) | top-1 agreement | train tokens/s | train wall (s) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
        f"| base (no training) | {sc['base']['heldout_ppl']} | {sc['base']['kl_to_teacher']} | "
        f"{sc['base']['top1_agreement']} | | | |",
        f"| ours | {sc['ours']['heldout_ppl']} | {sc['ours']['kl_to_teacher']} | {sc['ours']['top1_agreement']} | "
        f"{ours['tokens_per_s']} | {ours['train_wall_s']}{_setup_note(ours)} | "
        f"{ours['peak_rss_mib'] or 'n/a (trained inside distill_trl_tune.py, with its teacher capture)'} |",
        f"| TRL GKD{' (row from `' + trl['reused_from'] + '`, trained and scored then)' if trl.get('reused_from') else ''}"
        f" | {sc['trl']['heldout_ppl']} | {sc['trl']['kl_to_teacher']} | {sc['trl']['top1_agreement']} | "
        f"{trl['tokens_per_s']} | {trl['train_wall_s']} | {trl['peak_rss_mib']} |",
        f"| teacher | {sc.get('teacher_ppl', '')} | 0 | 1 | | | |", "",
        "One run, one seed: a small budget on a CPU, so differences of a few percent are within noise.",
    ]
    if ours.get("reused_from"):
        lines += ["", f"Our adapter was not trained again: it is the `{ours['tune_name']}` grid point of "
                  "`benchmarks/distill_trl_tune.py` (the same config and seed, chosen on its validation split), "
                  f"kept in `{ours['reused_from']}`, scored here on the held-out windows for the first time."]
    if trl.get("reused_from"):
        chk = sc["trl_reuse_check"]
        lines += ["", f"TRL was not trained again: its row is `{trl['reused_from']}`'s ({trl['reused_machine']['cpu']}, "
                  f"{trl['reused_machine']['date'][:16]}), whose TRL run had these windows, steps, batch, seed, LoRA and "
                  f"optimiser. Same held-out windows: base ppl then / now {chk['base_heldout_ppl_then_now']}, base KL "
                  f"{chk['base_kl_then_now']}, teacher ppl {chk['teacher_ppl_then_now']}."]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def _setup_note(ours: dict) -> str:
    s = ours.get("setup_and_capture_s")
    return "" if s is None else f" (+ {s} set-up and teacher capture)"


def _describe_ours(c: dict, overrides: list[str] | None) -> str:
    lc, tc, t = c["loss"], c["teacher"], c["temperature"]
    terms = [f"{lc['lambda_resist']} x LM ({'resistance-weighted' if lc['resistance_weighting'] else 'plain'})"
             if lc["lambda_resist"] else "",
             f"{lc['kd_weight']} x KD on the teacher's captured top-{tc['top_k']} (+ rest)" if lc["kd_weight"] else ""]
    temp = (f"temperature {t['start']}" if t["kind"] == "constant" or t["start"] == t["end"]
            else f"temperature {t['start']} -> {t['end']} ({t['kind']})")
    cur = "a curriculum" if c.get("curriculum") else "no curriculum"
    how = ("the shipped LoRA recipe, `distill/configs/lora/expert.yaml`" if not overrides
           else "`distill/configs/lora/expert.yaml` with `" + " ".join(overrides) + "`")
    return f"{' + '.join(x for x in terms if x)}, {temp}, {c['sampler']['name']} sampler, {cur} ({how})"


def _reuse_note(reused: list) -> str:
    if not any(reused):
        return ""
    return "; TRL's rows reused from " + ", ".join(f"`{r}`" if r else "(trained here)" for r in reused) + \
        " (trained and scored in that run, the same windows, steps, batch, seed and optimiser)"


def aggregate(names: list[str], path: Path) -> dict:
    """Mean, 95% interval (t) and Welch's test, ours against TRL, over the seeds' saved results ``names``."""
    import numpy as np
    from scipy import stats

    runs = [json.loads((ROOT / "benchmarks" / "results" / f"{n}.json").read_text()) for n in names]
    metrics = {"heldout_ppl": lambda r, side: r["scores"][side]["heldout_ppl"],
               "kl_to_teacher": lambda r, side: r["scores"][side]["kl_to_teacher"],
               "top1_agreement": lambda r, side: r["scores"][side]["top1_agreement"],
               "train_tokens_per_s": lambda r, side: r[side]["tokens_per_s"]}
    out: dict = {"runs": names, "seeds": [r["args"]["seed"] for r in runs], "base_heldout_ppl":
                 sorted({r["scores"]["base"]["heldout_ppl"] for r in runs}),
                 "overrides": sorted({" ".join(r["args"].get("set") or []) for r in runs}),
                 "trl_reused_from": [r["trl"].get("reused_from") for r in runs]}
    lines = ["# Ours vs TRL's GKDTrainer over seeds", "",
             f"`benchmarks/distill_trl.py --aggregate` over {', '.join(f'`{n}`' for n in names)} (seeds "
             f"{', '.join(str(s) for s in out['seeds'])}; the same windows, teacher capture and held-out tokens; base "
             f"held-out ppl {out['base_heldout_ppl']}; our overrides: "
             f"{', '.join(f'`{o}`' if o else 'none (expert.yaml as it was)' for o in out['overrides'])}; TRL with "
             f"ours' lr / warm-up{_reuse_note(out['trl_reused_from'])}). Mean and 95% interval (t, n-1 df); p: Welch's "
             "t-test.", "",
             "| metric | ours | TRL | p (Welch) |", "|---|---|---|---|"]
    for name, get in metrics.items():
        row = {}
        for side in ("ours", "trl"):
            v = np.array([get(r, side) for r in runs], dtype=float)
            half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            row[side] = {"mean": round(float(v.mean()), 4), "ci95": round(half, 4), "values": v.tolist()}
        ours_v, trl_v = row["ours"]["values"], row["trl"]["values"]
        p = float(stats.ttest_ind(ours_v, trl_v, equal_var=False).pvalue) if len(runs) > 1 else float("nan")
        row["welch_p"] = round(p, 4)
        out[name] = row
        lines.append(f"| {name} | {row['ours']['mean']} ± {row['ours']['ci95']} | {row['trl']['mean']} ± "
                     f"{row['trl']['ci95']} | {row['welch_p']} |")
    path.write_text("\n".join(lines) + "\n")
    return out


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The equal-budget flags (domain, teacher, steps, batch, windows, seed, threads) this script and
    ``distill_trl_tune.py`` share, so a tuned grid point and its comparison run on the same budget."""
    parser.add_argument("--domain", default="law")
    parser.add_argument("--teacher", default="qwen-1.5b")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--train-windows", type=int, default=32)
    parser.add_argument("--heldout-windows", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser)
    parser.add_argument("--work", default=None, help="work folder (default: a fresh one under $QSEF_HOME/cache)")
    parser.add_argument("--out", default="distill_trl", help="results/<OUT>.json and reports/<OUT>.md")
    parser.add_argument("--set", nargs="+", metavar="KEY=VALUE", default=None,
                        help="overrides of our recipe (e.g. loss.kd_weight=1.0); optim.* ones apply to TRL too")
    parser.add_argument("--reuse-trl", metavar="RUN", default=None,
                        help="take TRL's row from results/<RUN>.json (same data, steps, batch, seed, optimiser) "
                             "instead of training it again; checked against today's base and teacher scores")
    parser.add_argument("--ours-from", metavar="DIR", default=None,
                        help="our side from a grid point kept by distill_trl_tune.py (same config), not trained again")
    parser.add_argument("--phase", choices=["all", "ours"], default="all", help=argparse.SUPPRESS)
    parser.add_argument("--aggregate", nargs="+", metavar="RUN",
                        help="summarise saved runs (results/<RUN>.json, e.g. one per seed) instead of training")
    args = parser.parse_args()
    if args.aggregate:
        summary = aggregate(args.aggregate, ROOT / "benchmarks" / "reports" / f"{args.out}_seeds.md")
        save(f"{args.out}_seeds", summary)
        return 0
    if args.phase == "ours":  # the child process that trains our recipe
        print(json.dumps(run_ours(args)))
        return 0
    from core.settings import Settings
    from core.store import ModelStore

    ModelStore(Settings()).ensure(args.teacher)
    if args.work is None:
        args.work = str(Settings().path("cache", "distill-trl", time.strftime("%Y%m%d-%H%M%S")))
    Path(args.work).mkdir(parents=True, exist_ok=True)
    print(f"training our recipe ({args.steps} steps) ...", file=sys.stderr, flush=True)
    child = [sys.executable, __file__, "--phase", "ours", "--work", args.work] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("phase", "work", "out", "aggregate", "set", "reuse_trl", "ours_from")] + (["--set", *args.set] if args.set else [])
    if args.ours_from:
        ours = ours_from(args)
    else:
        done = subprocess.run(child, stdout=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"our recipe failed (exit {done.returncode})")
        ours = json.loads(done.stdout.strip().splitlines()[-1])
    if args.reuse_trl:
        trl, trl_scores, prev = reused_trl(args, ours)
        print(f"ours: {ours['tokens_per_s']} tokens/s; TRL from {args.reuse_trl}; scoring ...", file=sys.stderr, flush=True)
        scores = score(args, {"ours": ours["adapter"]})
        scores["trl"] = trl_scores
        scores["trl_reuse_check"] = {  # the same held-out windows: the base and the teacher score as they did then
            "base_heldout_ppl_then_now": [prev["base"]["heldout_ppl"], scores["base"]["heldout_ppl"]],
            "base_kl_then_now": [prev["base"]["kl_to_teacher"], scores["base"]["kl_to_teacher"]],
            "teacher_ppl_then_now": [prev["teacher_ppl"], scores["teacher_ppl"]]}
        if abs(prev["base"]["heldout_ppl"] / scores["base"]["heldout_ppl"] - 1) > 1e-3:
            raise SystemExit(f"--reuse-trl {args.reuse_trl}: the base scores {scores['base']['heldout_ppl']} now, "
                             f"{prev['base']['heldout_ppl']} then: not the same held-out windows")
    else:
        print(f"ours: {ours['tokens_per_s']} tokens/s; training TRL's GKDTrainer ...", file=sys.stderr, flush=True)
        trl = run_trl(args, ours)
        print(f"TRL: {trl['tokens_per_s']} tokens/s; scoring on the held-out windows ...", file=sys.stderr, flush=True)
        scores = score(args, {"ours": ours["adapter"], "trl": trl["adapter"]})
    result = {"args": {k: v for k, v in vars(args).items() if k != "phase"}, "ours": ours, "trl": trl, "scores": scores}
    saved = json.loads(save(args.out, result).read_text())
    write_report(saved, ROOT / "benchmarks" / "reports" / f"{args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
