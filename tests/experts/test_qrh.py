"""QRH student: causality, FFT == direct convolution, quaternion == Hamilton matrix, sizes, I/O."""

import pytest
import torch

from experts.qrh import (
    PrimeHarmonicEmbedding,
    QRHConfig,
    QRHModel,
    QuaternionLinear,
    SpectralMixing,
    first_primes,
)

TINY = dict(vocab_size=99, d_model=32, n_layers=2, n_heads=4, max_seq_len=16)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("mixer", ["spectral", "attention"])
@pytest.mark.parametrize("embedding", ["prime", "learned"])
def test_causal_no_information_from_future(mixer, embedding):
    model = QRHModel(QRHConfig(**TINY, mixer=mixer, embedding=embedding)).eval()
    x = torch.randint(0, 99, (2, 16))
    x2 = x.clone()
    x2[:, 10:] = torch.randint(0, 99, (2, 6))  # perturb the future
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    assert torch.allclose(y[:, :10], y2[:, :10], atol=1e-5)
    assert not torch.allclose(y[:, 10:], y2[:, 10:], atol=1e-3)


def test_causal_gradient_does_not_reach_the_past():
    mix = SpectralMixing(QRHConfig(**TINY))
    u = torch.randn(1, 16, 32, requires_grad=True)
    mix.mix(u)[0, 5].sum().backward()
    assert u.grad[0, 6:].abs().max() < 1e-6  # FFT round-off only
    assert u.grad[0, :6].abs().max() > 0


