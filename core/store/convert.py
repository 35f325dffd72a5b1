"""GGUF -> Hugging Face safetensors folder, done once per model (direct GGUF loading costs minutes each time)."""

from __future__ import annotations

from pathlib import Path


def gguf_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint to float32 and save model + tokenizer as safetensors in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
