"""Remote engines against real servers: our Ollama stub, a small scripted SSE server, and the real
``llamafactory-cli api`` serving the starter model (the slow tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from app.core.errors import EngineError
from app.inference import chat_engines, generation
from app.inference.generation import GenSettings
from app.inference.remote_engines import (
    Finish,
    OllamaEngine,
    OpenAIEngine,
    list_ollama_models,
    list_openai_models,
)
from tests.conftest import ServerThread, free_port
from tests.ollama_stub import OllamaStub

BASE = "llama3.2:1b"
PROMPT = "why is the sky blue"
EXPECTED = f"[{BASE}] blue sky the is why"
GREEDY = GenSettings(temperature=0.0, max_new_tokens=12)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run(engine: OllamaEngine | OpenAIEngine, messages: list[dict[str, str]],
        gen: GenSettings) -> tuple[list[str], Finish]:
    """All pieces, checking the stream ends with exactly one Finish."""
    out = list(engine.stream(messages, gen))
    assert out and isinstance(out[-1], Finish), out
    pieces = out[:-1]
    assert all(isinstance(p, str) for p in pieces), out
    return pieces, out[-1]


class Recorder:
    """ASGI wrapper that keeps (path, headers, JSON body) of every HTTP request."""

    def __init__(self, app: Any) -> None:
        self.app, self.requests = app, []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def recording_receive() -> dict:
            msg = await receive()
            if msg["type"] == "http.request":
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
                    self.requests.append((scope["path"], headers, json.loads(b"".join(chunks) or b"{}")))
            return msg

        await self.app(scope, recording_receive, send)

    def bodies(self, path: str) -> list[dict]:
        return [body for p, _, body in self.requests if p == path]


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens on a port just released


# -- Ollama ------------------------------------------------------------------------------------------------


@pytest.fixture
def stub() -> Iterator[OllamaStub]:
    s = OllamaStub(models=[BASE, "qwen2.5:0.5b"], chunk_delay=0.01)
    s.app = s.recorder = Recorder(s.app)  # ServerThread serves whatever .app is at __enter__
    with s:
        yield s


def test_ollama_streams_pieces_then_stop(stub: OllamaStub) -> None:
    gen = GenSettings(temperature=0.7, top_p=0.9, max_new_tokens=100)
    pieces, finish = run(OllamaEngine(stub.url, BASE), user(PROMPT), gen)
    assert len(pieces) == 6 and "".join(pieces) == EXPECTED
    assert finish == Finish("stop") and isinstance(finish, generation.Finish)  # the arena checks this
    options = stub.recorder.bodies("/api/chat")[-1]["options"]
    assert options == {"temperature": 0.7, "top_p": 0.9, "num_predict": 100}


def test_ollama_length_limit_and_greedy(stub: OllamaStub) -> None:
    engine = OllamaEngine(stub.url, BASE)
    pieces, finish = run(engine, user(PROMPT), GenSettings(temperature=0, max_new_tokens=3))
    assert "".join(pieces) == f"[{BASE}] blue sky"
    assert finish == Finish("length")
    options = stub.recorder.bodies("/api/chat")[-1]["options"]
    assert options["num_predict"] == 3 and options["temperature"] == 0


def test_ollama_system_prompt(stub: OllamaStub) -> None:
    engine = OllamaEngine(stub.url, BASE)
    run(engine, user(PROMPT), GenSettings(system_prompt="be terse"))
    own = [{"role": "system", "content": "mine"}, *user(PROMPT)]
    run(engine, own, GenSettings(system_prompt="be terse"))
    run(engine, user(PROMPT), GenSettings())
    sent = [b["messages"] for b in stub.recorder.bodies("/api/chat")]
    assert sent[0] == [{"role": "system", "content": "be terse"}, *user(PROMPT)]
    assert sent[1] == own  # an explicit system message wins, no second one is added
    assert sent[2] == user(PROMPT)


def test_a_served_models_own_system_prompt(stub: OllamaStub, wb) -> None:
    from app.models import registry

    mv = registry.register_remote_model(wb, "served", "ollama", stub.url, BASE)
    mv = registry.edit_model(wb, mv.id, system_prompt="model's own")
    cache = chat_engines.model_engines(wb)
    run(cache.engine(mv), user(PROMPT), GenSettings())
    run(cache.engine(mv), user(PROMPT), GenSettings(system_prompt="the chat's"))
    sent = [b["messages"][0] for b in stub.recorder.bodies("/api/chat")]
    assert sent == [{"role": "system", "content": "model's own"}, {"role": "system", "content": "the chat's"}]


def test_ollama_unknown_model(stub: OllamaStub) -> None:
    with pytest.raises(EngineError, match=r"model 'nope:7b' not found") as err:
        list(OllamaEngine(stub.url, "nope:7b").stream(user(PROMPT), GenSettings()))
    assert stub.url in str(err.value)


def test_ollama_unreachable() -> None:
    url = closed_url()
    with pytest.raises(EngineError, match=f"cannot reach Ollama at {url}"):
        list(OllamaEngine(url, BASE, timeout=5).stream(user(PROMPT), GenSettings()))
    with pytest.raises(EngineError, match="cannot reach Ollama"):
        list_ollama_models(url)


def test_list_ollama_models(stub: OllamaStub) -> None:
    assert sorted(list_ollama_models(stub.url)) == [BASE, "qwen2.5:0.5b"]


def test_ollama_engine_shared_by_threads(stub: OllamaStub) -> None:
    engine, results = OllamaEngine(stub.url, BASE), {}
    prompts = [f"question number {i} here" for i in range(4)]

    def ask(prompt: str) -> None:
        results[prompt] = run(engine, user(prompt), GenSettings())

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for p in prompts:
        pieces, finish = results[p]
        assert "".join(pieces) == " ".join([f"[{BASE}]", *reversed(p.split())]) and finish.reason == "stop"


# -- OpenAI-compatible, scripted server ---------------------------------------------------------------------


def scripted_app() -> FastAPI:
    """Chat completions whose behaviour is picked by the requested model name."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "length"}, {"id": "cut"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        model = (await request.json())["model"]
        if model == "refuse":
            return JSONResponse({"error": {"message": "no such model: refuse"}}, status_code=400)

        def event(delta: dict, reason: str | None = None) -> str:
            return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})

        lines = [": keep-alive", event({"role": "assistant", "content": ""}), event({"content": "Hel"}),
                 event({"content": "lo"})]
        if model == "length":
            lines += [event({}, "length"), "data: [DONE]"]
        return StreamingResponse((line + "\n\n" for line in lines), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(scripted_app())
    with ServerThread(recorder) as server:
        yield f"{server.url}/v1", recorder


def test_openai_payload_and_bearer(scripted: tuple[str, Recorder]) -> None:
    base, rec = scripted
    engine = OpenAIEngine(base + "/", "length", api_key="sk-abc")  # trailing slash is normalised
    gen = GenSettings(temperature=0, max_new_tokens=5, system_prompt="sys")
    pieces, finish = run(engine, user("hi"), gen)
    assert pieces == ["Hel", "lo"] and finish == Finish("length")
    path, headers, body = rec.requests[-1]
    assert path == "/v1/chat/completions" and headers["authorization"] == "Bearer sk-abc"
    assert body["stream"] is True and body["max_tokens"] == 5 and body["model"] == "length"
    assert body["temperature"] == 0 and "top_p" not in body  # greedy: no sampling knobs
    assert body["messages"] == [{"role": "system", "content": "sys"}, *user("hi")]

    run(OpenAIEngine(base, "length"), user("hi"), GenSettings(temperature=0.5, top_p=0.8))
    _, headers, body = rec.requests[-1]
    assert "authorization" not in headers and (body["temperature"], body["top_p"]) == (0.5, 0.8)


def test_openai_uses_the_models_own_system_prompt(scripted: tuple[str, Recorder]) -> None:
    base, rec = scripted
    engine = OpenAIEngine(base, "length", system_prompt="model's own")
    run(engine, user("hi"), GenSettings())
    assert rec.requests[-1][2]["messages"][0] == {"role": "system", "content": "model's own"}
    run(engine, user("hi"), GenSettings(system_prompt="the chat's"))
    assert rec.requests[-1][2]["messages"][0] == {"role": "system", "content": "the chat's"}


def test_openai_server_errors(scripted: tuple[str, Recorder]) -> None:
    base, _ = scripted
    with pytest.raises(EngineError, match=r"HTTP 400: no such model: refuse"):
        list(OpenAIEngine(base, "refuse").stream(user("hi"), GenSettings()))
    with pytest.raises(EngineError, match="closed the stream before the answer finished"):
        list(OpenAIEngine(base, "cut").stream(user("hi"), GenSettings()))
    with pytest.raises(EngineError, match=r"HTTP 404.*end with /v1"):
        list_openai_models(base.removesuffix("/v1"))
    assert list_openai_models(base) == ["length", "cut"]


def test_openai_unreachable() -> None:
    url = closed_url() + "/v1"
    with pytest.raises(EngineError, match=f"cannot reach .* at {url}"):
        list(OpenAIEngine(url, "m", timeout=5).stream(user("hi"), GenSettings()))
    with pytest.raises(EngineError, match="cannot reach"):
        list_openai_models(url)


# -- OpenAI-compatible, real `llamafactory-cli api` ---------------------------------------------------------

KEY = "sk-forgeloop-test"


@pytest.fixture(scope="module")
def lf_api(starter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`llamafactory-cli api` on the starter model; yields its /v1 base URL."""
    port, work = free_port(), tmp_path_factory.mktemp("lf-api")
    # API_HOST: it binds 0.0.0.0 by default. API_MODEL_NAME: /v1/models says "gpt-3.5-turbo" otherwise.
    env = {**os.environ, "API_PORT": str(port), "API_HOST": "127.0.0.1", "API_KEY": KEY,
           "API_MODEL_NAME": "starter", "HF_HUB_OFFLINE": "1"}
    cli = Path(sys.executable).parent / "llamafactory-cli"
    cmd = [str(cli), "api", "--model_name_or_path", str(starter_dir), "--template", "chatml",
           "--infer_backend", "huggingface"]
    log_path = work / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, killed as a whole below
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llamafactory-cli api exited:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llamafactory-cli api not up in 90 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_lf_list_models_needs_key(lf_api: str) -> None:
    assert list_openai_models(lf_api, api_key=KEY) == ["starter"]
    with pytest.raises(EngineError, match=r"HTTP 401: Invalid API key"):
        list_openai_models(lf_api, api_key="wrong")
    with pytest.raises(EngineError, match=r"HTTP 401"):
        list(OpenAIEngine(lf_api, "starter").stream(user("hello"), GREEDY))


@pytest.mark.slow
def test_lf_greedy_stream(lf_api: str) -> None:
    engine = OpenAIEngine(lf_api, "starter", api_key=KEY)
    msgs = user("hello there")
    gen = GenSettings(temperature=0.0, max_new_tokens=12, system_prompt="You are a helpful assistant.")
    pieces, finish = run(engine, msgs, gen)
    assert any(p.strip() for p in pieces) and finish.reason in ("stop", "length")
    # temperature 0 must really be greedy on LLaMA-Factory, so the answer repeats exactly.
    assert run(engine, msgs, gen)[0] == pieces

    # LLaMA-Factory streams finish_reason "stop" even when max_tokens cut the answer, so "length" can't
    # be checked here; instead check the limit was applied: 2 tokens give a strict prefix of 12.
    short, finish = run(engine, msgs, GenSettings(temperature=0.0, max_new_tokens=2,
                                                  system_prompt=gen.system_prompt))
    text, short_text = "".join(pieces), "".join(short)
    assert short_text and text.startswith(short_text) and len(short_text) < len(text)
    assert finish.reason in ("stop", "length")


@pytest.mark.slow
def test_lf_longer_chat(lf_api: str) -> None:
    engine = OpenAIEngine(lf_api, "starter", api_key=KEY)
    chat = [*user("hello"), {"role": "assistant", "content": "hi"}, *user("how are you")]
    pieces, finish = run(engine, chat, GREEDY)
    assert "".join(pieces) and finish.reason in ("stop", "length")
    # LLaMA-Factory rejects non-alternating turns only after the 200 response has started.
    with pytest.raises(EngineError, match="closed the stream"):
        list(engine.stream([*user("a"), *user("b")], GREEDY))


def test_ollama_health_names_the_version_or_the_problem(stub, monkeypatch, tmp_path):
    from app.inference.remote_engines import ollama_health

    assert ollama_health(stub.url + "/") == {"ok": True, "host": stub.url, "version": "0.6.3"}
    dead = ollama_health("http://127.0.0.1:9")
    assert dead["ok"] is False and dead["error"] == "cannot reach Ollama at http://127.0.0.1:9"
    other = ollama_health(stub.url + "/elsewhere")
    assert other["ok"] is False and "answered HTTP 404, but not like an Ollama server" in other["error"]
    # The host comes from OLLAMA_HOST when nothing more specific sets it.
    import launch

    monkeypatch.setenv("OLLAMA_HOST", stub.url)
    assert launch.parse_settings(["--storage", str(tmp_path)]).ollama_host == stub.url
    assert launch.parse_settings(["--storage", str(tmp_path), "--ollama-host", "http://h:1"]
                                 ).ollama_host == "http://h:1"
