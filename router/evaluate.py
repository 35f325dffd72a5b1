"""Decomposition quality on labelled compound queries (SPEC §7 ``qsef eval decompose``).

Rows are ``{"query", "domains": [gold domain of each sub-task, in order]}``. For each row the
decomposer's sub-tasks are compared with the gold list:

- ``count_accuracy``: share of rows with as many sub-tasks as gold domains;
- ``domain_set_accuracy``: share of rows whose set of predicted domains equals the gold set.

Predicted domains come from the decomposer's domain hints (``domain_source="hint"``: the router LLM's
label, or the keyword hint on the clause-splitter and fast paths) or from QSEF's top expert
(``"qsef"``; needs a scorer).

Example:
    >>> rows = load_rows("compound_queries.jsonl")
    >>> evaluate_decomposition(rows, Decomposer(make_router_llm("none")))["count_accuracy"]
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from core.jsonl import JSONLError, iter_jsonl
from router.decompose import Decomposer, Decomposition

__all__ = ["error_kind", "evaluate_decomposition", "load_rows"]


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read and check ``{"query", "domains"}`` rows.

    Raises:
        ValueError: naming the file and line of a bad row (not JSON, or not an object of that shape), or
            ``FILE: no rows`` when there is none.
        FileNotFoundError: when the file does not exist.
    """
    rows = []
    try:
        for n, row in iter_jsonl(path):
            if (not isinstance(row, dict) or not isinstance(row.get("query"), str)
                    or not isinstance(row.get("domains"), list) or not row["domains"]):
                raise ValueError(f'{path}:{n}: expected {{"query": str, "domains": [str, ...]}}')
            rows.append(row)
    except JSONLError as exc:
        raise ValueError(f"{path}:{exc.line}: not valid JSON ({exc.error})") from exc
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def error_kind(row: dict[str, Any]) -> str:
    """What went wrong in one per-row prediction of :func:`evaluate_decomposition` (``keep_rows``):
    ``"ok"``, ``"over_split"`` / ``"under_split"`` (more / fewer sub-tasks than gold domains), or
    ``"wrong_domain"`` (the right count, but the predicted domain set is not the gold set)."""
    n, gold = len(row["subtasks"]), len(row["gold"])
    if n > gold:
        return "over_split"
    if n < gold:
        return "under_split"
    return "ok" if set(row["pred"]) == set(row["gold"]) else "wrong_domain"


def evaluate_decomposition(rows: list[dict[str, Any]], decomposer: Decomposer, *, concurrency: int = 1,
                           domain_source: Literal["hint", "qsef"] = "hint", scorer: Any = None,
                           use_llm: bool = True, keep_rows: bool = False) -> dict[str, Any]:
    """Decompose every row and score against gold; also reports paths and latency.

    Args:
        concurrency: rows decomposed at once (an HTTP router LLM batches concurrent requests).
        domain_source: where predicted domains come from (see module docstring).
        scorer: a :class:`router.scoring.RegistryScorer`; required for ``domain_source="qsef"``, and when
            given the QSEF domain-set accuracy is reported besides the hint one.
        use_llm: false = the deterministic clause splitter (plus fast path) only.
        keep_rows: include per-row predictions.
    """
    if domain_source == "qsef" and scorer is None:
        raise ValueError("domain_source='qsef' needs a scorer")

    def one(row: dict[str, Any]) -> Decomposition:
        return decomposer.decompose(row["query"], use_llm=use_llm)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        decs = list(pool.map(one, rows))
    wall = time.perf_counter() - t0
    count_ok = dom_ok = hint_ok = qsef_ok = 0
    per_row = []
    for row, dec in zip(rows, decs, strict=True):
        hint = [s.domain_hint for s in dec.subtasks]
        routed = None
        if scorer is not None:
            res = scorer.score([s.text for s in dec.subtasks])
            routed = [scorer.spec(res.names[j]).domain for j in res.best()]
            qsef_ok += set(routed) == set(row["domains"])
        hint_ok += set(hint) == set(row["domains"])
        pred = routed if domain_source == "qsef" else hint
        c = len(dec.subtasks) == len(row["domains"])
        d = set(pred) == set(row["domains"])
        count_ok += c
        dom_ok += d
        per_row.append({"query": row["query"], "gold": row["domains"], "pred": pred, "hint": hint,
                        "qsef": routed, "path": dec.path,
                        "subtasks": [s.text for s in dec.subtasks], "count_ok": c, "domain_set_ok": d,
                        "latency_ms": dec.latency_ms, "reason": dec.reason[:200]})
    lat = [r["latency_ms"] for r in per_row]
    by_path: dict[str, list[float]] = {}
    for r in per_row:
        by_path.setdefault(r["path"], []).append(r["latency_ms"])
    n = len(rows)
    out: dict[str, Any] = {
        "n": n,
        "count_accuracy": round(count_ok / n, 4),
        "domain_set_accuracy": round(dom_ok / n, 4),
        "domain_set_accuracy_hint": round(hint_ok / n, 4),
        **({"domain_set_accuracy_qsef": round(qsef_ok / n, 4)} if scorer is not None else {}),
        "paths": dict(Counter(r["path"] for r in per_row)),
        "latency_ms": {"p50": round(statistics.median(lat), 2), "mean": round(statistics.fmean(lat), 2),
                       "max": round(max(lat), 2)},
        "latency_ms_by_path": {p: {"n": len(v), "p50": round(statistics.median(v), 2),
                                   "mean": round(statistics.fmean(v), 2)} for p, v in by_path.items()},
        "wall_s": round(wall, 2),
        "llm": decomposer.llm.describe() if use_llm else "none (clause splitter)",
        "domain_source": domain_source,
    }
    if keep_rows:
        out["rows"] = per_row
    return out
