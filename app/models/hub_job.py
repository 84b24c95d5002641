"""A Hub push or pull as a job process: ``python -m app.models.hub_job PLAN_JSON``.

The plan comes from `app.models.hub`; the token, if any, from ``HF_TOKEN`` in this process's
environment (the runner's secret environment). Progress is files done of files in all. On
failure the process writes ``{"error": one line}`` as its result and exits 1; that line is
the job's error. Nothing here prints the token, and tracebacks are left to unexpected errors.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.models.hub import NO_TOKEN, OFFLINE, REFUSED, TOKEN_ENV, UNREACHABLE

# Not pulled: formats Forgeloop does not load (they can dwarf the weights it does).
SKIP_PULL = ["*.gguf", "*.onnx", "*.onnx_data", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.mlmodel",
             "original/*", "onnx/*", "openvino/*", "coreml/*"]
TORCH_PICKLES = ["*.bin", "*.pth", "*.pt", "*.ckpt"]


class JobFailure(Exception):
    """A failure whose message is already the one line to show."""


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def describe(e: BaseException) -> str:
    """One line a user can act on, for any error of a Hub call."""
    import httpx
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, JobFailure):
        return str(e)
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for c in chain:
        if isinstance(c, OfflineModeIsEnabled):
            return f"{OFFLINE}: {first_line(c)}"
    for c in chain:
        if isinstance(c, GatedRepoError):
            return ("the repo is gated: accept its terms on the Hub, with a token that may read it "
                    f"({first_line(c)})")
        if isinstance(c, RevisionNotFoundError):
            return f"no such revision on the Hub: {first_line(c)}"
        if isinstance(c, RepositoryNotFoundError):
            return f"no such repo on the Hub, or it is private and the token may not read it: {first_line(c)}"
        if isinstance(c, HfHubHTTPError):
            status = c.response.status_code if c.response is not None else None
            detail = (c.server_message or "").strip()
            said = f"{status} {detail.splitlines()[0][:200]}" if detail else first_line(c)
            if status in (401, 403):
                return f"{REFUSED}: {said}"
            return f"the Hub answered {said}"
        if isinstance(c, httpx.TransportError | ConnectionError | TimeoutError):
            return f"{UNREACHABLE}: {first_line(c)}"
    return f"{type(e).__name__}: {first_line(e)}"


class Reporter:
    def __init__(self) -> None:
        self.path = os.environ.get(PROGRESS_ENV)
        self.started = time.monotonic()

    def __call__(self, done: int, total: int, **metrics: Any) -> None:
        if self.path:
            report(self.path, done, total, self.started, **metrics)


def push(plan: dict[str, Any], progress: Reporter) -> dict[str, Any]:
    from huggingface_hub import CommitOperationAdd, HfApi

    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise JobFailure(f"{NO_TOKEN} (a job queued before Forgeloop restarted has none: push again)")
    api = HfApi(token=token)
    repo_id = plan["repo_id"]
    ops = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan["card"].encode("utf-8"))]
    ops += [CommitOperationAdd(path_in_repo=in_repo, path_or_fileobj=local)
            for local, in_repo in plan["files"]]
    total = len(ops) + 1  # each file, then the commit
    progress(0, total)
    print(f"creating or reusing the {'private' if plan['private'] else 'public'} repo {repo_id}", flush=True)
    url = api.create_repo(repo_id, private=plan["private"], exist_ok=True, repo_type="model")
    for i, op in enumerate(ops, 1):
        api.preupload_lfs_files(repo_id, additions=[op], repo_type="model")
        print(f"uploaded {op.path_in_repo} ({i}/{len(ops)})", flush=True)
        progress(i, total)
    commit = api.create_commit(repo_id, operations=ops, repo_type="model",
                               commit_message=f"Forgeloop: upload {plan['kind']} model")
    progress(total, total)
    print(f"committed {commit.oid} to {repo_id}", flush=True)
    return {"repo_id": repo_id, "url": str(url), "commit": commit.oid, "commit_url": commit.commit_url,
            "files": [op.path_in_repo for op in ops]}


def pull_ignores(names: list[str]) -> list[str]:
    """What to leave out of a pull: other runtimes' formats, and torch pickles when the repo
    has safetensors (the same weights, safe to load)."""
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    return SKIP_PULL + (TORCH_PICKLES if has_safetensors else [])


def files_progress(progress: Reporter):
    """A tqdm class for snapshot_download: its files bar reports files done of all."""
    from tqdm.auto import tqdm

    class FilesBar(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            kwargs.pop("name", None)
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            if self.unit != "B" and self.total:
                progress(int(self.n), int(self.total))
            return out

        def close(self) -> None:
            fp = self.fp
            super().close()
            fp.close()

    return FilesBar


def pull(plan: dict[str, Any], progress: Reporter) -> dict[str, Any]:
    from huggingface_hub import HfApi, snapshot_download

    api = HfApi(token=os.environ.get(TOKEN_ENV) or None)
    repo_id, out = plan["repo_id"], Path(plan["out"])
    info = api.model_info(repo_id, revision=plan["revision"])
    names = [s.rfilename for s in info.siblings or []]
    if "config.json" not in names:
        raise JobFailure(f"{repo_id} has no config.json: not a transformers model Forgeloop can load")
    print(f"pulling {repo_id} at {info.sha} ({len(names)} files in the repo)", flush=True)
    snapshot_download(repo_id, revision=info.sha, local_dir=out, ignore_patterns=pull_ignores(names),
                      tqdm_class=files_progress(progress), token=os.environ.get(TOKEN_ENV) or None)
    shutil.rmtree(out / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    print(f"pulled {len(files)} files", flush=True)
    return {"repo_id": repo_id, "sha": info.sha, "files": files}


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result_path = os.environ.get(RESULT_ENV)
    try:
        result = (push if plan["action"] == "push" else pull)(plan, Reporter())
        code = 0
    except Exception as e:
        result, code = {"error": describe(e)}, 1
        if not isinstance(e, JobFailure) and result["error"].startswith(type(e).__name__):
            traceback.print_exc()  # unexpected: the trace helps; Hub errors say enough in one line
        print(f"error: {result['error']}", file=sys.stderr, flush=True)
    if result_path:
        Path(result_path).write_text(json.dumps(result), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
