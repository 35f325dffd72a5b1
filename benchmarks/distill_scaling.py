"""QRH student vs a nanoGPT-style transformer: parameters x training tokens -> held-out perplexity.

One script, one run. Both architectures train from scratch with plain next-token cross-entropy (no
teacher: a 1 M-token teacher capture at ~50 teacher tokens/s on this CPU would take ~5 h) on the
``code`` domain corpus, on the same packed windows in the same order, with the same batch, steps
and learning-rate schedule per token budget:

* data: training documents of the ``code`` train split (seeded shuffle) are tokenised (Qwen
  tokenizer) and packed into windows of ``seq_len + 1`` tokens until the largest budget is covered
  (one epoch, no window repeats); the kept vocabulary (4095 most frequent ids + "unknown" = 4096)
  is built from those training tokens. Held-out windows come from the ``code`` held-out split
  (documents disjoint from training). A smaller budget trains on a prefix of the same window order.
* models at the same width / depth / heads: ``qrh`` = the QRH student as shipped
  (:class:`distill.students.QRHStudent`: prime embedding, spectral mixer, quaternion linear, untied
  dense head) and ``transformer`` = :class:`NanoGPT` below (learned token + position embedding,
  pre-LN blocks, causal softmax attention via ``F.scaled_dot_product_attention``, GELU MLP 4x,
  untied head, like QRH's).
* per run: parameters, training tokens, steps, held-out ppl, wall time, training tokens/s
  (forward + backward + optimizer, after ``WARMUP_STEPS`` steps).
* throughput: per size, QRH and transformer steps interleaved on the same batch (1 thread),
  median over rounds -> ratio QRH / transformer (target >= 0.8). Plus a torch.profiler breakdown of
  one QRH training step at d_model 128.

Resumable: finished runs are kept in ``benchmarks/results/distill_scaling.json`` and skipped.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/distill_scaling.py [--sizes 64 128 256]
        [--budgets 250000 1000000] [--minutes 45] [--estimate-only]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from _common import RESULTS, save
from torch import nn

NAME = "distill_scaling"
REPORTS = Path(__file__).resolve().parent / "reports"
SEQ_LEN, BATCH, N_LAYERS, VOCAB = 64, 32, 4, 4096
LR, MIN_LR_FRAC, WARMUP_FRAC, WEIGHT_DECAY, GRAD_CLIP = 3e-3, 0.1, 0.05, 0.01, 1.0
HELDOUT_WINDOWS = 384
WARMUP_STEPS = 5  # steps excluded from the tokens/s measurement
ARCHS = ("qrh", "transformer")


def heads_for(d_model: int) -> int:
    return max(2, d_model // 16)  # 128 -> 8 heads as in the shipped config; head dim 16 everywhere


# ---------------------------------------------------------------------------------------- baseline


class NanoGPTBlock(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
                   for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class NanoGPT(nn.Module):
    """Plain PyTorch GPT (nanoGPT-style): learned token + position embeddings, pre-LN, untied head."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, max_len: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.blocks = nn.ModuleList(NanoGPTBlock(d, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("proj.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def make_model(arch: str, d: int, kept: torch.Tensor) -> nn.Module:
    if arch == "transformer":
        return NanoGPT(VOCAB, d, N_LAYERS, heads_for(d), SEQ_LEN)
    from distill.students import QRHStudent

    cfg = {"model": {"vocab_size": VOCAB, "d_model": d, "n_layers": N_LAYERS, "n_heads": heads_for(d),
                     "max_seq_len": SEQ_LEN, "embedding": "prime", "mixer": "spectral", "linear": "quaternion"},
           "data": {"seq_len": SEQ_LEN}}
    return QRHStudent(cfg=cfg, settings=None, kept=kept)


# ---------------------------------------------------------------------------------------- data


