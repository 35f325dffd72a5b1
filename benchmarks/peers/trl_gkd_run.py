"""TRL's GKDTrainer on the same windows, student, teacher, LoRA, steps and seed as our recipe (the peer side of
``benchmarks/distill_trl.py``). Runs in the TRL peer environment (``benchmarks/peer_env.py``, inheriting our
torch / transformers / peft), never imports this repository.

GKD with ``lmbda=0`` (no student-generated sequences: the fixed windows only), ``seq_kd=False`` and
``beta=0`` (the generalised JSD is then the forward KL(teacher || student)) at temperature 1 is supervised
token-level KD on the teacher's full next-token distribution, computed by a teacher forward at every step.

    python trl_gkd_run.py SPEC.json      # SPEC: paths, LoRA, optimiser and steps (written by distill_trl.py)

Prints one JSON line: train wall, target tokens, tokens/s, peak RSS, the loss per step, trl's version.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def main() -> int:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    import numpy as np
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    windows = np.load(spec["windows"])
    ids, valid = windows["train_ids"], windows["train_valid"]  # (N, L + 1) ids; (N, L) target is a real token
    rows = {"input_ids": ids.tolist(), "valid": valid.astype(np.int64).tolist()}
    dataset = Dataset.from_dict(rows)

    def collate(batch: list[dict]) -> dict:
        inp = torch.tensor([b["input_ids"] for b in batch])
        ok = torch.tensor([b["valid"] for b in batch]).bool()
        # the whole window goes in: GKD scores logits[:, :-1] against labels[:, 1:], i.e. exactly the window's
        # L targets ids[:, 1:] that our recipe trains on; a padded target is masked
        labels = inp.clone()
        labels[:, 1:][~ok] = -100
        labels[:, 0] = -100
        return {"input_ids": inp, "attention_mask": torch.ones_like(inp), "labels": labels}

    tok = AutoTokenizer.from_pretrained(spec["student"])
    student = AutoModelForCausalLM.from_pretrained(spec["student"], dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(spec["teacher"], dtype=torch.float32)
    teacher.eval()
    lora = spec["lora"]
    n_layers = student.config.num_hidden_layers
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora.get("dropout", 0.0),
                             target_modules=lora["targets"], task_type="CAUSAL_LM",
                             layers_to_transform=list(range(n_layers - lora["layers"], n_layers)))
    args = GKDConfig(
        output_dir=spec["out"], max_steps=spec["steps"], per_device_train_batch_size=spec["batch_size"],
        learning_rate=spec["lr"], lr_scheduler_type="cosine", warmup_steps=spec["warmup"],
        weight_decay=spec["weight_decay"], max_grad_norm=spec["grad_clip"], adam_beta2=0.95, seed=spec["seed"],
        lmbda=0.0, beta=0.0, seq_kd=False, temperature=1.0, bf16=False, fp16=False,
        gradient_checkpointing=False, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
        dataloader_num_workers=0, remove_unused_columns=False, max_length=ids.shape[1],
    )
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=dataset,
                         processing_class=tok, data_collator=collate, peft_config=peft_config, callbacks=[Record()])
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    trainer.model.save_pretrained(spec["out"])
    seen = int(valid.sum() * spec["steps"] * spec["batch_size"] / len(valid) + 0.5)  # mean targets per window x windows
    print(json.dumps({"train_wall_s": round(wall, 1), "target_tokens": seen, "tokens_per_s": round(seen / wall, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "losses": losses, "trl": trl.__version__, "adapter": spec["out"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
