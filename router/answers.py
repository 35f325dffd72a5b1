"""Answer quality × cost: every expert answers gold-answered multiple-choice questions, and routers are
judged by the accuracy they buy per unit of cost (RouteLLM / RouterBench style; SPEC §8).

Pieces, in the order a run uses them:

* :func:`load_answer_rows` — rows ``{"question", "choices", "answer", "domain"}`` from JSONL, validated
  (:class:`AnswerRowError` names file, line and rule);
* :func:`choose_formats` — per model family, the prompt format (letter/cloze × raw/chat) that scores
  best on a small dev set of questions that are never graded;
* :func:`answer_matrix` — each expert's chosen answer and correctness on every question (scores cached
  by :class:`experts.answers.AnswerScorer`); an expert whose model fails to load is reported and left out;
* :mod:`router.answer_routing` — routers over that matrix (QSEF strategies, kNN, learned) and the metrics;
* :func:`evaluate_answers` — all of it, cross-fitted, for two QSEF configurations: the engine's (label)
  calibration and ``qsef_refit``, weights refitted on the training folds' answer outcomes
  (:func:`qsef_refit_fold_scorer`);
* :func:`calibrate_from_answers` — ``qsef calibrate --answers``: the outcome fit on every cached question,
  saved as a calibration of kind ``"answers"`` (:mod:`qsef.calibration`).

Example:
    >>> rows = load_answer_rows("graded.jsonl")
    >>> m = answer_matrix(rows, {"qwen-0.5b": PromptFormat("letter", False)}, settings=settings)
    >>> m.accuracy()
    {'qwen-0.5b': 0.41}
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from core.domains import DOMAINS
from core.jsonl import JSONLError, iter_jsonl
from experts.answers import (
    MCQuestion,
    ModelLoadError,
    PromptFormat,
    all_formats,
    expert_family,
    expert_scorer,
)

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["AnswerMatrix", "AnswerRowError", "answer_matrix", "cached_rows", "calibrate_from_answers", "check_answer_row",
           "choose_formats", "evaluate_answers", "load_answer_rows", "qsef_fold_scorer", "qsef_refit_fold_scorer",
           "read_answer_file", "to_questions"]


class AnswerRowError(ValueError):
    """A bad row of an answer-grading file: ``file:line: rule: detail``."""

    def __init__(self, path: str | Path, line: int, rule: str, detail: str) -> None:
        self.path, self.line, self.rule, self.detail = str(path), line, rule, detail
        super().__init__(f"{path}:{line}: {rule}: {detail}")


def check_answer_row(obj: Any, path: str | Path, n: int, domains: Sequence[str] = DOMAINS) -> dict[str, Any]:
    """One parsed row, validated (see :func:`load_answer_rows` for the rules) and normalised.

    Raises:
        AnswerRowError: naming ``path``, line ``n`` and the rule the row breaks.
    """
    if not isinstance(obj, dict):
        raise AnswerRowError(path, n, "not-an-object", f"expected a JSON object, got {type(obj).__name__}")
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise AnswerRowError(path, n, "question", '"question" must be a non-empty string')
    ch = obj.get("choices")
    if not isinstance(ch, list) or len(ch) == 0:
        raise AnswerRowError(path, n, "no-choices", '"choices" must be a non-empty list of strings')
    if len(ch) < 2:
        raise AnswerRowError(path, n, "too-few-choices", f'"choices" has {len(ch)} entry; need at least 2')
    if len(ch) > 10:
        raise AnswerRowError(path, n, "too-many-choices", f'"choices" has {len(ch)} entries; at most 10 (A-J)')
    if not all(isinstance(c, str) and c.strip() for c in ch):
        raise AnswerRowError(path, n, "choice-not-string", "every choice must be a non-empty string")
    a = obj.get("answer")
    if not isinstance(a, int) or isinstance(a, bool):
        raise AnswerRowError(path, n, "answer-not-int", f'"answer" must be an integer index, got {a!r}')
    if not 0 <= a < len(ch):
        raise AnswerRowError(path, n, "answer-out-of-range", f'"answer" {a} is not in 0..{len(ch) - 1}')
    d = obj.get("domain")
    if d not in domains:
        raise AnswerRowError(path, n, "unknown-domain", f'"domain" {d!r} is not one of {", ".join(domains)}')
    return {"question": q, "choices": list(ch), "answer": a, "domain": d,
            "id": str(obj.get("id", f"{Path(path).name}:{n}"))}


def load_answer_rows(path: str | Path, *, domains: Sequence[str] = DOMAINS) -> list[dict[str, Any]]:
    """Validated rows ``{"question", "choices", "answer", "domain", "id"}`` of a JSONL file.

    Raises:
        AnswerRowError: on the first bad line, naming file, line and rule — ``malformed-json``,
            ``not-an-object``, ``question``, ``no-choices``, ``too-few-choices``, ``too-many-choices``,
            ``choice-not-string``, ``answer-not-int``, ``answer-out-of-range``, ``unknown-domain``;
            ``empty-file`` when there is no row at all.
        FileNotFoundError: when the file does not exist.
    """
    return read_answer_file(path, lambda obj, n: check_answer_row(obj, path, n, domains))


def read_answer_file(path: str | Path, check: Callable[[Any, int], T]) -> list[T]:
    """Every row of an answer-grading JSONL file, each passed through ``check(value, line_number)``.

    The file-level rules that :func:`load_answer_rows` and
    :func:`router.compound_answers.load_compound_rows` share; ``check`` applies the row rules.

    Raises:
        AnswerRowError: ``malformed-json`` for a line that is not JSON, ``empty-file`` when there is no
            row at all, and whatever ``check`` raises.
        FileNotFoundError: when the file does not exist.
    """
    try:
        rows = [check(obj, n) for n, obj in iter_jsonl(path)]
    except JSONLError as exc:
        raise AnswerRowError(path, exc.line, "malformed-json", exc.error.msg) from exc
    if not rows:
        raise AnswerRowError(path, 0, "empty-file", "no rows")
    return rows


def to_questions(rows: Sequence[dict[str, Any]]) -> list[MCQuestion]:
    return [MCQuestion(r["question"], tuple(r["choices"]), int(r["answer"]), r["domain"], str(r.get("id", "")))
            for r in rows]


def cached_rows(rows: Sequence[dict[str, Any]], formats: dict[str, PromptFormat], *,
                settings: Settings, registry: Any = None) -> list[dict[str, Any]]:
    """The rows whose question every expert has already scored in its prompt format (read from the score
    caches; no model is loaded).

    Args:
        rows: validated answer rows.
        formats: expert name (a model-store name, or a ``peft`` expert of ``registry`` or a shipped
            ``<domain>-lora``: see :func:`experts.answers.expert_scorer`) -> prompt format; with no
            model, no row is kept.
    """
    keep: set[str] | None = None
    for m, f in formats.items():
        have = set(expert_scorer(m, settings=settings, registry=registry).cached(f))
        keep = have if keep is None else keep & have
    return [r for r, q in zip(rows, to_questions(rows), strict=True) if q.key in (keep or set())]


def choose_formats(dev_rows: Sequence[dict[str, Any]], models: Sequence[str], *, settings: Settings,
                   formats: Sequence[PromptFormat] | None = None, deciders: dict[str, Sequence[str]] | None = None,
                   cache_dir: Path | None = None, registry: Any = None) -> dict[str, Any]:
    """Pick one prompt format per model family by dev-set accuracy (ties: the earlier format).

    Args:
        dev_rows: questions never graded (e.g. the MMLU ``history`` side).
        models: the experts' model-store names.
        deciders: family -> the members that are scored on the dev set (default: all members, whose mean
            dev accuracy decides; one member alone is cheaper, but a near-chance one decides by noise).

    Returns:
        ``{"formats": {model: PromptFormat}, "dev": {model: {format_name: accuracy}},
        "family": {family: format_name}}``.
    """
    formats = list(formats or all_formats())
    qs = to_questions(dev_rows)
    gold = np.array([q.answer for q in qs])
    fams: dict[str, list[str]] = {}
    for m in models:
        fams.setdefault(expert_family(m, registry), []).append(m)
    dev: dict[str, dict[str, float]] = {}
    family: dict[str, str] = {}
    for fam, members in fams.items():
        voters = list((deciders or {}).get(fam, members))
        acc = {f.name: [] for f in formats}
        for m in voters:
            sc = expert_scorer(m, settings=settings, registry=registry, cache_dir=cache_dir)
            dev[m] = {}
            for f in formats:
                a = float((sc.predict(qs, f) == gold).mean())
                dev[m][f.name] = a
                acc[f.name].append(a)
            sc.unload()
        family[fam] = max(formats, key=lambda f: np.mean(acc[f.name])).name
    return {"formats": {m: PromptFormat.parse(family[expert_family(m, registry)]) for m in models}, "dev": dev,
            "family": family, "n_dev": len(qs)}


@dataclass
class AnswerMatrix:
    """Who answered what: ``pred (N, E)`` chosen choice index, ``correct (N, E)`` bool, gold ``(N,)``."""

    experts: list[str]
    questions: list[MCQuestion]
    pred: np.ndarray
    correct: np.ndarray
    formats: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # expert -> why it could not be scored

    @property
    def domains(self) -> np.ndarray:
        return np.array([q.domain for q in self.questions])

    def accuracy(self) -> dict[str, float]:
        return {e: float(self.correct[:, j].mean()) for j, e in enumerate(self.experts)}

    def subset(self, idx: np.ndarray) -> AnswerMatrix:
        return AnswerMatrix(self.experts, [self.questions[i] for i in idx], self.pred[idx], self.correct[idx],
                            self.formats, self.errors)


def answer_matrix(rows: Sequence[dict[str, Any]], formats: dict[str, PromptFormat], *, settings: Settings,
                  cache_dir: Path | None = None, progress: bool = False, registry: Any = None) -> AnswerMatrix:
    """Score every expert (model-store name, or a ``peft`` expert's name: see
    :func:`experts.answers.expert_scorer`; -> prompt format) on every row.

    A model that fails to load is logged, recorded in :attr:`AnswerMatrix.errors` and left out; the
    others are still scored.
    """
    qs = to_questions(rows)
    gold = np.array([q.answer for q in qs])
    names, preds, errors = [], [], {}
    for m, fmt in formats.items():
        sc = expert_scorer(m, settings=settings, registry=registry, cache_dir=cache_dir)
        try:
            preds.append(sc.predict(qs, fmt, progress=progress))
            names.append(m)
        except ModelLoadError as exc:
            log.error("expert not scored", extra={"expert": m, "error": str(exc)[:300]})
            errors[m] = str(exc)
        finally:
            sc.unload()
    pred = np.stack(preds, 1) if preds else np.zeros((len(qs), 0), dtype=np.int64)
    return AnswerMatrix(names, qs, pred, pred == gold[:, None], {m: f.name for m, f in formats.items()}, errors)


def cached_formats(settings: Settings) -> dict[str, str]:
    """Family -> format name chosen by an earlier :func:`choose_formats` run (``formats.json``), if any."""
    path = settings.path("cache", "answers") / "formats.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["family"])
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return {}


def resolve_formats(models: Sequence[str], *, settings: Settings, fmt: str = "auto",
                    dev_rows: Sequence[dict[str, Any]] | None = None,
                    registry: Any = None) -> dict[str, PromptFormat]:
    """The prompt format per model: ``fmt`` if it names one, else the family's dev-set choice — cached
    from an earlier run, or chosen now on ``dev_rows`` (default: 4 MMLU history-side questions per domain)."""
    if fmt != "auto":
        return {m: PromptFormat.parse(fmt) for m in models}
    fam = cached_formats(settings)
    missing = [m for m in models if expert_family(m, registry) not in fam]
    if missing:
        if dev_rows is None:
            from corpora import mmlu_answer_rows

            dev_rows = mmlu_answer_rows(settings, split="history", per_domain=4)
        fam.update(choose_formats(dev_rows, missing, settings=settings, registry=registry)["family"])
    return {m: PromptFormat.parse(fam[expert_family(m, registry)]) for m in models}


def qsef_fold_scorer(scorer: Any, texts: Sequence[str], emb: np.ndarray, correct: np.ndarray,
                     experts: Sequence[str]):
    """``(train_idx, test_idx) -> (TE, P)`` in ``experts`` order: the router's own scorer
    (:class:`router.scoring.RegistryScorer`) with ``C_model`` history = the answer matrix of ``train_idx``."""
    from qsef.history import AnswerHistory

    profiles = scorer.profiles()
    names = [p.name for p in profiles]
    order = [names.index(x) for x in experts]

    def fn(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eng = scorer.engine
        eng.history = AnswerHistory(emb[train], correct[train], list(experts))
        res = eng.score([texts[i] for i in test], profiles, embeddings=emb[test])
        te = np.asarray(res.TE, dtype=np.float64)[:, order]
        return te, te / te.sum(1, keepdims=True)

    return fn


def _ordered_profiles(scorer: Any, experts: Sequence[str]) -> list[Any]:
    """The scorer's QSEF profiles in ``experts`` order."""
    by_name = {p.name: p for p in scorer.profiles()}
    return [by_name[x] for x in experts]


