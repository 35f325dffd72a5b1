"""Cross-domain matrix of the shipped LoRA experts: the base and every ``experts/data/adapters/<domain>`` adapter
on every domain's held-out windows (held-out perplexity), the issue's "lower than every other expert's on that
domain" criterion.

The windows are those ``benchmarks/distill_lora.py`` evaluates on: the same config (``expert.yaml`` + the
build's data overrides, default the shipped build's) through :func:`distill.recipe.prepare_windows`, the first
``eval.max_windows`` held-out windows; each domain's held-out data hash is checked against the shipped adapter's
``meta.json`` (``heldout_sha256``) and the run stops on a mismatch. The perplexity is the recipe's (every valid
target token of those windows). As a check, each adapter's in-domain ppl and the base's are compared with
``meta.json``'s ``heldout_ppl`` / ``base_heldout_ppl`` (saved as ``check``).

Results: ``benchmarks/results/distill_lora_cross.json`` and ``benchmarks/reports/distill_lora_cross.md``.

    PYTHONPATH=. nice -n 19 .venv/bin/python benchmarks/distill_lora_cross.py [--domains ...] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_lora import ADAPTERS, CONFIG, KEEP_MARKER

REPORT = Path(__file__).resolve().parent / "reports" / "distill_lora_cross.md"
PARTIAL = Path(__file__).resolve().parent / "results" / "distill_lora_cross.partial.jsonl"
# the data overrides of the shipped build (benchmarks/reports/distill_lora.md): the held-out windows evaluated there
BUILD_DATA = ["data.max_windows.train=24", "data.max_windows.heldout=16", "eval.max_windows=16"]
BASE = "base"


def domain_config(domain: str, overrides: list[str]) -> dict:
    """The config ``distill_lora.build_one`` trains ``domain`` with (data side: the same windows)."""
    from distill.recipe import load_config

    return load_config(CONFIG, [f"domain={domain}", f"data.domains=[{domain}]", "progress=false", *overrides])


def heldout_windows(cfg: dict, settings, *, expected_sha256: str | None = None):
    """The first ``eval.max_windows`` held-out windows of ``cfg``, checked against the build's data hash
    (``data_sha256`` of all held-out windows, as ``meta.json`` records it)."""
    from distill.capture import data_sha256
    from distill.data import Windows
    from distill.recipe import prepare_windows

    held = prepare_windows(cfg, settings=settings)["heldout"]
    sha = data_sha256(held.ids)
    if expected_sha256 is not None and sha != expected_sha256:
        raise ValueError(f"{cfg['domain']}: held-out data hash {sha[:12]} != the shipped adapter's "
                         f"{expected_sha256[:12]}; pass the build's data overrides")
    n = min(len(held), cfg["eval"]["max_windows"])
    return Windows(held.ids[:n], held.valid[:n], held.doc_index[:n], held.texts), sha


def perplexity(student, windows, batch_size: int = 4) -> tuple[float, int]:
    """exp(mean NLL) of every valid target token of ``windows`` under ``student`` (inputs ``ids[:, :-1]``,
    targets ``ids[:, 1:]`` where ``valid``, as :meth:`distill.recipe.DistillRecipe.batch` builds them)."""
    import math

    import torch
    import torch.nn.functional as F

    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(windows), batch_size):
            ids = student.to_student_ids(windows.ids[s:s + batch_size])
            labels = ids[:, 1:].masked_fill(~windows.valid[s:s + batch_size], -100)
            logits = student(ids[:, :-1])
            nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                                   reduction="sum").item()
            count += int((labels != -100).sum())
    return math.exp(nll / count), count


def lowest(matrix: dict[str, dict[str, float]], domain: str, experts: list[str] | None = None) -> dict | None:
    """Among the adapters (not the base), which is lowest on ``domain``; whether it is the in-domain one and
    whether the in-domain one also beats the base there. ``None`` while a pair of ``experts`` (default: every
    row) is missing from the column."""
    names = [e for e in (experts or list(matrix)) if e != BASE]
    if any(domain not in matrix.get(e, {}) for e in names):
        return None
    col = {e: matrix[e][domain] for e in names}
    best = min(col, key=col.get)
    own = col.get(domain)
    return {"lowest": best, "in_domain_lowest": best == domain,
            "in_domain_below_base": own is not None and domain in matrix.get(BASE, {}) and own < matrix[BASE][domain]}


def markdown(matrix: dict[str, dict[str, float]], domains: list[str], verdict: dict[str, dict | None],
             teachers: dict, from_meta: set[tuple[str, str]] = frozenset()) -> str:
    """Rows: base, then each adapter; bold: the in-domain expert; "†": the value is the build's own evaluation
    of the same windows (``meta.json``), not recomputed; "–": not computed (yet)."""
    head = "| expert | " + " | ".join(domains) + " |"
    lines = [head, "|---|" + "---|" * len(domains)]
    for e, row in matrix.items():
        label = "base (qwen-0.5b)" if e == BASE else f"{e}-lora (teacher {teachers.get(e, '?')})"
        cells = []
        for d in domains:
            v = f"{row[d]:.2f}{'†' if (e, d) in from_meta else ''}" if d in row else "–"
            cells.append(f"**{v}**" if e == d and d in row else v)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    def cell(v, key, no):
        return "incomplete" if v is None else "yes" if v[key] else no(v)
    lines.append("| in-domain expert lowest of the adapters | " + " | ".join(
        cell(verdict[d], "in_domain_lowest", lambda v: f"no ({v['lowest']}-lora)") for d in domains) + " |")
    lines.append("| in-domain expert below the base | " + " | ".join(
        cell(verdict[d], "in_domain_below_base", lambda v: "no") for d in domains) + " |")
    return "\n".join(lines)


def adapter_digest(folder: Path) -> str:
    import hashlib

    return hashlib.sha256((folder / "adapter_model.safetensors").read_bytes()).hexdigest()[:16]


def main() -> None:
    from _common import save

    from core.domains import DOMAINS
    from core.settings import Settings
    from distill.recipe import load_config
    from distill.students import HFStudent

    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated (default: all five)")
    ap.add_argument("--from-meta", action="store_true",
                    help="take the base row and the diagonal (adapter on its own domain) from the adapters' meta.json "
                         "(the build's evaluation of the same windows) and compute them for the --check domain only")
    ap.add_argument("--check", default=None, help="with --from-meta: the domain whose base / diagonal pair is "
                    "recomputed against meta.json (default: the first of --domains)")
    ap.add_argument("overrides", nargs="*", help=f"config overrides (default: the shipped build's {BUILD_DATA})")
    args = ap.parse_args()
    overrides = args.overrides or BUILD_DATA
    settings = Settings()
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    check_domain = args.check or domains[0]
    metas = {d: json.loads((ADAPTERS / d / "meta.json").read_text()) for d in domains
             if (ADAPTERS / d / "meta.json").is_file()}
    digests = {BASE: BASE, **{e: adapter_digest(ADAPTERS / e) for e in metas}}
    # every computed pair is appended here; a rerun skips pairs of the same adapter file (an interrupted run resumes)
    done: dict[tuple[str, str], dict] = {}
    if PARTIAL.is_file():
        for line in PARTIAL.read_text().splitlines():
            r = json.loads(line)
            if digests.get(r["expert"]) == r["digest"]:
                done[(r["expert"], r["domain"])] = r
    t0 = time.perf_counter()
    windows, shas = {}, {}
    for d in domains:
        expected = metas[d]["data"]["heldout_sha256"] if d in metas else None
        windows[d], shas[d] = heldout_windows(domain_config(d, overrides), settings, expected_sha256=expected)
    matrix: dict[str, dict[str, float]] = {BASE: {}, **{e: {} for e in metas}}
    from_meta: set[tuple[str, str]] = set()
    if args.from_meta:
        for e, m in metas.items():
            if e != check_domain:
                matrix[BASE][e], matrix[e][e] = m["metrics"]["base_heldout_ppl"], m["metrics"]["heldout_ppl"]
                from_meta |= {(BASE, e), (e, e)}
    todo = [(e, d) for e in matrix for d in domains if d not in matrix[e] and (e, d) not in done]
    for (e, d), r in done.items():
        if e in matrix and d in domains and d not in matrix[e]:
            matrix[e][d] = r["ppl"]
    student = None
    if todo:
        cfg = load_config(CONFIG, ["progress=false", *overrides])
        student = HFStudent(cfg=cfg, settings=settings)
        student.eval()
    loaded = None
    for e, d in todo:
        if e == BASE:
            with student.base_model_context():
                ppl, n = perplexity(student, windows[d])
        else:
            if loaded != e:
                student.load(ADAPTERS / e)
                loaded = e
            ppl, n = perplexity(student, windows[d])
        matrix[e][d] = round(ppl, 4)
        with PARTIAL.open("a") as f:
            f.write(json.dumps({"expert": e, "domain": d, "digest": digests[e], "ppl": round(ppl, 4), "tokens": n,
                                "heldout_sha256": shas[d], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                    + "\n")
        print(f"{e} on {d}: {ppl:.3f} ({n} tokens, {time.perf_counter() - t0:.0f} s)", flush=True)
    tokens = {d: int(windows[d].valid[:len(windows[d])].sum()) for d in domains}
    verdict = {d: lowest(matrix, d) for d in domains}
    check = {e: {"heldout_ppl": matrix[e].get(e), "meta_heldout_ppl": m["metrics"]["heldout_ppl"],
                 "base": matrix[BASE].get(e), "meta_base_heldout_ppl": m["metrics"]["base_heldout_ppl"]}
             for e, m in metas.items() if (e, e) not in from_meta}
    teachers = {e: m.get("teacher") for e, m in metas.items()}
    table = markdown(matrix, domains, verdict, teachers, from_meta)
    print(table)
    save("distill_lora_cross", {
        "matrix_heldout_ppl": matrix, "rows": "expert (base or <domain>-lora)", "columns": "held-out domain",
        "verdict": verdict, "heldout_tokens": tokens, "heldout_sha256": shas, "teachers": teachers,
        "adapter_sha256_16": digests, "from_meta_json": sorted(f"{e}/{d}" for e, d in from_meta),
        "missing": sorted(f"{e}/{d}" for e in matrix for d in domains if d not in matrix[e]),
        "overrides": overrides, "check_against_meta": check, "wall_s_this_run": round(time.perf_counter() - t0, 1),
        "note": "held-out ppl on each domain's first eval.max_windows held-out windows of the shipped build "
                "(data hash checked against every adapter's meta.json); one seed per adapter"})
    write_report(REPORT, table, tokens)


def write_report(path: Path, table: str, tokens: dict[str, int]) -> None:
    """The generated part of the report; hand-written notes after :data:`KEEP_MARKER` are kept."""
    kept = path.read_text().split(KEEP_MARKER, 1)[1] if path.is_file() and KEEP_MARKER in path.read_text() else "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# LoRA experts across domains (held-out ppl)\n\n"
        "`benchmarks/distill_lora_cross.py`: the base and every shipped adapter (`experts/data/adapters/<domain>`) "
        "on every domain's held-out windows, the windows `benchmarks/distill_lora.py` evaluates on (data hash "
        "checked against each adapter's meta.json). Rows: expert; columns: held-out domain; bold: the in-domain "
        "expert; †: the build's own evaluation of the same windows (meta.json), not recomputed; –: not computed. "
        f"{sum(tokens.values()) // max(len(tokens), 1)} held-out tokens per domain. Results: "
        "`benchmarks/results/distill_lora_cross.json` (every computed pair: `distill_lora_cross.partial.jsonl`).\n\n"
        + table + "\n\n" + KEEP_MARKER + kept)


if __name__ == "__main__":
    main()
