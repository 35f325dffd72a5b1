"""Knowledge-graph embeddings with pykeen: train, evaluate on held-out triples, save, measure distance.

A KG embedding model maps every concept (and relation) to a vector so that true triples score
higher than corrupted ones — TransE wants ``head + relation ≈ tail``, RotatE rotates the head by the
relation in complex space. Vectors of related concepts end up close, which gives QSEF a third graph
distance next to shortest paths and lowest common ancestors.

:func:`train_embeddings` holds out up to 10% + 10% of a domain graph's triples for validation and test
(only triples whose two concepts keep another triple in training, see :func:`split_triples`), trains
one model from :data:`MODELS`, and reports filtered MRR and Hits@10 on the test triples (pykeen's
rank-based evaluator, both sides, realistic ranks). Graphs with more than ``max_triples`` triples are
subsampled to the region nearest the domain root (:func:`sample_triples`).
Embeddings are saved as safetensors (never pickle) with ids and metrics in the header metadata.

Example:
    >>> from kg.embeddings import train_embeddings, load_embeddings, embedding_distance
    >>> result = train_embeddings(settings, "law", model="TransE", epochs=30)       # doctest: +SKIP
    >>> emb = load_embeddings(settings, "law")                                      # doctest: +SKIP
    >>> embedding_distance(["WN:court.n.01"], ["WN:judge.n.01"], emb)      # doctest: +SKIP
    0.21
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import logging
import os
import platform
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from core.settings import Settings

from kg.errors import GraphError

log = logging.getLogger(__name__)

FORMAT = "qsef-kg-embeddings/1"


@dataclass(frozen=True)
class ModelSpec:
    """A registered embedding model: the pykeen model name and the keyword arguments we train it with."""

    name: str
    pykeen_name: str
    description: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.01


# the one registry of KG embedding models (CLI choices come from it)
MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("TransE", "TransE", "translation: h + r ≈ t (L2)", {"scoring_fct_norm": 2}),
        ModelSpec("RotatE", "RotatE", "rotation in complex space: h ∘ r ≈ t"),
        ModelSpec("DistMult", "DistMult", "bilinear diagonal: <h, r, t>"),
        ModelSpec("ComplEx", "ComplEx", "complex bilinear: Re(<h, r, conj(t)>)"),
    )
}


def get_model(name: str) -> ModelSpec:
    """Look up a registered model (case-insensitive).

    Raises:
        GraphError: naming the registered models.
    """
    for key, spec in MODELS.items():
        if key.lower() == name.lower():
            return spec
    raise GraphError(f"unknown embedding model {name!r}; registered: {', '.join(MODELS)}")


def embeddings_dir(settings: Settings) -> Path:
    """``$QSEF_HOME/kg/embeddings`` (created on demand)."""
    from kg.storage import user_dir

    path = user_dir(settings) / "embeddings"
    path.mkdir(parents=True, exist_ok=True)
    return path


SHIPPED_DIR = Path(__file__).resolve().parent / "data" / "embeddings"


# --------------------------------------------------------------------- training
def sample_triples(graph, max_triples: int) -> tuple[list[tuple[str, str, str]], bool]:
    """All triples, or for a bigger graph the triples among the concepts nearest the domain root.

    A breadth-first search over the undirected graph from the synthetic root ``KG:<domain>`` (neighbours
    in id order) adds concepts until the triples among them reach ``max_triples``: the upper
    hierarchy of every source, densely connected, instead of a uniform sample where most concepts
    would keep a single fact.

    Returns:
        (sorted triples, whether the graph was subsampled)
    """
    rows = sorted(e.triple for e in graph.edges() if e.head in graph and e.tail in graph)
    if len(rows) <= max_triples:
        return rows, False
    index = graph.index
    start = index.pos.get(f"KG:{graph.domain}")
    if start is None:  # no root: start from the best-connected concept
        start = max(range(len(index.ids)), key=lambda i: (len(index.adj[i]), index.ids[i]))
    seen = {start}
    order = [start]
    count = 0
    head = 0
    while head < len(order) and count < max_triples:
        u = order[head]
        head += 1
        for v in sorted(index.adj[u], key=lambda i: index.ids[i]):
            if v not in seen:
                seen.add(v)
                order.append(v)
                count += sum(1 for w in index.adj[v] if w in seen and w != v)
                if count >= max_triples:
                    break
    keep = {index.ids[i] for i in seen}
    rows = [t for t in rows if t[0] in keep and t[2] in keep]
    return rows[:max_triples] if len(rows) > max_triples else rows, True


def split_triples(
    rows: list[tuple[str, str, str]], seed: int, ratios: tuple[float, float] = (0.1, 0.1)
) -> tuple[list, list, list]:
    """Seeded train/validation/test split where every held-out entity keeps a training triple.

    Triples are visited in a seeded random order; one goes to validation or test only while both its
    ends and its relation still have another triple left in training. Leaves of tree-like graphs therefore stay in
    training (pykeen's own split refuses such graphs), and the held-out sets can be smaller than the
    ratios ask.
    """
    rng = random.Random(seed)
    order = list(rows)
    rng.shuffle(order)
    degree: dict[str, int] = {}
    for h, r, t in rows:
        for key in (h, t, f"\0{r}"):  # relations must stay in training too
            degree[key] = degree.get(key, 0) + 1
    want_valid, want_test = int(len(rows) * ratios[0]), int(len(rows) * ratios[1])
    train, valid, test = [], [], []
    for h, r, t in order:
        rk = f"\0{r}"
        if (
            (len(test) < want_test or len(valid) < want_valid)
            and degree[h] > 1
            and degree[t] > 1
            and degree[rk] > 1
        ):
            for key in (h, t, rk):
                degree[key] -= 1
            # alternate so a short supply of eligible triples is shared between test and validation
            use_test = len(test) < want_test and (len(test) <= len(valid) or len(valid) >= want_valid)
            (test if use_test else valid).append((h, r, t))
        else:
            train.append((h, r, t))
    return train, valid, test


def train_embeddings(settings: Settings,
    domain: str,
    *,
    model: str = "TransE",
    dim: int = 64,
    epochs: int = 30,
    max_triples: int = 40000,
    batch_size: int = 512,
    seed: int = 0,
    save: bool = True,
    out: Path | None = None,
    half: bool = False,
    max_test_triples: int = 2000,
    inverse: bool = False,
) -> dict[str, Any]:
    """Train and evaluate KG embeddings for one domain graph (or ``"nations"``, pykeen's sanity set).

    Args:
        domain: a domain name or ``nations``.
        model: a name in :data:`MODELS`.
        dim: embedding width (complex models use ``dim`` complex numbers).
        epochs: training epochs (sLCWA, basic negative sampling, Adam).
        max_triples: subsample size for larger graphs (see :func:`sample_triples`).
        batch_size: training batch size.
        seed: seeds the subsample, the split and pykeen.
        save: write the embeddings to ``out`` (default ``$QSEF_HOME/kg/embeddings/<domain>-<model>.safetensors``).
        out: where to save; must lie inside the data directory unless it is the package's shipped folder.
        half: store vectors as float16 (shipped files).
        max_test_triples: evaluate on at most this many test triples (a seeded subset) to bound time.
        inverse: also train on inverse triples (pykeen's ``create_inverse_triples``).

    Returns:
        ``{"domain", "model", "mrr", "hits_at_10", "triples": {...}, "entities", "train_seconds", ...}``.
    """
    import numpy as np

    spec = get_model(model)
    from core.settings import configure_torch_threads
    from kg.storage import user_dir

    os.environ.setdefault("PYSTOW_HOME", str(user_dir(settings) / "pystow"))
    configure_torch_threads(settings)
    import torch
    from pykeen.pipeline import pipeline
    from pykeen.triples import TriplesFactory

    if domain == "nations":
        from pykeen.datasets import Nations

        ds = Nations()
        training, validation, testing = ds.training, ds.validation, ds.testing
        total = training.num_triples + validation.num_triples + testing.num_triples
        used = total
    else:
        from kg.storage import load_graph

        graph = load_graph(settings, domain)
        rows, _ = sample_triples(graph, max_triples)
        total, used = graph.number_of_edges(), len(rows)
        train_rows, valid_rows, test_rows = split_triples(rows, seed)
        if len(test_rows) < 10 or len(valid_rows) < 10:
            raise GraphError(
                f"the {domain} sample has too few triples that can be held out ({len(test_rows)} test, {len(valid_rows)} validation)"
            )
        training = TriplesFactory.from_labeled_triples(
            np.asarray(train_rows, dtype=str), create_inverse_triples=inverse
        )
        kwargs = {
            "entity_to_id": training.entity_to_id,
            "relation_to_id": training.relation_to_id,
            "create_inverse_triples": inverse,
        }
        validation = TriplesFactory.from_labeled_triples(
            np.asarray(valid_rows, dtype=str).reshape(-1, 3), **kwargs
        )
        testing = TriplesFactory.from_labeled_triples(
            np.asarray(test_rows, dtype=str).reshape(-1, 3), **kwargs
        )
    eval_testing = testing
    if testing.num_triples > max_test_triples:
        rng = np.random.default_rng(seed)
        keep = torch.as_tensor(np.sort(rng.choice(testing.num_triples, size=max_test_triples, replace=False)))
        eval_testing = testing.clone_and_exchange_triples(testing.mapped_triples[keep])
    gc.collect()
    gc.freeze()  # pykeen calls gc.collect() every epoch; freezing the long-lived heap makes that cheap
    t0 = time.perf_counter()
    try:
        result = pipeline(
            training=training,
            validation=validation,
            testing=eval_testing,
            model=spec.pykeen_name,
            model_kwargs={"embedding_dim": dim, **spec.model_kwargs},
            optimizer="Adam",
            optimizer_kwargs={"lr": spec.lr},
            training_kwargs={"num_epochs": epochs, "batch_size": batch_size, "use_tqdm_batch": False},
            negative_sampler="basic",
            evaluator_kwargs={"filtered": True},
            evaluation_kwargs={"batch_size": 256, "use_tqdm": False},
            random_seed=seed,
            device="cpu",
            use_tqdm=False,
        )
    finally:
        gc.unfreeze()
    seconds = time.perf_counter() - t0
    mrr = float(result.metric_results.get_metric("both.realistic.inverse_harmonic_mean_rank"))
    hits10 = float(result.metric_results.get_metric("both.realistic.hits_at_10"))
    out_info: dict[str, Any] = {
        "domain": domain,
        "model": spec.name,
        "dim": dim,
        "epochs": epochs,
        "seed": seed,
        "inverse_triples": inverse,
        "mrr": round(mrr, 4),
        "hits_at_10": round(hits10, 4),
        "triples": {
            "graph": total,
            "used": used,
            "subsampled": used < total,
            "train": training.num_triples,
            "validation": validation.num_triples,
            "test": testing.num_triples,
            "test_evaluated": eval_testing.num_triples,
        },
        "entities": training.num_entities,
        "relations": training.num_relations,
        "train_seconds": round(seconds, 1),
        "date": _dt.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch threads {torch.get_num_threads()}",
    }
    if save:
        path = out or embeddings_dir(settings) / f"{domain}-{spec.name}.safetensors"
        path = _checked_output(settings, path)
        _save(result.model, training, path, out_info, half=half)
        out_info["path"] = str(path)
    return out_info


def _checked_output(settings: Settings, path: Path) -> Path:
    path = Path(path).resolve()
    if SHIPPED_DIR in path.parents:
        return path
    return settings.confine(path)


def _vectors(representation) -> np.ndarray:
    import numpy as np
    import torch

    with torch.no_grad():
        x = representation(indices=None).detach().cpu()
    if torch.is_complex(x):
        x = torch.cat([x.real, x.imag], dim=-1)
    return x.reshape(x.shape[0], -1).numpy().astype(np.float32)


def _save(model, training, path: Path, info: dict[str, Any], *, half: bool) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    entity_ids = [training.entity_id_to_label[i] for i in range(training.num_entities)]
    relation_ids = [training.relation_id_to_label[i] for i in range(training.num_relations)]
    ent = _vectors(model.entity_representations[0])
    rel = _vectors(model.relation_representations[0])
    dtype = np.float16 if half else np.float32
    meta = {
        "format": FORMAT,
        "info": json.dumps({k: v for k, v in info.items() if k != "path"}, sort_keys=True),
        "entities": json.dumps(entity_ids, ensure_ascii=False),
        "relations": json.dumps(relation_ids),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"entities": ent.astype(dtype), "relations": rel.astype(dtype)}, str(tmp), metadata=meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600 files
    os.replace(tmp, path)


# ---------------------------------------------------------------------- loading
class KGEmbeddings:
    """Trained concept vectors of one domain graph.

    Attributes:
        domain: the graph.
        model: the embedding model name.
        ids: entity ids in row order.
        vectors: ``(len(ids), d)`` float32, rows L2-normalised.
        info: training record (metrics, triples, date).
    """

    def __init__(self, path: str | Path) -> None:
        import numpy as np
        from safetensors import SafetensorError, safe_open

        self.path = Path(path)
        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = fh.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise GraphError(f"{self.path}: not a {FORMAT} file (format {meta.get('format')!r})")
                ent = fh.get_tensor("entities").astype(np.float32)
        except (OSError, SafetensorError) as exc:
            raise GraphError(f"{self.path}: cannot read embeddings: {exc}") from exc
        self.info: dict[str, Any] = json.loads(meta["info"])
        self.domain: str = self.info["domain"]
        self.model: str = self.info["model"]
        self.ids: list[str] = json.loads(meta["entities"])
        if len(self.ids) != ent.shape[0]:
            raise GraphError(f"{self.path}: {len(self.ids)} ids for {ent.shape[0]} vectors")
        norms = np.linalg.norm(ent, axis=1, keepdims=True)
        self.vectors = ent / np.maximum(norms, 1e-12)
        self.pos = {e: i for i, e in enumerate(self.ids)}

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.pos

    def mean_vector(self, ids: Iterable[str]) -> np.ndarray | None:
        import numpy as np

        rows = [self.pos[i] for i in ids if i in self.pos]
        if not rows:
            return None
        v = self.vectors[rows].mean(axis=0)
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else None


_LOADED: dict[tuple[str, str | None], KGEmbeddings] = {}
_LOCK = threading.Lock()


def embeddings_path(settings: Settings, domain: str, model: str | None = None) -> Path:
    """The embeddings file :func:`load_embeddings` reads (user-trained first, then shipped).

    Raises:
        FileNotFoundError: none trained or shipped; the message names the command that trains them.
    """
    names = [get_model(model).name] if model else list(MODELS)
    for folder in (embeddings_dir(settings), SHIPPED_DIR):
        for name in names:
            p = folder / f"{domain}-{name}.safetensors"
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"no {model or 'KG'} embeddings for {domain!r}: run `qsef kg embed --domain {domain} --model {model or 'TransE'}`"
    )


def load_embeddings(settings: Settings, domain: str, model: str | None = None) -> KGEmbeddings:
    """Embeddings of a domain graph (cached); ``model=None`` takes the first registered model found."""
    path = embeddings_path(settings, domain, model)
    key = (str(path), str(path.stat().st_mtime_ns))
    with _LOCK:
        hit = _LOADED.get(key)
    if hit is None:
        hit = KGEmbeddings(path)
        with _LOCK:
            _LOADED[key] = hit
    return hit


def embedding_distance(
    sources: Iterable[str],
    targets: Iterable[str],
    embeddings: KGEmbeddings,
) -> float:
    """Cosine distance between the mean embedding of two concept sets, ``(1 - cos) / 2`` in [0, 1].

    Args:
        sources: node ids (e.g. linked concepts of a text).
        targets: node ids (e.g. an expert's anchors).
        embeddings: trained embeddings (:func:`load_embeddings`).

    Returns:
        1.0 when either set has no embedded concept (unknown ids are skipped).
    """
    a, b = embeddings.mean_vector(sources), embeddings.mean_vector(targets)
    if a is None or b is None:
        return 1.0
    return float(min(1.0, max(0.0, (1.0 - float(a @ b)) / 2.0)))
