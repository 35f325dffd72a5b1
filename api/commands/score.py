"""``qsef score``, ``qsef eval routing`` and ``qsef calibrate`` — QSEF from the command line.

The ``eval`` group: this module creates ``qsef eval`` (a subcommand group) and adds ``routing`` to it.
Other areas add their own evaluations to the same group through :func:`eval_subparsers`, which returns
the group (creating it if ``score`` was not registered first), e.g. the router area does::

    from api.commands.score import eval_subparsers
    eval_subparsers(subparsers).add_parser("decompose", ...)

Heavy imports (sentence-transformers, torch) happen inside the handlers only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eval_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The subparsers of the ``qsef eval`` group under ``subparsers``, created on first use.

    The group is remembered on the ``subparsers`` object itself, so each freshly built parser gets its
    own group (tests build several).
    """
    group = getattr(subparsers, "_qsef_eval_subparsers", None)
    if group is None:
        parser = subparsers.add_parser("eval", help="evaluate routing and decomposition on labelled JSONL files")
        group = parser.add_subparsers(dest="eval_command", metavar="WHAT", required=True)
        subparsers._qsef_eval_subparsers = group
    return group


def register(subparsers: argparse._SubParsersAction) -> None:
    from qsef.components import component_resolver  # numpy only: the resolvers name the choices
    from qsef.eval.routing import routing_method_resolver

    score = subparsers.add_parser("score", help="QSEF score breakdown of a text against every candidate expert")
    score.add_argument("text", metavar="TEXT")
    score.add_argument("--json", action="store_true", help="print one JSON object")
    score.add_argument("--ablate", action="append", default=[], choices=component_resolver.names,
                       metavar="COMPONENT", help=f"switch a component off (repeatable): {', '.join(component_resolver.names)}")
    score.add_argument("--calibration", metavar="FILE", help="calibration file (default: the shipped one)")
    score.add_argument("--history", choices=("route", "seed", "none"), default="route",
                       help="C_model history. route (default): what `qsef route` scores with -- the feedback store, "
                            "then the seed history (MMLU questions as labelled past tasks) when "
                            "QSEF_ROUTER_SEED_HISTORY is on; seed: the seed history alone; none: corpus signals only")
    score.set_defaults(handler=_score)

    routing = eval_subparsers(subparsers).add_parser(
        "routing", help='route rows {"text","domain"} and print {"n","accuracy","per_domain"}')
    routing.add_argument("file", metavar="FILE.jsonl")
    routing.add_argument("--json", action="store_true", help="print one JSON object")
    routing.add_argument("--method", choices=routing_method_resolver.options, default="qsef")
    routing.add_argument("--ablate", action="append", default=[], choices=component_resolver.names,
                         metavar="COMPONENT", help="switch a QSEF component off (repeatable)")
    routing.add_argument("--train", metavar="FILE.jsonl",
                         help="labelled rows the method learns from (centroid/knn; qsef blends them in)")
    routing.add_argument("--cv", type=int, default=0, metavar="K", help="k-fold cross-validation on FILE itself")
    routing.add_argument("--confusion", metavar="PNG", help="save a confusion-matrix image")
    routing.add_argument("--limit", type=int, default=0, help="only the first N rows (e.g. for --method llm)")
    routing.add_argument("--history", choices=("route", "seed", "none"), default="route",
                         help="qsef's C_model history. route (default): what `qsef route` uses — the feedback "
                              "store, then the seed history (MMLU's history side) when QSEF_ROUTER_SEED_HISTORY "
                              "is on; seed: the seed history alone; none: corpus signals only")
    routing.set_defaults(handler=_eval_routing)

    answers = eval_subparsers(subparsers).add_parser(
        "answers", help='experts answer rows {"question","choices","answer","domain"}; routers judged on '
                        "accuracy x cost")
    answers.add_argument("file", metavar="FILE.jsonl")
    answers.add_argument("--json", action="store_true", help="print one JSON object")
    answers.add_argument("--strategy", choices=("argmax", "cost_aware", "threshold"), default="argmax",
                         help="QSEF selection reported as 'routed' (default: argmax TE, the router's default)")
    answers.add_argument("--lam", type=float, default=0.0, help="cost_aware: lambda (cost normalised by the largest)")
    answers.add_argument("--tau", type=float, default=0.34, help="threshold: the cheapest expert with P >= tau")
    answers.add_argument("--experts", default="", metavar="A,B,...",
                         help="expert names, comma-separated: model-store names, or peft experts (a shipped "
                              "<domain>-lora, enabled or not) (default: every registered one)")
    answers.add_argument("--format", default="auto", metavar="FORM",
                         help="prompt format letter-raw|letter-chat|cloze-raw|cloze-chat, or auto = the "
                              "family's dev-set choice")
    answers.add_argument("--cv", type=int, default=5, help="folds: each question is routed with the other folds' "
                                                           "answers as history")
    answers.add_argument("--registry", metavar="FILE", help="expert registry (default: <data>/answers/fleet.sqlite, "
                                                             "the capability fleet)")
    comp = answers.add_argument_group(
        "compound questions", "--compound joins 2-3 rows of different domains into one message and scores "
                              "decomposition, QSEF routing and answering part by part (FILE may also hold "
                              'ready-made compound rows: {"message", "parts": [row + "span"]})')
    comp.add_argument("--compound", action="store_true", help="answer-graded compound questions")
    comp.add_argument("--parts", choices=("2", "3", "mixed"), default="mixed", help="questions per message")
    comp.add_argument("--n", type=int, metavar="N",
                      help="compound questions to build (default: about one use of every row); with a file of "
                           "compound rows, its first N")
    comp.add_argument("--seed", type=int, default=0, help="seed of the construction")
    comp.add_argument("--no-answers", action="store_true",
                      help="decomposition and routing only: no expert model is loaded")
    comp.add_argument("--splitter", action="store_true", help="decompose with the clause splitter only (no router LLM)")
    comp.add_argument("--router-llm", choices=("vllm", "transformers", "none"),
                      help="router LLM backend for decomposition (default settings.router_backend)")
    comp.add_argument("--concurrency", type=int, default=1, help="messages decomposed at once (a served router LLM "
                                                                 "batches them)")
    comp.add_argument("--rows", action="store_true", help="include per-row results in --json output")
    answers.set_defaults(handler=_eval_answers)

    cal = subparsers.add_parser(
        "calibrate", help='fit the QSEF weights (conditional logit): on labelled rows {"text","domain"}, or with '
                          "--answers on which experts answered correctly")
    cal.add_argument("file", metavar="FILE.jsonl", nargs="?",
                     help='labelled routing rows {"text","domain"} (the correct expert is the one of that domain)')
    cal.add_argument("--answers", metavar="FILE.jsonl",
                     help='answer rows {"question","choices","answer","domain"}: fit on the experts\' cached answers '
                          "(C_model history from the other folds' answers); a question some expert has not scored "
                          'yet is left out and counted; writes a calibration of kind "answers"')
    cal.add_argument("--out", metavar="FILE",
                     help="calibration file to write (default: <data>/calibration.json, which the engine then loads; "
                          "with --answers: <data>/calibration-answers.json, which it does not load by default)")
    cal.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    cal.add_argument("--experts", default="", metavar="A,B,...",
                     help="--answers: expert (model-store) names, comma-separated (default: every registered one)")
    cal.add_argument("--format", default="auto", metavar="FORM",
                     help="--answers: the prompt format whose cached answers are read (letter-raw|letter-chat|"
                          "cloze-raw|cloze-chat), or auto = the family's cached dev-set choice")
    cal.add_argument("--registry", metavar="FILE", help="--answers: expert registry (default: "
                                                         "<data>/answers/fleet.sqlite, the capability fleet)")
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(handler=_calibrate)


