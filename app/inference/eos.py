"""Stopping where the model's own EOS ends the text, as deployments do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


def declared_eos_ids(model_dir: Path) -> list[int]:
    """The EOS ids the model's own config declares (generation_config.json, else config.json)."""
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((model_dir / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if value is not None:
            return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int)]
    return []


def stop_at_declared_eos(engine: Any, model_dir: Path) -> None:
    """Also stop where the model's own EOS ends the text. LLaMA-Factory stops at its
    template's end-of-turn word, which for templates like chatml replaces the tokenizer's
    EOS; llama.cpp, Ollama and vLLM all stop at the declared EOS as well, so the arena stops
    there too and judges exactly what a deployment serves."""
    template, tokenizer = getattr(engine, "template", None), getattr(engine, "tokenizer", None)
    if template is None or tokenizer is None:
        return
    words = [tokenizer.convert_ids_to_tokens(i) for i in declared_eos_ids(model_dir)]
    extra = [w for w in words if w and w not in template.stop_words]
    if extra:  # a copy: LLaMA-Factory's template objects are shared
        engine.template = dataclasses.replace(template, stop_words=[*template.stop_words, *extra])
