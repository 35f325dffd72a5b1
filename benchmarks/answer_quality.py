"""Answer quality × cost of a fleet of experts that really differ, and of the routers between them.

    python benchmarks/answer_quality.py [--json]              # the report (scores come from the cache)
    python benchmarks/answer_quality.py --stage dev MODEL...   # score the dev set in all four formats
    python benchmarks/answer_quality.py --stage score MODEL... # score the graded set in the chosen format

The scoring stages exist so the long CPU work can run in the background, one model per process, ahead
of the report; the report re-reads everything from the answer cache (nothing is scored twice).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import save  # noqa: E402
from core.settings import Settings  # noqa: E402

EXPERTS = ("qwen-1.5b", "qwen-0.5b", "smollm2-135m")
PER_DOMAIN = 80     # graded MMLU questions per domain (the graded side of the split)
DEV_PER_DOMAIN = 4  # dev questions per domain for the format choice (history side: never graded)
DECIDERS = {"qwen": ["qwen-0.5b"], "smollm2": ["smollm2-135m"]}  # family members scored on dev (CPU budget)


def graded_rows(settings: Settings) -> list[dict]:
    from corpora import mmlu_answer_rows

    rows = mmlu_answer_rows(settings, split="graded", per_domain=PER_DOMAIN)
    # round-robin over domains, so a run cut short still has every domain in equal measure
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["domain"], []).append(r)
    return [r for group in zip(*by.values(), strict=False) for r in group]


def dev_rows(settings: Settings) -> list[dict]:
    from corpora import mmlu_answer_rows

    return mmlu_answer_rows(settings, split="history", per_domain=DEV_PER_DOMAIN)


def formats_file(settings: Settings) -> Path:
    return settings.path("cache", "answers") / "formats.json"


def stage_dev(settings: Settings, models: list[str]) -> None:
    from router.answers import choose_formats

    fams = {m.split("-", 1)[0] for m in models}
    out = choose_formats(dev_rows(settings), models, settings=settings,
                         deciders={f: v for f, v in DECIDERS.items() if f in fams})
    path = formats_file(settings)
    known = json.loads(path.read_text()) if path.is_file() else {"family": {}, "dev": {}}
    known["family"].update(out["family"])
    known["dev"].update(out["dev"])
    known["n_dev"] = out["n_dev"]
    path.write_text(json.dumps(known, indent=1))
    print(json.dumps(known))


def chosen_formats(settings: Settings, models: list[str]) -> dict:
    from experts.answers import PromptFormat, model_family

    fam = json.loads(formats_file(settings).read_text())["family"]
    return {m: PromptFormat.parse(fam[model_family(m)]) for m in models}


def stage_score(settings: Settings, models: list[str], rows: list[dict], fmt: str | None = None) -> None:
    from experts.answers import PromptFormat
    from router.answers import answer_matrix

    formats = {m: PromptFormat.parse(fmt) for m in models} if fmt else chosen_formats(settings, models)
    m = answer_matrix(rows, formats, settings=settings, progress=True)
    print(json.dumps({"accuracy": m.accuracy(), "errors": m.errors, "n": len(rows)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("report", "dev", "score"), default="report")
    ap.add_argument("models", nargs="*", default=list(EXPERTS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--format", help="score stage: this format instead of the dev-set choice (e.g. letter-raw)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from core.logs import setup_logging

    setup_logging("INFO")
    settings = Settings()
    if args.stage == "dev":
        stage_dev(settings, args.models)
        return 0
    if args.stage == "score":
        stage_score(settings, args.models, graded_rows(settings), args.format)
        return 0
    from benchmarks.answer_report import report

    results = report(settings, graded_rows(settings), list(args.models))
    save("answer_quality", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
