"""``benchmarks/distill_mc.py`` scores the base and its adapters in the Qwen family's dev-set prompt format (the one
``benchmarks/answer_quality.py`` uses for the fleet), and says so when no choice has been made yet."""

from __future__ import annotations

import json

import pytest

from benchmarks.answer_quality import formats_file
from benchmarks.distill_mc import qwen_format
from core.settings import Settings


def _choice(settings: Settings, family: dict[str, str]) -> None:
    path = formats_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"family": family, "dev": {}}))


def test_no_dev_choice_is_a_clear_stop(tmp_path):
    settings = Settings(home=tmp_path)
    with pytest.raises(SystemExit, match="--stage dev"):
        qwen_format(settings)


@pytest.mark.parametrize(("choice", "chat"), [("letter-chat", True), ("letter-raw", False)])
def test_the_qwen_family_choice_is_used(tmp_path, choice, chat):
    settings = Settings(home=tmp_path)
    _choice(settings, {"qwen": choice, "smollm2": "cloze-raw"})
    fmt = qwen_format(settings)
    assert (fmt.form, fmt.chat) == ("letter", chat)


def test_a_cloze_choice_is_refused_with_the_reason(tmp_path):
    settings = Settings(home=tmp_path)
    _choice(settings, {"qwen": "cloze-chat"})
    with pytest.raises(SystemExit, match="letter forms only"):
        qwen_format(settings)
