"""Routing methods (one resolver, :data:`routing_method_resolver`) and the evaluation driver (k-fold CV or train/test)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from core.jsonl import JSONLError, iter_jsonl
from core.resolver import Resolver
from qsef.calibration import FITTED, fit_conditional_logit, kfold_indices
from qsef.components import (
    DataComplexity,
    ModelLoad,
    ScoringContext,
    component_resolver,
)
from qsef.engine import QSEFEngine, QSEFWeights
from qsef.history import HistoryProvider, LabelledHistory
from qsef.profiles import ExpertProfile

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)

#: One-line descriptions of each domain for the zero-shot baseline (generic, not MMLU subject names).
DOMAIN_DESCRIPTIONS = {
    "medicine": "A question about medicine and health: diseases, symptoms, anatomy, drugs, treatment, patients.",
    "law": "A question about law: legal rules, courts, contracts, crimes, rights, statutes and lawsuits.",
    "code": "A question about computer programming and software: code, algorithms, computers, security.",
    "finance": "A question about finance and economics: money, markets, prices, accounting, banks, interest.",
    "general": "A general knowledge question about history, geography, culture, religion or world facts.",
}
STATIC = ("d_kg", "c_data", "c_sparsity")


def load_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows ``{"text", "domain"}`` of a JSONL file.

    Raises:
        ValueError: a line that is not JSON, or not an object with string ``text`` and ``domain`` (file and
            line given).
        FileNotFoundError: when the file does not exist.
    """
    rows = []
    try:
        for n, obj in iter_jsonl(path):
            if (not isinstance(obj, dict) or not isinstance(obj.get("text"), str)
                    or not isinstance(obj.get("domain"), str)):
                raise ValueError(f'{path}:{n}: expected an object with string "text" and "domain"')
            rows.append({"text": obj["text"], "domain": obj["domain"]})
    except JSONLError as exc:
        raise ValueError(f"{path}:{exc.line}: not JSON ({exc.error.msg})") from exc
    return rows


@dataclass
class LabelledSet:
    """Texts with embeddings ``(N, dim)``, gold domains and cached expert-independent-of-fold features."""

    texts: list[str]
    emb: np.ndarray
    labels: np.ndarray
    static: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, E), same expert order
    flags: list[list[str]] = field(default_factory=list)

    def subset(self, idx: np.ndarray) -> LabelledSet:
        return LabelledSet([self.texts[i] for i in idx], self.emb[idx], self.labels[idx],
                           {k: v[idx] for k, v in self.static.items()},
                           [self.flags[i] for i in idx] if self.flags else [])


def engine_component(engine: QSEFEngine, name: str) -> Any:
    """The engine's instance of a component (it carries the configured variant, e.g. of D_kg), else a
    default one."""
    return next((c for c in engine.components if c.name == name), None) or component_resolver.make(name)


def attach_static(ds: LabelledSet, engine: QSEFEngine, experts: Sequence[ExpertProfile]) -> LabelledSet:
    """Compute the fold-independent components (graph distance, complexity, sparsity) once."""
    ctx = ScoringContext(texts=ds.texts, embeddings=ds.emb, experts=list(experts), kg=engine.kg)
    for name in STATIC:
        if name not in ds.static:
            ds.static[name] = np.asarray(engine_component(engine, name).compute(ctx), dtype=np.float32)
    ds.flags = [sorted(f) for f in ctx.flags]
    return ds


class RoutingMethod(ABC):
    """``fit`` on labelled rows (may ignore them), then ``predict`` one domain per text."""

    name: ClassVar[str]
    needs_training: ClassVar[bool] = True

    def fit(self, train: LabelledSet) -> RoutingMethod:
        return self

    @abstractmethod
    def predict(self, test: LabelledSet) -> np.ndarray:
        """Predicted domains ``(N,)`` (strings)."""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class CentroidRouting(RoutingMethod):
    """Nearest mean embedding of the training texts of each domain."""

    name = "centroid"

    def fit(self, train: LabelledSet) -> CentroidRouting:
        self.domains = sorted(set(train.labels))
        self.centroids = _unit(np.stack([train.emb[train.labels == d].mean(0) for d in self.domains]))
        return self

    def predict(self, test: LabelledSet) -> np.ndarray:
        return np.array(self.domains)[np.argmax(test.emb @ self.centroids.T, axis=1)]


