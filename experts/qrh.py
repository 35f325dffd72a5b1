"""The QRH student: a small causal language model built from three swappable parts.

Reading order (nanoGPT style): config, then the modules bottom-up, then the model and its I/O.

* **Prime-harmonic token embedding** (SPEC §4): a fixed feature vector per token id,
  ``psi_i(tok) = sin(pi * p_i * phi * tok / V) + cos(pi * p_i * phi * tok / V)`` over the first 100
  primes ``p_i`` (``phi`` the golden ratio, ``V`` the vocabulary size), followed by a learned
  projection to the model width. No ``V x C`` embedding table is learned.
* **Spectral token mixing**: channels are split into heads; each head convolves its channels over
  the sequence with a filter defined in the frequency domain, ``H(f) = softplus(g(f)) * exp(i * a *
  arctan(log(f + eps)))`` (learned gains ``g`` and log-phase slope ``a``). The convolution runs by FFT,
  O(T log T). The causal variant turns ``H`` into a kernel with taps only at lags ``0..T-1`` and
  convolves with zero padding to ``2T`` (no wrap-around, so no information from future tokens).
* **Quaternion linear layers**: weights are quaternions acting by the Hamilton product, which
  shares each real weight across four output/input blocks: 1/4 of a dense layer's weights.

Each part has a switch for ablations: ``embedding="learned"``, ``mixer="attention"`` (softmax
attention with rotary positions), ``linear="dense"``.

Example:
    >>> cfg = QRHConfig(vocab_size=99, d_model=32, n_layers=2, n_heads=4)
    >>> model = QRHModel(cfg)
    >>> logits = model(torch.randint(0, 99, (2, 16)))          # (B, T, V) = (2, 16, 99)
    >>> model.save_pretrained("ckpt"); QRHModel.from_pretrained("ckpt")
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GOLDEN_RATIO = (1 + 5**0.5) / 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class QRHConfig:
    vocab_size: int = 8192  # student vocabulary (a kept subset of the teacher's tokenizer)
    d_model: int = 256  # model width C; divisible by 4 (quaternions) and by n_heads
    n_layers: int = 4  # number of pre-norm blocks
    n_heads: int = 8  # heads of the token mixer (spectral filters or attention heads)
    ffn_mult: int = 4  # feed-forward width = ffn_mult * d_model
    n_primes: int = 100  # prime-harmonic features per token (first n primes)
    max_seq_len: int = 512  # longest context used in training (spectral mixing itself has no limit)
    dropout: float = 0.0
    causal: bool = True  # causal mixing (language modelling); False = global circular FFT mixing
    embedding: Literal["prime", "learned"] = "prime"  # prime-harmonic + projection, or a V x C table
    mixer: Literal["spectral", "attention"] = "spectral"  # FFT filter mixing, or softmax attention
    linear: Literal["quaternion", "dense"] = "quaternion"  # linear layers inside the blocks

    def __post_init__(self) -> None:
        if self.d_model % 4 or self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by 4 and by n_heads={self.n_heads}")
        for name, allowed in (("embedding", ("prime", "learned")), ("mixer", ("spectral", "attention")),
                              ("linear", ("quaternion", "dense"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; allowed: {', '.join(allowed)}")

    @classmethod
    def from_dict(cls, data: dict) -> QRHConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown QRHConfig keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)


def first_primes(n: int) -> list[int]:
    """The first ``n`` prime numbers (trial division; n is small)."""
    primes: list[int] = []
    k = 2
    while len(primes) < n:
        if all(k % p for p in primes if p * p <= k):
            primes.append(k)
        k += 1
    return primes


# ---------------------------------------------------------------------------------------- embeddings


class PrimeHarmonicEmbedding(nn.Module):
    """Fixed prime-harmonic features of the token id, then a learned projection: (B, T) -> (B, T, C)."""

    def __init__(self, vocab_size: int, d_model: int, n_primes: int = 100):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("primes", torch.tensor(first_primes(n_primes), dtype=torch.float64), persistent=False)
        self.proj = nn.Linear(n_primes, d_model)

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        # angle = pi * p_i * phi * tok / V, computed in float64: p_i * tok reaches ~1e6 rad
        angle = math.pi * GOLDEN_RATIO * idx.to(torch.float64)[..., None] * self.primes / self.vocab_size
        psi = torch.sin(angle) + torch.cos(angle)  # (B, T, P), values in [-sqrt2, sqrt2]
        return psi.to(self.proj.weight.dtype)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(idx))  # (B, T, C)


# ---------------------------------------------------------------------------------------- linear layers


class QuaternionLinear(nn.Module):
    """Linear map whose weight is a matrix of quaternions, applied by the Hamilton product.

    Input and output are split into four blocks (real, i, j, k). With weight components
    ``r, i, j, k`` of shape (out/4, in/4) the full (out, in) matrix is
    ``[[r,-i,-j,-k],[i,r,-k,j],[j,k,r,-i],[k,-j,i,r]]`` — 1/4 of the weights of a dense layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        if in_features % 4 or out_features % 4:
            raise ValueError(f"quaternion layers need sizes divisible by 4, got {in_features}->{out_features}")
        self.in_features, self.out_features = in_features, out_features
        shape = (out_features // 4, in_features // 4)
        # variance of a dense Kaiming-uniform layer with fan_in = in_features: each output sums 4 blocks
        bound = 1 / math.sqrt(in_features)
        self.r, self.i, self.j, self.k = (nn.Parameter(torch.empty(shape).uniform_(-bound, bound)) for _ in range(4))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def weight(self) -> torch.Tensor:
        r, i, j, k = self.r, self.i, self.j, self.k
        return torch.cat([
            torch.cat([r, -i, -j, -k], dim=1),
            torch.cat([i, r, -k, j], dim=1),
            torch.cat([j, k, r, -i], dim=1),
            torch.cat([k, -j, i, r], dim=1),
        ], dim=0)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)  # (..., in) -> (..., out)


