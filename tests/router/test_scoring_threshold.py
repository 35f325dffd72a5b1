"""The low-confidence threshold compares the calibrated share P, not raw TE."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from core.settings import Settings
from experts.registry import ExpertRegistry
from router.scoring import RegistryScorer


def _result(te):
    te = np.asarray([te], dtype=np.float64)
    return SimpleNamespace(TE=te, names=["law", "medicine", "general"], flags=[[]],
                           probabilities=lambda: te / te.sum(1, keepdims=True))


def test_tau_reads_p_not_raw_te(tmp_path):
    scorer = RegistryScorer(ExpertRegistry(tmp_path / "r.sqlite"), settings=Settings(home=tmp_path))
    # raw TE is tiny (1e-4) but the best expert holds half of the share: confident
    sel = scorer.select(_result([1e-4, 5e-5, 5e-5]), 0, tau=0.4, fallback="general")
    assert sel.experts == ["law"] and not sel.low_confidence
    assert sel.te == [1e-4]
    # large raw TE, but spread evenly: P = 1/3 < 0.4 -> fallback, flagged, reason names P
    sel = scorer.select(_result([0.9, 0.9, 0.9]), 0, tau=0.4, fallback="general")
    assert sel.experts == ["general"] and sel.low_confidence and "best P" in sel.reason
