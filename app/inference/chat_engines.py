"""Chat engines for registered models.

Local models (a base plus optional adapters) are served in-process by LLaMA-Factory's
``ChatModel`` (huggingface backend, or vllm where installed) and kept in an LRU cache
bounded by count and by an estimate of their memory. Ollama and OpenAI-compatible
models are reached over HTTP (``remote_engines``). Nothing here imports torch until
the first local chat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import EngineError
from app.core.tables import ModelVersion
from app.inference.generation import Finish, GenSettings
from app.models.registry import check_model_files, model_system_prompt

if TYPE_CHECKING:
    from app.core.workbench import Workbench

REMOTE_KINDS = ("ollama", "openai")


def estimate_bytes(mv: ModelVersion) -> int:
    """Weights on disk approximate memory once loaded (same dtype); Hub ids count as 0."""
    total = 0
    for folder in [mv.base_path, *filter(None, (mv.adapter_path or "").split(","))]:
        p = Path(folder)
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.glob("*.safetensors"))
            total += sum(f.stat().st_size for f in p.glob("*.bin"))
    return total


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


class LocalEngine:
    """A LLaMA-Factory ChatModel with token counting for the finish reason."""

    def __init__(self, mv: ModelVersion, device_lock: threading.Semaphore,
                 seeded_lock: threading.Lock | None = None) -> None:
        from llamafactory.chat import ChatModel

        check_model_files(mv)
        args: dict[str, Any] = {
            "model_name_or_path": mv.base_path,
            "template": mv.template,
            "infer_backend": "vllm" if importlib.util.find_spec("vllm") else "huggingface",
            "trust_remote_code": False,
        }
        if mv.adapter_path:
            args["adapter_name_or_path"] = mv.adapter_path
            args["finetuning_type"] = "lora"
        self.model = ChatModel(args)
        stop_at_declared_eos(self.model.engine, Path(mv.base_path))
        self.size = estimate_bytes(mv)
        self._slots = device_lock
        self._seeded = seeded_lock or threading.Lock()
        # The version's own system prompt; ChatCache.engine refreshes it on every use.
        self.system_prompt = model_system_prompt(mv)

    def system_for(self, gen: GenSettings) -> str | None:
        """The request's system prompt, else the model's; None lets LLaMA-Factory use the
        template's default system prompt, as in training."""
        return gen.system_prompt or self.system_prompt or None

    def close(self) -> None:
        """Stop ChatModel's background event loop so the weights can be freed."""
        loop = getattr(self.model, "_loop", None)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self.model = None

    def stream(self, messages: list[dict[str, str]], gen: GenSettings) -> Iterator[str | Finish]:
        pieces = []
        seeded = gen.seed is not None and gen.temperature > 0
        # Sampling draws from torch's one global generator: a seeded answer is only the
        # same again if nothing else samples while it is written, so those go one at a time.
        with self._slots, (self._seeded if seeded else contextlib.nullcontext()):
            if seeded:
                from transformers import set_seed

                set_seed(gen.seed)
            for piece in self.model.stream_chat(messages, system=self.system_for(gen),
                                                **gen.sampling_kwargs()):
                pieces.append(piece)
                yield piece
        tokenizer = self.model.engine.tokenizer
        used = len(tokenizer.encode("".join(pieces), add_special_tokens=False))
        yield Finish("length" if used >= gen.max_new_tokens else "stop")


class ChatCache:
    """Engines for models; local ones stay loaded, least recently used evicted first."""

    def __init__(self, capacity: int = 3, budget_bytes: float = 8 * 2**30, parallel: int = 2) -> None:
        self.capacity = capacity
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[int, LocalEngine] = OrderedDict()
        self._lock = threading.Lock()
        # Two slots so both sides of a battle generate together, never more.
        self._slots = threading.Semaphore(parallel)
        # Seeded sampling needs torch's global generator to itself (LocalEngine.stream).
        self._seeded = threading.Lock()

    def engine(self, mv: ModelVersion):
        if mv.kind in REMOTE_KINDS:
            return self._remote(mv)
        with self._lock:
            if mv.id in self._models:
                self._models.move_to_end(mv.id)
                engine = self._models[mv.id]
                engine.system_prompt = model_system_prompt(mv)  # edited since it was loaded
                return engine
            engine = LocalEngine(mv, self._slots, self._seeded)
            self._models[mv.id] = engine
            self._evict(keep=mv.id)
            return engine

    def _evict(self, keep: int) -> None:
        while len(self._models) > 1 and (
            len(self._models) > self.capacity
            or sum(e.size for e in self._models.values()) > self.budget_bytes
        ):
            oldest = next(iter(self._models))
            if oldest == keep:
                break
            self._models.pop(oldest).close()

    @staticmethod
    def _remote(mv: ModelVersion):
        from app.inference.remote_engines import OllamaEngine, OpenAIEngine

        endpoint = (mv.meta or {}).get("endpoint")
        if not endpoint:
            raise EngineError(f"model {mv.name!r} has no endpoint URL")
        system = model_system_prompt(mv)
        if mv.kind == "ollama":
            return OllamaEngine(endpoint, mv.base_path, system_prompt=system)
        return OpenAIEngine(endpoint, mv.base_path, api_key=(mv.meta or {}).get("api_key"),
                            system_prompt=system)

    def loaded(self) -> list[dict[str, Any]]:
        return [{"model_id": k, "bytes": e.size} for k, e in self._models.items()]

    def unload(self, model_id: int) -> bool:
        with self._lock:
            engine = self._models.pop(model_id, None)
        if engine is not None:
            engine.close()
        return engine is not None

    def close(self) -> None:
        self.clear()

    def clear(self) -> None:
        with self._lock:
            engines, self._models = list(self._models.values()), OrderedDict()
        for engine in engines:
            engine.close()

    def stream(self, mv: ModelVersion, messages: list[dict[str, str]], gen: GenSettings) -> Iterator[str]:
        """Text pieces only (the finish reason dropped)."""
        for piece in self.engine(mv).stream(messages, gen):
            if isinstance(piece, str):
                yield piece

    def complete(self, mv: ModelVersion, messages: list[dict[str, str]], gen: GenSettings) -> str:
        return "".join(self.stream(mv, messages, gen))


def chat_cache(wb: Workbench) -> ChatCache:
    """The workbench's cache of loaded chat models."""
    s = wb.settings
    return wb.service(ChatCache, lambda _: ChatCache(s.chat_cache_models, s.chat_cache_gib * 2**30))
