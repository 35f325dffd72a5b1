"""Does the wall-clock budget hold? A shipped config run with a budget too small for its steps.

Runs ``qsef distill distill/configs/<domain>.yaml budget.minutes=M`` into a scratch folder and a
scratch registry (the registered default expert is left alone), times the whole process, and reads
back what ``expert.json`` and the registry recorded.

    .venv/bin/python benchmarks/distill_budget.py [--domain law] [--minutes 2.75] [--label steps budget.schedule=steps]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domain", default="law")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--label", default="shipped", help="key of this run in the JSON")
    ap.add_argument("overrides", nargs="*", help="key=value overrides (e.g. budget.schedule=steps)")
    args = ap.parse_args()
    from distill_common import save

    from experts.registry import ExpertRegistry

    with tempfile.TemporaryDirectory() as tmp:
        out, reg = Path(tmp) / "expert", Path(tmp) / "experts.sqlite"
        cmd = [sys.executable, "-m", "api.cli", "distill", f"distill/configs/{args.domain}.yaml", "progress=false",
               f"budget.minutes={args.minutes}", f"output_dir={out}",
               f"registry_path={reg}", "checkpoint.resume=false", *args.overrides, "--json"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        meta = json.loads((out / "expert.json").read_text())
        desc = ExpertRegistry(reg).get(meta["name"]).description
        saved = sorted(p.name for p in out.iterdir())
    row = {"label": args.label, "domain": args.domain, "overrides": args.overrides, "budget_minutes": args.minutes,
           "process_wall_minutes": round(wall / 60, 2), "training": meta["training"], "eval": meta["eval"],
           "files": saved, "registered_description": desc}
    print(json.dumps(row, indent=2))
    from distill_common import RESULTS

    p = RESULTS / "distill_budget.json"
    runs = [r for r in (json.loads(p.read_text())["runs"] if p.is_file() else []) if r.get("label") != args.label]
    save("distill_budget", {"runs": [*runs, row], "note": "the budget counts from the start of setup; the "
                            "process's imports before it (a few seconds) are outside it"})


if __name__ == "__main__":
    main()