def _fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def _engine(args: argparse.Namespace, **kwargs):
    from qsef.engine import QSEFEngine

    engine = QSEFEngine(settings=args.settings, **kwargs)
    history = getattr(args, "history", "none")
    if history == "none":
        return engine
    from qsef.history import ChainedHistory, seed_history

    seed = None
    if history == "seed" or args.settings.router.seed_history:
        seed = seed_history(engine.experts, settings=args.settings, encoder=engine.encoder)
    feedback = None
    if history == "route":  # the router's own chain: real outcomes first, then the seed (router.scoring)
        from router.feedback import feedback_from_settings

        local = args.settings.path("router") / "feedback.sqlite"  # not created just to be read empty
        feedback = feedback_from_settings(args.settings) if args.settings.database_url or local.is_file() else None
    chain = [h for h in (feedback, seed) if h is not None]
    engine.history = chain[0] if len(chain) == 1 else (ChainedHistory(*chain) if chain else None)
    return engine


def _score(args: argparse.Namespace) -> int:
    engine = _engine(args, weights=args.calibration, ablate=args.ablate)
    res = engine.score([args.text])
    if args.json:
        print(res.scores(0).model_dump_json())
        return 0
    cols = ("D_emb", "D_kg", "D", "C_data", "C_model", "C_sparsity", "R")
    print(f"{'rank':>4}  {'expert':<16} " + " ".join(f"{c:>7}" for c in cols) + f" {'TE':>9} {'P':>6}")
    for s in res.ranked(0):
        vals = " ".join(f"{_fmt(getattr(s, c)):>7}" for c in cols)
        print(f"{s.rank:>4}  {s.expert[:16]:<16} {vals} {s.TE:9.3g} {s.P:6.3f}")
    print("P = TE / sum(TE): the calibrated probability that this expert is the right one")
    if res.flags[0]:
        print(f"flags: {', '.join(res.flags[0])}")
    return 0


