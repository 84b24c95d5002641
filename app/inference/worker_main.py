"""One model worker: a local model behind an OpenAI-compatible HTTP server.

Started by the worker pool as ``python -m app.inference.worker_main CONFIG.json``. The
model runs on LLaMA-Factory's ``ChatModel`` (the engine of ``llamafactory-cli api``;
huggingface, vllm or sglang backend). The server is ours rather than LLaMA-Factory's
because the arena needs three things that one does not give: per-request seeds (replay),
a true finish reason ("length" when the token budget ran out) and stopping at the
model's declared EOS like a deployment does. It also reports its own speed and memory
and exits by itself once idle, so a worker outlives a crashed app by minutes at most.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool


class Stats:
    """Requests served and the speed of the last answers, for the pool's status view."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.requests = 0
        self.last_used = time.time()
        self.recent: deque[tuple[int, float]] = deque(maxlen=8)  # (tokens, seconds)

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        with self.lock:
            self.in_flight += 1
            self.requests += 1
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1
                self.last_used = time.time()

    def record(self, tokens: int, seconds: float) -> None:
        with self.lock:
            self.recent.append((tokens, seconds))

    def tokens_per_s(self) -> float | None:
        with self.lock:
            tokens = sum(t for t, _ in self.recent)
            seconds = sum(s for _, s in self.recent)
        return round(tokens / seconds, 2) if seconds > 0 and tokens else None


def memory_bytes() -> dict[str, int | None]:
    """Resident memory of this process, and GPU memory held by torch if it uses a GPU."""
    rss = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    gpu = None
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gpu = int(torch.cuda.memory_reserved())
    return {"rss_bytes": rss, "gpu_bytes": gpu}


class Worker:
    """The loaded model and how to answer with it."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch
        from llamafactory.chat import ChatModel

        from app.inference.eos import stop_at_declared_eos

        if config.get("threads"):
            torch.set_num_threads(int(config["threads"]))
        fraction = config.get("memory_fraction")
        if fraction and torch.cuda.is_available() and config["lf_args"].get("infer_backend") == "huggingface":
            torch.cuda.set_per_process_memory_fraction(float(fraction), 0)
        self.config = config
        self.name = config["served_name"]
        self.model = ChatModel(dict(config["lf_args"]))
        stop_at_declared_eos(self.model.engine, Path(config["lf_args"]["model_name_or_path"]))
        self.tokenizer = self.model.engine.tokenizer
        self.seeded = threading.Lock()
        self.stats = Stats()

    def answer(self, body: dict[str, Any]) -> Iterator[str | dict[str, Any]]:
        """Text pieces, then {"finish_reason", "usage"}."""
        messages = [dict(m) for m in body.get("messages") or []]
        system = None
        if messages and messages[0].get("role") == "system":
            system = messages.pop(0).get("content") or None
        temperature = float(body.get("temperature", 0.7) if body.get("temperature") is not None else 0.7)
        budget = int(body.get("max_tokens") or 256)
        kwargs: dict[str, Any] = {"max_new_tokens": budget, "do_sample": temperature > 0}
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(body.get("top_p") or 1.0))
        seed = body.get("seed")
        seeded = seed is not None and temperature > 0
        pieces: list[str] = []
        started = time.monotonic()
        # Sampling draws from torch's one global generator: a seeded answer is only the same
        # again if nothing else samples while it is written, so those go one at a time.
        with self.stats.request(), (self.seeded if seeded else contextlib.nullcontext()):
            if seeded:
                from transformers import set_seed

                set_seed(int(seed))
            for piece in self.model.stream_chat(messages, system=system, **kwargs):
                pieces.append(piece)
                yield piece
        used = len(self.tokenizer.encode("".join(pieces), add_special_tokens=False))
        self.stats.record(used, time.monotonic() - started)
        yield {"finish_reason": "length" if used >= budget else "stop",
               "usage": {"completion_tokens": used}}

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"model": self.name, "pid": os.getpid(), "requests": s.requests, "in_flight": s.in_flight,
                "idle_s": round(time.time() - s.last_used, 1), "tokens_per_s": s.tokens_per_s(),
                "backend": self.config["lf_args"].get("infer_backend"), **memory_bytes()}


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None,
           usage: dict[str, Any] | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                               "model": model, "choices": [choice]}
    if usage:
        payload["usage"] = usage
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _check_turns(messages: Any) -> str | None:
    """Why this chat cannot be answered, or None: user/assistant turns ending with the user."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list"
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    if any(not isinstance(m, dict) or not isinstance(m.get("content"), str) for m in messages):
        return "every message needs a role and text content"
    if messages[0].get("role") == "system" and any(m.get("role") == "system" for m in messages[1:]):
        return "only the first message may be a system message"
    roles = [m.get("role") for m in turns]
    if not roles or any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles)) \
            or roles[-1] != "user":
        return "turns must alternate user/assistant and end with the user"
    return None


def build_app(worker: Worker) -> FastAPI:
    api = FastAPI(title="Forgeloop model worker")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message}}, status_code=status)

    @api.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": worker.name, "object": "model", "owned_by": "forgeloop"}]}

    @api.get("/health")
    def health() -> dict[str, Any]:
        return worker.status()

    @api.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object")
        if body.get("model") != worker.name:
            return error(404, f"this worker serves {worker.name!r}, not {body.get('model')!r}")
        if why := _check_turns(body.get("messages")):
            return error(400, why)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        if not body.get("stream"):
            def whole() -> dict[str, Any]:
                parts = list(worker.answer(body))
                end = parts.pop()
                return {"id": cid, "object": "chat.completion", "model": worker.name, "usage": end["usage"],
                        "choices": [{"index": 0, "finish_reason": end["finish_reason"],
                                     "message": {"role": "assistant", "content": "".join(parts)}}]}

            return await run_in_threadpool(whole)

        def events() -> Iterator[str]:
            yield _chunk(cid, worker.name, {"role": "assistant", "content": ""})
            for part in worker.answer(body):
                if isinstance(part, str):
                    if part:
                        yield _chunk(cid, worker.name, {"content": part})
                else:
                    yield _chunk(cid, worker.name, {}, part["finish_reason"], part["usage"])
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return api


def idle_watch(worker: Worker, server: Any, idle_s: float) -> None:
    """Ask the server to stop once no request has come for ``idle_s`` seconds."""
    while not server.should_exit:
        time.sleep(min(5.0, idle_s / 4))
        s = worker.stats
        with s.lock:
            idle = s.in_flight == 0 and time.time() - s.last_used > idle_s
        if idle:
            print(f"idle for {idle_s:.0f} s: stopping", flush=True)
            server.should_exit = True


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    import uvicorn

    worker = Worker(config)
    server = uvicorn.Server(uvicorn.Config(build_app(worker), host=config.get("host", "127.0.0.1"),
                                           port=int(config["port"]), log_level="warning"))
    if config.get("idle_s"):
        watch = (worker, server, float(config["idle_s"]))
        threading.Thread(target=idle_watch, args=watch, daemon=True).start()
    print(f"worker for {worker.name} listening on port {config['port']}", flush=True)
    server.run()
    # torch's native threads can abort the interpreter's teardown: leave without it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
