"""Streaming chat engines for models served elsewhere: an Ollama server or any
OpenAI-compatible endpoint (vLLM, ``llamafactory-cli api``, LiteLLM).

Each ``stream`` call opens its own HTTP client, so one engine can serve several
threads at once. Failures surface as ``EngineError`` with a message for the user.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from app.core.errors import EngineError
from app.inference.generation import Finish, GenSettings

__all__ = ["Finish", "OllamaEngine", "OpenAIEngine", "list_ollama_models", "list_openai_models",
           "ollama_health"]

LIST_TIMEOUT = 10.0  # listing models is quick; don't make the UI hang on a dead host


def _with_system(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    msgs = [dict(m) for m in messages]  # copies: callers may reuse their history
    if system_prompt and not (msgs and msgs[0].get("role") == "system"):
        msgs.insert(0, {"role": "system", "content": system_prompt})
    return msgs


# -- Ollama ----------------------------------------------------------------------------------------------


def _ollama_error(host: str, model: str | None, exc: Exception) -> EngineError:
    import ollama

    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404 and model:
            return EngineError(f"Ollama at {host}: model '{model}' not found (pull it first?)")
        status = f" (HTTP {exc.status_code})" if exc.status_code > 0 else ""  # -1: error sent mid-stream
        return EngineError(f"Ollama at {host}: {exc.error}{status}")
    if isinstance(exc, httpx.TimeoutException):
        return EngineError(f"Ollama at {host} timed out")
    if isinstance(exc, ValueError):  # undecodable JSON line or a reply that fails the client's schema
        return EngineError(f"Ollama at {host} sent an unexpected reply: {exc}")
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return EngineError(f"cannot reach Ollama at {host}")
    return EngineError(f"lost the connection to Ollama at {host}: {exc}")


def _ollama_failures() -> tuple[type[Exception], ...]:
    """What the ollama client raises. It turns httpx.ConnectError into ConnectionError; other
    transport errors pass as-is. (ollama is imported on first use: it is not needed to start.)"""
    import ollama

    return (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError)


class OllamaEngine:
    def __init__(self, host: str, model: str, timeout: float = 120.0, system_prompt: str = "") -> None:
        self.host, self.model, self.timeout = host, model, timeout
        # The registered version's system prompt, sent when a request has none (else the
        # server's own SYSTEM applies).
        self.system_prompt = system_prompt

    def stream(self, messages: list[dict[str, str]], gen: GenSettings) -> Iterator[str | Finish]:
        import ollama

        # temperature 0 makes Ollama decode greedily, so it is passed through unchanged.
        options = {"temperature": gen.temperature, "top_p": gen.top_p, "num_predict": gen.max_new_tokens}
        if gen.seed is not None:
            options["seed"] = gen.seed
        reason = None
        try:
            with ollama.Client(host=self.host, timeout=self.timeout) as client:
                system = gen.system_prompt or self.system_prompt
                parts = client.chat(self.model, _with_system(messages, system), stream=True, options=options)
                for part in parts:
                    if part.message.content:
                        yield part.message.content
                    if part.done:
                        reason = part.done_reason or "stop"
        except _ollama_failures() as exc:
            raise _ollama_error(self.host, self.model, exc) from exc
        if reason is None:
            raise EngineError(f"Ollama at {self.host} closed the stream before the answer finished")
        yield Finish("length" if reason == "length" else "stop")


def list_ollama_models(host: str) -> list[str]:
    import ollama

    try:
        with ollama.Client(host=host, timeout=LIST_TIMEOUT) as client:
            return [m.model for m in client.list().models if m.model]
    except _ollama_failures() as exc:
        raise _ollama_error(host, None, exc) from exc


def ollama_health(host: str) -> dict[str, Any]:
    """Whether the Ollama server at ``host`` answers, and its version: {"ok", "host", "version" | "error"}."""
    url = host.rstrip("/")
    try:
        resp = httpx.get(f"{url}/api/version", timeout=LIST_TIMEOUT)
    except httpx.HTTPError as exc:
        return {"ok": False, "host": url, "error": str(_ollama_error(url, None, exc))}
    try:
        version = resp.json().get("version") if resp.status_code == 200 else None
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str):
        return {"ok": False, "host": url,
                "error": f"{url} answered HTTP {resp.status_code}, but not like an Ollama server"}
    return {"ok": True, "host": url, "version": version}


# -- OpenAI-compatible -----------------------------------------------------------------------------------


def _server_text(resp: httpx.Response) -> str:
    """The error message from OpenAI ({"error": {"message"}}), FastAPI ({"detail"}) or vLLM style bodies."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error") or body.get("detail") or body.get("message")
        if isinstance(err, dict):
            err = err.get("message", err)
        if isinstance(err, list):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if err:
            return str(err)[:500]
    return json.dumps(body)[:500]


