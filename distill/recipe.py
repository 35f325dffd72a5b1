"""The distillation recipe (torchtune style): ``setup / train / save_checkpoint / cleanup``.

A YAML config names the components (student switches, KD loss, aggregation operator, sampler,
curriculum, temperature schedule); ``key=value`` overrides change any leaf (``optim.steps=50``).

    >>> cfg = load_config("distill/configs/law.yaml", ["optim.steps=50", "seed=1"])
    >>> result = run(cfg, settings=Settings())  # trains, evaluates, checkpoints, writes the profile, registers
    >>> result["eval"]["ppl"], result["output_dir"]

Stages (all in :class:`DistillRecipe`):

1. ``setup``: seeds; texts of the configured domains (train) and of the expert's domain (held out);
   shared tokenizer; kept vocabulary; token windows; resistance per window; teacher top-k logits
   and sentence-encoder embeddings from :class:`distill.teachers.TeacherCache` (each teacher runs
   once); the student, losses, optimizer; resume from the last checkpoint if there is one.
2. ``train``: curriculum stage -> eligible windows -> sampler -> batch; KD target from the teacher
   views (aggregated when there are several) at the annealed temperature; ``L_total``; AdamW with
   warm-up + cosine decay; a progress bar with loss and tokens/s; periodic held-out evaluation
   (perplexity, KL to the teacher, top-1 agreement) and checkpoints. With ``budget.minutes`` set,
   training stops at the first step boundary where the wall-clock budget (counted from the start of
   ``setup``, minus a reserve for what follows) is spent; with ``budget.schedule: budget`` the
   schedules also speed up when time runs short, so a stopped run still ends annealed
   (:mod:`distill.budget`).
3. ``save_checkpoint``: student (safetensors + JSON config, vocabulary inside), optimizer state
   (safetensors), RNG and trainer state (JSON): training resumes exactly.
4. ``finish`` (on success): profile (MiniLM centroid of the domain texts, size, KG anchors when
   ``kg`` has the graph, corpus reference) into ``profile/`` and ``expert.json`` next to the
   checkpoint; registration in the expert registry (skipped with a warning if it is absent).

Under ``torchrun`` / ``accelerate launch`` the same stages run data-parallel, each rank on a slice of
every global batch and rank 0 alone writing (:mod:`distill.distributed`).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from core.settings import Settings
    from distill.distributed import Distributed

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "name": None,  # expert name; default "<domain>-qrh"
    "domain": "general",  # the expert's domain (held-out evaluation and profile)
    "seed": 0,
    "threads": None,  # torch threads; default QSEF_TORCH_THREADS
    "output_dir": None,  # default $QSEF_HOME/experts/<name>
    "student": {"kind": "qrh",  # qrh (from scratch, model: below) | hf (pretrained; distill.students)
                "name": None,  # hf: model-store name or folder (default: the teacher)
                "dtype": "float32",
                "lora": None,  # hf: null = full fine-tuning, or {r, alpha, targets, dropout, layers}
                "vocab_policy": None},  # hf: a student tokenizer that differs from the teacher's is refused
    "model": {"vocab_size": 4096, "d_model": 128, "n_layers": 4, "n_heads": 8, "ffn_mult": 4,
              "max_seq_len": 128, "embedding": "prime", "mixer": "spectral", "linear": "quaternion"},
    "data": {"domains": None,  # training domains; default [general, domain] (curriculum general -> domain)
             "train_docs": 120, "heldout_docs": 24, "seq_len": 128, "max_windows_per_doc": 2,
             "pack": False,  # true: concatenate the documents and cut full windows (no padding)
             "max_windows": {"train": None, "heldout": None, "validation": None},  # caps on the windows per split
             "validation_docs": 0,  # >0: a "validation" split of that many documents of the expert's domain from
             # the corpus' train split, none of them a training document (held-out documents are another split)
             "seed": 0},  # document sampling seed (fixed, so every training seed sees the same data)
    "teacher": {"name": "qwen-0.5b", "dtype": "bfloat16", "top_k": 32, "batch_size": 8,
                "capture": "transformers",  # hf students: distill.capture backend (transformers | ct2 | vllm)
                "capture_kwargs": {},  # e.g. {compute_type: int8} for ct2, {base_url, model} for vllm
                "views": [{"teacher": None, "temperature_scale": 1.0, "weight": 1.0}]},
    "encoders": ["minilm"],  # sentence-encoder teachers for L_align ([] = none)
    "loss": {"kd": "kd", "kd_weight": 1.0, "lambda_align": 0.1, "lambda_resist": 1.0, "align_kind": "cosine",
             "resistance_weighting": True},
    "aggregation": {"name": "arithmetic"},
    "temperature": {"start": 5.0, "end": 1.0, "kind": "cosine"},
    "sampler": {"name": "difficulty", "mix": 0.5},
    "curriculum": "default",  # "default" (general -> domain, rising complexity), null, or a list of stages
    "optim": {"steps": 300, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "warmup": 20, "grad_clip": 1.0},
    "budget": {"minutes": None,  # wall clock for the whole run (setup included); null = no limit
               "reserve_minutes": 1.0,  # kept for the final evaluation, checkpoint, profile, registration
               "schedule": "steps"},  # LR / temperature / curriculum follow "steps", or "budget" (time too)
    "eval": {"every": 100, "max_windows": 64},
    "checkpoint": {"every": 100, "resume": True},
    "profile": {"enabled": True, "max_passages": 200, "anchors": 50},
    "register": True,
    "registry_path": None,  # default $QSEF_HOME/router/experts.sqlite (the router's registry)
    "progress": True,
    # used only under a launcher (torchrun / accelerate launch, WORLD_SIZE > 1; distill.distributed)
    "distributed": {"backend": None,  # gloo | nccl; null = nccl when CUDA is available, else gloo
                    "timeout_minutes": 60},  # collectives' timeout; covers rank 0's cold teacher pass
}


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message says which key and why."""


