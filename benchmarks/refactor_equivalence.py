"""Behaviour unchanged by a refactor: the same measurements on an older commit and on this tree, side by side.

Runs, for each tree, ``qsef eval routing`` on the two shipped held-out sets (with and without the MMLU seed
history: the router's own configuration) and a tiny distillation recipe (synthetic teacher outputs, seed 0,
60 steps), then reports whether every number is identical. The older commit is checked out into a temporary
git worktree and run with this checkout's virtual environment; both read the same ``$QSEF_HOME`` (models,
corpora, profiles).

    .venv/bin/python benchmarks/refactor_equivalence.py --base 82dc80d

Writes ``benchmarks/results/refactor_equivalence.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import save

ROOT = Path(__file__).resolve().parents[1]

SETS = ("routing_heldout", "routing_heldout_blind")

DISTILL = """
import inspect, json, pathlib, sys, tempfile
sys.path[:0] = [{tree!r}, {tree!r} + "/tests/distill"]
from distill_fixtures import synthetic_prepared, tiny_config
from distill.recipe import run
tmp = pathlib.Path(tempfile.mkdtemp())
cfg = tiny_config(tmp, "optim.steps=60", "eval.every=0", "checkpoint.every=0")
kw = {{}}
if "settings" in inspect.signature(run).parameters:  # after the settings refactor
    from core.settings import Settings
    kw["settings"] = Settings(home=tmp)
info = run(cfg, prepared=synthetic_prepared(), **kw)
print(json.dumps({{k: v for k, v in info["eval"].items() if isinstance(v, float)}}))
"""


def measure(tree: Path) -> dict:
    """Every number of one tree: routing accuracy per set and history mode, and the tiny recipe's eval."""
    out: dict = {}
    for name in SETS:
        path = next(p for p in (tree / "corpora/data" / f"{name}.jsonl", tree / "qsef/corpora/data" / f"{name}.jsonl")
                    if p.is_file())
        for history in ("none", "seed"):
            proc = subprocess.run([sys.executable, "-m", "api.cli", "eval", "routing", str(path), "--history", history],
                                  cwd=tree, capture_output=True, text=True, check=True)
            out[f"routing:{name}:history={history}"] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(tree.name, name, history, out[f"routing:{name}:history={history}"]["accuracy"], flush=True)
    proc = subprocess.run([sys.executable, "-c", DISTILL.format(tree=str(tree))], cwd=tree,
                          capture_output=True, text=True, check=True)
    out["distill:tiny_recipe"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(tree.name, "distill", out["distill:tiny_recipe"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the older commit to compare with (e.g. 82dc80d)")
    args = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            before = measure(base_tree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    after = measure(ROOT)
    differ = sorted(k for k in before if before[k] != after.get(k))
    save("refactor_equivalence", {"base": args.base, "head": head, "before": before, "after": after,
                                  "identical": not differ, "differ": differ})
    print(f"identical: {not differ}" + (f"; differ: {differ}" if differ else ""))


if __name__ == "__main__":
    main()
