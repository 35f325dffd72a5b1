"""Helpers: tiny synthetic distillation data (no teacher model needed): vocab 99, hidden 32, 4 heads."""

import torch

from distill.data import Text, Windows
from distill.recipe import load_config

V, SEQ, K, D_ENC = 99, 12, 8, 16


def synthetic_prepared(n_train: int = 24, n_held: int = 8, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    kept = torch.arange(1000, 1000 + V - 1)  # tokenizer ids the student keeps

    def windows(n, domains):
        texts = [Text(f"d{i}", domains[i % len(domains)], f"text {i}") for i in range(n)]
        ids = kept[torch.randint(0, V - 1, (n, SEQ + 1), generator=g)]
        valid = torch.ones(n, SEQ, dtype=torch.bool)
        valid[0, -3:] = False
        w = Windows(ids, valid, torch.arange(n), texts)
        w.resistance = torch.rand(n, generator=g)
        return w

    train, held = windows(n_train, ["general", "law"]), windows(n_held, ["law"])

    def teacher(n):
        logits = torch.randn(n, SEQ, V - 1, generator=g)
        val, idx = logits.topk(K, -1)
        return {"topk_idx": (idx + 1).int(), "topk_logits": val.half(), "hidden": torch.randn(n, 24, generator=g)}

    return {"kept": kept, "coverage": 1.0, "train": train, "heldout": held,
            "teacher": {"qwen-0.5b": {"train": teacher(n_train), "heldout": teacher(n_held)}},
            "embeddings": {"minilm": {"train": torch.randn(n_train, D_ENC, generator=g),
                                      "heldout": torch.randn(n_held, D_ENC, generator=g)}}}


def tiny_overrides(tmp_path, *extra) -> list[str]:
    """``key=value`` overrides of the tiny recipe (also what a subprocess passes to ``qsef distill``)."""
    return [
        "domain=law", f"output_dir={tmp_path / 'expert'}", "threads=1",
        f"model.vocab_size={V}", "model.d_model=32", "model.n_layers=2", "model.n_heads=4", f"model.max_seq_len={SEQ}",
        f"data.seq_len={SEQ}", "optim.steps=6", "optim.batch_size=4", "optim.warmup=2",
        "eval.every=3", "eval.max_windows=8", "checkpoint.every=3", "register=false", "profile.enabled=false",
        "progress=false", *extra,
    ]


def tiny_config(tmp_path, *extra):
    return load_config(None, tiny_overrides(tmp_path, *extra))

