"""``qsef models pull|list|verify|path|remove`` — the model store from the command line."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="pull, verify and locate the pinned models")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    pull = sub.add_parser("pull", help="pull models (default: every non-optional model; 'all' for every model)")
    pull.add_argument("names", nargs="*", metavar="NAME", help="model names, as `qsef models list` shows them")
    pull.add_argument("--force", action="store_true", help="pull again even if present")
    pull.set_defaults(handler=_pull)

    lst = sub.add_parser("list", help="name, role, size, licence and hash state of every model")
    lst.add_argument("--verify", action="store_true", help="re-hash pulled files (slow for big models)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=_list)

    verify = sub.add_parser("verify", help="re-hash pulled models against their manifests")
    verify.add_argument("names", nargs="*", metavar="NAME")
    verify.set_defaults(handler=_verify)

    path = sub.add_parser("path", help="print the folder of a pulled model")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(handler=_path)

    remove = sub.add_parser("remove", help="delete a pulled model")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(handler=_remove)


def _resolve(names: list[str], store) -> list[str]:
    from core.store.catalog import DEFAULT_MODELS

    if not names:
        return list(DEFAULT_MODELS)
    if names == ["all"]:
        return list(store.catalog)
    for name in names:
        store.spec(name)  # raises with the valid choices
    return names


def _pull(args: argparse.Namespace) -> int:
    from core.store import ModelStore

    store = ModelStore(args.settings)
    for name in _resolve(args.names, store):
        folder = store.pull(name, force=args.force)
        print(f"{name}: {folder}")
    return 0


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from core.store import ModelStore

    store = ModelStore(args.settings)
    rows = [store.status(name, deep=args.verify) for name in store.catalog]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(f"{'NAME':<14}{'ROLE':<9}{'SIZE':>10}  {'STATE':<12}{'LICENCE':<22}DESCRIPTION")
    for r in rows:
        state = r.state if len(r.state) < 12 else "CORRUPT"
        print(f"{r.name:<14}{r.role:<9}{_human(r.size_bytes) if r.size_bytes else '-':>10}  {state:<12}{r.licence[:20]:<22}{r.description}")
    return 0 if not any(r.state.startswith("corrupt") for r in rows) else 1


def _verify(args: argparse.Namespace) -> int:
    from core.store import ModelNotPulled, ModelStore, ModelStoreError

    store = ModelStore(args.settings)
    names = args.names or [n for n in store.catalog if (store.folder(n) / "manifest.json").exists()]
    failed = 0
    for name in names:
        try:
            store.verify(name)
            print(f"{name}: ok")
        except ModelNotPulled as exc:
            print(f"{name}: {exc}")
            failed += 1
        except ModelStoreError as exc:
            print(f"{name}: CORRUPT — {exc}")
            failed += 1
    return 1 if failed else 0


def _path(args: argparse.Namespace) -> int:
    from core.store import ModelStore

    print(ModelStore(args.settings).path(args.name))
    return 0


def _remove(args: argparse.Namespace) -> int:
    from core.store import ModelStore

    removed = ModelStore(args.settings).remove(args.name)
    print(f"{args.name}: {'removed' if removed else 'was not pulled'}")
    return 0
