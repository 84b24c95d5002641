"""The Ollama stub, exercised only through the official `ollama` client."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import ollama
import pytest

from tests.ollama_stub import OllamaStub

BASE = "llama3.2:1b"
PROMPT = "why is the sky blue"
EXPECTED = f"[{BASE}] blue sky the is why"


@pytest.fixture
def stub() -> Iterator[OllamaStub]:
    with OllamaStub(models=[BASE, "qwen2.5:0.5b"]) as s:
        yield s


@pytest.fixture
def client(stub: OllamaStub) -> ollama.Client:
    return ollama.Client(host=stub.url)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_list_show_and_ps(client: ollama.Client) -> None:
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {BASE, "qwen2.5:0.5b"}
    assert listed[BASE].details.parameter_size == "1B"
    assert listed[BASE].digest and listed[BASE].size and listed[BASE].modified_at

    shown = client.show(BASE)
    assert shown.details.family == "llama" and "FROM" in shown.modelfile
    assert shown.capabilities == ["completion"]

    assert client.ps().models == []
    client.chat(model=BASE, messages=_user("hi"))
    assert [m.model for m in client.ps().models] == [BASE]


def test_chat_non_stream(client: ollama.Client) -> None:
    resp = client.chat(model=BASE, messages=[{"role": "system", "content": "be terse"}, *_user(PROMPT)])
    assert resp.message.role == "assistant"
    assert resp.message.content == EXPECTED
    assert resp.done and resp.done_reason == "stop"
    assert resp.eval_count == 6 and resp.prompt_eval_count == 7
    assert resp.total_duration >= resp.load_duration > 0


def test_chat_stream_matches_non_stream(client: ollama.Client) -> None:
    chunks = list(client.chat(model=BASE, messages=_user(PROMPT), stream=True))
    assert len(chunks) == 7  # six words, then the final stats chunk
    assert all(not c.done for c in chunks[:-1])
    last = chunks[-1]
    assert last.done and last.done_reason == "stop" and last.eval_count == 6
    assert last.total_duration and last.eval_duration and last.prompt_eval_count == 5
    streamed = "".join(c.message.content for c in chunks)
    assert streamed == client.chat(model=BASE, messages=_user(PROMPT)).message.content == EXPECTED


def test_num_predict_truncates(client: ollama.Client) -> None:
    resp = client.chat(model=BASE, messages=_user(PROMPT), options={"num_predict": 3})
    assert resp.message.content == f"[{BASE}] blue sky"
    assert resp.done_reason == "length" and resp.eval_count == 3


def test_generate(client: ollama.Client) -> None:
    assert client.generate(model=BASE, prompt=PROMPT).response == EXPECTED
    parts = list(client.generate(model=BASE, prompt=PROMPT, stream=True))
    assert "".join(p.response for p in parts) == EXPECTED and parts[-1].done
    other = client.generate(model="qwen2.5:0.5b", prompt="a b")
    assert other.response == "[qwen2.5:0.5b] b a"


def test_per_model_brain(stub: OllamaStub, client: ollama.Client) -> None:
    stub.models[BASE].brain = lambda model, prompt: f"echo {prompt}"
    assert client.chat(model=BASE, messages=_user("hi there")).message.content == "echo hi there"


def test_create_from_blobs(stub: OllamaStub, client: ollama.Client, tmp_path) -> None:
    weights, adapter = tmp_path / "model.gguf", tmp_path / "adapter.gguf"
    weights.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    adapter.write_bytes(b"GGUF-lora")
    digest = client.create_blob(weights)
    assert digest == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    assert client._request_raw("HEAD", f"/api/blobs/{digest}").status_code == 200
    lora = client.create_blob(adapter)

    progress = list(client.create(
        model="deploy-bot", files={"model.gguf": digest}, adapters={"adapter.gguf": lora},
        template="{{ .System }} {{ .Prompt }}", system="You are a bot.",
        parameters={"temperature": 0.2, "stop": ["<|eot|>"]}, quantize="q4_K_M", stream=True))
    assert progress[-1].status == "success"
    assert any(digest in (p.status or "") for p in progress)

    model = stub.models["deploy-bot"]  # short name resolves to deploy-bot:latest
    assert model.files == {"model.gguf": digest} and model.adapters == {"adapter.gguf": lora}
    assert model.template == "{{ .System }} {{ .Prompt }}" and model.system == "You are a bot."
    assert model.parameters == {"temperature": 0.2, "stop": ["<|eot|>"]}
    assert model.quantize == "q4_K_M" and model.size == weights.stat().st_size + adapter.stat().st_size

    listed = {m.model: m for m in client.list().models}
    assert listed["deploy-bot:latest"].details.quantization_level == "Q4_K_M"
    shown = client.show("deploy-bot")
    assert shown.template == "{{ .System }} {{ .Prompt }}" and "temperature 0.2" in shown.parameters
    assert client.chat(model="deploy-bot", messages=_user("x y")).message.content == "[deploy-bot:latest] y x"


def test_create_from_model_non_stream(stub: OllamaStub, client: ollama.Client) -> None:
    resp = client.create(model="terse", from_=BASE, system="Be terse.", parameters={"num_ctx": 2048})
    assert resp.status == "success"
    assert stub.models["terse"].from_ == BASE and stub.models["terse"].system == "Be terse."
    assert client.show("terse").details.parent_model == BASE


def test_create_errors(client: ollama.Client) -> None:
    missing = "sha256:" + "0" * 64
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="broken", files={"model.gguf": missing})
    assert err.value.status_code == 400 and missing in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        list(client.create(model="broken", files={"model.gguf": missing}, stream=True))
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="broken", from_="no-such-model")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="broken")
    assert err.value.status_code == 400
    assert "broken:latest" not in {m.model for m in client.list().models}


def test_blob_digest_mismatch_and_head(client: ollama.Client) -> None:
    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ollama.ResponseError) as err:
        client._request_raw("POST", f"/api/blobs/{wrong}", content=b"payload")
    assert err.value.status_code == 400 and "digest" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client._request_raw("HEAD", f"/api/blobs/{wrong}")
    assert err.value.status_code == 404


def test_copy_and_delete(client: ollama.Client) -> None:
    assert client.copy(BASE, "mine").status == "success"
    assert client.chat(model="mine", messages=_user("a b")).message.content == "[mine:latest] b a"
    assert client.delete(BASE).status == "success"
    assert {m.model for m in client.list().models} == {"mine:latest", "qwen2.5:0.5b"}
    with pytest.raises(ollama.ResponseError) as err:
        client.delete(BASE)
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("ghost", "other")
    assert err.value.status_code == 404


def test_unknown_model_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="ghost", messages=_user("hi"))
    assert err.value.status_code == 404 and err.value.error == "model 'ghost' not found"
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat(model="ghost", messages=_user("hi"), stream=True))
    assert err.value.status_code == 404
    for call in (lambda: client.generate(model="ghost", prompt="hi"), lambda: client.show("ghost")):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 404


def test_concurrent_streams_overlap() -> None:
    delay, prompt = 0.1, "one two three four five"  # six chunks of 0.1 s each

    def run(c: ollama.Client) -> str:
        parts = c.chat(model=BASE, messages=_user(prompt), stream=True)
        return "".join(part.message.content for part in parts)

    with OllamaStub(models=[BASE], chunk_delay=delay) as s:
        clients = [ollama.Client(host=s.url) for _ in range(2)]
        run(clients[0])  # warm up the connection
        start = time.perf_counter()
        run(clients[0])
        single = time.perf_counter() - start
        assert single >= 6 * delay

        results: list[str] = []
        threads = [threading.Thread(target=lambda c=c: results.append(run(c))) for c in clients]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        both = time.perf_counter() - start

    assert results == [f"[{BASE}] five four three two one"] * 2
    assert both < 1.6 * single, (both, single)
