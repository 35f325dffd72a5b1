"""Train the five default QRH experts with the shipped configs: ``qsef distill distill/configs/<d>.yaml``.

Records wall time, size, held-out metrics and how training ended (steps done / planned, whether
the config's wall-clock budget stopped it) of each; checkpoints land in ``$QSEF_HOME/experts/<name>/``
and each expert is registered in the router's registry.

    .venv/bin/python benchmarks/distill_experts.py [--domains law code] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.domains import DOMAINS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS))
    ap.add_argument("--summarize", action="store_true", help="only write the JSON from earlier runs")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    from distill_common import RESULTS, save

    partial = RESULTS / "distill_experts.partial.jsonl"
    experts = []
    for d in [] if args.summarize else args.domains:
        cmd = [sys.executable, "-m", "api.cli", "distill", f"distill/configs/{d}.yaml", "progress=false", *args.overrides,
               "--json"]
        t = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if out.returncode == 0:
            row = {**json.loads(out.stdout.strip().splitlines()[-1]), "domain": d, "wall_s": wall}
            meta = json.loads((Path(row["output_dir"]) / "expert.json").read_text())
            row["training"] = meta.get("training")  # steps done / planned, budget, stopped_by_budget
        else:
            row = {"domain": d, "wall_s": wall, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "?"}
        print(json.dumps(row), flush=True)
        with partial.open("a") as f:
            f.write(json.dumps(row) + "\n")
        experts.append(row)
    # the latest row per domain, over this and earlier invocations (a failed expert can be re-run alone;
    # its checkpoint resumes, so only the missing stages run again)
    latest: dict[str, dict] = {}
    for line in partial.read_text().splitlines():
        row = json.loads(line)
        prev = latest.get(row["domain"])
        if prev and "error" in prev:  # a resumed run: count the failed attempt's time too
            row = {**row, "wall_s": row["wall_s"] + prev["wall_s"],
                   "resumed_after": f"{prev['error'][:120]} ({prev['wall_s']:.0f} s)"}
        latest[row["domain"]] = row
    experts = [latest[d] for d in DOMAINS if d in latest]
    save("distill_experts", {"experts": experts,
                             "command_template": "qsef distill distill/configs/<domain>.yaml progress=false --json",
                             "note": "wall time includes loading the corpora, the teacher forward pass (cached "
                                     "afterwards), MiniLM embeddings, training, evaluation and the profile"})


if __name__ == "__main__":
    main()
