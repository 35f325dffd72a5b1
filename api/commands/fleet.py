"""``qsef fleet up|down|status FLEET.yaml`` — an expert fleet on vLLM servers (see :mod:`router.fleet`)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="start/stop the vLLM expert servers a fleet file describes and "
                                                 "register their experts")
    sub = parser.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="validate, start the local servers (or attach), register every expert")
    up.add_argument("file", metavar="FLEET.yaml")
    up.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for each server's health")
    up.set_defaults(handler=_up)
    down = sub.add_parser("down", help="unregister the fleet's experts and stop its local servers")
    down.add_argument("file", metavar="FLEET.yaml")
    down.set_defaults(handler=_down)
    status = sub.add_parser("status", help="each server's health, live load and registered experts")
    status.add_argument("file", metavar="FLEET.yaml")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)


def _manager(args: argparse.Namespace):
    from experts.registry import registry_from_settings
    from router.fleet import FleetManager, load_fleet

    fleet = load_fleet(args.file)
    return FleetManager(fleet, settings=args.settings, registry=registry_from_settings(args.settings),
                        source=args.file)


def _print(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        load = r["load"]
        lt = "-" if load is None else (f"running {load['running']:g} waiting {load['waiting']:g} "
                                       f"kv {load['kv_cache']:.2f} load {load['load']:.2f}"
                                       + (" SATURATED" if load["saturated"] else ""))
        print(f"{r['server']:<14}{'up' if r['healthy'] else 'DOWN':<6}{r['base_url']:<34}{lt}")
        print(f"{'':<14}experts: {', '.join(r['experts']) or '(none registered)'}")


def _up(args: argparse.Namespace) -> int:
    rows = _manager(args).up(timeout=args.timeout)
    _print(rows, False)
    return 0 if all(r["healthy"] for r in rows) else 1


def _down(args: argparse.Namespace) -> int:
    removed = _manager(args).down()
    print(f"unregistered {', '.join(removed) or 'nothing'}; local servers stopped")
    return 0


def _status(args: argparse.Namespace) -> int:
    rows = _manager(args).status()
    _print(rows, args.json)
    return 0 if all(r["healthy"] for r in rows) else 1
