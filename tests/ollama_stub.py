"""A small in-process server that speaks Ollama's REST API, for tests.

    with OllamaStub(models=["llama3.2:1b"]) as stub:
        client = ollama.Client(host=stub.url)

Replies come from a deterministic "brain" (default: ``[model] `` + the prompt's words reversed).
Names without a tag get ``:latest`` like in Ollama; ``stub.models`` accepts either form.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from copy import deepcopy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.conftest import ServerThread

Brain = Callable[[str, str], str]  # (canonical model name, prompt) -> reply text
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][\w.\-/]*(:\w[\w.\-]{0,127})?$")
QUANT_TYPES = {"q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_0", "q4_1", "q4_k_s", "q4_k_m",
               "q5_0", "q5_1", "q5_k_s", "q5_k_m", "q6_k", "q8_0", "f16", "f32", "bf16"}


def default_brain(model: str, prompt: str) -> str:
    return " ".join([f"[{model}]", *reversed(prompt.split())])


def canonical(name: str) -> str:
    """Ollama's short form: 'foo' means 'foo:latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> datetime:
    return datetime.now(UTC)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class StubModel:
    """A registered model plus everything /api/create was given for it."""

    name: str
    details: dict[str, Any]
    size: int = 1_000_000_000
    modified_at: datetime = field(default_factory=_now)
    from_: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: Any = None
    parameters: dict[str, Any] = field(default_factory=dict)
    quantize: str | None = None
    request: dict[str, Any] = field(default_factory=dict)  # raw /api/create body
    brain: Brain | None = None  # per-model override
    chunk_delay: float | None = None  # per-model override of the stub's delay
    digest: str = ""  # manifest digest; derived from the spec, kept by /api/copy

    def __post_init__(self) -> None:
        spec = [self.name, self.from_, self.files, self.adapters, self.template, self.system,
                self.parameters, self.quantize]
        self.digest = self.digest or hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()

    def entry(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.name, "modified_at": self.modified_at.isoformat(),
                "size": self.size, "digest": self.digest, "details": self.details}


