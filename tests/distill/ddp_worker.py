"""``qsef distill`` (``api.cli.main``) on the tiny synthetic recipe: alone, or as one rank under torchrun.

    python tests/distill/ddp_worker.py CONFIG.yaml OUT [key=value ...]
    torchrun --nproc_per_node 2 tests/distill/ddp_worker.py CONFIG.yaml OUT [key=value ...]

The data preparation (texts, tokenizer, teacher pass) is replaced by :func:`synthetic_prepared`
(64 training windows, 16 held out), so no model is loaded. Every checkpoint write and registration
is appended to ``OUT/writes.log`` as ``<rank> <event>``; the expert goes to ``OUT/expert`` and the
registry to ``OUT/experts.sqlite``. Used by ``test_ddp.py`` and ``benchmarks/distill_ddp.py``.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_fixtures import synthetic_prepared, tiny_overrides

import distill.recipe as recipe
from api.cli import main

N_TRAIN, N_HELDOUT = 64, 16


def _recorded(log: Path, event: str, fn):
    def wrapper(*args, **kwargs):
        with log.open("a") as f:  # one short line per write: appends from several processes do not interleave
            f.write(f"{os.environ.get('RANK', '0')} {event}\n")
        return fn(*args, **kwargs)

    return wrapper


if __name__ == "__main__":
    config, out, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    out.mkdir(parents=True, exist_ok=True)
    recipe.prepare_data = lambda cfg, **kwargs: synthetic_prepared(N_TRAIN, N_HELDOUT)
    recipe.DistillRecipe._write_checkpoint = _recorded(out / "writes.log", "checkpoint",
                                                       recipe.DistillRecipe._write_checkpoint)
    recipe.register_expert = _recorded(out / "writes.log", "register", recipe.register_expert)
    sys.exit(main(["distill", "--json", config, *tiny_overrides(out), "register=true",
                   f"registry_path={out / 'experts.sqlite'}", *overrides]))