def make_linear(kind: str, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    return QuaternionLinear(in_features, out_features, bias) if kind == "quaternion" else nn.Linear(
        in_features, out_features, bias)


# ---------------------------------------------------------------------------------------- token mixers


class SpectralMixing(nn.Module):
    """Multi-head FFT token mixing with a learned log-phase filter, gated (H3/Hyena style).

    ``u, g = in_proj(x)``; each head convolves its channels of ``u`` over time with its own filter;
    the result is gated by ``sigmoid(g)`` and projected back: (B, T, C) -> (B, T, C).
    """

    def __init__(self, cfg: QRHConfig):
        super().__init__()
        self.n_heads, self.causal = cfg.n_heads, cfg.causal
        self.n_grid = cfg.max_seq_len + 1  # gain grid: rfft bins of a length-2L signal
        self.gain = nn.Parameter(torch.zeros(cfg.n_heads, self.n_grid))  # softplus(0) = 0.69
        self.phase_slope = nn.Parameter(torch.ones(cfg.n_heads))
        # fixed per-head decay of the causal kernel, from short to long memory (multi-scale heads)
        self.register_buffer("decay", torch.logspace(-0.5, -3, cfg.n_heads), persistent=False)
        self.skip = nn.Parameter(torch.ones(cfg.d_model))
        self.in_proj = make_linear(cfg.linear, cfg.d_model, 2 * cfg.d_model)
        self.out_proj = make_linear(cfg.linear, cfg.d_model, cfg.d_model)

    def filter(self, n_bins: int) -> torch.Tensor:
        """Complex frequency response on ``n_bins`` rfft bins: (H, n_bins)."""
        gain = F.softplus(self.gain)
        if n_bins != self.n_grid:  # filters are resolution-free: resample the gain curve
            gain = F.interpolate(gain[None], size=n_bins, mode="linear", align_corners=True)[0]
        f = torch.linspace(0, 1, n_bins, device=gain.device)  # normalised frequency
        phase = self.phase_slope[:, None] * torch.atan(torch.log(f + 1e-3))  # log-phase, (H, n_bins)
        return torch.polar(gain, phase)

    def kernel(self, T: int) -> torch.Tensor:
        """Causal kernel with taps at lags 0..T-1: (H, T)."""
        k = torch.fft.irfft(self.filter(T + 1), n=2 * T)[:, :T]  # keep non-negative lags only
        lags = torch.arange(T, device=k.device, dtype=k.dtype)
        return k * torch.exp(-self.decay[:, None] * lags)

    def mix(self, u: torch.Tensor) -> torch.Tensor:
        """Per-head FFT convolution over time: (B, T, C) -> (B, T, C)."""
        B, T, C = u.shape
        H = self.n_heads
        x = u.transpose(1, 2).reshape(B, H, C // H, T)  # (B, H, C/H, T): a head's channels share a filter
        if self.causal:
            n = 2 * T  # zero padding: linear (not circular) convolution
            kf = torch.fft.rfft(self.kernel(T), n=n)  # (H, T+1), once per head
            y = torch.fft.irfft(torch.fft.rfft(x, n=n) * kf[:, None], n=n)[..., :T]
        else:
            y = torch.fft.irfft(torch.fft.rfft(x, n=T) * self.filter(T // 2 + 1)[:, None], n=T)
        return y.reshape(B, C, T).transpose(1, 2)  # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, g = self.in_proj(x).chunk(2, dim=-1)  # (B, T, C) each
        y = self.mix(u) + self.skip * u
        return self.out_proj(y * torch.sigmoid(g))


def _rotary(x: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding on (B, H, T, D)."""
    T, D = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
    ang = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * inv  # (T, D/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class SoftmaxAttention(nn.Module):
    """Standard multi-head softmax attention with rotary positions (the ablation of SpectralMixing)."""

    def __init__(self, cfg: QRHConfig):
        super().__init__()
        self.n_heads, self.causal = cfg.n_heads, cfg.causal
        self.qkv = make_linear(cfg.linear, cfg.d_model, 3 * cfg.d_model)
        self.out_proj = make_linear(cfg.linear, cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(_rotary(q), _rotary(k), v, is_causal=self.causal)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


# ---------------------------------------------------------------------------------------- blocks and model


class FeedForward(nn.Module):
    def __init__(self, cfg: QRHConfig):
        super().__init__()
        self.up = make_linear(cfg.linear, cfg.d_model, cfg.ffn_mult * cfg.d_model)
        self.down = make_linear(cfg.linear, cfg.ffn_mult * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + mix(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: QRHConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.mixer = SpectralMixing(cfg) if cfg.mixer == "spectral" else SoftmaxAttention(cfg)
        self.ffn = FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x)))
        return x + self.ffn(self.norm2(x))


class QRHModel(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V); optionally the final hidden states (B, T, C)."""

    def __init__(self, cfg: QRHConfig):
        super().__init__()
        self.config = cfg
        self.embed = (PrimeHarmonicEmbedding(cfg.vocab_size, cfg.d_model, cfg.n_primes)
                      if cfg.embedding == "prime" else nn.Embedding(cfg.vocab_size, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)  # dense: the output vocabulary
        nn.init.normal_(self.head.weight, std=0.02)
        if isinstance(self.embed, nn.Embedding):
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, idx: torch.Tensor, return_hidden: bool = False):
        x = self.drop(self.embed(idx))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        h = self.norm(x)  # (B, T, C)
        logits = self.head(h)  # (B, T, V)
        return (logits, h) if return_hidden else logits

    # ---- restricted vocabulary: student ids <-> tokenizer ids

    def set_vocabulary(self, token_ids: torch.Tensor) -> None:
        """Attach the tokenizer ids the student keeps: student id ``s`` <-> ``vocab_ids[s]``.

        ``token_ids`` are ``V - 1`` distinct tokenizer ids; student id 0 is reserved for unknown
        tokens (``vocab_ids[0] = -1``). Saved with the weights, so the checkpoint speaks the tokenizer.
        """
        ids = torch.as_tensor(token_ids, dtype=torch.long).sort().values
        if ids.numel() != self.config.vocab_size - 1 or ids.unique().numel() != ids.numel():
            raise ValueError(f"need {self.config.vocab_size - 1} distinct token ids, got {ids.numel()}")
        self.register_buffer("vocab_ids", torch.cat([torch.tensor([-1]), ids]))

    def to_student_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Tokenizer ids (any shape) -> student ids; ids outside the kept set map to 0 (unknown)."""
        if not hasattr(self, "vocab_ids"):
            return token_ids
        kept = self.vocab_ids[1:]
        pos = torch.searchsorted(kept, token_ids.contiguous()).clamp_max(kept.numel() - 1)
        return torch.where(kept[pos] == token_ids, pos + 1, torch.zeros_like(pos))

    def to_token_ids(self, student_ids: torch.Tensor) -> torch.Tensor:
        """Student ids -> tokenizer ids (identity without a vocabulary map)."""
        return self.vocab_ids[student_ids] if hasattr(self, "vocab_ids") else student_ids

    def num_parameters(self, exclude_head: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.head.weight.numel() if exclude_head else n

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None, repetition_penalty: float = 1.0) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to ``idx`` (B, T): greedy at temperature 0, else sampled.

        ``repetition_penalty`` > 1 (CTRL-style, as in HF ``generate``) divides the positive logits and
        multiplies the negative logits of every token already in the context; small students loop
        without it. With a vocabulary map (:meth:`set_vocabulary`) ``idx`` and the result are tokenizer ids.
        """
        if repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be positive (1.0 = off), got {repetition_penalty}")
        mapped = hasattr(self, "vocab_ids")
        idx = self.to_student_ids(idx)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.max_seq_len:])[:, -1]  # (B, V)
            if repetition_penalty != 1.0:
                seen = logits.gather(1, idx)  # (B, T): logits of the tokens in the context
                logits.scatter_(1, idx, torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty))
            if mapped:
                logits[:, 0] = float("-inf")  # never emit the unknown token
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return self.to_token_ids(idx)

    # ---- persistence: safetensors weights + JSON config (never pickle)

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / WEIGHTS_NAME))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> QRHModel:
        from safetensors.torch import load_file

        d = Path(directory)
        cfg = QRHConfig.from_dict(json.loads((d / CONFIG_NAME).read_text()))
        model = cls(cfg)
        state = load_file(str(d / WEIGHTS_NAME), device=map_location)
        if "vocab_ids" in state:
            model.set_vocabulary(state["vocab_ids"][1:])
        model.load_state_dict(state)
        return model
