"""A small in-process server that speaks the part of the Hugging Face Hub's HTTP API that
``huggingface_hub`` uses to push (create a repo, check a card, pre-upload, commit) and pull
(model info, file tree, file downloads), for tests. Point a job at it with ``HF_ENDPOINT``.

    with HubStub(token="hf_...") as hub:
        ... job_env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"} ...
        hub.repos["me/model"]  # {path in repo: bytes}

Writes need ``Authorization: Bearer TOKEN``; reads take no token, and refuse a wrong one. Every
file is a regular (non-LFS) file, so its content travels in the commit itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.conftest import ServerThread


def git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStub:
    def __init__(self, token: str = "hf_stub_token_0123456789") -> None:
        self.token = token
        self.repos: dict[str, dict[str, bytes]] = {}
        self.private: dict[str, bool] = {}
        self.commits: list[dict[str, Any]] = []
        self.seen_tokens: list[str | None] = []  # the bearer token of every request, in order
        self.seen: list[tuple[str, str, bool]] = []
        self.app = self._build()
        self._thread: ServerThread | None = None

    @property
    def url(self) -> str:
        assert self._thread is not None, "use HubStub as a context manager"
        return self._thread.url

    def sha(self, repo_id: str) -> str:
        files = self.repos[repo_id]
        h = hashlib.sha1(repo_id.encode())
        for path in sorted(files):
            h.update(path.encode() + git_sha(files[path]).encode())
        return h.hexdigest()

    def __enter__(self) -> HubStub:
        self._thread = ServerThread(self.app).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        assert self._thread is not None
        self._thread.__exit__(*exc)

    def _build(self) -> FastAPI:
        app = FastAPI()

        def bearer(request: Request) -> str | None:
            auth = request.headers.get("authorization", "")
            return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

        @app.middleware("http")
        async def check_token(request: Request, call_next):
            given = bearer(request)
            self.seen_tokens.append(given)
            self.seen.append((request.method, request.url.path, given is not None))
            write = request.method == "POST"
            if (write and given != self.token) or (given is not None and given != self.token):
                return JSONResponse({"error": "Invalid credentials in Authorization header"}, status_code=401)
            return await call_next(request)

        def missing(repo_id: str) -> JSONResponse:
            return JSONResponse({"error": "Repository not found"}, status_code=404,
                                headers={"X-Error-Code": "RepoNotFound"})

        @app.post("/api/repos/create")
        async def create(request: Request):
            body = await request.json()
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            if repo_id in self.repos:
                return JSONResponse({"error": "You already created this model repo"}, status_code=409)
            self.repos[repo_id] = {}
            self.private[repo_id] = body.get("visibility") == "private" or bool(body.get("private"))
            return {"url": f"{self.url}/{repo_id}", "name": repo_id}

        @app.post("/api/validate-yaml")
        async def validate(request: Request):
            content = (await request.json())["content"]
            try:
                _, header, _ = content.split("---\n", 2)
                if not isinstance(yaml.safe_load(header), dict):
                    raise ValueError("the header is no mapping")
            except ValueError as e:
                return JSONResponse({"errors": [{"message": f"bad YAML header: {e}"}]}, status_code=400)
            return {"warnings": []}

        @app.post("/api/models/{ns}/{name}/preupload/{revision}")
        async def preupload(ns: str, name: str, revision: str, request: Request):
            if f"{ns}/{name}" not in self.repos:
                return missing(f"{ns}/{name}")
            files = (await request.json())["files"]
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                              for f in files]}

        @app.post("/api/models/{ns}/{name}/commit/{revision}")
        async def commit(ns: str, name: str, revision: str, request: Request):
            repo_id = f"{ns}/{name}"
            if repo_id not in self.repos:
                return missing(repo_id)
            lines = [json.loads(line) for line in (await request.body()).splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            added = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                     for x in lines if x["key"] == "file"}
            self.repos[repo_id].update(added)
            oid = self.sha(repo_id)
            self.commits.append({"repo_id": repo_id, "summary": header["summary"], "files": sorted(added)})
            return {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid}

        def info(repo_id: str) -> dict[str, Any]:
            return {"id": repo_id, "modelId": repo_id, "sha": self.sha(repo_id),
                    "private": self.private.get(repo_id, False), "tags": [], "downloads": 0, "likes": 0,
                    "siblings": [{"rfilename": p} for p in sorted(self.repos[repo_id])]}

        @app.get("/api/models/{ns}/{name}")
        @app.get("/api/models/{ns}/{name}/revision/{revision}")
        def model_info(ns: str, name: str, revision: str = "main"):
            repo_id = f"{ns}/{name}"
            if repo_id not in self.repos:
                return missing(repo_id)
            if revision not in ("main", self.sha(repo_id)):
                return JSONResponse({"error": f"Invalid rev id: {revision}"}, status_code=404,
                                    headers={"X-Error-Code": "RevisionNotFound"})
            return info(repo_id)

        @app.get("/api/models/{ns}/{name}/tree/{revision}")
        def tree(ns: str, name: str, revision: str):
            repo_id = f"{ns}/{name}"
            if repo_id not in self.repos:
                return missing(repo_id)
            return [{"type": "file", "path": p, "size": len(data), "oid": git_sha(data)}
                    for p, data in sorted(self.repos[repo_id].items())]

        @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        def resolve(ns: str, name: str, revision: str, path: str, request: Request):
            repo_id = f"{ns}/{name}"
            data = self.repos.get(repo_id, {}).get(path)
            if data is None:
                return JSONResponse({"error": "Entry not found"}, status_code=404,
                                    headers={"X-Error-Code": "EntryNotFound"})
            headers = {"X-Repo-Commit": self.sha(repo_id), "ETag": f'"{git_sha(data)}"',
                       "Content-Length": str(len(data))}
            return Response(b"" if request.method == "HEAD" else data, headers=headers,
                            media_type="application/octet-stream")

        return app