def qsef_refit_fold_scorer(scorer: Any, texts: Sequence[str], emb: np.ndarray, correct: np.ndarray,
                           experts: Sequence[str], *, labels: Sequence[str] | None = None, k: int = 5, seed: int = 0,
                           fits: list | None = None):
    """``(train_idx, test_idx) -> (TE, P)`` in ``experts`` order: QSEF with its weights refitted on the answer
    outcomes of ``train_idx`` only (:func:`qsef.calibration.refit_scores`: the training questions' ``C_model``
    from out-of-fold history inside ``train_idx``), then ``test_idx`` scored with ``train_idx``'s answers as
    history — the same history :func:`qsef_fold_scorer` gives the current weights.

    Args:
        labels: strata of the inner folds (domains).
        k: inner folds.
        fits: when given, each fold's :class:`qsef.calibration.LogitFit` is appended to it.
    """
    from qsef.calibration import AnswerFeatures, refit_scores

    engine = scorer.engine
    features = AnswerFeatures(engine, texts, emb, correct, _ordered_profiles(scorer, experts), labels=labels)
    prior = engine.weights_for(history=True).coefficients()

    def fn(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        te, p, fit = refit_scores(features, train, test, k=k, seed=seed, prior=prior)
        if fits is not None:
            fits.append(fit)
        return te, p

    return fn


def _refit_summary(fits: Sequence[Any]) -> dict[str, Any]:
    """What the cross-fitted refit learned, fold by fold."""
    return {
        "what": "QSEF weights refitted on each training fold's answer outcomes (likelihood of the set of experts "
                "that answered correctly; C_model history = the other inner folds' answers); each question is "
                "routed with weights and history from the other folds only",
        "identified": sorted({c for f in fits for c in (f.identified or [])}),
        "coefficients_folds": [f.beta for f in fits],
        "weights_folds": [dataclasses.asdict(f.weights) for f in fits],
        "train_accuracy_folds": [f.accuracy for f in fits],
        "counts_folds": [f.counts for f in fits],
    }


def _answer_setup(rows: Sequence[dict[str, Any]], formats: dict[str, PromptFormat], *, settings: Settings,
                  registry: Any, progress: bool = False) -> tuple[AnswerMatrix, np.ndarray]:
    """``(matrix, costs)``: the experts of ``formats`` answer ``rows``, and their registered costs.

    Raises:
        ValueError: an expert of ``formats`` is not enabled in ``registry`` (a ``peft`` expert is scored
            whether enabled or not: the shipped adapters are registered disabled until graded).
    """
    matrix = answer_matrix(rows, formats, settings=settings, progress=progress, registry=registry)
    specs = {s.name: s for s in registry.list() if s.enabled or s.backend == "peft"}
    unknown = [m for m in matrix.experts if m not in specs]
    if unknown:
        raise ValueError(f"experts {unknown} are not in the registry; registered: {sorted(specs)}")
    return matrix, np.array([specs[m].cost for m in matrix.experts])


def evaluate_answers(rows: Sequence[dict[str, Any]], formats: dict[str, PromptFormat], *, settings: Settings,
                     registry: Any, strategy: str = "argmax", lam: float = 0.0, tau: float = 0.34, cv: int = 5,
                     cached_only: bool = False, progress: bool = False, refit: bool = True) -> dict[str, Any]:
    """Score the experts, cross-fit the routers (QSEF, kNN, learned) and report answer quality × cost.

    Two QSEF configurations are reported: ``qsef`` — the engine's calibration (fitted for *label* routing,
    the shipped ``qsef/data/calibration.json`` unless ``$QSEF_HOME/calibration.json`` exists), with
    ``C_model`` history from the other folds' answers — and, with ``refit``, ``qsef_refit`` — the same
    components and history, with weights refitted on the other folds' answer outcomes (never on the
    question routed). The top-level ``routed``/``strategies``/``apgr``/``spearman`` keys are ``qsef``'s;
    ``qsef_configs`` holds both, and ``qsef_refit`` what the refit learned per fold.

    Args:
        rows: validated answer rows.
        formats: model-store name -> prompt format.
        registry: an :class:`experts.registry.ExpertRegistry` holding one expert per model (its ``cost``
            and ``size_params`` are what QSEF and the cost columns use).
        strategy, lam, tau: the routed configuration reported as ``routed``.
        cv: folds — each question is routed by routers whose history is the answer matrix of the other
            folds (never its own answers).
        cached_only: use only questions every expert has already scored (no model is loaded).
        refit: also report ``qsef_refit``.
    """
    from qsef.encoder import get_encoder
    from router.answer_routing import cross_fit, evaluate_fleet
    from router.scoring import RegistryScorer

    if cached_only:
        rows = cached_rows(rows, formats, settings=settings, registry=registry)
        if not rows:
            return {"n": 0, "formats": {m: f.name for m, f in formats.items()}, "errors": {},
                    "note": "no question has been scored by every expert yet"}
    matrix, costs = _answer_setup(rows, formats, settings=settings, registry=registry, progress=progress)
    out: dict[str, Any] = {"n": len(rows), "formats": matrix.formats, "errors": matrix.errors}
    if not matrix.experts:
        return out
    texts = [q.question for q in matrix.questions]
    encoder = get_encoder(settings)
    emb = np.asarray(encoder.encode(texts), dtype=np.float32)
    scorer = RegistryScorer(registry, settings=settings, encoder=encoder)
    if len(rows) < 2 * cv or len(matrix.experts) < 2:
        out.update({"experts": {m: {"accuracy": a, "mean_cost": float(c)}
                                for (m, a), c in zip(matrix.accuracy().items(), costs, strict=True)},
                    "note": "too few rows or experts to route"})
        return out
    fits: list = []
    extra = {"qsef_refit": qsef_refit_fold_scorer(scorer, texts, emb, matrix.correct, matrix.experts,
                                                  labels=matrix.domains, k=cv, fits=fits)} if refit else None
    scores = cross_fit(matrix.correct, emb, matrix.domains, qsef_fold_scorer(scorer, texts, emb, matrix.correct,
                                                                              matrix.experts), k=cv, extra_qsef=extra)
    out.update(evaluate_fleet(matrix.correct, costs, matrix.experts, matrix.domains, scores, default=strategy,
                              lam=lam, tau=tau, extra_qsef=tuple(extra or ())))
    if refit:
        out["qsef_refit"] = _refit_summary(fits)
    out["costs"] = {m: float(c) for m, c in zip(matrix.experts, costs, strict=True)}
    out["cv_folds"] = cv
    out["_matrix"] = matrix
    out["_emb"] = emb
    return out


def calibrate_from_answers(rows: Sequence[dict[str, Any]], formats: dict[str, PromptFormat], *,
                           settings: Settings, registry: Any, folds: int = 5, out: str | Path | None = None,
                           encoder: Any = None, source: str = "") -> dict[str, Any]:
    """``qsef calibrate --answers``: refit QSEF's weights on the experts' cached answers to ``rows``.

    Only questions every expert has already scored are used (no model is loaded); the others are left out
    and counted. See :func:`qsef.calibration.calibrate_answers` for the fit.

    Args:
        rows: validated answer rows; formats: model-store name -> prompt format.
        registry: holds the experts (their profiles and sizes are what QSEF scores).
        folds: cross-validation folds (nested: outer for held-out numbers, inner for the C_model history).
        out: the calibration file to write (kind ``"answers"``), or ``None``.
        encoder: the sentence encoder (default: the settings' encoder).
        source: recorded in the file as where the rows came from.

    Returns:
        ``{"n", "n_uncached", "uncached_ids", "experts", "accuracy", "fit"}`` — ``fit`` is the
        :class:`qsef.calibration.LogitFit` (``fit.cv`` with the current weights as ``baseline``).

    Raises:
        ValueError: an unknown expert, too few cached questions for ``folds``, or what the fit rejects.
    """
    from qsef.calibration import calibrate_answers
    from qsef.encoder import get_encoder
    from router.scoring import RegistryScorer

    if len(formats) < 2:
        raise ValueError(f"an outcome fit needs at least 2 experts, got {sorted(formats)}")
    kept = cached_rows(rows, formats, settings=settings, registry=registry)
    have = {id(r) for r in kept}
    uncached = [r["id"] for r in rows if id(r) not in have]
    if len(kept) < 2 * folds:
        raise ValueError(f"{len(kept)} of {len(rows)} questions have cached answers from every expert; "
                         f"{folds}-fold cross-validation needs at least {2 * folds}")
    matrix, _ = _answer_setup(kept, formats, settings=settings, registry=registry)
    encoder = encoder or get_encoder(settings)
    texts = [q.question for q in matrix.questions]
    emb = np.asarray(encoder.encode(texts), dtype=np.float32)
    scorer = RegistryScorer(registry, settings=settings, encoder=encoder)
    fit = calibrate_answers(scorer.engine, texts, emb, matrix.correct, _ordered_profiles(scorer, matrix.experts),
                            k=folds, labels=matrix.domains, out=out,
                            data={"rows": source, "formats": matrix.formats, "n_uncached": len(uncached)},
                            note="written by `qsef calibrate --answers`")
    return {"n": len(kept), "n_uncached": len(uncached), "uncached_ids": uncached, "experts": matrix.experts,
            "accuracy": matrix.accuracy(), "fit": fit}
