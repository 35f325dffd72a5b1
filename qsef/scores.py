"""The typed score model: one object per (text, expert) from the engine to the HTTP schema.

:class:`ExpertScore` is what :meth:`qsef.engine.ScoreResult.ranked` returns, what the router puts in
each sub-task of a route result, what ``qsef score --json`` prints and what ``POST /v1/score`` returns
(``api.schemas.ExpertScorePublic`` is this class). :class:`TextScores` groups one text's candidates.
No step in between turns them into dictionaries read back by string keys.

Example:
    >>> s = engine.score(["What is a tort?"]).ranked(0)[0]
    >>> s.expert, s.rank, round(s.P, 2)          # P = TE / ΣTE, the calibrated choice probability
    ('law', 1, 0.62)
    >>> engine.score(["What is a tort?"]).scores(0).model_dump_json()   # the CLI's --json line
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["ExpertScore", "TextScores"]


class ExpertScore(BaseModel):
    """One expert's score breakdown for one text (SPEC §2); ``None`` = component switched off."""

    expert: str = Field(description="expert name")
    domain: str
    D_emb: float | None = Field(description="embedding distance to the expert's domain, [0, 1]")
    D_kg: float | None = Field(description="knowledge-graph distance, [0, 1]")
    D: float = Field(description="semantic distance w1·D_emb + w2·D_kg")
    C_data: float | None = Field(description="data complexity of the text, [0, 1]")
    C_model: float | None = Field(description="model load (size, feedback history), [0, 1]")
    C_sparsity: float | None = Field(description="domain sparsity (missing concepts, lexical gap), [0, 1]")
    R: float = Field(description="resistance w_d·C_data + w_m·C_model + w_s·C_sparsity")
    TE: float = Field(description="transmission efficiency exp(-(k1·D + k2·R))")
    P: float = Field(description="calibrated choice probability TE / ΣTE over the candidates")
    rank: int = Field(description="1 = highest TE")


class TextScores(BaseModel):
    """Every candidate expert for one text, best first, with the text's flags and the weights used."""

    text: str
    experts: list[ExpertScore]
    flags: list[str] = Field(default_factory=list, description="degradations, e.g. kg_missing:law, no_history")
    ablated: list[str] = Field(default_factory=list, description="components switched off")
    weights: dict[str, float] = Field(default_factory=dict, description="the QSEF weights (w1, w2, ..., k2)")
