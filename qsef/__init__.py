"""QSEF — Quantum-Semantic Efficiency Field scoring: which expert should answer this sub-task?

For a sub-task text *t* and an expert *e*, QSEF predicts a *transmission efficiency*
``TE(t, e) = exp(-(k1·D + k2·R))`` in (0, 1]: high when the text is semantically close to the expert
(small distance ``D``) and the expert can carry it with little resistance ``R``.

* ``D = w1·D_emb + w2·D_kg`` — embedding distance to the expert's centroid, and knowledge-graph
  distance from the concepts the text mentions to the expert's anchor concepts;
* ``R = w_d·C_data + w_m·C_model + w_s·C_sparsity`` — how complex the text is, how much that strains
  an expert of this size (and how often it failed on similar tasks), and how little of the text the
  expert's training corpus and graph cover.

Every term is a component in one registry (:mod:`qsef.components`) and can be switched off; the
weights are few and fitted as a conditional logit over experts (:mod:`qsef.calibration`), shipped
pre-fitted in ``qsef/data/calibration.json``. The engine scores T texts against E experts as
``(T, E)`` matrices in one pass (:mod:`qsef.engine`); :mod:`qsef.selection` turns TE into a choice
(argmax, top-K, cost-aware, threshold with fallback) and pre-filters large fleets with faiss.

Example:
    >>> from qsef.engine import QSEFEngine
    >>> engine = QSEFEngine()                       # five default domain experts, shipped weights
    >>> result = engine.score("Is a verbal contract for land enforceable?")
    >>> best = result.ranked(0)[0]
    >>> best.expert, best.TE, best.D_emb, best.C_sparsity
    ('law', 0.31, 0.33, 0.52)

Modules: ``encoder`` (cached sentence encoder), ``profiles`` (expert profiles), ``components``,
``engine``, ``selection``, ``calibration``, ``history`` (feedback interface), ``eval`` (routing
evaluation); ``settings``, ``logs``, ``store`` (models) and ``corpora`` (domain texts) support them.
This package file imports nothing heavy.
"""
