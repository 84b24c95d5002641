"""Chat engines for registered models, loaded lazily and cached.

Local models (a base plus optional adapters) are served in-process by
LLaMA-Factory's ``ChatModel`` with the huggingface backend. Loading one imports
torch, so nothing here touches torch until the first chat.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from app.registry import check_model_files
from app.tables import ModelVersion


@dataclass(frozen=True)
class GenSettings:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    system_prompt: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sampling_kwargs(self) -> dict[str, Any]:
        do_sample = self.temperature > 0
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": do_sample}
        if do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


class ChatCache:
    """Keeps up to ``capacity`` loaded models, evicting the least recently used."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._models: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def _load(self, mv: ModelVersion):
        from llamafactory.chat import ChatModel

        check_model_files(mv)
        args: dict[str, Any] = {
            "model_name_or_path": mv.base_path,
            "template": mv.template,
            "infer_backend": "huggingface",
            "trust_remote_code": False,
        }
        if mv.adapter_path:
            args["adapter_name_or_path"] = mv.adapter_path
            args["finetuning_type"] = "lora"
        return ChatModel(args)

    def get(self, mv: ModelVersion):
        with self._lock:
            if mv.id in self._models:
                self._models.move_to_end(mv.id)
                return self._models[mv.id]
            engine = self._load(mv)
            self._models[mv.id] = engine
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return engine

    def loaded(self) -> list[int]:
        return list(self._models)

    def unload(self, model_id: int) -> bool:
        with self._lock:
            return self._models.pop(model_id, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def stream(
        self, mv: ModelVersion, messages: list[dict[str, str]], gen: GenSettings
    ) -> Iterator[str]:
        """Yield text pieces of the model's answer to ``messages``."""
        engine = self.get(mv)
        yield from engine.stream_chat(
            messages, system=gen.system_prompt or None, **gen.sampling_kwargs()
        )

    def complete(self, mv: ModelVersion, messages: list[dict[str, str]], gen: GenSettings) -> str:
        return "".join(self.stream(mv, messages, gen))