def build_data(max_tokens: int, seed: int = 0) -> dict:
    """Packed training windows (student ids) covering ``max_tokens`` targets, held-out windows, vocabulary."""
    from core.settings import Settings
    from distill import data as D
    from distill.teachers import load_tokenizer

    settings = Settings()
    tok = load_tokenizer(settings, "qwen-0.5b")
    g = torch.Generator().manual_seed(seed)

    def stream_of(docs, need):
        order = torch.randperm(len(docs), generator=g).tolist()
        toks, used, i = [], [], 0
        while sum(map(len, toks)) < need and i < len(order):
            chunk = [docs[j] for j in order[i:i + 500]]
            toks += D.tokenize(chunk, tok)
            used += chunk
            i += 500
        return used, toks

    train_docs, held_docs = D.load_texts(settings, "code", "train"), D.load_texts(settings, "code", "heldout")
    n_windows = math.ceil(max_tokens / SEQ_LEN)
    tr_used, tr_toks = stream_of(train_docs, n_windows * SEQ_LEN + SEQ_LEN + 1)
    he_used, he_toks = stream_of(held_docs, HELDOUT_WINDOWS * SEQ_LEN + SEQ_LEN + 1)
    assert not {t.id for t in tr_used} & {t.id for t in he_used}
    kept = D.build_vocabulary(tr_toks, VOCAB, always=[tok.eos_token_id])
    train = D.pack_windows(tr_used, tr_toks, SEQ_LEN).ids
    held = D.pack_windows(he_used, he_toks, SEQ_LEN, max_windows=HELDOUT_WINDOWS).ids
    train = train[torch.randperm(len(train), generator=g)][:n_windows]

    def student_ids(ids):
        pos = torch.searchsorted(kept, ids.contiguous()).clamp_max(kept.numel() - 1)
        return torch.where(kept[pos] == ids, pos + 1, torch.zeros_like(pos))

    return {"train": student_ids(train), "heldout": student_ids(held), "kept": kept,
            "info": {"train_docs": len(tr_used), "heldout_docs": len(he_used), "train_windows": len(train),
                     "heldout_windows": len(held), "heldout_tokens": int(held[:, 1:].numel()),
                     "coverage_heldout": D.coverage(he_toks, kept), "coverage_train": D.coverage(tr_toks, kept)}}


# ---------------------------------------------------------------------------------------- training


def lr_at(step: int, total: int) -> float:
    warm = max(1, round(WARMUP_FRAC * total))
    if step < warm:
        return LR * (step + 1) / warm
    f = (step - warm) / max(1, total - warm)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * f)))


def make_opt(model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
                             lr=LR, betas=(0.9, 0.95))


def train_step(model, opt, batch: torch.Tensor) -> float:
    x, y = batch[:, :-1], batch[:, 1:]
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    return loss.item()