class KNNRouting(RoutingMethod):
    """Similarity-weighted vote of the ``k`` most similar training texts."""

    name = "knn"

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def fit(self, train: LabelledSet) -> KNNRouting:
        self.train = train
        self.domains = sorted(set(train.labels))
        return self

    def predict(self, test: LabelledSet) -> np.ndarray:
        sims = test.emb @ self.train.emb.T
        idx = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
        lab = self.train.labels[idx]
        w = np.take_along_axis(sims, idx, axis=1)
        votes = np.stack([(w * (lab == d)).sum(1) for d in self.domains], axis=1)
        return np.array(self.domains)[np.argmax(votes, axis=1)]


class ZeroShotRouting(RoutingMethod):
    """Nearest embedding of a one-line description of each domain (no training data)."""

    name = "zeroshot"
    needs_training = False

    def __init__(self, encoder: Any, descriptions: dict[str, str] | None = None) -> None:
        self.descriptions = descriptions or DOMAIN_DESCRIPTIONS
        self.encoder = encoder

    def predict(self, test: LabelledSet) -> np.ndarray:
        doms = list(self.descriptions)
        d = self.encoder.encode([self.descriptions[k] for k in doms])
        return np.array(doms)[np.argmax(test.emb @ d.T, axis=1)]


class RandomRouting(RoutingMethod):
    """Uniform random domain (seeded)."""

    name = "random"
    needs_training = False

    def __init__(self, domains: Sequence[str] = tuple(DOMAIN_DESCRIPTIONS), seed: int = 0) -> None:
        self.domains = list(domains)
        self.rng = np.random.default_rng(seed)

    def predict(self, test: LabelledSet) -> np.ndarray:
        return self.rng.choice(self.domains, size=len(test.texts))


