"""Fixtures for the importer tests: an isolated data directory and the tiny source files.

The files under ``fixtures/`` are a few entries each in the sources' real formats. Importers are
pointed at them by injecting a location (an importer's constructor argument, the module's
``package_file``, a module constant); the parsers themselves run unchanged.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from core.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose home is an empty temporary folder."""
    return Settings(home=tmp_path / "home")


@pytest.fixture
def dictd_db(tmp_path: Path) -> Callable[[str], tuple[Path, Path]]:
    """``make(name)`` -> (``NAME.index``, ``NAME.dict.dz``): the fixture's text compressed as dictd's
    ``.dict.dz`` (dictzip is gzip-compatible, so plain gzip is a valid database)."""

    def make(name: str) -> tuple[Path, Path]:
        index = tmp_path / f"{name}.index"
        data = tmp_path / f"{name}.dict.dz"
        shutil.copyfile(FIXTURES / "dictd" / f"{name}.index", index)
        data.write_bytes(gzip.compress((FIXTURES / "dictd" / f"{name}.dict").read_bytes()))
        return index, data

    return make


@pytest.fixture
def serve_package_file(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[tuple[str, str]]]:
    """``serve(module, {(package, relative): path})``: the module's ``package_file`` returns these paths.

    Returns the list of ``(package, relative)`` requests made, so a test can check what was asked for.
    A request for anything else fails loudly.
    """

    def serve(module, files: dict[tuple[str, str], Path]) -> list[tuple[str, str]]:
        asked: list[tuple[str, str]] = []

        def package_file(settings: Settings, package: str, relative: str, *, hint: str) -> Path:
            assert isinstance(settings, Settings)
            assert hint, "package_file needs an install hint"
            asked.append((package, relative))
            return files[(package, relative)]

        monkeypatch.setattr(module, "package_file", package_file)
        return asked

    return serve
