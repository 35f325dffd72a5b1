"""`qsef --help` and `--version` must stay light: no torch, transformers, pykeen or sentence-transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "pykeen", "sentence_transformers")


def _modules_after(args: list[str]) -> set[str]:
    code = (
        "import sys, api.cli as c\n"
        f"try:\n    c.main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('\\n'.join(sys.modules), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stderr.split())


def test_help_imports_no_heavy_library():
    loaded = _modules_after(["--help"])
    assert not [m for m in HEAVY if m in loaded]


def test_version_imports_no_heavy_library():
    loaded = _modules_after(["--version"])
    assert not [m for m in HEAVY if m in loaded]


@pytest.mark.slow
def test_every_subcommand_help_is_light():
    from api.cli import build_parser

    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]  # type: ignore[union-attr]
    assert "models" in names and "llm" in names
    for name in names:
        loaded = _modules_after([name, "--help"])
        assert not [m for m in HEAVY if m in loaded], name


def test_unknown_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "api.cli", "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_every_listed_command_is_registered_by_its_modules():
    """The static table behind `qsef --help` must match what the area modules really register."""
    from api.cli import COMMANDS, build_parser

    for name in COMMANDS:
        parser = build_parser([name])
        choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert name in choices, f"{name} is listed but its modules {COMMANDS[name][0]} do not register it"
