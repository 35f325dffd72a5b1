"""kg.importers.base: fragments, gloss clipping, and finding a source's files (package, wheel, Debian)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from kg.errors import SourceUnavailable
from kg.importers.base import (
    Fragment,
    Importer,
    clip,
    debian_version,
    package_file,
    package_version,
    system_file,
    wheel_dirs,
)

PKG = "qsef_fixture_data_pkg"  # a package name no environment installs


def test_fragment_node_cleans_synonyms_and_keeps_the_source():
    frag = Fragment("src")
    frag.node("S:1", " court ", ["tribunal", " tribunal ", "", "  ", "court", "lawcourt"], "A  body\n of judges.")
    (node,) = frag.nodes
    assert node.label == "court"
    assert node.synonyms == ("tribunal", "lawcourt")  # stripped, de-duplicated, label and blanks dropped
    assert node.definition == "A body of judges."
    assert node.source == "src"


def test_fragment_node_keeps_attrs_and_edge_drops_self_loops():
    frag = Fragment("src")
    frag.node("S:1", "x", (), "", code="A00", nolink=True)
    frag.edge("S:1", "is_a", "S:2")
    frag.edge("S:1", "is_a", "S:1")
    assert frag.nodes[0].attrs == {"code": "A00", "nolink": True}
    assert [e.triple for e in frag.edges] == [("S:1", "is_a", "S:2")]
    assert frag.edges[0].source == "src"


def test_clip_short_text_is_only_squashed():
    assert clip("  a\tshort\n gloss ") == "a short gloss"


def test_clip_cuts_at_a_sentence_end_past_half_the_limit():
    text = "First sentence is here. " + "word " * 100
    assert clip(text, limit=40) == "First sentence is here."


def test_clip_cuts_at_a_word_boundary_with_an_ellipsis():
    out = clip("alpha, beta, gamma, delta, epsilon, zeta, eta, theta", limit=30)
    assert out == "alpha, beta, gamma, delta …"
    assert len(out) <= 32


class _Tiny(Importer):
    name = "tiny"
    title = "Tiny source"
    licence = "CC0"
    url = "https://example.org/"
    domains = ("law",)

    def build(self, settings, domain):
        return self.fragment(version="1")


def test_importer_fragment_records_provenance():
    frag = _Tiny().fragment(version="1", file="x.json")
    assert frag.source == "tiny"
    assert frag.provenance == {
        "title": "Tiny source",
        "licence": "CC0",
        "url": "https://example.org/",
        "version": "1",
        "file": "x.json",
    }


def test_wheel_dirs_are_under_the_home(settings):
    assert wheel_dirs(settings) == [
        settings.home / "corpora" / "assets" / "wheels",
        settings.home / "kg" / "sources" / "wheels",
    ]


def _wheel(folder: Path, version: str, members: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PKG}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_package_file_prefers_the_installed_package(settings, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / PKG / "data").mkdir(parents=True)
    (site / PKG / "__init__.py").write_text("raise RuntimeError('package code must not run')\n")
    (site / PKG / "data" / "terms.json").write_text("[]")
    monkeypatch.syspath_prepend(str(site))
    _wheel(wheel_dirs(settings)[0], "9.0", {f"{PKG}/data/terms.json": b"[1]"})
    assert package_file(settings, PKG, "data/terms.json", hint="pip install it") == site / PKG / "data" / "terms.json"


def test_package_file_extracts_from_the_newest_wheel_once(settings):
    _wheel(wheel_dirs(settings)[0], "1.0", {f"{PKG}/data/terms.json": b"old"})
    _wheel(wheel_dirs(settings)[1], "2.0", {f"{PKG}/data/terms.json": b"other folder"})
    _wheel(wheel_dirs(settings)[0], "1.1", {f"{PKG}/data/terms.json": b"newer"})
    path = package_file(settings, PKG, "data/terms.json", hint="pip install it")
    assert path == settings.home / "kg" / "sources" / PKG / "data" / "terms.json"
    assert path.read_bytes() == b"newer"  # folders in order, newest wheel of the first folder that has it
    mtime = path.stat().st_mtime_ns
    assert package_file(settings, PKG, "data/terms.json", hint="pip install it") == path
    assert path.stat().st_mtime_ns == mtime  # same size: not extracted again
    assert not list(path.parent.glob("*.part"))


def test_package_file_reextracts_a_copy_of_the_wrong_size(settings):
    _wheel(wheel_dirs(settings)[1], "1.0", {f"{PKG}/data/terms.json": b"complete"})
    target = settings.home / "kg" / "sources" / PKG / "data" / "terms.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"trunc")
    assert package_file(settings, PKG, "data/terms.json", hint="h").read_bytes() == b"complete"


def test_package_file_skips_wheels_without_the_member(settings):
    _wheel(wheel_dirs(settings)[0], "3.0", {f"{PKG}/other.txt": b"x"})
    with pytest.raises(SourceUnavailable) as err:
        package_file(settings, PKG, "data/terms.json", hint="pip install qsef-fixture")
    msg = str(err.value)
    assert f"{PKG}/data/terms.json not found" in msg
    assert "pip install qsef-fixture" in msg
    assert str(wheel_dirs(settings)[0]) in msg and str(wheel_dirs(settings)[1]) in msg


def test_system_file(tmp_path):
    present = tmp_path / "foldoc.index"
    present.write_text("x")
    assert system_file(str(present), hint="apt-get install dict-foldoc") == present
    with pytest.raises(SourceUnavailable, match=r"missing\.index is missing; apt-get install dict-foldoc"):
        system_file(str(tmp_path / "missing.index"), hint="apt-get install dict-foldoc")


def test_versions_of_absent_packages_are_unknown():
    assert package_version("qsef-no-such-distribution") == "unknown"
    assert debian_version("qsef-no-such-debian-package") == "unknown"
