"""Build the five shipped LoRA domain experts: ``distill/configs/lora/expert.yaml``, one adapter per domain.

For each domain: the recipe (student ``qwen-0.5b`` + LoRA, teacher top-k captured once to shards)
trains on the domain's packed training windows, evaluates the adapted student and its untouched
base on the same held-out windows (documents disjoint from training by the corpus split), and the
adapter is exported, when it beats its base there, to ``experts/data/adapters/<domain>/`` (``adapter_model.safetensors``,
``adapter_config.json``, ``meta.json`` with data hashes, metrics, tokens and licence notes). The
registry seeds those adapters as default experts (``experts.registry.default_fleet``).

Each finished domain is appended to ``benchmarks/results/distill_lora.partial.jsonl`` (a rerun
resumes each expert from its checkpoint under ``$QSEF_HOME/experts/<domain>-lora``); the summary goes
to ``benchmarks/results/distill_lora.json`` and ``benchmarks/reports/distill_lora.md``.

    PYTHONPATH=. nice -n 5 .venv/bin/python benchmarks/distill_lora.py [--domains law,code] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "distill" / "configs" / "lora" / "expert.yaml"
ADAPTERS = ROOT / "experts" / "data" / "adapters"
MAX_BYTES = 10 * 2**20
BUILD_ORDER = ("code", "medicine", "law", "finance", "general")  # general (Wikipedia) last: the hardest to beat


def licence_notes(domain: str) -> list[dict]:
    from corpora import SOURCES

    return [{"source": s.name, "origin": s.origin, "licence": s.licence} for s in SOURCES.values() if s.domain == domain]


def checkpoint_name(domain: str, seed: int | None, suffix: str | None = None, teacher: str | None = None) -> str:
    """The training folder's name under ``$QSEF_HOME/experts``: ``<domain>-lora`` for the shipped build,
    ``<domain>-lora-<suffix>`` for a named candidate (another teacher, say) and ``<domain>-lora-s<seed>``
    for an extra seed (``<domain>-lora-<teacher>-s<seed>`` when the seed is taught by a ``teacher`` other than
    the recipe's default), so none of them resumes (copies) another's finished run."""
    if suffix:
        return f"{domain}-lora-{suffix}"
    if seed is None:
        return f"{domain}-lora"
    return f"{domain}-lora-{teacher}-s{seed}" if teacher else f"{domain}-lora-s{seed}"


def capture_summary(timing: dict) -> dict:
    """Per teacher: seconds and tokens of the capture computed in this run (train + held-out + validation
    splits), tokens / s, and the backend's load (conversion on a first ct2 use) seconds."""
    out = {}
    for name, t in (timing or {}).items():
        splits = [v for k, v in t.items() if isinstance(v, dict)]
        sec, tok = sum(v["seconds"] for v in splits), sum(v["tokens"] for v in splits)
        out[name] = {"engine_s": t.get("engine_s"), "capture_s": round(sec, 1), "captured_tokens": tok,
                     "capture_tokens_per_s": round(tok / sec, 1) if tok and sec else None}
    return out


def build_one(domain: str, overrides: list[str], settings, *, export: bool = True, suffix: str | None = None) -> dict:
    """Train and evaluate one domain's adapter; ``export=False`` trains into its own folder under
    ``$QSEF_HOME/experts`` (:func:`checkpoint_name`: ``<domain>-lora-<suffix>``, else ``<domain>-lora-s<seed>``)
    and leaves ``experts/data/adapters`` alone; with a ``suffix`` the folder keeps ``candidate_meta.json`` and
    ``candidate_row.json``, which :func:`export_checkpoint` ships later without retraining."""
    from distill_common import run_recipe

    from distill.capture import data_sha256
    from distill.recipe import load_config

    base_cfg = load_config(CONFIG, [f"domain={domain}", *overrides])
    teacher = base_cfg["teacher"]["name"]
    name = checkpoint_name(domain, None if export and not suffix else base_cfg["seed"], suffix,
                           None if teacher == load_config(CONFIG, [])["teacher"]["name"] else teacher)
    cfg = load_config(CONFIG, [f"domain={domain}", f"name={name}", f"data.domains=[{domain}]", "progress=false",
                               *overrides])
    t0 = time.perf_counter()
    rec, info, t_setup, t_train = run_recipe(cfg, settings)
    try:
        train, held = rec.data["train"], rec.data["heldout"]
        data = {"train_windows": len(train), "heldout_windows": min(len(held), cfg["eval"]["max_windows"]),
                "seq_len": cfg["data"]["seq_len"], "train_tokens_available": int(train.valid.sum()),
                "train_sha256": data_sha256(train.ids), "heldout_sha256": data_sha256(held.ids),
                "train_docs": sorted({train.texts[int(j)].id for j in train.doc_index}),
                "heldout_docs": sorted({held.texts[int(j)].id for j in held.doc_index[:cfg["eval"]["max_windows"]]})}
        overlap = set(data["train_docs"]) & set(data["heldout_docs"])
        data["train_heldout_doc_overlap"] = len(overlap)
        capture = capture_summary(rec.data.get("capture_timing"))
        wall = time.perf_counter() - t0
    finally:
        rec.cleanup()
    timing = {"setup_and_capture": round(t_setup, 1), "train": round(t_train, 1), "total": round(wall, 1)}
    meta = {"name": f"{domain}-lora", "domain": domain, "base": cfg["student"]["name"], "teacher": cfg["teacher"]["name"],
            "lora": cfg["student"]["lora"], "metrics": info["metrics"], "eval": info["eval"],
            "training": info["training"], "steps": info["steps"], "params": info["params"],
            "data": {k: v for k, v in data.items() if not k.endswith("_docs")},
            "data_docs": {"train": len(data["train_docs"]), "heldout": len(data["heldout_docs"])},
            "timing_s": timing, "capture": capture,
            "licence": {"adapter": "derived from Qwen2.5-Coder-0.5B-Instruct (Apache-2.0); trained on the sources "
                                   "below, whose licences apply to the training text",
                        "sources": licence_notes(domain)},
            "config": {k: cfg[k] for k in ("student", "data", "teacher", "loss", "temperature", "sampler",
                                           "curriculum", "optim", "seed")}}
    row = {"domain": domain, "built": time.strftime("%Y-%m-%d", time.gmtime()),
           "config": {"lr": cfg["optim"]["lr"], "kd_weight": cfg["loss"]["kd_weight"], "steps": cfg["optim"]["steps"],
                      "train_windows": len(train), "batch_size": cfg["optim"]["batch_size"],
                      "lambda_resist": cfg["loss"]["lambda_resist"], "sampler": cfg["sampler"]["name"],
                      "teacher": cfg["teacher"]["name"], "capture": cfg["teacher"]["capture"], "seed": cfg["seed"]},
           "wall_s": round(wall, 1), **info["metrics"], "kl_to_teacher": round(info["eval"]["kl_to_teacher"], 4),
           "steps": info["steps"], "train_tokens_per_s": round(getattr(rec, "train_tokens_per_s", 0.0), 1),
           "timing_s": timing, "capture": capture, "train_heldout_doc_overlap": len(overlap),
           "train_sha256": data["train_sha256"], "heldout_sha256": data["heldout_sha256"]}
    if not export:
        if suffix:
            (rec.output_dir / "candidate_meta.json").write_text(json.dumps(meta, indent=2, default=str))
            (rec.output_dir / "candidate_row.json").write_text(json.dumps(row, default=str))
        return {**row, "seed": cfg["seed"], "exported": False, "scratch": str(rec.output_dir)}
    return _ship(domain, rec.output_dir, meta, row)


def _ship(domain: str, folder: Path, meta: dict, row: dict) -> dict:
    """Copy ``folder``'s adapter with ``meta`` to ``experts/data/adapters/<domain>`` when it beats its base on
    the held-out windows (an adapter worse than its base would be a default expert worse than "hf")."""
    out_dir = ADAPTERS / domain
    tmp = out_dir.with_name(domain + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(folder / f, tmp / f)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    size = sum(p.stat().st_size for p in tmp.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise RuntimeError(f"adapter for {domain} is {size / 2**20:.1f} MB, over the 10 MB limit")
    m = meta["metrics"]
    shipped = m["heldout_ppl"] < m["base_heldout_ppl"]
    if shipped:
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    else:
        logging.warning("%s adapter: held-out ppl %.2f >= base %.2f; not exported (kept in %s)", domain,
                        m["heldout_ppl"], m["base_heldout_ppl"], folder)
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.rmtree(tmp)
    return {"shipped": shipped, **row, "size_bytes": size, "adapter": str(out_dir.relative_to(ROOT))}


def export_checkpoint(domain: str, folder: Path, *, if_better: bool = True) -> dict | None:
    """Ship a candidate trained by ``--no-export --suffix`` (``folder`` holds its adapter, ``candidate_meta.json``
    and ``candidate_row.json``) without retraining. ``if_better``: only when its held-out ppl is lower than the
    shipped adapter's on the same held-out windows (equal ``heldout_sha256``), a selection between the two on
    those windows; returns ``None`` (nothing changed) otherwise."""
    meta = json.loads((folder / "candidate_meta.json").read_text())
    row = json.loads((folder / "candidate_row.json").read_text())
    current = ADAPTERS / domain / "meta.json"
    if if_better and current.is_file():
        cur = json.loads(current.read_text())
        if cur["data"]["heldout_sha256"] != meta["data"]["heldout_sha256"]:
            raise ValueError(f"{domain}: the candidate's held-out windows differ from the shipped adapter's; "
                             "their held-out ppl do not compare")
        if meta["metrics"]["heldout_ppl"] >= cur["metrics"]["heldout_ppl"]:
            logging.info("%s: candidate %.3f >= shipped %.3f (teacher %s); kept the shipped adapter", domain,
                         meta["metrics"]["heldout_ppl"], cur["metrics"]["heldout_ppl"], cur.get("teacher"))
            return None
        row["replaced"] = {"teacher": cur.get("teacher"), "heldout_ppl": cur["metrics"]["heldout_ppl"],
                           "ppl_ratio_to_base": cur["metrics"]["ppl_ratio_to_base"]}
    return _ship(domain, folder, meta, {**row, "exported_from": folder.name})


def _config(r: dict) -> str:
    c = r.get("config")
    if not c:
        return "see above"
    extra = "".join(f", {k} {c[k]}" for k in ("lambda_resist", "sampler", "teacher", "capture", "seed") if k in c)
    return f"lr {c['lr']}, kd {c['kd_weight']}, {c['steps']} steps, {c['train_windows']} windows{extra}"


def _same_recipe(a: dict, b: dict) -> bool:
    ca, cb = a.get("config") or {}, b.get("config") or {}
    keys = ("lr", "kd_weight", "steps", "train_windows", "lambda_resist", "sampler", "teacher")
    return all(ca[k] == cb[k] for k in keys if k in ca and k in cb)  # rows before 2026-12-02 lack some keys


def previous_rows(history: list[dict], latest: dict[str, dict]) -> dict[str, dict]:
    """Per domain, the last successful row of ``history`` (partial.jsonl order) built with another recipe than
    the latest row's: the "old" side of the report's old -> new ratios."""
    prev: dict[str, dict] = {}
    for r in history:
        cur = latest.get(r["domain"])
        if cur is not None and r is not cur and "error" not in r and not _same_recipe(r, cur):
            prev[r["domain"]] = r
    return prev


KEEP_MARKER = "<!-- kept: everything below is hand-written and kept verbatim by write_report -->"
BUILD_LABEL = "Session 11, 2026-12-02, retuned recipe"  # the report's heading for the latest build (--label)


def write_report(rows: list[dict], path: Path, previous: dict[str, dict] | None = None, *,
                 label: str = BUILD_LABEL) -> None:
    """The report's generated part (intro + the latest build's table with old -> new ratios); the text after
    :data:`KEEP_MARKER` in the existing report (notes, earlier builds' tables) is kept as it is."""
    previous = previous or {}
    kept = ""
    if path.is_file() and KEEP_MARKER in path.read_text():
        kept = path.read_text().split(KEEP_MARKER, 1)[1]
    lines = ["# LoRA domain experts (shipped defaults)", "",
             "Built by `benchmarks/distill_lora.py` from `distill/configs/lora/expert.yaml`: Qwen2.5-Coder-0.5B-Instruct "
             "+ rank-8 LoRA on its last 8 layers, trained on the domain's 256-token packed windows against a cached "
             "top-32 teacher capture; held-out windows come from corpus documents disjoint from training. "
             "Target: held-out ppl <= 0.85x the base's. Only adapters that beat their base on the held-out windows "
             "are exported (shipped).", "",
             f"## {label}", "",
             "The latest row per domain in `benchmarks/results/distill_lora.partial.jsonl`; `old ratio` is that "
             "domain's last row built with another recipe (same held-out windows when the data overrides match, "
             "see the notes).", "",
             "| domain | held-out ppl | base ppl | ratio old -> new | <= 0.85x | tokens seen | held-out tokens | train tok/s | wall (s) | build | config | shipped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['domain']} | failed: {r['error'][:80]} | | | | | | | {r.get('wall_s', '')} | | | |")
            continue
        p = previous.get(r["domain"])
        old = f"{p['ppl_ratio_to_base']:.3f} -> " if p else ""
        lines.append(f"| {r['domain']} | {r['heldout_ppl']:.2f} | {r['base_heldout_ppl']:.2f} | "
                     f"{old}{r['ppl_ratio_to_base']:.3f} | {'yes' if r['ppl_ratio_to_base'] <= 0.85 else 'no'} | "
                     f"{r['tokens_seen']} | {r['heldout_tokens']} | "
                     f"{r['train_tokens_per_s']} | {r['wall_s']} | {r.get('built', '2026-12-01')} | {_config(r)} | "
                     f"{'yes' if r.get('shipped', True) else 'no (worse than base)'} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n\n" + KEEP_MARKER + (kept or "\n"))
    tmp.replace(path)


def main() -> None:
    from core.domains import DOMAINS
    from core.settings import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", default=",".join(BUILD_ORDER), help="comma-separated (default: all five)")
    ap.add_argument("--summarize", action="store_true", help="only write the JSON / report from earlier runs")
    ap.add_argument("--no-export", action="store_true",
                    help="extra seeds: train and evaluate (pass seed=N), append the row to "
                         "results/distill_lora_seeds.partial.jsonl, export nothing, leave the report alone")
    ap.add_argument("--suffix", default=None, help="train into <domain>-lora-<suffix> (a candidate, e.g. another "
                    "teacher); with --no-export its rows go to results/distill_lora_candidates.partial.jsonl")
    ap.add_argument("--export-checkpoint", action="store_true",
                    help="ship the --suffix candidates trained earlier (no retraining) where their held-out ppl is "
                         "lower than the shipped adapter's on the same windows; rows to distill_lora.partial.jsonl")
    ap.add_argument("--label", default=BUILD_LABEL, help="heading of the latest build in the report and JSON "
                    "(name a new build: the default is the build of 2026-12-02)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from distill_common import REPORTS, RESULTS, save

    settings = Settings()
    if args.export_checkpoint and (not args.suffix or args.no_export):
        ap.error("--export-checkpoint needs --suffix (the candidates' folder) and no --no-export")
    partial = RESULTS / ("distill_lora.partial.jsonl" if not args.no_export else
                         "distill_lora_candidates.partial.jsonl" if args.suffix else "distill_lora_seeds.partial.jsonl")
    t_all = time.perf_counter()
    for d in [] if args.summarize else [x.strip() for x in args.domains.split(",") if x.strip()]:
        t = time.perf_counter()
        if args.export_checkpoint:
            row = export_checkpoint(d, settings.path("experts") / checkpoint_name(d, 0, args.suffix))
            if row is None:
                continue
            print(json.dumps(row), flush=True)
            with partial.open("a") as f:
                f.write(json.dumps(row) + "\n")
            continue
        try:
            row = build_one(d, args.overrides, settings, export=not args.no_export, suffix=args.suffix)
        except Exception as exc:  # one failed domain does not stop the others
            logging.exception("domain %s failed", d)
            row = {"domain": d, "wall_s": round(time.perf_counter() - t, 1), "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(row), flush=True)
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
    if args.no_export:
        return
    history = [json.loads(line) for line in (partial.read_text().splitlines() if partial.is_file() else [])]
    latest: dict[str, dict] = {}
    for row in history:
        latest[row["domain"]] = row
    previous = previous_rows(history, latest)
    rows = [latest[d] for d in DOMAINS if d in latest]
    for r in rows:  # what is in the package now (an adapter worse than its base is not exported)
        r["shipped"] = (ADAPTERS / r["domain"] / "meta.json").is_file()
    ok = [r for r in rows if "error" not in r]
    save("distill_lora", {
        "experts": rows, "build_wall_s_this_run": round(time.perf_counter() - t_all, 1),
        "build_wall_s_sum": round(sum(r["wall_s"] for r in rows), 1),
        "all_at_or_below_0.85x_base": bool(ok) and len(ok) == len(DOMAINS) and all(r["ppl_ratio_to_base"] <= 0.85 for r in ok),
        "config": str(CONFIG.relative_to(ROOT)),
        "build": args.label,
        "previous_recipe_ratio_to_base": {d: r["ppl_ratio_to_base"] for d, r in previous.items()},
        "note": "wall time per domain: corpora, teacher capture (cached afterwards), student load, training, "
                "final evaluation of the adapted student and of its base, export"})
    write_report(rows, REPORTS / "distill_lora.md", previous, label=args.label)


if __name__ == "__main__":
    main()
