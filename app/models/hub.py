"""The Hugging Face Hub: push a version (its adapter or its weights, with its model card and,
on request, its GGUF files) and pull a base model by id.

Both are background jobs (``python -m app.models.hub_job PLAN``). The plan of a push is built
here without network, so what will be uploaded can be checked before anything leaves. Their
finish steps record what happened in the same transaction as the job: a pulled model is
registered, a push leaves a `Deployment` row; a failed job leaves neither.

The token comes from the UI (kept in this process's memory only) or ``HF_TOKEN``. It reaches
the job through the runner's secret environment, never the Job row, and no message names it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from app.core.errors import EngineError, ForgeloopError, InvalidInput
from app.core.jobs import JobKind, JobSpec, Outcome, default_finish, python_command
from app.core.tables import Deployment, Job, ModelVersion
from app.models.card import base_model, model_card
from app.models.export import FOLDER_NAME_RE, LOCAL_KINDS
from app.models.registry import (
    HUB_ID_RE,
    check_folder_free,
    check_model_files,
    check_name,
    check_template,
    get_model,
    guess_template,
)

if TYPE_CHECKING:
    from app.core.workbench import Workbench

HUB_PUSH, HUB_PULL = "hub_push", "hub_pull"
TOKEN_ENV = "HF_TOKEN"
HUB_URL = "https://huggingface.co"
# The one-line messages a failed Hub job or request starts with.
OFFLINE = "Hugging Face Hub is unreachable (offline mode)"
UNREACHABLE = "Hugging Face Hub is unreachable"
REFUSED = "the Hub refused the token"
NO_TOKEN = ("no Hugging Face token: enter one in the Registry tab (Hugging Face Hub) or set HF_TOKEN "
            "in the environment Forgeloop starts in")
TOKEN_RE = re.compile(r"^[\x21-\x7e]{8,512}$")  # printable ASCII, no spaces
REVISION_RE = re.compile(r"^[A-Za-z0-9][\w.\-/]{0,199}$")
# Left out of a pushed folder: the card replaces README.md; checkpoints are resumable trainer
# state; LLaMA-Factory's running log and the trainer's pickled arguments name local paths.
SKIP_NAMES = {"README.md", "running_log.txt", "training_args.bin"}
SKIP_DIR_RE = re.compile(r"^(checkpoint-\d+|runs|\..*)$")


class HubToken:
    """The token entered in the UI: in this process's memory only, gone when it stops."""

    def __init__(self, wb: Workbench) -> None:
        self.value: str | None = None

    def __repr__(self) -> str:  # never the value, even in a debugger or a traceback
        return f"HubToken(set={self.value is not None})"


def hub_token(wb: Workbench) -> str | None:
    """The token a Hub job uses: the one set in the UI this session, else ``HF_TOKEN``."""
    return wb.service(HubToken).value or os.environ.get(TOKEN_ENV) or None


def token_status(wb: Workbench) -> dict[str, Any]:
    """Whether a token is set and where it comes from ("ui", "env"), never its value."""
    source = "ui" if wb.service(HubToken).value else "env" if os.environ.get(TOKEN_ENV) else None
    return {"set": source is not None, "source": source}


def set_hub_token(wb: Workbench, token: str | None) -> dict[str, Any]:
    """Use ``token`` for Hub jobs until Forgeloop stops (empty: forget it, back to ``HF_TOKEN``)."""
    token = (token or "").strip()
    if token and not TOKEN_RE.match(token):
        raise InvalidInput("that is no Hugging Face token: one is 8 or more letters, digits and "
                           "punctuation without spaces, such as hf_…")
    wb.service(HubToken).value = token or None
    return token_status(wb)


def hub_offline(wb: Workbench) -> bool:
    """Whether jobs run with the Hub's offline mode on (as huggingface_hub reads it)."""
    env = {**os.environ, **wb.settings.job_env}
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def check_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip()
    if not HUB_ID_RE.match(repo_id) or ".." in repo_id or len(repo_id) > 96:
        raise InvalidInput(f"repo id {repo_id!r}: use owner/name, such as my-org/my-model")
    return repo_id


@dataclass(frozen=True)
class PushPlan:
    """Exactly what a push uploads: ``files`` as (local path, path in the repo), sorted, plus
    ``card`` as README.md."""

    model_id: int
    repo_id: str
    kind: str  # adapter | merged | full
    files: list[tuple[str, str]]
    card: str
    private: bool = True


