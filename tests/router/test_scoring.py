"""One expert whose profile cannot be built or scored is left out, flagged, and the rest keep scoring."""

from __future__ import annotations

import numpy as np
from fakes import HashEncoder

from core.settings import Settings
from experts.registry import ExpertSpec
from qsef.profiles import build_domain_profile


def _wrong_width_profile(folder):
    prof = build_domain_profile("law", settings=Settings(home=folder.parent), encoder=HashEncoder(),
                                passages=["tenant landlord lease"])
    prof.with_centroid(np.ones(7, dtype=np.float32), prototypes=None).save(folder)


def test_an_expert_whose_profile_breaks_is_skipped_and_flagged(make_router, registry, tmp_path):
    _wrong_width_profile(tmp_path / "bad-profile")
    registry.add(ExpertSpec(name="tenancy", domain="law", profile={"dir": str(tmp_path / "bad-profile")}))
    router = make_router()
    result = router.scorer.score(["Can my landlord evict me?"])
    assert "tenancy" not in result.names and len(result.names) == 5
    assert "expert_unavailable:tenancy" in result.flags[0]
    assert "7 dimensions" in router.scorer.unavailable["tenancy"]
    routed = router.route("Can my landlord evict me?")
    assert routed.subtasks[0].expert == "law" and "expert_unavailable:tenancy" in routed.subtasks[0].flags


def test_an_expert_that_fails_at_scoring_time_is_found_and_skipped(make_router, registry, monkeypatch):
    router = make_router()
    engine = router.scorer.engine
    real = engine.score

    def score(texts, profiles, **kw):  # injected fault: the law profile makes the engine raise
        if any(p.name == "law" for p in profiles):
            raise TypeError("unsupported operand type(s)")
        return real(texts, profiles, **kw)

    monkeypatch.setattr(engine, "score", score)
    result = router.scorer.score(["What is a tort?"])
    assert "law" not in result.names and "expert_unavailable:law" in result.flags[0]
    assert "TypeError" in router.scorer.unavailable["law"]