def _eval_routing(args: argparse.Namespace) -> int:
    from qsef.eval.routing import evaluate, load_rows

    rows = load_rows(args.file)
    if args.limit:
        rows = rows[: args.limit]
    train = load_rows(args.train) if args.train else None
    out = evaluate(rows, method=args.method, engine=_engine(args), train_rows=train, ablate=args.ablate,
                   cv=args.cv, confusion=args.confusion)
    if args.json:
        print(json.dumps(out))
        return 0
    print(json.dumps({k: out[k] for k in ("n", "accuracy", "per_domain")}))
    print(f"method={out['method']} accuracy={out['accuracy']:.4f} n={out['n']}", file=sys.stderr)
    return 0


def _answer_fleet(args: argparse.Namespace, *, score_dev: bool = True):
    """``(registry, formats)`` of the answer experts ``--registry`` / ``--experts`` / ``--format`` name, or an
    exit status after printing what is wrong. ``score_dev=False``: a family with no cached format choice is
    an error instead of a reason to score the dev set (which loads the models)."""
    from pathlib import Path

    from experts.answers import expert_family
    from experts.registry import ExpertRegistry, capability_fleet, shipped_adapters
    from router.answers import cached_formats, resolve_formats

    path = Path(args.registry) if args.registry else args.settings.path("answers") / "fleet.sqlite"
    registry = ExpertRegistry(path)
    if not registry.names():
        for spec in capability_fleet():
            registry.add(spec)
    names = [n for n in args.experts.split(",") if n] or registry.names()
    for spec in shipped_adapters():  # a shipped LoRA expert named in --experts joins the answer fleet (disabled)
        if spec.name in names and spec.name not in registry.names():
            registry.add(spec)
    unknown = [n for n in names if n not in registry.names()]
    if unknown:
        print(f"error: unknown expert(s) {', '.join(unknown)}; registered in {path}: {', '.join(registry.names())}",
              file=sys.stderr)
        return 2
    specs = {n: registry.get(n) for n in names}
    models = {n: s.backend_kwargs.get("model", n) for n, s in specs.items() if s.backend != "peft"}
    if any(m != n for n, m in models.items()):
        print("error: an answer expert's name must be its model-store name (or a peft expert's)", file=sys.stderr)
        return 2
    if not score_dev and args.format == "auto":
        known = cached_formats(args.settings)
        missing = sorted({expert_family(n, registry) for n in names} - set(known))
        if missing:
            print(f"error: no cached prompt-format choice for {', '.join(missing)}; pass --format "
                  "(letter-raw|letter-chat|cloze-raw|cloze-chat)", file=sys.stderr)
            return 2
    try:
        return registry, resolve_formats(names, settings=args.settings, fmt=args.format, registry=registry)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _read_answer_file(path: str, read: Callable[[], T]) -> T | int:
    """``read()``, or exit code 2 after one line naming the file's problem (``file:line: rule: detail`` for a
    bad row, or a missing file): how every command that takes an answer file reports it."""
    from router.answers import AnswerRowError

    try:
        return read()
    except AnswerRowError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except FileNotFoundError:
        print(f"error: {path}: no such file", file=sys.stderr)
    return 2


