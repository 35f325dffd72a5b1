"""Deduplication keys agree with the validator: what ``validate`` calls a duplicate node, dedupe can merge."""

from __future__ import annotations

import pytest

from kg.curation import DEDUPE_KEYS, dedupe, find_duplicates, issue_counts, validate
from kg.errors import GraphError
from kg.model import KnowledgeGraph, Node


@pytest.fixture
def with_duplicates(tiny: KnowledgeGraph) -> KnowledgeGraph:
    """``tiny`` plus: a plural twin of *tort* (same source and definition), a *verdict* without definition
    twice, and a *court* from another source with the same definition (a different source: not a duplicate)."""
    tiny.add_node(Node("t:torts", "torts", (), "definition of tort", "law", "test"))
    tiny.add_edge("t:torts", "related", "t:verdict")
    tiny.add_node(Node("t:v1", "Verdict", (), "", "law", "other"))
    tiny.add_node(Node("t:v2", "verdicts", (), "", "law", "other"))
    tiny.add_node(Node("o:court", "court", (), "definition of court", "law", "courts"))
    return tiny


def test_source_label_definition_groups_are_the_validator_duplicates(with_duplicates: KnowledgeGraph) -> None:
    flagged = sorted(list(i.ids) for i in validate(with_duplicates) if i.kind == "duplicate_node")
    groups = find_duplicates(with_duplicates, by="source+label+definition")
    assert groups == flagged == [["t:tort", "t:torts"], ["t:v1", "t:v2"]]


def test_dedupe_makes_the_graph_valid(with_duplicates: KnowledgeGraph) -> None:
    merged = dedupe(with_duplicates, by="source+label+definition")
    assert len(merged) == 2 and {"kept": "t:tort", "merged": ["t:torts"]} in merged  # the better connected stays
    assert "duplicate_node" not in issue_counts(validate(with_duplicates))
    assert "t:torts" not in with_duplicates and "o:court" in with_duplicates
    tort = with_duplicates.node("t:tort")
    assert "torts" in tort.synonyms and tort.attrs["merged_from"] == ["t:torts"]
    assert with_duplicates.has_edge("t:tort", "related", "t:verdict")  # the twin's edge moved over


def test_unknown_dedupe_key_names_the_allowed_ones(tiny: KnowledgeGraph) -> None:
    with pytest.raises(GraphError, match=", ".join(DEDUPE_KEYS).replace("+", r"\+")):
        find_duplicates(tiny, by="id")