def test_causal_fft_mixing_equals_direct_convolution():
    mix = SpectralMixing(QRHConfig(**TINY))
    with torch.no_grad():
        mix.gain.normal_()
        mix.phase_slope.normal_()
    T, C, H = 13, 32, 4
    u = torch.randn(2, T, C, dtype=torch.float32)
    k = mix.kernel(T).repeat_interleave(C // H, 0)  # (C, T)
    ref = torch.zeros_like(u)
    for t in range(T):
        for tau in range(t + 1):
            ref[:, t] += k[:, tau] * u[:, t - tau]
    assert torch.allclose(mix.mix(u), ref, atol=1e-5)


def test_global_fft_mixing_equals_circular_convolution():
    mix = SpectralMixing(QRHConfig(**TINY, causal=False))
    with torch.no_grad():
        mix.gain.normal_()
    T, C, H = 12, 32, 4
    u = torch.randn(2, T, C)
    k = torch.fft.irfft(mix.filter(T // 2 + 1), n=T).repeat_interleave(C // H, 0)  # (C, T)
    ref = torch.zeros_like(u)
    for t in range(T):
        for tau in range(T):
            ref[:, t] += k[:, tau] * u[:, (t - tau) % T]
    assert torch.allclose(mix.mix(u), ref, atol=1e-5)


def test_quaternion_layer_equals_explicit_hamilton_product():
    q = QuaternionLinear(8, 12, bias=True)
    with torch.no_grad():
        q.bias.normal_()
    x = torch.randn(5, 8)
    a, b, c, d = x.chunk(4, dim=-1)
    r, i, j, k = q.r, q.i, q.j, q.k
    mm = lambda w, v: v @ w.T  # noqa: E731
    # (r + iI + jJ + kK)(a + bI + cJ + dK), component by component
    out = torch.cat([
        mm(r, a) - mm(i, b) - mm(j, c) - mm(k, d),
        mm(i, a) + mm(r, b) - mm(k, c) + mm(j, d),
        mm(j, a) + mm(k, b) + mm(r, c) - mm(i, d),
        mm(k, a) - mm(j, b) + mm(i, c) + mm(r, d),
    ], dim=-1) + q.bias
    assert torch.allclose(q(x), out, atol=1e-6)
    dense = torch.nn.Linear(8, 12)
    with torch.no_grad():
        dense.weight.copy_(q.weight())
        dense.bias.copy_(q.bias)
    assert torch.allclose(dense(x), q(x), atol=1e-6)


def test_quaternion_has_quarter_of_dense_weights():
    q, d = QuaternionLinear(32, 64, bias=False), torch.nn.Linear(32, 64, bias=False)
    assert sum(p.numel() for p in q.parameters()) * 4 == sum(p.numel() for p in d.parameters()) == 2048


def test_model_parameter_counts():
    cfgs = {k: QRHConfig(**TINY, linear=k) for k in ("quaternion", "dense")}
    n = {k: QRHModel(c).num_parameters() for k, c in cfgs.items()}
    C, F, L, V, P = 32, 128, 2, 99, 100
    emb = P * C + C
    head = C * V
    norms = 2 * C * (2 * L + 1)
    spectral_extra = L * (4 * 17 + 4 + C)  # gains (H, L+1), phase slope (H), skip (C)
    biases = L * (2 * C + C + F + C)  # in_proj, out_proj, up, down
    dense_w = L * (C * 2 * C + C * C + C * F + F * C)
    assert n["dense"] == emb + head + norms + spectral_extra + biases + dense_w
    assert n["quaternion"] == emb + head + norms + spectral_extra + biases + dense_w // 4


def test_prime_harmonic_features_match_formula():
    emb = PrimeHarmonicEmbedding(99, 32, n_primes=100)
    assert first_primes(5) == [2, 3, 5, 7, 11] and first_primes(100)[-1] == 541
    tok = torch.tensor([[7]])
    phi = (1 + 5**0.5) / 2
    import math

    want = [math.sin(math.pi * p * phi * 7 / 99) + math.cos(math.pi * p * phi * 7 / 99) for p in first_primes(100)]
    assert torch.allclose(emb.features(tok)[0, 0], torch.tensor(want), atol=1e-5)


def test_spectral_mixing_handles_longer_sequences_than_trained():
    mix = SpectralMixing(QRHConfig(**TINY))
    assert mix(torch.randn(1, 64, 32)).shape == (1, 64, 32)


def test_bad_config_names_the_allowed_values():
    with pytest.raises(ValueError, match="allowed"):
        QRHConfig(**{**TINY, "mixer": "lstm"})


def test_save_load_round_trip(tmp_path):
    model = QRHModel(QRHConfig(**TINY)).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    again = QRHModel.from_pretrained(tmp_path).eval()
    x = torch.randint(0, 99, (1, 10))
    assert torch.equal(model(x), again(x))
    assert again.generate(x, 3).shape == (1, 13)


def test_vocabulary_map_round_trip(tmp_path):
    model = QRHModel(QRHConfig(**TINY)).eval()
    kept = torch.arange(1000, 1000 + 98 * 3, 3)  # 98 kept tokenizer ids; student id 0 = unknown
    model.set_vocabulary(kept)
    tok = torch.tensor([[1000, 1003, 1004, 1291]])
    assert model.to_student_ids(tok).tolist() == [[1, 2, 0, 98]]
    assert model.to_token_ids(torch.tensor([1, 98])).tolist() == [1000, 1291]
    model.save_pretrained(tmp_path)
    again = QRHModel.from_pretrained(tmp_path)
    out = again.generate(tok, 4)
    assert out.shape == (1, 8) and torch.isin(out[0, 4:], kept).all()


def test_repetition_penalty_matches_the_plain_formula():
    model = QRHModel(QRHConfig(**TINY)).eval()
    x = torch.randint(1, 99, (2, 8))
    assert torch.equal(model.generate(x, 3), model.generate(x, 3, repetition_penalty=1.0))
    with torch.no_grad():
        logits = model(x)[:, -1].clone()  # (B, V)
    for b in range(2):
        for t in set(x[b].tolist()):  # every token in the context, once
            logits[b, t] = logits[b, t] / 2.0 if logits[b, t] > 0 else logits[b, t] * 2.0
    assert torch.equal(model.generate(x, 1, repetition_penalty=2.0)[:, -1], logits.argmax(-1))


def test_repetition_penalty_reduces_repeats_and_refuses_nonsense():
    model = QRHModel(QRHConfig(**TINY)).eval()
    x = torch.randint(1, 99, (1, 4))
    plain, penalised = model.generate(x, 12)[0, 4:], model.generate(x, 12, repetition_penalty=100.0)[0, 4:]
    assert penalised.unique().numel() >= plain.unique().numel()
    with pytest.raises(ValueError, match="repetition_penalty"):
        model.generate(x, 1, repetition_penalty=0.0)
