"""The Ollama stand-in's engine: a model created from a GGUF answers through llama.cpp
(``llama-cpp-python``), the engine Ollama itself runs.

The prompt is built the way Ollama builds it: the model's TEMPLATE rendered by Go's
real ``text/template`` (tests/gotmpl), the model's SYSTEM used when the request has none,
then tokenised with special tokens parsed and BOS added as the GGUF says. Generation
honours the model's ``stop`` parameters and the request's options; temperature 0 is greedy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from tests.gotmpl import render


@dataclass
class Answer:
    pieces: list[str]
    reason: str  # stop | length
    prompt_tokens: int


class LlamaRunner:
    """Loads each GGUF once (keyed by its blob path) and answers chat/generate requests."""

    def __init__(self, n_ctx: int = 2048) -> None:
        self.n_ctx = n_ctx
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()  # one generation at a time, like a single Ollama runner
        self.prompts: list[str] = []  # every prompt rendered, for tests to inspect

    def _llama(self, path: str):
        from llama_cpp import Llama

        if path not in self._models:
            self._models[path] = Llama(model_path=path, n_ctx=self.n_ctx, n_threads=2, seed=0, verbose=False)
        return self._models[path]

    def prompt_for(self, model, body: dict[str, Any], chat: bool) -> str:
        if not chat:
            if body.get("raw"):
                return body.get("prompt") or ""
            messages = [{"role": "user", "content": body.get("prompt") or ""}]
            system = body.get("system") or model.system
        else:
            messages = [{"role": m.get("role", "user"), "content": m.get("content") or ""}
                        for m in body.get("messages") or []]
            system = model.system
        return render(model.template or "{{ .Prompt }}", messages, system)

    def answer(self, model, body: dict[str, Any], chat: bool) -> Answer:
        gguf = next(p for n, p in model.files.items() if n.endswith(".gguf"))
        options = {**model.parameters, **(body.get("options") or {})}
        stop = options.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        limit = options.get("num_predict")
        limit = 128 if limit is None or limit < 0 else int(limit)
        prompt = self.prompt_for(model, body, chat)
        with self._lock:
            llm = self._llama(gguf)
            add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "true") != "false"
            tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
            self.prompts.append(prompt)
            if limit == 0:
                return Answer([], "length", len(tokens))
            pieces, reason = [], "length"
            for chunk in llm.create_completion(
                    prompt=tokens, max_tokens=limit, stop=stop or None, stream=True,
                    temperature=float(options.get("temperature", 0.8)),
                    top_p=float(options.get("top_p", 0.9)),
                    top_k=int(options.get("top_k", 40)), seed=int(options.get("seed", 0))):
                choice = chunk["choices"][0]
                if choice.get("text"):
                    pieces.append(choice["text"])
                if choice.get("finish_reason"):
                    reason = "stop" if choice["finish_reason"] == "stop" else "length"
        return Answer(pieces, reason, len(tokens))
