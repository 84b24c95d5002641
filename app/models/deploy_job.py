"""The deploy as a job process: ``python -m app.models.deploy_job PLAN_JSON``.

Steps (progress in bytes hashed and uploaded, then Ollama's own create status):
1. hash each file; ask Ollama whether it holds that blob (``HEAD /api/blobs/<digest>``) and
   upload only the missing ones — this is what makes a retry pick up where it stopped;
2. ``create`` the model from those blobs with the planned template, system and stop
   parameters (and ``quantize``), relaying Ollama's streamed status;
3. ``copy`` it to the stable tag, when asked.
On failure the result holds a one-line ``error`` the finish step shows the user.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.models.deploy import file_digest

CHUNK = 1 << 20


class DeployFailed(Exception):
    pass


class Progress:
    """Bytes hashed + bytes uploaded over twice the total size, then the create steps."""

    def __init__(self, total_bytes: int) -> None:
        self.path = os.environ.get(PROGRESS_ENV)
        self.total = max(1, 2 * total_bytes) + 1  # the last unit is Ollama's create
        self.done, self.started, self.last = 0, time.monotonic(), 0.0

    def add(self, n: int, status: str, force: bool = False) -> None:
        self.done = min(self.total, self.done + n)
        now = time.monotonic()
        if self.path and (force or now - self.last > 0.5):
            self.last = now
            report(self.path, self.done, self.total, self.started, status=status)


def _upload(http, host: str, path: Path, digest: str, progress: Progress) -> bool:
    """Send one blob unless Ollama has it; returns whether it was sent."""
    url = f"{host}/api/blobs/{digest}"
    if http.head(url).status_code == 200:
        progress.add(path.stat().st_size, f"{path.name} already on the server", force=True)
        return False

    def body():
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                progress.add(len(chunk), f"uploading {path.name}")
                yield chunk

    r = http.post(url, content=body())
    if r.status_code >= 400:
        raise DeployFailed(f"Ollama refused the upload of {path.name}: {_message(r)}")
    return True


def _message(r) -> str:
    try:
        return r.json().get("error") or r.text
    except ValueError:
        return r.text or f"HTTP {r.status_code}"


def deploy(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx
    import ollama

    host = plan["host"].rstrip("/")
    files = {kind: {name: Path(p) for name, p in group.items()} for kind, group in plan["blobs"].items()}
    sizes = sum(p.stat().st_size for group in files.values() for p in group.values())
    progress = Progress(sizes)
    digests: dict[str, dict[str, str]] = {"files": {}, "adapters": {}}
    sent = []
    with httpx.Client(timeout=httpx.Timeout(60.0, read=600.0)) as http:
        try:
            http.get(f"{host}/api/version").raise_for_status()
        except httpx.HTTPError as exc:
            raise DeployFailed(f"Ollama at {host} is unreachable: {exc}") from exc
        for kind, group in files.items():
            for name, path in group.items():
                digest = file_digest(path, lambda n, name=name: progress.add(n, f"hashing {name}"))
                digests[kind][name] = digest
                if _upload(http, host, path, digest, progress):
                    sent.append(name)
    client = ollama.Client(host=host, timeout=600)
    create = dict(plan["create"])
    statuses = []
    for update in client.create(files=digests["files"], adapters=digests["adapters"] or None,
                                stream=True, **create):
        statuses.append(update.status)
        progress.add(0, update.status or "", force=True)
    if not statuses or statuses[-1] != "success":
        raise DeployFailed(f"Ollama did not finish creating {plan['name']}: {statuses[-1:]}")
    if plan.get("latest"):
        client.copy(plan["name"], plan["latest"])
    digest = next((m.digest for m in client.list().models if m.model == plan["name"]), None)
    progress.add(1, "success", force=True)
    return {"name": plan["name"], "digest": digest, "latest": plan.get("latest"), "sent": sent,
            "blobs": digests, "statuses": statuses}


def main(argv: list[str]) -> int:
    import httpx
    import ollama

    plan = json.loads(Path(argv[0]).read_text())
    result_path = os.environ.get(RESULT_ENV)
    try:
        result = deploy(plan)
        code = 0
    except DeployFailed as exc:
        result, code = {"error": str(exc)}, 1
    except ollama.ResponseError as exc:
        result, code = {"error": f"Ollama refused to create {plan['name']}: {exc.error}"}, 1
    except (httpx.HTTPError, ConnectionError) as exc:
        result, code = {"error": f"Ollama at {plan['host']} stopped answering: {exc}"}, 1
    print(result.get("error") or f"deployed {result['name']}", flush=True)
    if result_path:
        Path(result_path).write_text(json.dumps(result))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