class _OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.base = base_url.rstrip("/")  # callers pass the ".../v1" base
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def http_error(self, resp: httpx.Response) -> EngineError:
        no_v1 = resp.status_code == 404 and "/v1" not in self.base
        hint = " (does the base URL end with /v1?)" if no_v1 else ""
        return EngineError(f"server at {self.base} answered HTTP {resp.status_code}: "
                           f"{_server_text(resp)}{hint}")

    def transport_error(self, exc: httpx.HTTPError) -> EngineError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return EngineError(f"cannot reach the OpenAI-compatible server at {self.base}")
        if isinstance(exc, httpx.TimeoutException):
            return EngineError(f"server at {self.base} timed out")
        if isinstance(exc, httpx.RemoteProtocolError):  # e.g. the server died or dropped the chunked reply
            return self.cut_short()
        return EngineError(f"connection to {self.base} failed: {exc}")

    def cut_short(self) -> EngineError:
        return EngineError(f"server at {self.base} closed the stream before the answer finished "
                           "(see the server's log for the cause)")


_DONE: dict[str, Any] = {}  # sentinel for "data: [DONE]"


def _sse_chunks(resp: httpx.Response, base: str) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a Server-Sent Events stream, then ``_DONE`` if the server sent [DONE]."""
    for line in resp.iter_lines():
        if not line.startswith("data:"):  # blank separators, comments, "event:" lines
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield _DONE
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            raise EngineError(f"server at {base} sent a malformed event: {data[:200]}")
        if err := chunk.get("error"):  # vLLM / LiteLLM report mid-stream failures this way
            message = err.get("message", err) if isinstance(err, dict) else err
            raise EngineError(f"server at {base}: {message}")
        yield chunk


class OpenAIEngine:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 system_prompt: str = "") -> None:
        self._client = _OpenAIClient(base_url, api_key, timeout)  # immutable after init
        self.model = model
        self.system_prompt = system_prompt  # the registered version's, used when a request has none

    def _payload(self, messages: list[dict[str, str]], gen: GenSettings) -> dict[str, Any]:
        messages = _with_system(messages, gen.system_prompt or self.system_prompt)
        payload: dict[str, Any] = {"model": self.model, "messages": messages,
                                   "stream": True, "max_tokens": gen.max_new_tokens}
        # Greedy is requested as temperature 0, which OpenAI, vLLM and LLaMA-Factory all accept
        # (LLaMA-Factory turns it into do_sample=False). Omitting temperature would NOT be greedy there:
        # it falls back to its own sampling default (0.95).
        payload["temperature"] = gen.temperature
        if gen.temperature > 0:
            payload["top_p"] = gen.top_p
        if gen.seed is not None:  # OpenAI and vLLM honour it; servers that do not ignore it
            payload["seed"] = gen.seed
        return payload

    def stream(self, messages: list[dict[str, str]], gen: GenSettings) -> Iterator[str | Finish]:
        c = self._client
        reason = None
        try:
            with httpx.Client(timeout=c.timeout, headers=c.headers) as http, http.stream(
                    "POST", f"{c.base}/chat/completions", json=self._payload(messages, gen)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise c.http_error(resp)
                for chunk in _sse_chunks(resp, c.base):
                    for choice in chunk.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        if piece := (choice.get("delta") or {}).get("content"):
                            yield piece
                        reason = choice.get("finish_reason") or reason
                    if chunk is _DONE:
                        reason = reason or "stop"
        except httpx.HTTPError as exc:
            raise c.transport_error(exc) from exc
        if reason is None:
            # LLaMA-Factory validates the chat only after it has started streaming, so a rejected chat
            # (e.g. turns not alternating user/assistant) shows up as a 200 reply that breaks off.
            raise c.cut_short()
        if reason in ("error", "abort"):  # vLLM's finish_reason when generation failed or was cut off
            raise EngineError(f"server at {c.base} aborted the answer")
        yield Finish("length" if reason == "length" else "stop")


def list_openai_models(base_url: str, api_key: str | None = None) -> list[str]:
    c = _OpenAIClient(base_url, api_key, LIST_TIMEOUT)
    try:
        with httpx.Client(timeout=c.timeout, headers=c.headers) as http:
            resp = http.get(f"{c.base}/models")
    except httpx.HTTPError as exc:
        raise c.transport_error(exc) from exc
    if resp.status_code >= 400:
        raise c.http_error(resp)
    try:
        return [m["id"] for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"server at {c.base} sent an unexpected model list") from exc
