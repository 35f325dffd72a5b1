"""How useful are the default experts? Held-out perplexity of student and teacher, and samples.

For each domain's shipped config this loads the trained expert from its output folder and the
config's held-out windows (teacher outputs come from the cache), then measures:

* perplexity over the kept vocabulary (the student's output space: kept ids + "unknown") for the
  student and for its teacher (Qwen2.5-Coder-0.5B, whose probability outside the kept ids is
  summed into "unknown"), on the same windows and targets;
* perplexity over the full tokenizer vocabulary (the student's "unknown" mass spread evenly over
  the ids it does not keep), comparable across kept vocabularies;
* three generations per domain: the first 24 tokens of a held-out window as the prompt, 32 new
  tokens, student greedy (how the ``qrh`` backend generates), student greedy with a repetition
  penalty, and the teacher greedy; each scored by the teacher's perplexity of the continuation
  and by the share of distinct token bigrams (1.0 = no repeated bigram).

    .venv/bin/python benchmarks/distill_quality.py --label before [--domains law code] [--penalty 1.3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill_common import RESULTS, save

from core.domains import DOMAINS
from core.settings import Settings

SETTINGS = Settings()  # a benchmark is an entry point: settings are built here

ROOT = Path(__file__).resolve().parents[1]

PROMPT_TOKENS, NEW_TOKENS = 24, 32


def distinct_bigrams(ids: list[int]) -> float:
    pairs = list(itertools.pairwise(ids))
    return len(set(pairs)) / max(len(pairs), 1)


def continuation_ppl(teacher, prompt, cont) -> float:
    """The teacher's perplexity of ``cont`` after ``prompt`` (tokenizer ids): how plausible the text is."""
    import torch

    ids = torch.tensor([prompt + cont])
    with torch.inference_mode():
        logp = torch.log_softmax(teacher.model(input_ids=ids[:, :-1]).logits.float(), -1)[0]
    nll = -logp[len(prompt) - 1:].gather(-1, ids[0, len(prompt):, None]).mean()
    return math.exp(float(nll))


def one_domain(domain: str, penalty: float, overrides: list[str]) -> dict:
    import torch

    from distill.metrics import student_target_nll
    from distill.recipe import DistillRecipe, load_config, prepare_data
    from distill.teachers import CausalLMTeacher, load_tokenizer
    from experts.qrh import QRHModel

    cfg = load_config(ROOT / "distill" / "configs" / f"{domain}.yaml", ["threads=1", "progress=false", *overrides])
    out_dir = DistillRecipe(cfg, settings=SETTINGS).output_dir
    tok = load_tokenizer(SETTINGS, cfg["teacher"]["name"])
    data = prepare_data(cfg, settings=SETTINGS, tokenizer=tok)  # cached teacher outputs: no teacher pass
    student = QRHModel.from_pretrained(out_dir).eval()
    if not torch.equal(student.vocab_ids[1:], data["kept"]):
        raise RuntimeError(f"{out_dir} was trained on another kept vocabulary than {domain}.yaml gives now")
    held = data["heldout"]
    n = min(len(held), cfg["eval"]["max_windows"])
    ids, valid = held.ids[:n], held.valid[:n]
    teacher = CausalLMTeacher(cfg["teacher"]["name"], settings=SETTINGS, dtype=cfg["teacher"]["dtype"], threads=1)
    s_nll = student_target_nll(student, ids, n_token_ids=len(tok))
    t_nll = teacher.target_nll(ids, data["kept"])
    m = valid.float()

    def ppl(x):
        return math.exp(float((x * m).sum() / m.sum()))

    unknown = float(((student.to_student_ids(ids[:, 1:]) == 0) & valid).sum() / valid.sum())
    row = {"domain": domain, "expert": cfg["name"], "checkpoint": str(out_dir), "windows": n, "tokens": int(m.sum()),
           "unknown_target_rate": round(unknown, 4),
           "student_ppl_kept": ppl(s_nll["kept"]), "teacher_ppl_kept": ppl(t_nll["kept"]),
           "student_ppl_full": ppl(s_nll["full"]), "teacher_ppl_full": ppl(t_nll["full"])}
    row["ppl_ratio_kept"] = row["student_ppl_kept"] / row["teacher_ppl_kept"]
    meta = json.loads((out_dir / "expert.json").read_text())
    row["trained"] = {"steps": meta.get("steps"), "training": meta.get("training"), "corpus": meta.get("corpus"),
                      "model": cfg["model"],
                      "temperature": cfg["temperature"], "optim": cfg["optim"], "budget": cfg["budget"]}

    samples = []
    full_windows = [i for i in range(n) if bool(valid[i].all())][:3]
    for i in full_windows:
        prompt = ids[i, :PROMPT_TOKENS].tolist()
        x = torch.tensor([prompt])
        outs = {"student_greedy": student.generate(x, NEW_TOKENS)[0, PROMPT_TOKENS:].tolist(),
                f"student_greedy_rp{penalty:g}": student.generate(x, NEW_TOKENS, repetition_penalty=penalty)[
                    0, PROMPT_TOKENS:].tolist()}
        with torch.inference_mode():
            t_out = teacher.model.generate(x, max_new_tokens=NEW_TOKENS, do_sample=False,
                                           attention_mask=torch.ones_like(x), pad_token_id=tok.eos_token_id)
        outs["teacher_greedy"] = t_out[0, PROMPT_TOKENS:].tolist()
        samples.append({"prompt": tok.decode(prompt), "reference": tok.decode(ids[i, PROMPT_TOKENS:].tolist()),
                        **{k: {"text": tok.decode(v), "teacher_ppl": continuation_ppl(teacher, prompt, v),
                               "distinct_bigrams": distinct_bigrams(v)} for k, v in outs.items()}})
    row["samples"] = samples
    teacher.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", nargs="+", default=DOMAINS, choices=DOMAINS)
    ap.add_argument("--label", default="current", help="key of this measurement in the JSON (e.g. before/after)")
    ap.add_argument("--penalty", type=float, default=1.3, help="repetition penalty of the second student sample")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the configs (e.g. output_dir=...)")
    args = ap.parse_args()

    from core.logs import setup_logging

    setup_logging("WARNING")
    import torch

    torch.set_num_threads(1)
    p = RESULTS / "distill_quality.json"
    prev = json.loads(p.read_text()) if p.is_file() else {}
    measured = prev.get("measurements", {})
    rows = {r["domain"]: r for r in measured.get(args.label, [])}
    for d in args.domains:
        t0 = time.perf_counter()
        rows[d] = {**one_domain(d, args.penalty, args.overrides), "seconds": round(time.perf_counter() - t0, 1)}
        r = rows[d]
        print(f"{d}: student {r['student_ppl_kept']:.1f} / teacher {r['teacher_ppl_kept']:.1f} (kept vocab), "
              f"full {r['student_ppl_full']:.0f} / {r['teacher_ppl_full']:.1f}", flush=True)
    measured[args.label] = [rows[d] for d in DOMAINS if d in rows]
    save("distill_quality", {"prompt_tokens": PROMPT_TOKENS, "new_tokens": NEW_TOKENS, "measurements": measured})


if __name__ == "__main__":
    main()