def _folder_files(folder: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or rel.as_posix() in SKIP_NAMES:
            continue
        if any(SKIP_DIR_RE.match(part) for part in rel.parts[:-1]) or rel.name.startswith("."):
            continue
        out.append((str(path), rel.as_posix()))
    return out


def _usage(repo_id: str, kind: str, base_id: str | None, gguf: list[str]) -> list[str]:
    """How to load what this repo holds: appended to the card of a push."""
    lines = ["## Use", ""]
    if kind == "adapter":
        base = base_id or "BASE_MODEL"
        lines += ["```python", "from peft import PeftModel",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'base = AutoModelForCausalLM.from_pretrained("{base}")',
                  f'model = PeftModel.from_pretrained(base, "{repo_id}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', "```", ""]
        if base_id is None:
            lines += ["Its base model is not on the Hub: push the base too and put its id in "
                      "place of `BASE_MODEL`.", ""]
    else:
        lines += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', "```", ""]
    if gguf:
        lines += ["GGUF for llama.cpp and Ollama: " + ", ".join(f"`{g}`" for g in gguf) + ".", ""]
    return lines


def push_plan(wb: Workbench, model_id: int, repo_id: str, include_gguf: bool = False,
              private: bool = True) -> PushPlan:
    """What pushing ``model_id`` to ``repo_id`` would upload, built without network: a LoRA
    version's adapter folder, or a full version's weights folder; the model card as README.md;
    the version's GGUF files on request."""
    mv = get_model(wb, model_id)
    repo_id = check_repo_id(repo_id)
    if mv.kind not in LOCAL_KINDS:
        raise InvalidInput(f"{mv.name!r} is served by {mv.kind}; only local weights can be pushed")
    check_model_files(mv)
    adapters = [a for a in (mv.adapter_path or "").split(",") if a]
    if len(adapters) > 1:
        raise InvalidInput(f"{mv.name!r} stacks {len(adapters)} adapters and a Hub adapter repo holds "
                           "one: merge it and push the merged version")
    meta = mv.meta or {}
    if adapters:
        kind, folder = "adapter", Path(adapters[0])
    else:
        folder = Path(mv.base_path)
        if not folder.is_dir():
            raise InvalidInput(f"{mv.name!r} lives on the Hub already ({mv.base_path})")
        kind = "merged" if meta.get("merged_from") else "full"
    files = _folder_files(folder)
    gguf = []
    if include_gguf:
        records = meta.get("gguf", [])
        if not records:
            raise InvalidInput(f"{mv.name!r} has no GGUF file: convert it first (Export), then push")
        for record in records:
            path = Path(record["path"])
            if not path.is_file() or path.read_bytes()[:4] != b"GGUF":
                raise InvalidInput(f"the GGUF file {path} is missing or damaged: convert {mv.name!r} again")
            files.append((str(path), path.name))
            gguf.append(path.name)
    names = [p for _, p in files]
    if len(set(names)) != len(names):
        raise InvalidInput(f"two files would land at the same path in {repo_id}: "
                           f"{sorted({n for n in names if names.count(n) > 1})}")
    with wb.session() as s:
        _, base_id = base_model(s, mv)
        card = model_card(s, mv.id) + "\n" + "\n".join(_usage(repo_id, kind, base_id, gguf))
    return PushPlan(model_id=mv.id, repo_id=repo_id, kind=kind, files=sorted(files, key=lambda f: f[1]),
                    card=card, private=bool(private))


def _job_folder(wb: Workbench, kind: str, label: str) -> Path:
    folder = wb.settings.jobs_dir / f"{kind}-{label.replace('/', '--')}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    return folder


def _spec(folder: Path, plan: dict[str, Any], title: str, params: dict[str, Any],
          token: str | None) -> JobSpec:
    (folder / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return JobSpec(command=python_command("app.models.hub_job", str(folder / "plan.json")), cwd=folder,
                   log_path=folder / "job.log", progress_path=folder / "progress.jsonl",
                   result_path=folder / "result.json", title=title, params=params,
                   secret_env={TOKEN_ENV: token} if token else {})


def start_push(wb: Workbench, model_id: int, repo_id: str, include_gguf: bool = False,
               private: bool = True) -> Job:
    """Queue the upload of ``push_plan``; a success is recorded as a `Deployment` (target hub)."""
    plan = push_plan(wb, model_id, repo_id, include_gguf, private)
    token = hub_token(wb)
    if not token:
        raise InvalidInput(NO_TOKEN)
    mv = get_model(wb, model_id)
    folder = _job_folder(wb, HUB_PUSH, plan.repo_id)
    params = {"model_id": mv.id, "repo_id": plan.repo_id, "kind": plan.kind, "private": plan.private,
              "files": len(plan.files) + 1, "gguf": bool(include_gguf)}
    spec = _spec(folder, {"action": "push", **asdict(plan)}, f"push {mv.name} to {plan.repo_id}", params,
                 token)
    return wb.jobs.submit(HUB_PUSH, spec)


def _job_error(job: Job) -> None:
    """A failed Hub job's error is the one line its process wrote, not a log tail."""
    said = (job.result or {}).get("error") if isinstance(job.result, dict) else None
    if job.status == "failed" and said:
        job.error, job.result = said, None


def finish_push(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    default_finish(wb, s, job, outcome)
    _job_error(job)
    if job.status != "succeeded":
        return
    mv = s.get(ModelVersion, job.params["model_id"])
    if mv is None:
        raise InvalidInput("the model that was pushed has been deleted meanwhile")
    repo_id, result = job.params["repo_id"], job.result or {}
    dep = Deployment(model_id=mv.id, target="hub", name=repo_id, status="pushed",
                     url=result.get("url") or f"{HUB_URL}/{repo_id}",
                     meta={"job_id": job.id, "kind": job.params["kind"], "private": job.params["private"],
                           "commit": result.get("commit"), "commit_url": result.get("commit_url"),
                           "files": result.get("files", [])})
    s.add(dep)
    s.flush()
    job.result = {**result, "deployment_id": dep.id, "model_id": mv.id}


def start_pull(wb: Workbench, repo_id: str, name: str | None = None, revision: str | None = None,
               template: str | None = None) -> Job:
    """Queue a download of a Hub model into storage/models/NAME; its finish step registers it
    as a base model (template: given, else read from its chat template)."""
    repo_id = check_repo_id(repo_id)
    name = (name or "").strip() or repo_id.split("/")[-1]
    if not FOLDER_NAME_RE.match(name):
        raise InvalidInput(f"model name {name!r}: use letters, digits, '_', '-' or '.'")
    revision = (revision or "").strip() or None
    if revision and (not REVISION_RE.match(revision) or ".." in revision):
        raise InvalidInput(f"revision {revision!r}: give a branch, tag or commit hash")
    template = (template or "").strip() or None
    if template:
        check_template(template)
    target = wb.settings.models_dir / name
    with wb.session() as s:
        check_name(s, name)
        check_folder_free(s, target)
    if hub_offline(wb):
        raise EngineError(f"{OFFLINE}: HF_HUB_OFFLINE is set for Forgeloop's jobs; unset it to pull "
                          f"{repo_id}")
    folder = _job_folder(wb, HUB_PULL, repo_id)
    plan = {"action": "pull", "repo_id": repo_id, "revision": revision, "out": str(folder / "model")}
    params = {"repo_id": repo_id, "revision": revision, "name": name, "template": template,
              "target": str(target)}
    return wb.jobs.submit(HUB_PULL, _spec(folder, plan, f"pull {repo_id} as {name}", params, hub_token(wb)))


def finish_pull(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Move the download into storage/models and register it, or leave nothing."""
    default_finish(wb, s, job, outcome)
    _job_error(job)
    built = Path(job.cwd) / "model"
    name, target = job.params["name"], Path(job.params["target"])
    if job.status == "succeeded":
        try:
            if not (built / "config.json").is_file():
                raise InvalidInput(f"{job.params['repo_id']} has no config.json: not a transformers model")
            check_name(s, name)  # taken while the download ran: fail rather than overwrite
            check_folder_free(s, target)
        except ForgeloopError as e:
            job.status, job.error = "failed", str(e)
    if job.status != "succeeded":
        shutil.rmtree(built, ignore_errors=True)
        return
    template, source = job.params.get("template"), "given"
    if not template:
        template = guess_template(built)
        source = "the model's chat template" if template else "default"
    if target.exists():
        shutil.rmtree(target)  # a leftover of an interrupted job, never registered (checked above)
    result = job.result or {}
    mv = ModelVersion(name=name, kind="base", base_path=str(target), template=template or "default",
                      in_arena=True,
                      meta={"template_source": source,
                            "hub": {"repo_id": job.params["repo_id"], "revision": job.params["revision"],
                                    "sha": result.get("sha")}})
    s.add(mv)
    s.flush()
    built.rename(target)
    job.result = {**result, "model_id": mv.id, "path": str(target)}


HUB_PUSH_KIND = JobKind(HUB_PUSH, finish=finish_push)
HUB_PULL_KIND = JobKind(HUB_PULL, finish=finish_pull)