def _eval_answers(args: argparse.Namespace) -> int:
    from router.answers import evaluate_answers, load_answer_rows
    from router.compound_answers import is_compound_file

    compound = _read_answer_file(args.file, lambda: is_compound_file(args.file))
    if compound is not True and compound is not False:
        return compound  # the file's problem was reported
    if compound and not args.compound:
        print(f"error: {args.file} holds compound rows (with \"parts\"); score them with --compound", file=sys.stderr)
        return 2
    if args.compound:
        return _read_answer_file(args.file, lambda: _eval_compound(args))
    rows = _read_answer_file(args.file, lambda: load_answer_rows(args.file))
    if isinstance(rows, int):
        return rows
    fleet = _answer_fleet(args)
    if isinstance(fleet, int):
        return fleet
    registry, formats = fleet
    out = evaluate_answers(rows, formats, settings=args.settings, registry=registry, strategy=args.strategy,
                           lam=args.lam, tau=args.tau, cv=args.cv)
    out = {k: v for k, v in out.items() if not k.startswith("_")}
    for name, err in out.get("errors", {}).items():
        print(f"expert {name} not scored: {err}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"n={out['n']}  formats={out.get('formats')}")
        for name, o in out.get("experts", {}).items():
            print(f"  {name:<16} accuracy {o['accuracy']:.3f}  mean cost {o['mean_cost']:.3f}")
        for key in ("random", "oracle", "routed"):
            if key in out:
                print(f"  {key:<16} accuracy {out[key]['accuracy']:.3f}  mean cost {out[key]['mean_cost']:.3f}")
        if "apgr" in out:
            print(f"  APGR (QSEF cost-aware sweep) {out['apgr']:.3f}")
        for name, block in out.get("qsef_configs", {}).items():  # qsef: label calibration; qsef_refit: on answers
            a, rho = block["strategies"]["argmax"], block["spearman"]["argmax"]
            print(f"  {name:<16} argmax accuracy {a['accuracy']:.3f}  mean cost {a['mean_cost']:.3f}  APGR "
                  f"{block['apgr']['cost_aware']:.3f} / {block['apgr']['threshold']:.3f} (cost-aware / threshold)  "
                  f"Spearman(P, correct) {rho['P_vs_chosen_correct']:.3f}  (TE {rho['TE_vs_chosen_correct']:.3f})")
    return 0 if out.get("experts") else 1


def _eval_compound(args: argparse.Namespace) -> int:
    """``qsef eval answers FILE --compound``: build (or read) compound rows, then decompose, route, answer.

    Raises:
        AnswerRowError, FileNotFoundError: a bad or missing FILE (the caller prints them, exit 2).
    """
    from router.answers import load_answer_rows
    from router.compound_answers import (
        AnswerSetup,
        CompoundBuildError,
        build_compound_rows,
        evaluate_compound,
        is_compound_file,
        load_compound_rows,
    )
    from router.pipeline import Router

    if args.n is not None and args.n < 1:
        print(f"error: --n must be at least 1, got {args.n}", file=sys.stderr)
        return 2
    if is_compound_file(args.file):
        rows = load_compound_rows(args.file)[: args.n]
        if args.parts != "mixed" or args.seed != 0:
            print(f"note: {args.file} holds ready-made compound rows; --parts and --seed do not apply", file=sys.stderr)
    else:
        try:
            rows = build_compound_rows(load_answer_rows(args.file), n=args.n, parts=args.parts, seed=args.seed)
        except CompoundBuildError as exc:
            print(f"error: {args.file}: {exc}", file=sys.stderr)
            return 2
    setup = None
    if not args.no_answers:
        fleet = _answer_fleet(args)
        if isinstance(fleet, int):
            return fleet
        setup = AnswerSetup(formats=fleet[1], registry=fleet[0], settings=args.settings, cv=args.cv)
    settings = args.settings
    # the measured answer matrix (<data>/history/answers.npz) holds the graded questions themselves: the
    # routing history here is what routing may learn from (feedback, the seed history), never the answers
    router_cfg = settings.router.model_copy(update={"answer_history": False})
    backend = "none" if args.splitter else (args.router_llm or settings.router_backend)
    router = Router.from_settings(settings.model_copy(update={"router": router_cfg, "router_backend": backend}))
    try:
        out = evaluate_compound(rows, decomposer=router.decomposer, scorer=router.scorer, use_llm=not args.splitter,
                                concurrency=args.concurrency, answers=setup, keep_rows=args.rows)
    finally:
        router.close()
    for name, err in ((out.get("answers") or {}).get("errors") or {}).items():
        print(f"expert {name} not scored: {err}", file=sys.stderr)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"n={out['n']} compound questions, {out['n_parts']} parts  (decomposition: {out['llm']})")
    print(f"  sub-task count accuracy   {out['count_accuracy']:.3f}")
    print(f"  parts matched             {out['part_match_rate']:.3f}")
    print(f"  part domain accuracy      {out['domain_accuracy']:.3f}  (asked alone {out['domain_accuracy_alone']:.3f})")
    print(f"  domain-set accuracy       {out['domain_set_accuracy']:.3f}  (QSEF's dispatch; the decomposer's domain hints "
          f"{out['domain_set_accuracy_hint']:.3f})")
    if "answer_accuracy" in out:
        a = out["answer_accuracy"]
        print(f"  part answer accuracy      {a['compound']:.3f}  (asked alone {a['alone']:.3f}, penalty "
              f"{a['penalty']:+.3f})")
    print(f"  paths: {out['paths']}")
    for k, v in out["by_parts"].items():
        print(f"  {k} parts: n={v['n']} count {v['count_accuracy']:.3f}  matched {v['part_match_rate']:.3f}  "
              f"domain set {v['domain_set_accuracy']:.3f}")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    if (args.file is None) == (args.answers is None):
        print("error: give either FILE.jsonl (labelled routing rows) or --answers FILE.jsonl (answer rows)",
              file=sys.stderr)
        return 2
    if args.answers is not None:
        return _calibrate_answers(args)
    from qsef.calibration import calibrate
    from qsef.engine import QSEFEngine
    from qsef.eval.routing import load_rows

    out = Path(args.out) if args.out else args.settings.path() / "calibration.json"
    fit = calibrate(QSEFEngine(settings=args.settings), load_rows(args.file), k=args.folds, out=out)
    summary = {"file": str(out), "coefficients": fit.beta, "train_accuracy": fit.accuracy,
               "cv_accuracy": fit.cv.get("accuracy"), "cv_nll": fit.cv.get("nll")}
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def _calibrate_answers(args: argparse.Namespace) -> int:
    """``qsef calibrate --answers FILE``: the outcome fit on the experts' cached answers (no model is loaded)."""
    from pathlib import Path

    from router.answers import calibrate_from_answers, load_answer_rows

    rows = _read_answer_file(args.answers, lambda: load_answer_rows(args.answers))
    if isinstance(rows, int):
        return rows
    fleet = _answer_fleet(args, score_dev=False)
    if isinstance(fleet, int):
        return fleet
    registry, formats = fleet
    out = Path(args.out) if args.out else args.settings.path() / "calibration-answers.json"
    try:
        res = calibrate_from_answers(rows, formats, settings=args.settings, registry=registry, folds=args.folds,
                                     out=out, source=str(args.answers))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fit = res["fit"]
    if res["n_uncached"]:
        shown = ", ".join(res["uncached_ids"][:5]) + (", ..." if res["n_uncached"] > 5 else "")
        print(f"note: {res['n_uncached']} of {res['n'] + res['n_uncached']} questions left out: not every expert's "
              f"answer is cached ({shown})", file=sys.stderr)
    cv = fit.cv
    summary = {"file": str(out), "kind": fit.kind, "n": res["n"], "n_uncached": res["n_uncached"],
               "uncached_ids": res["uncached_ids"], "experts": res["experts"], "expert_accuracy": res["accuracy"],
               "coefficients": fit.beta, "identified": fit.identified, "counts": fit.counts,
               "train_accuracy": fit.accuracy,
               "cv": {k: cv.get(k) for k in ("k", "nll", "accuracy", "p_spearman")},
               "cv_current_weights": {k: cv.get("baseline", {}).get(k) for k in ("nll", "accuracy", "p_spearman")}}
    if args.json:
        print(json.dumps(summary))
        return 0
    for k, v in summary.items():
        if k != "uncached_ids":
            print(f"{k}: {v}")
    return 0