@torch.no_grad()
def heldout_ppl(model, held: torch.Tensor) -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(held), 64):
        b = held[i:i + 64]
        logits = model(b[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum"))
        n += b[:, 1:].numel()
    model.train()
    return math.exp(total / n)


def one_run(arch: str, d: int, budget: int, data: dict, seed: int = 0) -> dict:
    steps = math.ceil(budget / (BATCH * SEQ_LEN))
    torch.manual_seed(seed)
    model = make_model(arch, d, data["kept"])
    opt = make_opt(model)
    train = data["train"]
    t0 = time.perf_counter()
    t_meas, losses = None, []
    for s in range(steps):
        if s == WARMUP_STEPS:
            t_meas = time.perf_counter()
        for gr in opt.param_groups:
            gr["lr"] = lr_at(s, steps)
        losses.append(train_step(model, opt, train[s * BATCH:(s + 1) * BATCH]))
        if s % 50 == 0 or s == steps - 1:
            print(f"  {arch} d{d} {budget}: step {s + 1}/{steps} loss {losses[-1]:.3f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    t_train = time.perf_counter() - t0
    tps = (steps - WARMUP_STEPS) * BATCH * SEQ_LEN / (time.perf_counter() - t_meas)
    t1 = time.perf_counter()
    ppl = heldout_ppl(model, data["heldout"])
    return {"arch": arch, "d_model": d, "n_layers": N_LAYERS, "n_heads": heads_for(d), "budget": budget,
            "params": model.num_parameters(), "train_tokens": steps * BATCH * SEQ_LEN, "steps": steps,
            "heldout_ppl": ppl, "final_train_loss": statistics.mean(losses[-10:]),
            "train_seconds": round(t_train, 1), "eval_seconds": round(time.perf_counter() - t1, 1),
            "train_tokens_per_s": round(tps, 1)}


def throughput(d: int, data: dict, rounds: int = 4, steps: int = 4) -> dict:
    """QRH and transformer training steps interleaved on the same batches; median tokens/s per arch."""
    models = {a: make_model(a, d, data["kept"]) for a in ARCHS}
    opts = {a: make_opt(m) for a, m in models.items()}
    batch = data["train"][:BATCH]
    for a in ARCHS:  # warm-up
        for _ in range(2):
            train_step(models[a], opts[a], batch)
    rates: dict[str, list[float]] = {a: [] for a in ARCHS}
    for _ in range(rounds):
        for a in ARCHS:
            t = time.perf_counter()
            for _ in range(steps):
                train_step(models[a], opts[a], batch)
            rates[a].append(steps * BATCH * SEQ_LEN / (time.perf_counter() - t))
    med = {a: statistics.median(r) for a, r in rates.items()}
    return {"d_model": d, "tokens_per_s": med, "all_rounds": rates, "ratio_qrh_over_transformer": med["qrh"] /
            med["transformer"], "params": {a: m.num_parameters() for a, m in models.items()}}


def profile_qrh(data: dict, d: int = 128, top: int = 15) -> dict:
    from torch.profiler import ProfilerActivity, profile

    model = make_model("qrh", d, data["kept"])
    opt = make_opt(model)
    batch = data["train"][:BATCH]
    for _ in range(3):
        train_step(model, opt, batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(model, opt, batch)
    ka = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ka)
    rows = [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in ka[:top]]
    return {"d_model": d, "batch": BATCH, "seq_len": SEQ_LEN, "total_self_cpu_ms": round(total / 1000, 1), "top": rows,
            "table": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)}


# ---------------------------------------------------------------------------------------- report


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"qrh": ("tab:red", "o"), "transformer": ("tab:blue", "s")}
    budgets = sorted({r["budget"] for r in runs})
    for arch in ARCHS:
        for b in budgets:
            pts = sorted((r["params"], r["heldout_ppl"]) for r in runs if r["arch"] == arch and r["budget"] == b)
            if not pts:
                continue
            c, m = styles[arch]
            ax.plot(*zip(*pts, strict=True), marker=m, color=c, linestyle="-" if b == budgets[-1] else "--",
                    label=f"{arch}, {b / 1e6:g} M tokens")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    lo, hi = min(r["heldout_ppl"] for r in runs) / 1.05, max(r["heldout_ppl"] for r in runs) * 1.05
    ax.set_yticks([t for t in (30, 40, 50, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500) if lo <= t <= hi])
    ax.set_ylim(lo, hi)
    ax.set_xlabel("parameters")
    ax.set_ylabel("held-out perplexity (code, 4096-id vocabulary)")
    ax.set_title("QRH vs nanoGPT-style transformer, CE from scratch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--budgets", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--minutes", type=float, default=45.0, help="compute budget of the whole grid")
    ap.add_argument("--estimate-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = RESULTS / f"{NAME}.json"
    prev = json.loads(path.read_text()) if path.exists() else {}
    setup = {"seq_len": SEQ_LEN, "batch": BATCH, "n_layers": N_LAYERS, "vocab": VOCAB, "lr": LR,
             "min_lr_frac": MIN_LR_FRAC, "warmup_frac": WARMUP_FRAC, "weight_decay": WEIGHT_DECAY,
             "grad_clip": GRAD_CLIP, "optimizer": "AdamW(0.9, 0.95), decay on >=2-D weights",
             "schedule": "linear warm-up then cosine to min_lr_frac * lr", "loss": "next-token cross-entropy",
             "threads": torch.get_num_threads(), "sizes": args.sizes, "budgets": args.budgets,
             "transformer": "nanoGPT-style: learned token+position embedding, pre-LN, causal SDPA attention, "
                            "GELU MLP 4x, biases, untied head",
             "qrh": "distill.students.QRHStudent: prime embedding, spectral mixer, quaternion linear, untied head"}
    same = prev.get("setup", {}) and all(prev["setup"].get(k) == setup[k] for k in ("seq_len", "batch", "n_layers",
                                                                                       "vocab", "lr"))
    state = prev if same else {}
    state["setup"] = setup
    runs = state.setdefault("runs", [])
    t_all = time.perf_counter()
    t = time.perf_counter()
    data = build_data(max(args.budgets))
    state["data"] = {**data["info"], "domain": "code", "tokenizer": "qwen-0.5b (Qwen2.5)",
                     "build_seconds": round(time.perf_counter() - t, 1)}
    print("data", state["data"], flush=True)

    def checkpoint():
        plan_left = [p for p in state.get("plan", []) if not any(
            (r["arch"], r["d_model"], r["budget"]) == tuple(p) for r in runs)]
        state["plan_left"] = plan_left
        save(NAME, {k: v for k, v in state.items() if k not in ("command", "machine")})

    # throughput (interleaved) and the estimate of the grid
    tp = {str(x["d_model"]): x for x in state.get("throughput", [])}
    for d in args.sizes:
        if str(d) not in tp:
            tp[str(d)] = throughput(d, data)
            print("throughput", d, tp[str(d)]["tokens_per_s"], f"ratio {tp[str(d)]['ratio_qrh_over_transformer']:.2f}",
                  flush=True)
    state["throughput"] = [tp[str(d)] for d in args.sizes]
    plan = [(a, d, b) for b in sorted(args.budgets) for d in args.sizes for a in ARCHS]

    def estimate(pl):
        return sum(math.ceil(b / (BATCH * SEQ_LEN)) * BATCH * SEQ_LEN / tp[str(d)]["tokens_per_s"][a]
                   for a, d, b in pl) / 60

    est = estimate(plan)
    dropped = []
    if est > args.minutes:  # the largest size's largest budget goes first (the brief's rule)
        dropped = [p for p in plan if p[1] == max(args.sizes) and p[2] == max(args.budgets)]
        plan = [p for p in plan if p not in dropped]
    state["estimate"] = {"full_grid_minutes": round(est, 1), "plan_minutes": round(estimate(plan), 1),
                         "limit_minutes": args.minutes, "dropped": dropped}
    state["plan"] = plan
    print("estimate", state["estimate"], flush=True)
    if "profile" not in state:
        state["profile"] = profile_qrh(data)
        print(state["profile"]["table"], flush=True)
    checkpoint()
    if args.estimate_only:
        return
    for a, d, b in plan:
        if any((r["arch"], r["d_model"], r["budget"]) == (a, d, b) for r in runs):
            print("skip (done)", a, d, b, flush=True)
            continue
        r = one_run(a, d, b, data)
        print("run", json.dumps(r), flush=True)
        runs.append(r)
        state["last_run_total_seconds"] = round(time.perf_counter() - t_all, 1)
        checkpoint()
        plot(runs, REPORTS / f"{NAME}.png")
    plot(runs, REPORTS / f"{NAME}.png")
    state["wall_seconds_this_invocation"] = round(time.perf_counter() - t_all, 1)
    checkpoint()


if __name__ == "__main__":
    main()
