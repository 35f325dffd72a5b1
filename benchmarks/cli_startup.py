"""Wall time of `qsef --help` against `python -c pass`, interleaved in one run, as a ratio; and of a fresh
`qsef score TEXT --json` process (encoder, profiles, graphs, seed history loaded from the data directory).

Targets: `qsef --help` median under 0.5 s on an idle machine, with no torch/transformers/pykeen import;
`qsef score` under 20 s.
Usage: python benchmarks/cli_startup.py [--runs 15] [--score-runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

HEAVY = ("torch", "transformers", "pykeen", "sentence_transformers", "scipy", "sklearn")


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--score-runs", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    qsef_help = [py, "-m", "api.cli", "--help"]
    baseline = [py, "-c", "pass"]
    for cmd in (qsef_help, baseline):  # warm the page cache
        _time(cmd)
    help_times, base_times = [], []
    for _ in range(args.runs):  # interleaved so load spikes hit both
        help_times.append(_time(qsef_help))
        base_times.append(_time(baseline))
    probe = subprocess.run(
        [py, "-c", "import sys, api.cli as c; c.build_parser().format_help(); print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    heavy_loaded = [m for m in HEAVY if m in probe]
    med_help, med_base = statistics.median(help_times), statistics.median(base_times)
    score = [py, "-m", "api.cli", "score", "What are the side effects of metformin?", "--json"]
    score_times = [_time(score) for _ in range(args.score_runs)]
    save("cli_startup", {
        "runs": args.runs,
        "qsef_help_median_s": round(med_help, 4),
        "qsef_help_p90_s": round(sorted(help_times)[int(0.9 * (len(help_times) - 1))], 4),
        "python_pass_median_s": round(med_base, 4),
        "ratio_median": round(med_help / med_base, 2),
        "target_median_s": 0.5,
        "heavy_modules_imported": heavy_loaded,
        "qsef_score_s": [round(t, 2) for t in score_times],
        "qsef_score_median_s": round(statistics.median(score_times), 2) if score_times else None,
        "qsef_score_target_s": 20,
    })


if __name__ == "__main__":
    main()
