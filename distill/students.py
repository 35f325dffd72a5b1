"""Students of the distillation recipe, chosen by ``student.kind`` (:data:`student_resolver`).

* ``qrh``: the QRH model of ``experts.qrh``, trained from scratch on a kept vocabulary (the most
  frequent tokenizer ids + one "unknown" id); the teacher's top-k are over that vocabulary.
* ``hf``: a pretrained Hugging Face causal LM (default Qwen2.5-Coder-0.5B) sharing the teacher's
  tokenizer, trained in full or through LoRA adapters (``student.lora: {r, alpha, targets,
  layers}``, via peft). Its vocabulary is the tokenizer's; the teacher's top-k are full-vocabulary
  log-probabilities (:mod:`distill.capture`).

Both give the recipe the same interface, so the KD / alignment / resistance-weighted losses,
samplers, curriculum, temperature schedule and multi-view aggregation are shared:

    >>> student = student_resolver.make("hf", cfg=cfg, settings=settings, kept=None)
    >>> logits, hidden = student(ids)                         # (B, T, V), (B, T, C)
    >>> s_kd, t_kd = student.kd_view(logits, t_idx, t_val, temperature=2.0)

KD over a top-k teacher (``kd_view``): QRH scatters the teacher's k logits into a dense
vocabulary-sized row (``-inf`` elsewhere). For a 150k-token vocabulary that row would be most of
the memory, so the hf student collapses instead: the k teacher ids, plus one "rest" class holding
all the other student probability mass. At temperature T the rest logit is
``T * logsumexp(z_rest / T)``, so ``softmax(view / T)`` is exactly the tempered full distribution
with the non-top-k mass summed. The teacher's view is its k log-probabilities plus its own rest mass
(known, since the capture keeps full-vocabulary log-probabilities), so KD compares two (k + 1)-class
distributions exactly at T = 1 (at other temperatures the teacher's rest is tempered as one class).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from core.resolver import Resolver

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)


class Student(nn.Module):
    """Base class: a trainable language model plus what the recipe needs around it.

    Attributes:
        vocab_size: size of the output layer; hidden_size: width of ``hidden`` (alignment heads).
        kd_ignore_classes: student classes the teacher never covers (dropped from the KD term).
        uses_kept_vocabulary: whether the data must build a kept vocabulary (QRH) or not (hf).
    """

    kd_ignore_classes: tuple[int, ...] = ()
    uses_kept_vocabulary = False
    description = "student"

    def to_student_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        return token_ids

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def kd_view(self, logits, t_idx, t_val, temperature: float):
        raise NotImplementedError

    def base_model_context(self):
        """Context in which the student behaves as its untrained base (LoRA off); None if it has none."""
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class QRHStudent(Student):
    """The QRH model (``cfg["model"]``) on the kept vocabulary ``kept``."""

    name = "qrh"
    kd_ignore_classes = (0,)  # the "unknown" id
    uses_kept_vocabulary = True
    description = "QRH student"

    def __init__(self, *, cfg: dict, settings: Settings, kept: torch.Tensor):
        super().__init__()
        from experts.qrh import QRHConfig, QRHModel

        mc = dict(cfg["model"])
        mc["max_seq_len"] = max(mc.get("max_seq_len", 128), cfg["data"]["seq_len"])
        self.model = QRHModel(QRHConfig.from_dict(mc))
        self.model.set_vocabulary(kept)
        self.vocab_size, self.hidden_size = self.model.config.vocab_size, self.model.config.d_model

    def forward(self, ids, return_hidden: bool = False):
        return self.model(ids, return_hidden=return_hidden)

    def to_student_ids(self, token_ids):
        return self.model.to_student_ids(token_ids)

    def kd_view(self, logits, t_idx, t_val, temperature):
        from distill.recipe import sparse_to_dense

        return logits, sparse_to_dense(t_idx, t_val, self.vocab_size)

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    def save(self, directory: Path) -> None:
        self.model.save_pretrained(directory)

    def load(self, directory: Path) -> None:
        from experts.qrh import QRHModel

        self.model.load_state_dict(QRHModel.from_pretrained(directory).state_dict())


def collapse_topk(logits: torch.Tensor, idx: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, T, V) student logits -> (B, T, k + 1): the logits at the teacher's ids ``idx`` (B, T, k)
    and a "rest" logit ``T * logsumexp(z_rest / T)`` for every other id (see the module docstring)."""
    z = logits.float()
    T = float(temperature)
    top = z.gather(-1, idx.long())  # (B, T, k)
    lse_all = torch.logsumexp(z / T, -1, keepdim=True)
    lse_top = torch.logsumexp(top / T, -1, keepdim=True)
    frac_top = torch.exp(lse_top - lse_all).clamp(max=1 - 1e-6)
    rest = T * (lse_all + torch.log1p(-frac_top))
    return torch.cat([top, rest], -1)