# ---------------------------------------------------------------------------------------- config


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if k not in out:
            raise ConfigError(f"unknown config key {path + k!r}; allowed here: {sorted(out)}")
        if isinstance(out[k], dict) and isinstance(v, dict) and k != "model":
            out[k] = _merge(out[k], v, f"{path}{k}.")
        elif k == "model" and isinstance(v, dict):
            out[k] = {**out[k], **v}  # any QRHConfig field (validated when the model is built)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_override(cfg: dict, override: str) -> dict:
    """Apply one ``a.b.c=value`` override (value parsed as YAML: numbers, booleans, lists, null)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key=value (e.g. optim.steps=50)")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    parts = key.strip().split(".")
    node = {}
    cur = node
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return _merge(cfg, node)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults <- YAML file <- ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping")
        cfg = _merge(cfg, data)
    for o in overrides:
        cfg = apply_override(cfg, o)
    from distill.students import student_resolver

    cfg["student"]["kind"] = student_resolver.canonical_name(cfg["student"]["kind"])  # lists the kinds if unknown
    if cfg["student"]["kind"] == "hf" and cfg["student"]["name"] is None:
        cfg["student"]["name"] = cfg["teacher"]["name"]
    if cfg["name"] is None:
        cfg["name"] = f"{cfg['domain']}-{'lora' if cfg['student']['lora'] else cfg['student']['kind']}"
    if cfg["data"]["domains"] is None:
        cfg["data"]["domains"] = ["general"] if cfg["domain"] == "general" else ["general", cfg["domain"]]
    return cfg


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------- data preparation


def prepare_windows(cfg: dict, *, settings: Settings, tokenizer=None, texts: dict | None = None) -> dict:
    """The windows of :func:`prepare_data` without any teacher pass: ``train`` / ``heldout`` (/ ``validation``)
    :class:`distill.data.Windows`, ``kept`` and ``coverage``, the very windows a recipe trains and evaluates on
    (tokenizer: the teacher's by default, as there)."""
    from distill.teachers import load_tokenizer

    tokenizer = tokenizer or load_tokenizer(settings, cfg["teacher"]["name"])
    return _windows(cfg, settings=settings, tokenizer=tokenizer, texts=texts)[0]


def _windows(cfg: dict, *, settings: Settings, tokenizer, texts: dict | None) -> tuple[dict, list]:
    import torch

    from distill import data as D

    dc, tc = cfg["data"], cfg["teacher"]
    if texts is None:
        train = [t for d in dc["domains"]
                 for t in D.load_texts(settings, d, "train", limit=dc["train_docs"], seed=dc["seed"])]
        held = D.load_texts(settings, cfg["domain"], "heldout", limit=dc["heldout_docs"], seed=dc["seed"])
        val = (D.load_texts(settings, cfg["domain"], "train", limit=dc["validation_docs"], seed=dc["seed"] + 1,
                            exclude={t.id for t in train}) if dc.get("validation_docs") else None)
    else:
        train, held, val = texts["train"], texts["heldout"], texts.get("validation")
    splits = [("train", train), ("heldout", held)] + ([("validation", val)] if val else [])
    tokens = {split: D.tokenize(docs, tokenizer) for split, docs in splits}
    tok_train, tok_held = tokens["train"], tokens["heldout"]
    eos = tokenizer.eos_token_id
    pretrained = cfg["student"]["kind"] != "qrh"
    if pretrained:  # the student's vocabulary is the tokenizer's
        if cfg["student"]["name"] != tc["name"]:
            _check_student_tokenizer(settings, cfg["student"], tokenizer)
        kept = None
    else:
        kept = D.build_vocabulary(tok_train, cfg["model"]["vocab_size"], always=[eos] if eos is not None else [])
    pad = eos if eos is not None else 0
    kw = dict(pad_id=pad, max_windows_per_doc=dc["max_windows_per_doc"])
    out: dict[str, Any] = {"kept": kept, "coverage": 1.0 if kept is None else D.coverage(tok_held, kept)}
    for split, docs in splits:
        toks = tokens[split]
        cap = (dc.get("max_windows") or {}).get(split)
        if dc.get("pack"):
            w = D.pack_windows(docs, toks, dc["seq_len"], max_windows=cap)
        else:
            w = D.make_windows(docs, toks, dc["seq_len"], **kw)
            if cap is not None and len(w) > cap:
                w = D.Windows(w.ids[:cap], w.valid[:cap], w.doc_index[:cap], w.texts)
        per_doc = {}
        w.resistance = torch.tensor([per_doc.setdefault(int(j), D.resistance(docs[int(j)].text)) for j in w.doc_index])
        out[split] = w
    return out, splits


def prepare_data(cfg: dict, *, settings: Settings, cache=None, tokenizer=None, texts: dict | None = None) -> dict:
    """Windows, vocabulary, resistance and all teacher outputs for a config (teachers run once, cached).

    Args:
        cfg: a config from :func:`load_config`.
        cache: a :class:`distill.teachers.TeacherCache` (default under ``$QSEF_HOME/cache/distill``).
        tokenizer: the shared tokenizer (default: the teacher's).
        texts: ``{"train": [Text], "heldout": [Text]}`` instead of the corpora (tests).
    Returns:
        dict with ``train`` / ``heldout`` :class:`distill.data.Windows`, ``kept`` (V-1,) tokenizer ids,
        ``teacher`` {view teacher name: {"train": {...}, "heldout": {...}}}, ``embeddings``
        {encoder: {"train": (N, D), "heldout": (N, D)}}, ``coverage``.
    """
    from distill.teachers import CausalLMTeacher, SentenceEncoderTeacher, TeacherCache, load_tokenizer

    cache = cache or TeacherCache(settings.path("cache", "distill"))
    tc = cfg["teacher"]
    tokenizer = tokenizer or load_tokenizer(settings, tc["name"])
    out, splits = _windows(cfg, settings=settings, tokenizer=tokenizer, texts=texts)
    kept, pretrained = out["kept"], cfg["student"]["kind"] != "qrh"

    teachers = {tc["name"]} | {v.get("teacher") or tc["name"] for v in tc["views"]}  # evaluation needs the first
    out["teacher"] = {}
    for name in sorted(teachers):
        if name != tc["name"]:
            _check_tokenizer(settings, name, tokenizer)
        if pretrained:
            out["teacher"][name] = capture_teacher(cfg, name, out, settings=settings, tokenizer=tokenizer,
                                                   timing=out.setdefault("capture_timing", {}).setdefault(name, {}))
            continue
        teacher = CausalLMTeacher(name, settings=settings, dtype=tc["dtype"], threads=cfg.get("threads"))
        out["teacher"][name] = {}
        for split, _ in splits:
            ids = out[split].ids[:, :-1]
            key = TeacherCache.key(name, tc["dtype"], kept, ids, tc["top_k"])
            out["teacher"][name][split] = cache.get_or_compute(
                "lm", key, lambda t=teacher, i=ids: t.topk(i, kept, tc["top_k"], batch_size=tc["batch_size"]))
        teacher.close()

    out["embeddings"] = {}
    for enc_name in cfg["encoders"]:
        enc = SentenceEncoderTeacher(enc_name, settings=settings)
        out["embeddings"][enc_name] = {}
        for split, _ in splits:
            w = out[split]
            window_texts = [tokenizer.decode(w.ids[i, :-1][w.valid[i]].tolist()) for i in range(len(w))]
            key = TeacherCache.key(enc_name, window_texts)
            out["embeddings"][enc_name][split] = cache.get_or_compute(
                "enc", key, lambda e=enc, t=window_texts: {"emb": e.encode(t)})["emb"]
        enc.close()
    return out


def capture_teacher(cfg: dict, name: str, prepared: dict, *, settings: Settings, tokenizer,
                    timing: dict | None = None) -> dict:
    """Full-vocabulary top-k log-probabilities of teacher ``name`` on the train / held-out windows,
    through :func:`distill.capture.capture_topk` (memory-mapped shards under ``$QSEF_HOME/cache/distill``,
    resumable, verified on read). Returns ``{split: {"topk_idx", "topk_logits"}}`` (log-probs as logits).

    ``teacher.capture`` names the backend (:data:`distill.capture.capture_resolver`):

    * ``transformers``: the teacher folder in ``teacher.dtype`` (``float32`` is the fast exact path on a
      CPU without bf16 instructions), ``threads`` torch threads;
    * ``ct2``: its CTranslate2 int8 copy (converted once into ``$QSEF_HOME/engines/ct2``), ``threads``
      intra-op threads (default ``llm_threads``); ``capture_kwargs: {compute_type: float32}`` computes on the
      dequantised weights instead (closer to fp32, slower);
    * ``vllm``: ``capture_kwargs: {base_url, model}`` of a running server.

    The capture folder's key holds the backend's engine (name, dtype or compute type, versions), so
    captures by two engines live side by side; the manifest check refuses one engine's shards for another.

    ``timing`` (a dict, filled in place): ``engine_s`` (loading the backend; a first ct2 use converts the
    teacher there) and per split ``{"seconds", "tokens", "rebuilt_shards"}``, where ``tokens`` counts the
    input positions computed in this call (0 when every shard came from disk), so a fresh capture's
    tokens / seconds is the teacher's capture throughput.
    """
    from distill.capture import capture_resolver, capture_topk, tokenizer_sha256
    from distill.teachers import TeacherCache, resolve_model_folder

    tc = cfg["teacher"]
    kind = capture_resolver.canonical_name(tc["capture"])
    kwargs = dict(tc.get("capture_kwargs") or {})
    if kind == "transformers":
        kwargs = {"folder": resolve_model_folder(settings, name), "dtype": tc["dtype"],
                  "threads": cfg.get("threads"), **kwargs}
    elif kind == "ct2":
        kwargs = {"folder": resolve_model_folder(settings, name), "settings": settings,
                  "threads": cfg.get("threads"), **kwargs}
    backend = capture_resolver.make(kind, {"batch_size": tc["batch_size"], **kwargs})
    tok_hash = tokenizer_sha256(tokenizer)
    out = {}
    timing = {} if timing is None else timing
    try:
        t0 = time.perf_counter()
        engine = backend.engine()
        timing["engine_s"] = round(time.perf_counter() - t0, 2)
        for split in [s for s in ("train", "heldout", "validation") if s in prepared]:
            ids = prepared[split].ids[:, :-1]
            key = TeacherCache.key(name, engine, tc["top_k"], tok_hash, ids)
            folder = settings.path("cache", "distill") / f"capture-{key}"
            t0 = time.perf_counter()
            cap = capture_topk(backend, ids, folder, k=tc["top_k"], teacher=name, tokenizer_sha256=tok_hash)
            shard = int(cap.manifest["shard_windows"])
            computed = sum(min(shard, ids.shape[0] - i * shard) for i in cap.rebuilt) * ids.shape[1]
            timing[split] = {"seconds": round(time.perf_counter() - t0, 2), "tokens": int(computed),
                             "rebuilt_shards": len(cap.rebuilt)}
            out[split] = {"topk_idx": cap.topk_ids, "topk_logits": cap.topk_logprobs}
    finally:
        backend.close()
    return out


def _check_student_tokenizer(settings: Settings, student: dict, tokenizer) -> None:
    """A pretrained student must share the teacher's tokenizer unless a vocabulary policy says how to map them."""
    from distill.teachers import load_tokenizer

    other = load_tokenizer(settings, student["name"])
    a, b = other.get_vocab(), tokenizer.get_vocab()
    if a == b:
        return
    if student.get("vocab_policy"):
        raise ConfigError(f"student.vocab_policy {student['vocab_policy']!r}: no vocabulary mapping between "
                          "different tokenizers is implemented; use a student that shares the teacher's tokenizer")
    differ = len(set(a.items()) ^ set(b.items()))
    raise ConfigError(f"student {student['name']!r} does not share the teacher's tokenizer ({len(a)} vs {len(b)} "
                      f"tokens, {differ} token->id pairs differ): token-level KD compares distributions over the "
                      "same ids, so it is refused without a vocabulary policy (choose a student with the teacher's "
                      "tokenizer, e.g. qwen-0.5b for qwen-1.5b)")


def _check_tokenizer(settings: Settings, name: str, tokenizer) -> None:
    from distill.teachers import load_tokenizer, same_tokenizer

    if not same_tokenizer(load_tokenizer(settings, name), tokenizer):
        raise ConfigError(f"teacher {name!r} does not share the student's tokenizer; token-level KD needs the same "
                          "vocabulary (use it as a sentence-encoder teacher instead)")


def sparse_to_dense(idx, logits, vocab_size: int):
    """Top-k teacher logits (B, T, k) at student ids -> dense (B, T, V) with ``-inf`` elsewhere."""
    import torch

    dense = torch.full((*idx.shape[:-1], vocab_size), float("-inf"), device=idx.device)
    return dense.scatter_(-1, idx.long(), logits.float())


# ---------------------------------------------------------------------------------------- recipe


class DistillRecipe:
    """One distillation run. Call :meth:`setup`, :meth:`train`, :meth:`save_checkpoint`, :meth:`cleanup`."""

    def __init__(self, cfg: dict, *, settings: Settings, prepared: dict | None = None, tokenizer=None,
                 dist: Distributed | None = None):
        from distill.distributed import Distributed

        self.cfg = cfg
        self.settings = settings
        self._prepared, self._tokenizer = prepared, tokenizer
        dc = cfg.get("distributed") or {}
        self.dist = dist or Distributed.from_env(backend=dc.get("backend"), timeout_minutes=dc.get("timeout_minutes", 60))
        self.device = self.dist.device  # the CPU in one process
        self.step = 0
        self.tokens_seen = 0  # training target tokens, over every step (resumed runs included)
        self.train_loss: list[float] = []  # the global batch's loss at every step
        self.history: list[dict] = []

    # ---- setup

    @property
    def output_dir(self) -> Path:
        if self.cfg["output_dir"]:
            return Path(self.cfg["output_dir"]).expanduser()
        return self.settings.path("experts") / self.cfg["name"]

    def setup(self) -> None:
        import torch

        from distill.budget import WallClockBudget
        from distill.distributed import TrainStep

        cfg = self.cfg
        self.budget = WallClockBudget(**cfg["budget"])
        self.budget.start()  # the budget covers the whole run: texts, teacher pass, training
        if self.dist.enabled and cfg["optim"]["batch_size"] % self.dist.world_size:
            raise ConfigError(f"optim.batch_size={cfg['optim']['batch_size']} must be divisible by the "
                              f"{self.dist.world_size} ranks (each trains on an equal slice of every batch)")
        self.dist.start()
        torch.set_num_threads(cfg["threads"] or self.settings.torch_threads)
        set_seed(cfg["seed"])
        with self.dist.main_first():  # a cold teacher pass runs on rank 0; the other ranks then read its cache
            self.data = self._prepared or prepare_data(cfg, settings=self.settings, tokenizer=self._tokenizer)
        set_seed(cfg["seed"])  # every rank builds the same student (DDP broadcasts rank 0's weights anyway)
        self._handle_model()
        self._handle_loss()
        self._handle_training()
        ckpt = self.output_dir / "trainer_state.json"
        if cfg["checkpoint"]["resume"] and ckpt.is_file():
            self.load_checkpoint(self.output_dir)
        target = self.teacher_target if cfg["loss"]["kd_weight"] else None
        idle_heads = bool(self.loss.alignments) and not cfg["loss"]["lambda_align"]  # parameters without gradients
        self.train_step = self.dist.wrap(TrainStep(self.student, self.loss, target),  # the modules themselves in one process
                                         find_unused_parameters=idle_heads)

    def _handle_model(self) -> None:
        from distill.students import student_resolver

        self.student = student_resolver.make(self.cfg["student"]["kind"], cfg=self.cfg, settings=self.settings,
                                             kept=self.data["kept"]).to(self.device)
        self.model = self.student.model  # the QRHModel, or the HF / peft model

    def _handle_loss(self) -> None:
        from distill.aggregation import teacher_aggregator_resolver
        from distill.data import TemperatureSchedule
        from distill.losses import AlignmentLoss, TotalLoss, loss_resolver

        lc = self.cfg["loss"]
        kd_spec = lc["kd"]
        kd = loss_resolver.make(kd_spec["name"], {k: v for k, v in kd_spec.items() if k != "name"}) \
            if isinstance(kd_spec, dict) else loss_resolver.make(kd_spec)
        aligns = {name: AlignmentLoss(self.student.hidden_size, emb["train"].shape[1], lc["align_kind"])
                  for name, emb in self.data["embeddings"].items()}
        self.loss = TotalLoss(kd, aligns, lambda_align=lc["lambda_align"], lambda_resist=lc["lambda_resist"],
                              kd_weight=lc["kd_weight"], kd_ignore_classes=self.student.kd_ignore_classes).to(self.device)
        ag = self.cfg["aggregation"]
        self.aggregator = teacher_aggregator_resolver.make(ag["name"], {k: v for k, v in ag.items() if k != "name"})
        self.temperature = TemperatureSchedule(**self.cfg["temperature"])

    def _handle_training(self) -> None:
        import torch

        from distill.data import Curriculum, sampler_resolver

        oc = self.cfg["optim"]
        params = self.student.trainable_parameters() + list(self.loss.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=oc["lr"], weight_decay=oc["weight_decay"], betas=(0.9, 0.95))
        sc = dict(self.cfg["sampler"])
        cls = sampler_resolver.lookup(sc.pop("name"))
        train = self.data["train"]
        offered = {"n": len(train), "seed": self.cfg["seed"], "resistance": train.resistance, **sc}
        accepted = set(inspect.signature(cls.__init__).parameters)
        unused = set(sc) - accepted
        if unused:
            log.warning("sampler %s ignores config keys %s", cls.__name__, sorted(unused))
        self.sampler = cls(**{k: v for k, v in offered.items() if k in accepted})
        cur = self.cfg["curriculum"]
        self.curriculum = (Curriculum.default(self.cfg["domain"]) if cur == "default"
                           else Curriculum(cur) if cur else Curriculum())

    def lr_at(self, step: int) -> float:
        oc = self.cfg["optim"]
        if step < oc["warmup"]:
            return oc["lr"] * (step + 1) / oc["warmup"]
        f = (step - oc["warmup"]) / max(oc["steps"] - oc["warmup"], 1)
        return oc["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))))

    # ---- batches

    def batch(self, split: str, idx):
        """Tensors for windows ``idx`` on the training device: student inputs/labels, mask, teacher top-k,
        embeddings, resistance (the teacher rows are those of the same ``idx``)."""
        w, dev = self.data[split], self.device
        ids = w.ids[idx].to(dev)
        valid = w.valid[idx].to(dev)
        s_ids = self.student.to_student_ids(ids)
        b = {"input": s_ids[:, :-1], "labels": s_ids[:, 1:].masked_fill(~valid, -100),
             "mask": valid, "resistance": w.resistance[idx].to(dev)}
        b["teachers"] = {n: (t[split]["topk_idx"][idx].to(dev), t[split]["topk_logits"][idx].to(dev))
                         for n, t in self.data["teacher"].items()}
        b["embeddings"] = {n: e[split][idx].to(dev) for n, e in self.data["embeddings"].items()}
        return b

    def teacher_target(self, b, temperature: float, logits) -> dict:
        """KD inputs for ``TotalLoss``: the student's KD view of ``logits`` and the teacher's, raw sparse
        logits for a single plain view, else aggregated tempered probabilities (:meth:`Student.kd_view`:
        dense over the kept vocabulary for QRH, the teacher's top-k + a rest class for hf students)."""
        import torch

        views = self.cfg["teacher"]["views"]
        default = self.cfg["teacher"]["name"]
        names = [v.get("teacher") or default for v in views]
        if len(views) == 1 and views[0].get("temperature_scale", 1.0) == 1.0:
            idx, val = b["teachers"][names[0]]
            s_kd, t_kd = self.student.kd_view(logits, idx, val, temperature)
            return {"teacher_logits": t_kd, "kd_student_logits": s_kd}
        if not self.student.uses_kept_vocabulary and len(set(names)) > 1:
            raise ConfigError("a pretrained student's KD view is its teacher's top-k ids, so several views must "
                              f"share one teacher (got {sorted(set(names))}); use a qrh student for multi-teacher KD")
        probs = []
        for name, v in zip(names, views, strict=True):
            idx, val = b["teachers"][name]
            s_kd, t_kd = self.student.kd_view(logits, idx, val, temperature)
            t = temperature * v.get("temperature_scale", 1.0)
            probs.append(torch.softmax(t_kd.float() / t, -1))
        weights = torch.tensor([float(v.get("weight", 1.0)) for v in views], device=logits.device)
        return {"teacher_probs": self.aggregator(torch.stack(probs), weights), "kd_student_logits": s_kd}

    # ---- train / eval

    def train(self, until: int | None = None) -> dict:
        """Train to ``optim.steps`` (or stop early at step ``until``, e.g. a time-boxed run to resume later)."""
        import torch
        from tqdm import tqdm

        oc = self.cfg["optim"]
        total = oc["steps"]
        use_r = self.cfg["loss"]["resistance_weighting"]
        bar = tqdm(total=total, initial=self.step, disable=not (self.cfg["progress"] and self.dist.is_main),
                   desc=self.cfg["name"], dynamic_ncols=True)
        t0, tokens, step_s = time.perf_counter(), 0, 0.0
        self.model.train()
        self.budget.begin_training()
        while self.step < (total if until is None else min(until, total)):
            if self._agreed(self.budget.exhausted(step_s)):
                self.budget.stopped = True
                log.warning("%s: wall-clock budget of %s min spent after %.1f min; training stops at step %d of %d",
                            self.cfg["name"], self.budget.minutes, self.budget.elapsed_minutes, self.step, total)
                break
            t_step = time.perf_counter()
            at = self.schedule_step = self._agreed(self.budget.progress_step(self.step, total))  # = step unless schedule=budget
            temp = self.temperature(at, total)
            eligible = self.curriculum.eligible(self.data["train"], at, total)
            idx = self.sampler.sample(eligible, oc["batch_size"])  # the global batch: the same on every rank
            b = self.batch("train", self.dist.shard(idx))  # this rank's slice (all of it in one process)
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_at(at)
            out, logits = self.train_step(b, temp, resistance=b["resistance"] if use_r else None,
                                          scale=self._shard_scale(idx, use_r))
            self.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.student.trainable_parameters(), oc["grad_clip"])
            self.optimizer.step()
            with torch.no_grad():
                loss, per_sample = self._global_loss(out["loss"].detach(),
                                                     self.loss.resist.per_sample(logits.detach(), b["labels"]))
                self.sampler.update(idx, per_sample.cpu())
            self.step += 1
            step_s = time.perf_counter() - t_step
            n_tokens = int(self.data["train"].valid[idx].sum())  # the global batch's target tokens
            tokens += n_tokens
            self.tokens_seen += n_tokens
            self.train_loss.append(loss)
            rate = tokens / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", T=f"{temp:.2f}", tok_s=f"{rate:.0f}")
            if self.cfg["eval"]["every"] and (self.step % self.cfg["eval"]["every"] == 0 or self.step == total):
                ev = self.evaluate()
                ev.update(step=self.step, loss=round(loss, 4), tokens_per_s=round(rate, 1))
                self.history.append(ev)
                log.info("eval step=%d ppl=%.2f kl=%.3f agree=%.3f", self.step, ev["ppl"], ev["kl_to_teacher"],
                         ev["top1_agreement"])
                self.model.train()
            if self.cfg["checkpoint"]["every"] and self.step % self.cfg["checkpoint"]["every"] == 0 and self.step < total:
                self.save_checkpoint()
        bar.close()
        self.train_tokens_per_s = tokens / max(time.perf_counter() - t0, 1e-9)
        if self.budget.stopped and (not self.history or self.history[-1]["step"] != self.step):
            ev = self.evaluate()  # the stopped model, not the last periodic evaluation
            ev.update(step=self.step, stopped_by_budget=True)
            self.history.append(ev)
        return self.history[-1] if self.history else self.evaluate()

    def _agreed(self, value):
        """Rank 0's answer to a clock-dependent question (budget stop, schedule step), so every rank
        takes the same branch; without a budget the answers do not depend on the clock."""
        return value if self.budget.minutes is None else self.dist.from_main(value)

    def _shard_scale(self, idx, use_resistance: bool) -> dict[str, float] | None:
        """Loss-term factors for this rank's slice of the global batch ``idx`` (None in one process)."""
        import torch

        from distill.distributed import shard_scale

        if not self.dist.enabled:
            return None
        w = self.data["train"]
        mine = torch.zeros(len(idx), dtype=torch.bool)
        mine[self.dist.shard(torch.arange(len(idx)))] = True
        weights = w.resistance[idx] if use_resistance else torch.ones(len(idx))
        return shard_scale(w.valid[idx], weights, mine, self.dist.world_size)

    def _global_loss(self, loss, per_sample):
        """The global batch's loss (a float) and per-sample losses (B,) from this rank's shard values."""
        import torch

        if not self.dist.enabled:
            return loss.item(), per_sample
        rows = self.dist.all_gather(torch.cat([per_sample.float(), loss.float().reshape(1)])[None])  # (W, B/W + 1)
        return float(rows[:, -1].sum()) / self.dist.world_size, rows[:, :-1].reshape(-1)

    def training_summary(self) -> dict:
        """Steps done / planned, and whether the wall-clock budget ended training."""
        return {**self.budget.summary(steps_done=self.step, steps_planned=self.cfg["optim"]["steps"]),
                "schedule_step": getattr(self, "schedule_step", self.step)}  # where LR / T / curriculum ended

    def evaluate(self, split: str = "heldout", *, base: bool = False) -> dict:
        """Held-out perplexity (all targets, unknown included), KL(teacher || student) at T=1 on the
        teacher's top-k (student renormalised without the unknown id), top-1 agreement.

        ``base=True``: the same for the student's untrained base (a LoRA student with its adapter off).
        """
        import contextlib

        if base:
            ctx = self.student.base_model_context()
            if ctx is None:
                raise ValueError(f"a {self.cfg['student']['kind']} student without adapters has no base to evaluate")
        with ctx if base else contextlib.nullcontext():
            return self._evaluate(split)

    def _evaluate(self, split: str) -> dict:
        import torch
        import torch.nn.functional as F

        from distill.losses import KDLoss

        self.model.eval()
        n = min(len(self.data[split]), self.cfg["eval"]["max_windows"])
        lo, hi = self.dist.shard_range(n)  # (0, n) in one process; the sums are added over the ranks
        nll = kl = agree = count = 0.0
        teacher = self.cfg["teacher"]["name"]
        with torch.no_grad():
            for s in range(lo, hi, 16):
                idx = torch.arange(s, min(s + 16, hi))
                b = self.batch(split, idx)
                logits = self.student(b["input"])
                m = b["mask"]
                V = logits.shape[-1]
                nll += F.cross_entropy(logits.reshape(-1, V), b["labels"].reshape(-1), ignore_index=-100,
                                       reduction="sum").item()
                t_idx, t_val = b["teachers"][teacher]
                k = int(m.sum())
                s_kd, t_kd = self.student.kd_view(logits, t_idx, t_val, 1.0)
                if self.student.kd_ignore_classes:  # over the teacher's vocabulary
                    ignored = torch.tensor(self.student.kd_ignore_classes, device=s_kd.device)
                    s_kd = s_kd.index_fill(-1, ignored, float("-inf"))
                kl += KDLoss(1.0)(s_kd, t_kd, mask=m).item() * k
                agree += ((logits.argmax(-1) == t_idx[..., 0].long()) & m).sum().item()
                count += k
        nll, kl, agree, count = self.dist.all_reduce_sum(nll, kl, agree, count)
        return {"ppl": math.exp(nll / count), "kl_to_teacher": kl / count, "top1_agreement": agree / count,
                "tokens": int(count)}

    # ---- checkpoints

    def save_checkpoint(self, directory: str | Path | None = None) -> Path:
        """Student + optimizer + RNG + trainer state; everything safetensors or JSON (never pickle).

        Under a launcher only rank 0 writes (every rank holds the same state); the others wait for it."""
        d = Path(directory) if directory else self.output_dir
        if self.dist.is_main:
            self._write_checkpoint(d)
        self.dist.barrier()
        return d

    def _write_checkpoint(self, d: Path) -> None:
        import torch
        from safetensors.torch import save_file

        d.mkdir(parents=True, exist_ok=True)
        self.student.save(d)
        state = self.optimizer.state_dict()
        tensors = {"rng.torch": torch.get_rng_state(), "rng.sampler": self.sampler.generator.get_state()}
        for pid, st in state["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = torch.as_tensor(v).clone()
        extra = {f"loss.{k}": v for k, v in self.loss.state_dict().items()}
        if hasattr(self.sampler, "loss"):
            extra["sampler.loss"] = self.sampler.loss
        if hasattr(self.sampler, "queue"):  # the epoch sampler's remaining order
            extra["sampler.queue"], extra["sampler.eligible"] = self.sampler.queue.clone(), self.sampler._eligible.clone()
        tensors.update(extra)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "training_state.safetensors"))
        meta = {"step": self.step, "tokens_seen": self.tokens_seen, "history": self.history, "config": self.cfg, "training": self.training_summary(),
                "param_groups": state["param_groups"], "python_rng": repr(random.getstate()[1][:1]),
                "train_loss": self.train_loss}
        tmp = d / "trainer_state.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        tmp.replace(d / "trainer_state.json")

    def load_checkpoint(self, directory: str | Path) -> None:
        import torch
        from safetensors.torch import load_file

        d = Path(directory)
        meta = json.loads((d / "trainer_state.json").read_text())
        self.student.load(d)
        tensors = load_file(str(d / "training_state.safetensors"))
        opt_state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        self.loss.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("loss.")})
        torch.set_rng_state(tensors["rng.torch"])
        self.sampler.generator.set_state(tensors["rng.sampler"])
        if "sampler.loss" in tensors:
            self.sampler.loss = tensors["sampler.loss"]
        if "sampler.queue" in tensors:
            self.sampler.queue, self.sampler._eligible = tensors["sampler.queue"], tensors["sampler.eligible"]
        self.step, self.history = meta["step"], meta["history"]
        self.tokens_seen = meta.get("tokens_seen", 0)
        self.train_loss = meta.get("train_loss", [])[:self.step]
        log.info("resumed %s at step %d", d, self.step)

    # ---- on success

    def finish(self, result: dict) -> dict:
        """Write the profile and ``expert.json`` next to the checkpoint; register the expert.

        Under a launcher every rank calls it (the LoRA base evaluation is split over the ranks), rank 0
        alone writes and registers, and every rank returns rank 0's info."""
        cfg = self.cfg
        lora = cfg["student"]["kind"] == "hf" and bool(cfg["student"]["lora"])
        info: dict[str, Any] = {
            "name": cfg["name"], "domain": cfg["domain"], "backend": "peft" if lora else cfg["student"]["kind"],
            "checkpoint": str(self.output_dir), "student": cfg["student"],
            "tokenizer": cfg["teacher"]["name"], "params": self.student.num_parameters(),
            "teacher": cfg["teacher"]["name"], "eval": result, "steps": self.step, "training": self.training_summary(),
            "corpus": {"domains": cfg["data"]["domains"], "split": "train", "train_docs_per_domain": cfg["data"]["train_docs"],
                       "windows": len(self.data["train"]), "seq_len": cfg["data"]["seq_len"],
                       "vocab_coverage_heldout": round(self.data["coverage"], 4)},
        }
        info["metrics"] = {"heldout_ppl": round(result["ppl"], 4), "tokens_seen": self.tokens_seen,
                           "heldout_tokens": result["tokens"]}
        if lora:  # the untouched base on the same held-out windows
            base = self.evaluate(base=True)
            info["metrics"].update(base_heldout_ppl=round(base["ppl"], 4),
                                   ppl_ratio_to_base=round(result["ppl"] / base["ppl"], 4),
                                   base_kl_to_teacher=round(base["kl_to_teacher"], 4))
        if self.dist.is_main:
            if cfg["profile"]["enabled"]:
                info["profile"] = write_profile(cfg, self.student.num_parameters(), self.output_dir / "profile",
                                                settings=self.settings)
            (self.output_dir / "expert.json").write_text(json.dumps(info, indent=2, default=str))
            if cfg["register"]:
                info["registered"] = register_expert(
                    info, cfg.get("registry_path") or self.settings.database_url
                    or self.settings.path("router") / "experts.sqlite")
        return self.dist.from_main(info)

    def cleanup(self) -> None:
        """Drop the data; leave the process group this recipe joined (after success or an error)."""
        self.data = None
        self._prepared = None
        self.dist.close()