class LLMRouting(RoutingMethod):
    """An instruction LLM picks the domain: the label with the highest log-likelihood after the prompt.

    Scoring the five labels (instead of free generation) never yields an unparseable answer.
    """

    name = "llm"
    needs_training = False
    PROMPT = ("Classify the question into exactly one domain:\n"
              "medicine (health, diseases, anatomy, drugs), law (legal rules, courts, contracts, crimes), "
              "code (programming, computers, algorithms, security), finance (economics, money, markets, "
              "accounting), general (history, geography, culture, religion, world facts).\n"
              "Question: {text}\nAnswer with the domain name only.")

    def __init__(self, model: str = "qwen-0.5b", domains: Sequence[str] = tuple(DOMAIN_DESCRIPTIONS),
                 max_chars: int = 1200, batch_size: int = 8, settings: Settings | None = None) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.model_name = model
        self.domains = list(domains)
        self.max_chars = max_chars
        self._lm = None

    def _load(self) -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from core.settings import configure_torch_threads
        from core.store import ModelStore

        if self.settings is None:
            raise ValueError("the llm routing method needs settings to find its model")
        configure_torch_threads(self.settings)
        path = ModelStore(self.settings).ensure(self.model_name)
        self.tok = AutoTokenizer.from_pretrained(path)
        self._lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def label_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Log-likelihood of each label after each prompt: ``(N, n_labels)``.

        Prompts run in left-padded batches of ``batch_size``; a label of one token costs nothing beyond
        the prompt's forward pass (Qwen's five domain names are single tokens), longer labels are scored
        by one extra forward over prompt + label.
        """
        import torch

        if self._lm is None:
            self._load()
        # the answer starts right after the assistant header, so labels are tokenized without a space
        label_ids = [self.tok(d, add_special_tokens=False)["input_ids"] for d in self.domains]
        prompts = [self.tok.apply_chat_template([{"role": "user", "content": self.PROMPT.format(text=t[: self.max_chars])}],
                                                tokenize=False, add_generation_prompt=True) for t in texts]
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        out = np.zeros((len(prompts), len(label_ids)), dtype=np.float64)
        for s in range(0, len(prompts), self.batch_size):
            batch = self.tok(prompts[s:s + self.batch_size], add_special_tokens=False, return_tensors="pt", padding=True)
            with torch.no_grad():
                pos = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # real positions under left padding
                last = torch.log_softmax(self._lm(**batch, position_ids=pos).logits[:, -1], -1)
                for j, ids in enumerate(label_ids):
                    if len(ids) == 1:
                        out[s:s + len(last), j] = last[:, ids[0]].numpy()
                        continue
                    ids_t = torch.tensor(ids)[None, :].expand(len(last), -1)
                    full = torch.cat([batch["input_ids"], ids_t], 1)
                    mask = torch.cat([batch["attention_mask"], torch.ones_like(ids_t)], 1)
                    pos = (mask.cumsum(-1) - 1).clamp(min=0)
                    o = self._lm(input_ids=full, attention_mask=mask, position_ids=pos).logits[:, -len(ids) - 1:-1]
                    o = torch.log_softmax(o, -1)
                    out[s:s + len(last), j] = o.gather(2, ids_t[:, :, None]).sum((1, 2)).numpy()
        return out

    def predict(self, test: LabelledSet) -> np.ndarray:
        return np.array(self.domains)[np.argmax(self.label_scores(test.texts), axis=1)]


class QSEFRouting(RoutingMethod):
    """Argmax TE over the domain experts.

    ``fit`` (on the training fold) blends each expert's corpus centroid with the mean embedding of its
    training questions, records the training questions as feedback history (a question counts as a
    success of its domain's expert and a failure of the others) and fits the weights as a conditional
    logit on the training fold, with each training question's own record left out of its history.

    Args:
        engine: supplies the KG access and component classes.
        experts: the domain profiles (corpus centroid, BM25, anchors).
        ablate: components switched off.
        blend: share of the training-question centroid in ``c_e`` (0 = corpus only).
        use_history: back ``C_model`` with the training-fold history.
        calibrate: fit the weights per fold (else the engine's weights).
        history_shrink: shrink history error rates toward 0.5 by neighbour similarity (as the router's
            seed history and feedback store do; see :func:`qsef.history._shrink`).
    """

    name = "qsef"

    def __init__(self, engine: QSEFEngine, experts: Sequence[ExpertProfile], *, ablate: Sequence[str] = (),
                 blend: float = 0.5, use_history: bool = True, calibrate: bool = True, history_k: int = 10,
                 history_temperature: float | None = 0.05, history_prior: float = 0.1,
                 lexical_history: bool = True, lexical_weight: float = 0.25, history_min_similarity: float = 0.0,
                 history_shrink: bool = True, l2: float = 1e-3) -> None:
        self.history_shrink = history_shrink
        self.history_temperature = history_temperature
        self.history_prior = history_prior
        self.lexical_history = lexical_history
        self.history_min_similarity = history_min_similarity
        self.lexical_weight = lexical_weight
        self.engine = engine
        self.base = list(experts)
        self.ablate = {component_resolver.lookup(a).name for a in ablate}
        self.blend = blend
        self.use_history = use_history
        self.calibrate = calibrate
        self.history_k = history_k
        self.l2 = l2
        self.experts = self.base
        self.history: LabelledHistory | None = None
        self.weights = engine.weights
        self.fit_info: dict[str, Any] = {}

    def _values(self, ds: LabelledSet, history: HistoryProvider | None) -> dict[str, np.ndarray]:
        ctx = ScoringContext(texts=ds.texts, embeddings=ds.emb, experts=self.experts, kg=self.engine.kg,
                             history=history)
        if "c_data" in ds.static:
            ctx.cache["c_data"] = ds.static["c_data"][:, 0]
        vals: dict[str, np.ndarray] = {}
        if "d_emb" not in self.ablate:
            vals["d_emb"] = engine_component(self.engine, "d_emb").compute(ctx)
        for name in STATIC:
            if name not in self.ablate:
                vals[name] = ds.static[name] if name in ds.static else engine_component(self.engine, name).compute(ctx)
        if "c_model" not in self.ablate:
            if "c_data" not in ctx.cache:
                DataComplexity().column(ctx)
            vals["c_model"] = ModelLoad().compute(ctx)
        return vals

    def fit(self, train: LabelledSet) -> QSEFRouting:
        experts = []
        for p in self.base:
            mask = train.labels == p.domain
            if self.blend > 0 and mask.any():
                c = (1 - self.blend) * _unit(p.centroid) + self.blend * _unit(train.emb[mask].mean(0))
                experts.append(p.with_centroid(c))
            else:
                experts.append(p)
        self.experts = experts
        if self.use_history:
            names = {p.name: p.domain for p in experts}
            kw = {"k": self.history_k, "temperature": self.history_temperature, "prior": self.history_prior,
                  "texts": train.texts if self.lexical_history else None, "min_similarity": self.history_min_similarity,
                  "lexical_weight": self.lexical_weight, "shrink": self.history_shrink}
            self.history = LabelledHistory(train.emb, train.labels, names, **kw)
            loo = LabelledHistory(train.emb, train.labels, names, max_similarity=0.9999, **kw)
            self._loo_history = loo
        if self.calibrate:
            vals = self._values(train, loo if self.use_history else None)
            names = [n for n in FITTED if n in vals]
            x = np.stack([vals[n] for n in names], -1).astype(np.float64)
            doms = [p.domain for p in experts]
            y = np.array([doms.index(lab) for lab in train.labels])
            fit = fit_conditional_logit(x, y, names, l2=self.l2)
            self.weights = fit.weights
            self.fit_info = {"beta": fit.beta, "train_accuracy": fit.accuracy}
        return self

    def scores(self, test: LabelledSet) -> tuple[dict[str, np.ndarray], np.ndarray]:
        vals = self._values(test, self.history if self.use_history else None)
        ctx = ScoringContext(texts=test.texts, embeddings=test.emb, experts=self.experts, kg=self.engine.kg)
        res = self.engine.combine(ctx, vals, weights=self.weights)
        return vals, res.TE

    def predict(self, test: LabelledSet) -> np.ndarray:
        _, te = self.scores(test)
        return np.array([p.domain for p in self.experts])[np.argmax(te, axis=1)]


#: The routing methods compared by ``qsef eval routing --method`` (CLI choices come from it).
routing_method_resolver: Resolver[RoutingMethod] = Resolver(
    RoutingMethod, [QSEFRouting, CentroidRouting, KNNRouting, ZeroShotRouting, LLMRouting, RandomRouting],
    suffix="routing", default="qsef", kind="routing method")


def report(gold: np.ndarray, pred: np.ndarray, domains: Sequence[str] | None = None) -> dict[str, Any]:
    """``{"n", "accuracy", "per_domain"}`` with per-domain accuracy (recall) and counts."""
    domains = list(domains) if domains is not None else sorted(set(gold))
    per = {d: float((pred[gold == d] == d).mean()) if (gold == d).any() else None for d in domains}
    return {"n": len(gold), "accuracy": float((gold == pred).mean()) if len(gold) else 0.0,
            "per_domain": per, "support": {d: int((gold == d).sum()) for d in domains}}


def cross_validate_method(make: Any, ds: LabelledSet, *, k: int = 5, seed: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    """k-fold CV (stratified): ``make()`` builds a fresh method per fold. Returns the report and predictions."""
    pred = np.empty(len(ds.texts), dtype=object)
    fold_acc = []
    for test_idx in kfold_indices(len(ds.texts), k, seed=seed, labels=ds.labels):
        train_idx = np.setdiff1d(np.arange(len(ds.texts)), test_idx)
        m = make()
        m.fit(ds.subset(train_idx))
        p = m.predict(ds.subset(test_idx))
        pred[test_idx] = p
        fold_acc.append(float((p == ds.labels[test_idx]).mean()))
    out = report(ds.labels, pred.astype(str))
    out["folds"] = k
    out["fold_accuracy"] = fold_acc
    out["fold_std"] = float(np.std(fold_acc))
    return out, pred.astype(str)


def confusion_png(gold: np.ndarray, pred: np.ndarray, path: str | Path, *, title: str = "") -> Path:
    """Save a row-normalised confusion matrix as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doms = sorted(set(gold) | set(pred))
    m = np.array([[((gold == a) & (pred == b)).sum() for b in doms] for a in doms], dtype=float)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(doms)), doms, rotation=45, ha="right")
    ax.set_yticks(range(len(doms)), doms)
    for i in range(len(doms)):
        for j in range(len(doms)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="white" if m[i, j] > 0.5 else "black",
                    fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def make_method(name: str, *, engine: QSEFEngine, experts: Sequence[ExpertProfile] | None = None,
                ablate: Sequence[str] = (), **kwargs: Any) -> RoutingMethod:
    """Build a routing method by name.

    Raises:
        UnknownComponentError: an unknown name (a ``ValueError``), listing the valid names.
    """
    name = routing_method_resolver.canonical_name(name)
    if name == "qsef":
        return QSEFRouting(engine, experts if experts is not None else engine.experts, ablate=ablate, **kwargs)
    if ablate:
        raise ValueError("--ablate applies to the qsef method only")
    if name == "zeroshot":
        return ZeroShotRouting(encoder=engine.encoder, **kwargs)
    if name == "llm":
        return LLMRouting(settings=engine.settings, **kwargs)
    return routing_method_resolver.make(name, kwargs)


def evaluate(rows: Sequence[dict[str, str]], *, engine: QSEFEngine, method: str = "qsef",
             train_rows: Sequence[dict[str, str]] | None = None, ablate: Sequence[str] = (),
             cv: int = 0, confusion: str | Path | None = None, keep_predictions: bool = False,
             **kwargs: Any) -> dict[str, Any]:
    """Route labelled rows with one method and report accuracy.

    Args:
        rows: ``{"text", "domain"}`` rows to route.
        method: a name in :data:`routing_method_resolver`.
        engine: QSEF engine (experts, encoder, graphs, weights, settings).
        train_rows: labelled rows for methods that learn (centroid, knn; qsef blends them in and fits
            its weights on them). Without them ``qsef`` uses the experts' corpus profiles and the shipped
            calibration, exactly as ``qsef score`` does.
        ablate: components switched off (qsef only).
        cv: > 1 runs k-fold cross-validation on ``rows`` themselves instead.
        confusion: optional PNG path for the confusion matrix.
        keep_predictions: add ``"predictions"`` (one domain per row, in order) for paired tests.
    """
    experts = engine.experts
    emb = engine.encode([r["text"] for r in rows])
    ds = LabelledSet([r["text"] for r in rows], emb, np.array([r["domain"] for r in rows]))
    if method == "qsef":
        attach_static(ds, engine, experts)
    make = lambda: make_method(method, engine=engine, experts=experts, ablate=ablate, **kwargs)  # noqa: E731
    if cv and cv > 1:
        out, pred = cross_validate_method(make, ds, k=cv)
    else:
        m = make()
        if train_rows:
            tr = LabelledSet([r["text"] for r in train_rows], engine.encode([r["text"] for r in train_rows]),
                             np.array([r["domain"] for r in train_rows]))
            if method == "qsef":
                attach_static(tr, engine, experts)
            m.fit(tr)
        elif m.needs_training and method != "qsef":
            raise ValueError(f"method {method!r} learns from labelled rows: pass train_rows (CLI: --train FILE.jsonl) "
                             "or cross-validate with cv > 1 (CLI: --cv K)")
        elif method == "qsef":
            m.calibrate = False
            m.use_history = engine.history is not None
            m.history = engine.history
        pred = m.predict(ds)
        out = report(ds.labels, pred)
    out["method"] = method
    if keep_predictions:
        out["predictions"] = [str(x) for x in pred]
    if ablate:
        out["ablate"] = list(ablate)
    if confusion:
        confusion_png(ds.labels, pred, confusion, title=f"{method} routing")
        out["confusion_png"] = str(confusion)
    return out


__all__ = ["LabelledSet", "QSEFWeights", "evaluate", "load_rows", "make_method", "report", "routing_method_resolver"]
