"""Damaged saved profiles are detected (naming the file) and rebuilt, never a crash."""

from __future__ import annotations

import pytest
from qsef_fixtures import CORPORA, HashEncoder

from core.settings import Settings
from qsef import profiles
from qsef.profiles import DamagedProfileError, ExpertProfile, build_domain_profile


@pytest.fixture
def home(tmp_path, monkeypatch):
    # tiny stand-in corpus (the shipped corpora take minutes to profile); everything else is the real code
    monkeypatch.setattr(profiles, "corpus_passages", lambda settings, domain, split="train": CORPORA[domain])
    return Settings(home=tmp_path)


DAMAGE = {
    "garbage centroid": ("centroid.safetensors", b"\x00\x01 not a safetensors file at all"),
    "empty centroid": ("centroid.safetensors", b""),
    "profile.json is a list": ("profile.json", b"[]"),
    "profile.json not json": ("profile.json", b"{\"name\": "),
    "profile.json wrong keys": ("profile.json", b'{"format": 2, "name": "law", "domain": "law", "colour": 1}'),
    "profile.json meta not a dict": ("profile.json", b'{"format": 2, "name": "law", "domain": "law", "meta": []}'),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_load_names_the_damaged_file(tmp_path, damage):
    prof = build_domain_profile("law", settings=Settings(home=tmp_path), encoder=HashEncoder(),
                                passages=CORPORA["law"])
    prof.save(tmp_path / "p")
    name, content = DAMAGE[damage]
    (tmp_path / "p" / name).write_bytes(content)
    with pytest.raises(DamagedProfileError, match=name.split(".")[0]):
        ExpertProfile.load(tmp_path / "p")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_default_profiles_rebuild_a_damaged_one(home, damage):
    enc = HashEncoder()
    first = profiles.default_profiles(home, domains=["law"], encoder=enc)[0]
    folder = profiles.profiles_dir(home, enc.name) / "law"
    name, content = DAMAGE[damage]
    (folder / name).write_bytes(content)
    again = profiles.default_profiles(home, domains=["law"], encoder=enc)[0]
    assert again.name == "law" and again.centroid.tolist() == pytest.approx(first.centroid.tolist())
    assert ExpertProfile.load(folder).domain == "law"  # rewritten whole


def test_a_domain_never_reaches_a_file_name_unchecked(tmp_path):
    with pytest.raises(ValueError, match="invalid domain"):
        build_domain_profile("../../x", settings=Settings(home=tmp_path), encoder=HashEncoder(), passages=["a text"])