def write_profile(cfg: dict, params: int, folder: Path, *, settings: Settings) -> dict:
    """MiniLM centroid of the domain's texts, KG anchors when available, BM25 corpus index, size.

    Uses :func:`qsef.profiles.build_domain_profile` (the scorer's own profile format) and returns a
    JSON summary (centroid included) for ``expert.json`` and the registry.
    """
    from qsef.profiles import build_domain_profile

    pc = cfg["profile"]
    # BM25 over the whole domain corpus; centroid from a seeded sample of max_passages passages
    prof = build_domain_profile(cfg["domain"], settings=settings, name=cfg["name"], params=float(params), n_anchors=pc["anchors"],
                                centroid_sample=pc["max_passages"], seed=cfg["seed"])
    prof.save(folder)
    return {"dir": str(folder), "encoder": prof.encoder, "centroid": [round(float(x), 6) for x in prof.centroid],
            "kg_domain": prof.kg_domain, "kg_anchors": prof.kg_anchors, "params": params,
            "corpus": {"domain": cfg["domain"], "split": "train", "n_passages": prof.meta.get("n_passages"),
                       "n_centroid": prof.meta.get("n_centroid"), "sha256": prof.meta.get("corpus_sha256")}}


def register_expert(info: dict, registry_path: str | Path) -> bool:
    """Add (or replace) the expert in ``experts.registry``; skipped with a warning when it is absent."""
    try:
        from experts.registry import ExpertRegistry, ExpertSpec
    except ImportError as exc:
        log.warning("expert registry not available (%s); %s trained but not registered", exc, info["name"])
        return False
    path = registry_path if "://" in str(registry_path) else Path(registry_path)
    profile = {k: v for k, v in (info.get("profile") or {}).items() if k != "centroid"}
    backend = info.get("backend", "qrh")
    student = info.get("student") or {}
    kind = "LoRA adapter on " + str(student.get("name")) if backend == "peft" else "QRH student"
    description = f"{kind} distilled from {info['teacher']} on {info['domain']} texts"
    tr = info.get("training") or {}
    if tr.get("stopped_by_budget"):
        description += (f" (training stopped by its {tr['budget_minutes']:g}-min budget at step "
                        f"{tr['steps_done']}/{tr['steps_planned']})")
    kwargs = ({"base": student.get("name"), "adapter": info["checkpoint"]} if backend == "peft"
              else {"checkpoint": info["checkpoint"], "tokenizer": info["tokenizer"]})
    spec = ExpertSpec(name=info["name"], domain=info["domain"], backend=backend, description=description,
                      backend_kwargs=kwargs, size_params=int(info["params"]), profile=profile,
                      metrics=info.get("metrics") or {})
    registry = ExpertRegistry(path)
    registry.add(spec, replace=True)
    log.info("registered expert %s in %s", info["name"], registry.describe())  # a URL's password hidden
    registry.close()
    return True


def run(cfg: dict, *, settings: Settings, prepared: dict | None = None) -> dict:
    """setup -> train -> save_checkpoint -> finish -> cleanup; returns the expert info.

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) the run is data-parallel
    (:mod:`distill.distributed`): every rank returns rank 0's info, with ``distributed`` {world_size, rank}.
    """
    recipe = DistillRecipe(cfg, settings=settings, prepared=prepared)
    try:
        recipe.setup()
        result = recipe.train()
        recipe.save_checkpoint()
        info = recipe.finish(result)
        info["output_dir"] = str(recipe.output_dir)
        info["history"] = recipe.history
        if recipe.dist.enabled:  # e.g. for the CLI, which prints on rank 0 only
            info["distributed"] = {"world_size": recipe.dist.world_size, "rank": recipe.dist.rank,
                                   "backend": recipe.dist.backend}
        return info
    finally:
        recipe.cleanup()