class ModelTable(dict[str, StubModel]):
    """dict keyed by canonical name that also accepts the short form on lookup."""

    def __getitem__(self, key: str) -> StubModel:
        return super().__getitem__(canonical(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(canonical(key))


def _seed_details(name: str) -> dict[str, Any]:
    family = re.match(r"[a-z]+", name.lower())
    size = re.search(r":(\d+(?:\.\d+)?)b\b", name.lower())
    return {"parent_model": "", "format": "gguf", "family": family[0] if family else "llama",
            "families": [family[0] if family else "llama"],
            "parameter_size": f"{size[1]}B" if size else "1B", "quantization_level": "Q4_K_M"}


class OllamaStub:
    def __init__(self, models: Iterable[str] = (), chunk_delay: float = 0.0, brain: Brain = default_brain,
                 blob_dir: str | Path | None = None, runner: Any = None) -> None:
        self.chunk_delay, self.brain = chunk_delay, brain
        # Answers for models created from GGUF files (tests/ollama_llama.LlamaRunner).
        self.runner = runner
        self.failures: dict[str, tuple[int, str]] = {}
        self.uploads: list[str] = []  # digests received through POST /api/blobs, in order
        self._own_blobs = blob_dir is None
        self.blob_dir = Path(blob_dir or tempfile.mkdtemp(prefix="ollama-stub-blobs-"))
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.models = ModelTable()
        self.loaded: dict[str, datetime] = {}  # model -> expires_at, for /api/ps
        for name in models:
            self.add_model(name)
        self.app = self._build_app()
        self._server: ServerThread | None = None

    def add_model(self, name: str, **fields: Any) -> StubModel:
        model = StubModel(name=canonical(name), details=fields.pop("details", _seed_details(name)), **fields)
        self.models[model.name] = model
        return model

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        return self._server.url

    def __enter__(self) -> OllamaStub:
        self._server = ServerThread(self.app).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server:
            self._server.__exit__(*exc)
        if self._own_blobs:
            shutil.rmtree(self.blob_dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not DIGEST_RE.match(digest):
            raise ApiError(400, f"invalid digest format: {digest}")
        return self.blob_dir / digest.replace(":", "-")

    def _model(self, name: Any) -> StubModel:
        if not name:
            raise ApiError(400, "model is required")
        if name not in self.models:
            raise ApiError(404, f"model '{name}' not found")
        return self.models[name]

    def _create(self, body: dict[str, Any]) -> list[str]:
        """Validate and register a model; returns the progress statuses to report."""
        name, base_name = body.get("model") or body.get("name"), body.get("from")
        if not name or not NAME_RE.match(name):
            raise ApiError(400, "invalid model name")
        files, adapters = dict(body.get("files") or {}), dict(body.get("adapters") or {})
        if not base_name and not files:
            raise ApiError(400, "neither 'from' or 'files' was specified")
        quantize = body.get("quantize")
        if quantize and quantize.lower() not in QUANT_TYPES:
            raise ApiError(400, f"unsupported quantization type {quantize}")
        base = self._model(base_name) if base_name else None
        blobs = [*files.values(), *adapters.values()]
        for digest in blobs:
            if not self.blob_path(digest).is_file():
                raise ApiError(400, f"blob {digest} not found, upload it with POST /api/blobs/{digest}")
        for fname, digest in files.items():
            if fname.endswith(".gguf") and self.blob_path(digest).open("rb").read(4) != b"GGUF":
                raise ApiError(400, "invalid file magic")
        status = [f"using existing layer {d}" for d in blobs]
        details = dict(base.details) if base else {
            "parent_model": "", "families": ["llama"], "family": "llama", "parameter_size": "unknown",
            "format": "gguf" if any(f.endswith(".gguf") for f in files) else "safetensors",
            "quantization_level": "F16"}
        if base:
            details["parent_model"] = base.name
            status.append(f"using existing layer sha256:{base.digest}")
        if quantize:
            status.append(f"quantizing {details['quantization_level']} model to {quantize.upper()}")
            details["quantization_level"] = quantize.upper()
        sizes = sum(self.blob_path(d).stat().st_size for d in blobs)

        def inherit(attr: str, default: Any) -> Any:
            return getattr(base, attr) if base else default

        model = StubModel(
            name=canonical(name), details=details, size=sizes or inherit("size", 0), from_=base_name,
            files=files, adapters=adapters, quantize=quantize, request=body,
            template=body.get("template", inherit("template", None)),
            system=body.get("system", inherit("system", None)),
            license=body.get("license", inherit("license", None)),
            parameters={**inherit("parameters", {}), **(body.get("parameters") or {})})
        for part in ("template", "system", "parameters", "messages"):
            if body.get(part):
                layer = hashlib.sha256(json.dumps(body[part], sort_keys=True).encode()).hexdigest()
                status.append(f"creating new layer sha256:{layer}")
        self.models[model.name] = model
        return [*status, "writing manifest", "success"]

    def _effective(self, m: StubModel) -> StubModel:
        """A created model with the blob paths of its files, for the runner."""
        return replace(m, files={n: str(self.blob_path(d)) for n, d in m.files.items()},
                       adapters={n: str(self.blob_path(d)) for n, d in m.adapters.items()})

    def fail_next(self, route: str, status: int, message: str) -> None:
        """Make the next call to ``route`` (e.g. "create") fail like a broken Ollama would."""
        self.failures[route] = (status, message)

    def _maybe_fail(self, route: str) -> None:
        if route in self.failures:
            status, message = self.failures.pop(route)
            raise ApiError(status, message)

    def _show(self, m: StubModel) -> dict[str, Any]:
        params = [f'{k} "{v}"' if isinstance(v, str) else f"{k} {v}"
                  for k, vals in m.parameters.items() for v in (vals if isinstance(vals, list) else [vals])]
        lines = ['# Modelfile generated by "ollama show"', f"FROM {m.from_ or m.name}"]
        lines += [f"FROM {self.blob_path(d)}" for d in m.files.values()]
        lines += [f"ADAPTER {self.blob_path(d)}" for d in m.adapters.values()]
        lines += [f'TEMPLATE """{m.template}"""'] if m.template else []
        lines += [f'SYSTEM """{m.system}"""'] if m.system else []
        return {"modelfile": "\n".join(lines + [f"PARAMETER {p}" for p in params]) + "\n",
                "parameters": "\n".join(params), "template": m.template or "{{ .Prompt }}",
                "system": m.system, "license": m.license, "details": m.details,
                "modified_at": m.modified_at.isoformat(), "capabilities": ["completion"],
                "model_info": {"general.architecture": m.details.get("family"),
                               "general.basename": m.name.split(":")[0]}}

    async def _answer(self, body: dict[str, Any], chat: bool) -> Response:
        """Shared body of /api/chat and /api/generate."""
        started = time.perf_counter_ns()
        model = self._model(body.get("model"))
        stream = body.get("stream", True)  # Ollama streams unless told otherwise
        if chat:
            msgs = body.get("messages") or []
            prompt = next((m.get("content") or "" for m in reversed(msgs) if m.get("role") == "user"), "")
            prompt_tokens = sum(len((m.get("content") or "").split()) for m in msgs)
            empty = not msgs
        else:
            prompt = body.get("prompt") or ""
            prompt_tokens = len(prompt.split()) + len((body.get("system") or "").split())
            empty = not prompt
        unload = body.get("keep_alive") in (0, "0", "0s")
        self.loaded[model.name] = _now() + timedelta(minutes=0 if unload else 5)  # for /api/ps

        def frame(text: str, **extra: Any) -> dict[str, Any]:
            out = {"model": body["model"], "created_at": _now().isoformat().replace("+00:00", "Z")}
            out.update({"message": {"role": "assistant", "content": text}} if chat else {"response": text})
            return {**out, **extra}

        if empty:  # Ollama's load/unload request: no prompt, immediate done
            return JSONResponse(frame("", done=True, done_reason="unload" if unload else "load"))
        limit = (body.get("options") or {}).get("num_predict")
        reason = "stop"
        if model.adapters and self.runner is not None:
            # Ollama converts safetensors adapters itself; this stand-in cannot, and answering
            # with the bare base would pass off the wrong model as the deployed one.
            raise ApiError(500, "this Ollama stand-in cannot apply adapters; deploy the merged model")
        if model.files and self.runner is not None:  # a created model answers with its own weights
            ran = await asyncio.to_thread(self.runner.answer, self._effective(model), body, chat)
            tokens, reason, prompt_tokens = ran.pieces, ran.reason, ran.prompt_tokens
        else:
            tokens = re.findall(r"\s*\S+", (model.brain or self.brain)(model.name, prompt))
            if limit is not None and 0 <= limit < len(tokens):
                tokens, reason = tokens[:limit], "length"
        delay = self.chunk_delay if model.chunk_delay is None else model.chunk_delay
        load_ns = 1_000_000

        def final(eval_start: int) -> dict[str, Any]:
            end = time.perf_counter_ns()
            return {"done": True, "done_reason": reason, "total_duration": end - started + load_ns,
                    "load_duration": load_ns, "prompt_eval_count": prompt_tokens,
                    "prompt_eval_duration": 1000 * max(prompt_tokens, 1), "eval_count": len(tokens),
                    "eval_duration": end - eval_start}

        if not stream:
            eval_start = time.perf_counter_ns()
            await asyncio.sleep(delay * len(tokens))
            return JSONResponse(frame("".join(tokens), **final(eval_start)))

        async def chunks() -> AsyncIterator[str]:
            eval_start = time.perf_counter_ns()
            for tok in tokens:
                await asyncio.sleep(delay)
                yield json.dumps(frame(tok, done=False)) + "\n"
            yield json.dumps(frame("", **final(eval_start))) + "\n"

        return StreamingResponse(chunks(), media_type="application/x-ndjson")

    # -- routes ----------------------------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.exception_handler(ApiError)
        async def api_error(_: Request, exc: ApiError) -> JSONResponse:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

        async def body_of(request: Request) -> dict[str, Any]:
            try:
                body = json.loads(await request.body() or b"{}")
            except json.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise ApiError(400, "request body must be a JSON object")
            return body

        @app.get("/api/version")
        async def version() -> dict[str, str]:
            return {"version": "0.6.3"}

        @app.get("/api/tags")
        async def tags() -> dict[str, Any]:
            return {"models": [m.entry() for m in self.models.values()]}

        @app.get("/api/ps")
        async def ps() -> dict[str, Any]:
            live = {n: t for n, t in self.loaded.items() if t > _now() and n in self.models}
            return {"models": [{**self.models[n].entry(), "expires_at": t.isoformat(), "context_length": 4096,
                                "size_vram": self.models[n].size} for n, t in live.items()]}

        @app.post("/api/show")
        async def show(request: Request) -> dict[str, Any]:
            body = await body_of(request)
            return self._show(self._model(body.get("model") or body.get("name")))

        @app.delete("/api/delete")
        async def delete(request: Request) -> Response:
            body = await body_of(request)
            m = self._model(body.get("model") or body.get("name"))
            del self.models[m.name]
            self.loaded.pop(m.name, None)
            return Response(status_code=200)

        @app.post("/api/copy")
        async def copy(request: Request) -> Response:
            body = await body_of(request)
            src, dest = self._model(body.get("source")), body.get("destination") or ""
            if not NAME_RE.match(dest):
                raise ApiError(400, f"destination \"{dest}\" is invalid")
            self.models[canonical(dest)] = replace(deepcopy(src), name=canonical(dest), modified_at=_now())
            return Response(status_code=200)

        @app.head("/api/blobs/{digest}")
        async def blob_exists(digest: str) -> Response:
            return Response(status_code=200 if self.blob_path(digest).is_file() else 404)

        @app.post("/api/blobs/{digest}")
        async def blob_upload(digest: str, request: Request) -> Response:
            self._maybe_fail("blobs")
            path = self.blob_path(digest)
            if path.is_file():
                return Response(status_code=200)
            tmp, sha = path.with_suffix(".partial"), hashlib.sha256()
            with tmp.open("wb") as fh:
                async for chunk in request.stream():
                    sha.update(chunk)
                    fh.write(chunk)
            if f"sha256:{sha.hexdigest()}" != digest:
                tmp.unlink()
                raise ApiError(400, "digest mismatch")
            tmp.replace(path)
            self.uploads.append(digest)
            return Response(status_code=201)

        @app.post("/api/create")
        async def create(request: Request) -> Response:
            body = await body_of(request)
            self._maybe_fail("create")
            statuses = self._create(body)  # validation errors surface here, before any streaming
            if not body.get("stream", True):
                return JSONResponse({"status": statuses[-1]})
            return Response("".join(json.dumps({"status": s}) + "\n" for s in statuses),
                            media_type="application/x-ndjson")

        @app.post("/api/chat")
        async def chat(request: Request) -> Response:
            return await self._answer(await body_of(request), chat=True)

        @app.post("/api/generate")
        async def generate(request: Request) -> Response:
            return await self._answer(await body_of(request), chat=False)

        return app
