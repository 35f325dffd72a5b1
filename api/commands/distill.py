"""``qsef distill CONFIG [key=value ...]``: train a QRH expert from a teacher and register it.

Data-parallel on several processes: ``torchrun --nproc_per_node N -m api.cli distill CONFIG ...``
(:mod:`distill.distributed`); rank 0 prints the result.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distil a QRH domain expert from a teacher (YAML config + key=value overrides)",
        description="Train a QRH student by knowledge distillation. CONFIG is a YAML file such as "
        "distill/configs/law.yaml; overrides like optim.steps=50 seed=1 change any key.",
    )
    p.add_argument("config", help="YAML recipe config (see distill/configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.steps=50")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from distill.recipe import load_config, run

    info = run(load_config(args.config, args.overrides), settings=args.settings)  # ConfigError is a ValueError: the CLI reports it
    if (info.get("distributed") or {}).get("rank", 0):  # torchrun: rank 0 reports for the run
        return 0
    summary = {k: info[k] for k in ("name", "domain", "output_dir", "params", "steps", "training", "eval", "registered")
               if k in info}
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        ev = info["eval"]
        print(f"{info['name']}: {info['params']:,} parameters, {info['steps']} steps -> {info['output_dir']}")
        print(f"held-out perplexity {ev['ppl']:.2f}, KL to teacher {ev['kl_to_teacher']:.3f}, "
              f"top-1 agreement {ev['top1_agreement']:.3f}; registered: {info.get('registered', False)}")
    return 0
