"""``qsef experts list | show | add | remove | health`` — the expert registry from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    from experts.backends import backend_resolver  # light: the resolver names the backend choices

    p = subparsers.add_parser("experts", help="list, show, add or remove experts in the registry")
    sub = p.add_subparsers(dest="experts_command", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="all registered experts")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)

    show = sub.add_parser("show", help="one expert in full")
    show.add_argument("name")
    show.set_defaults(handler=_show)

    add = sub.add_parser("add", help="register an expert")
    add.add_argument("name")
    add.add_argument("--domain", required=True)
    add.add_argument("--backend", choices=backend_resolver.options, default="hf")
    add.add_argument("--model", help="hf: model-store name; openai: served model name")
    add.add_argument("--path", help="hf: local HF causal-LM folder")
    add.add_argument("--base-url", help="openai: endpoint root, e.g. http://127.0.0.1:8012/v1")
    add.add_argument("--checkpoint", help="qrh: checkpoint folder")
    add.add_argument("--adapter", help="peft: LoRA adapter folder (or shipped:<domain>); --model names its base")
    add.add_argument("--system-prompt", default="")
    add.add_argument("--description", default="")
    add.add_argument("--size-params", type=int, default=0)
    add.add_argument("--cost", type=float, default=1.0)
    add.add_argument("--profile-texts", metavar="FILE", help="text file, one domain text a line (QSEF profile)")
    add.add_argument("--replace", action="store_true", help="overwrite an expert of the same name")
    add.set_defaults(handler=_add)

    rm = sub.add_parser("remove", help="unregister an expert")
    rm.add_argument("name")
    rm.set_defaults(handler=_remove)

    for verb, on in (("enable", True), ("disable", False)):
        sw = sub.add_parser(verb, help=f"{verb} an expert (a disabled expert stays registered but is never routed to)")
        sw.add_argument("name")
        sw.set_defaults(handler=_switch, enabled=on)

    health = sub.add_parser("health", help="check every expert's backend and record the result")
    health.add_argument("--json", action="store_true")
    health.set_defaults(handler=_health)


def _registry(s: Any):
    from experts.registry import registry_from_settings

    reg = registry_from_settings(s)
    reg.ensure_default_fleet(s.expert_model)
    return reg


def _list(args: argparse.Namespace) -> int:
    experts = _registry(args.settings).list()
    if args.json:
        print(json.dumps([e.model_dump() for e in experts], indent=2))
        return 0
    print(f"{'name':<14}{'domain':<12}{'backend':<9}{'target':<32}{'cost':>6}  {'enabled':<8}health")
    for e in experts:
        kw = e.backend_kwargs
        target = kw.get("model") or kw.get("path") or kw.get("checkpoint") or kw.get("adapter") or ""
        if e.backend == "openai":
            target = f"{kw.get('model')}@{kw.get('base_url')}"
        print(f"{e.name:<14}{e.domain:<12}{e.backend:<9}{str(target)[:31]:<32}{e.cost:>6.2f}  "
              f"{'yes' if e.enabled else 'no':<8}{e.health}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(json.dumps(_registry(args.settings).get(args.name).model_dump(), indent=2))
    return 0


def _add(args: argparse.Namespace) -> int:
    from experts.backends import make_backend
    from experts.registry import ExpertSpec

    kwargs = {k: v for k, v in {"model": args.model, "path": args.path, "base_url": args.base_url,
                                "checkpoint": args.checkpoint, "adapter": args.adapter}.items() if v}
    if args.backend == "peft" and "model" in kwargs:
        kwargs["base"] = kwargs.pop("model")
    profile = {}
    if args.profile_texts:
        with open(args.profile_texts, encoding="utf-8") as f:
            profile["texts"] = [line.strip() for line in f if line.strip()]
    spec = ExpertSpec(name=args.name, domain=args.domain, backend=args.backend, backend_kwargs=kwargs,
                      system_prompt=args.system_prompt, description=args.description,
                      size_params=args.size_params, cost=args.cost, profile=profile)
    make_backend(spec)  # rejects incomplete backend settings before anything is stored
    _registry(args.settings).add(spec, replace=args.replace)
    print(f"added expert {spec.name!r} ({spec.backend}, domain {spec.domain})", file=sys.stderr)
    return 0


def _remove(args: argparse.Namespace) -> int:
    _registry(args.settings).remove(args.name)
    print(f"removed expert {args.name!r}", file=sys.stderr)
    return 0


def _switch(args: argparse.Namespace) -> int:
    _registry(args.settings).update(args.name, enabled=args.enabled)
    print(f"{'enabled' if args.enabled else 'disabled'} expert {args.name!r}", file=sys.stderr)
    return 0


def _health(args: argparse.Namespace) -> int:
    from experts.backends import ModelPool, make_backend
    from experts.health import probe_registry

    pool = ModelPool(args.settings)
    results = probe_registry(_registry(args.settings), lambda spec: make_backend(spec, pool=pool))
    out = {name: {"ok": ok, "detail": detail} for name, (ok, detail) in results.items()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, h in out.items():
            print(f"{name:<14}{'ok' if h['ok'] else 'DOWN':<6}{h['detail'][:80]}")
    return 0
