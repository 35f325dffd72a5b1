"""KG embeddings: the model registry, a tiny real pykeen run on Nations, safetensors round trip, distance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from kg.embeddings import FORMAT, MODELS, KGEmbeddings, embedding_distance, get_model
from kg.errors import GraphError


def _fake(path: Path, ids: list[str], vectors: np.ndarray, domain: str = "law") -> Path:
    from safetensors.numpy import save_file

    meta = {
        "format": FORMAT,
        "info": json.dumps({"domain": domain, "model": "TransE"}),
        "entities": json.dumps(ids),
        "relations": "[]",
    }
    save_file(
        {"entities": vectors.astype(np.float32), "relations": np.zeros((0, vectors.shape[1]), np.float32)},
        str(path),
        metadata=meta,
    )
    return path


def test_registry() -> None:
    assert {"TransE", "RotatE", "DistMult", "ComplEx"} <= set(MODELS)
    assert get_model("transe").name == "TransE"
    with pytest.raises(GraphError, match="registered: TransE"):
        get_model("Word2Vec")


def test_distance(tmp_path: Path) -> None:
    emb = KGEmbeddings(
        _fake(tmp_path / "e.safetensors", ["a", "b", "c"], np.array([[1.0, 0], [0.9, 0.1], [-1, 0]]))
    )
    assert embedding_distance(["a"], ["a"], emb) == pytest.approx(0.0)
    assert embedding_distance(["a"], ["c"], emb) == pytest.approx(1.0)
    assert 0 < embedding_distance(["a"], ["b"], emb) < 0.05
    assert embedding_distance(["a", "zzz"], ["b"], emb) == embedding_distance(
        ["a"], ["b"], emb
    )  # unknown ids skipped
    assert embedding_distance(["zzz"], ["a"], emb) == 1.0
    assert embedding_distance([], ["a"], emb) == 1.0


def test_bad_files(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    p = tmp_path / "other.safetensors"
    save_file({"x": np.zeros((1, 2), np.float32)}, str(p), metadata={"format": "something-else"})
    with pytest.raises(GraphError, match="not a qsef-kg-embeddings/1 file"):
        KGEmbeddings(p)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors at all")
    with pytest.raises(GraphError, match="cannot read embeddings"):
        KGEmbeddings(junk)


def test_missing_embeddings_name_the_command(qsef_home: Path) -> None:
    from kg.embeddings import embeddings_path

    with pytest.raises(FileNotFoundError, match="qsef kg embed --domain law --model RotatE"):
        embeddings_path(Settings(), "law", "RotatE")


@pytest.mark.slow
def test_train_on_nations_and_reload(qsef_home: Path) -> None:
    from kg.embeddings import load_embeddings, train_embeddings

    result = train_embeddings(Settings(), "nations", model="TransE", dim=8, epochs=3, batch_size=256, seed=0)
    assert 0 < result["mrr"] <= 1 and 0 <= result["hits_at_10"] <= 1
    assert result["triples"]["test"] > 0 and Path(result["path"]).is_file()
    assert Path(result["path"]).parent == qsef_home / "kg" / "embeddings"
    emb = load_embeddings(Settings(), "nations", "TransE")
    assert emb.vectors.shape == (14, 8) and "usa" in emb
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert 0.0 <= embedding_distance(["usa"], ["uk"], emb) <= 1.0


@pytest.mark.slow
def test_embed_command_on_a_domain_graph(qsef_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from api.cli import main

    code = main(
        [
            "kg",
            "embed",
            "--domain",
            "finance",
            "--model",
            "DistMult",
            "--dim",
            "8",
            "--epochs",
            "1",
            "--max-triples",
            "1500",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["triples"]["subsampled"] is True and result["triples"]["used"] == 1500
    assert (qsef_home / "kg" / "embeddings" / "finance-DistMult.safetensors").is_file()


def test_embed_output_confined(qsef_home: Path, tmp_path: Path) -> None:
    from kg.embeddings import _checked_output

    with pytest.raises(ValueError, match="outside the data directory"):
        _checked_output(Settings(), tmp_path / "elsewhere.safetensors")


def test_split_keeps_every_entity_and_relation_in_training(tiny) -> None:
    from kg.embeddings import split_triples

    rows = [
        *sorted(e.triple for e in tiny.edges()),
        ("t:law", "is_a", "t:x"),
        ("t:x", "is_a", "t:y"),
        ("t:y", "part_of", "t:law"),
    ]
    train, valid, test = split_triples(rows, seed=0, ratios=(0.2, 0.2))
    assert sorted(train + valid + test) == sorted(rows)
    seen = {x for h, r, t in train for x in (h, r, t)}
    assert all(x in seen for h, r, t in valid + test for x in (h, r, t))
    assert split_triples(rows, seed=0, ratios=(0.2, 0.2)) == (train, valid, test)


def test_sample_triples_takes_the_region_nearest_the_root() -> None:
    import kg
    from kg.embeddings import sample_triples

    law = kg.load_graph(Settings(), "law")
    rows, sub = sample_triples(law, 1000)
    assert sub and 900 <= len(rows) <= 1000
    assert any("KG:law" in (h, t) for h, _, t in rows)
    assert sample_triples(law, 10**6) == (sorted(e.triple for e in law.edges()), False)