class HFStudent(Student):
    """A pretrained causal LM, full fine-tuning or LoRA.

    Config (``cfg["student"]``): ``name`` (model-store name or folder, default the teacher's
    tokenizer source), ``dtype`` (float32), ``lora`` (null = full fine-tuning, or ``{r, alpha,
    targets, dropout, layers}`` where ``layers`` is a list of layer indices or an int n = the last n
    layers: backward then stops below them, the cheap option on a CPU).
    """

    name = "hf"
    description = "pretrained student"

    def __init__(self, *, cfg: dict, settings: Settings, kept: Any = None, model: Any = None):
        super().__init__()
        from transformers import AutoModelForCausalLM

        from distill.teachers import resolve_model_folder

        sc = cfg["student"]
        self._base_name = sc["name"]
        self.folder = resolve_model_folder(settings, sc["name"]) if model is None else None
        base = model or AutoModelForCausalLM.from_pretrained(str(self.folder), dtype=getattr(torch, sc["dtype"]))
        self.lora_cfg = sc.get("lora")
        if self.lora_cfg:
            from peft import LoraConfig, get_peft_model

            lc = self.lora_cfg
            n_layers = base.config.num_hidden_layers
            layers = lc.get("layers")
            if isinstance(layers, int):
                layers = list(range(n_layers - layers, n_layers))
            config = LoraConfig(r=int(lc.get("r", 8)), lora_alpha=float(lc.get("alpha", 16)),
                                target_modules=list(lc.get("targets") or ["q_proj", "v_proj"]),
                                lora_dropout=float(lc.get("dropout", 0.0)), layers_to_transform=layers,
                                task_type="CAUSAL_LM")
            self.model = get_peft_model(base, config)
            self.first_trained_layer = min(layers) if layers else 0
        else:
            self.model = base
            self.first_trained_layer = 0
        self.vocab_size = base.get_output_embeddings().weight.shape[0]
        self.hidden_size = base.config.hidden_size
        self.description = "LoRA student" if self.lora_cfg else "fine-tuned student"

    def forward(self, ids, return_hidden: bool = False):
        out = self.model(input_ids=ids, output_hidden_states=return_hidden, use_cache=False)
        return (out.logits, out.hidden_states[-1]) if return_hidden else out.logits

    def kd_view(self, logits, t_idx, t_val, temperature):
        """The teacher's k log-probabilities plus its own rest mass ``log(1 - sum p_k)`` (the capture keeps
        full-vocabulary log-probs, so the rest is known): the student is not pushed to give the tokens
        outside the teacher's top-k zero probability, which would blow up its perplexity on them."""
        t = t_val.float()
        rest = torch.log1p(-t.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
        return collapse_topk(logits, t_idx, temperature), torch.cat([t, rest], -1)

    def base_model_context(self):
        return self.model.disable_adapter() if self.lora_cfg else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, directory: Path) -> None:
        """LoRA: the adapter (``adapter_model.safetensors`` + ``adapter_config.json``); full: the model."""
        self.model.save_pretrained(str(directory), safe_serialization=True)
        if self.lora_cfg:  # name the base by its store name, not a path on this machine
            p = Path(directory) / "adapter_config.json"
            conf = json.loads(p.read_text())
            conf["base_model_name_or_path"] = self.base_name
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(conf, indent=2))
            tmp.replace(p)

    @property
    def base_name(self) -> str:
        """The base model as the config names it (a model-store name such as ``qwen-0.5b``)."""
        return str(self._base_name)

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        d = Path(directory)
        if self.lora_cfg:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(str(d / "adapter_model.safetensors")))
        else:
            from transformers import AutoModelForCausalLM

            self.model.load_state_dict(AutoModelForCausalLM.from_pretrained(str(d)).state_dict())


student_resolver: Resolver[Student] = Resolver(Student, [QRHStudent, HFStudent], suffix="student", default="qrh",
                                               kind="student")
