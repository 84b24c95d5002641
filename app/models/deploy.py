"""Deploy a version to Ollama, as a job: upload its GGUF (and adapter) blobs, then ``create``
the Ollama model with a TEMPLATE, stop tokens and system prompt generated from the
version's own chat template (`ollama_template`), and optionally point a stable tag at it.

Names follow ``<prefix>/<family>:<version>``: the family is the lineage's root model, the
version is this version's name, and ``:latest`` is the stable tag that rollback moves.
A `Deployment` row is written only when Ollama has the model (in the job's finish step),
so a failed deploy leaves nothing registered; a retry skips blobs Ollama already holds.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from app.core.errors import Conflict, EngineError, InvalidInput, NotFound
from app.core.jobs import ACTIVE, JobKind, JobSpec, Outcome, default_finish, python_command
from app.core.tables import Deployment, Job, ModelVersion
from app.models.gguf_meta import read_add_bos, template_adds_bos
from app.models.ollama_template import ollama_format
from app.models.registry import gate_block, get_model, register_remote_model

if TYPE_CHECKING:
    from app.core.workbench import Workbench

DEPLOY = "deploy"
OLLAMA = "ollama"
MODES = ("merged", "adapter")
# Quantizations Ollama performs itself at create time (from an F16/F32 GGUF).
QUANTIZE = ("q4_K_M", "q4_K_S", "q8_0")
# Preferred GGUF to upload when the user does not pick one: lossless first.
GGUF_PREFERENCE = ("f16", "bf16", "f32", "q8_0")
STABLE_TAG = "latest"
GONE = ("deleted",)
TAG_RE = re.compile(r"^\w[\w.-]{0,127}$")


def _slug(text: str) -> str:
    """Ollama names are lower-case path segments and tags."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.")
    return slug or "model"


def family_of(s: Session, mv: ModelVersion) -> ModelVersion:
    root = mv
    while root.parent_id and (parent := s.get(ModelVersion, root.parent_id)) is not None:
        root = parent
    return root


def ollama_name(wb: Workbench, s: Session, mv: ModelVersion, tag: str | None = None) -> str:
    family = _slug(family_of(s, mv).name)
    return f"{_slug(wb.settings.ollama_prefix)}/{family}:{tag or _slug(mv.name)}"


def context_length(model_dir: Path) -> int | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def _pick_gguf(mv: ModelVersion, gguf_type: str | None) -> dict[str, Any]:
    files = {g["type"]: g for g in (mv.meta or {}).get("gguf", []) if Path(g["path"]).is_file()}
    if not files:
        raise InvalidInput(f"{mv.name!r} has no GGUF file yet: convert it first (Export → GGUF)")
    if gguf_type:
        if gguf_type not in files:
            raise InvalidInput(f"{mv.name!r} has no {gguf_type} GGUF; it has {', '.join(sorted(files))}")
        return files[gguf_type]
    return next(files[t] for t in (*GGUF_PREFERENCE, *sorted(files)) if t in files)


def _check_tokenizer(gguf: dict[str, Any], template: str, weights_dir: Path) -> bool:
    """The GGUF must read prompts the way training did (see gguf_meta); returns its BOS flag."""
    if gguf.get("spacing_ok") is False:
        raise InvalidInput(f"{Path(gguf['path']).name}: llama.cpp would split prompts differently from "
                           "the tokenizer this version was trained with (SentencePiece spacing after "
                           "special tokens), so Ollama would not answer as the arena saw; set the "
                           "tokenizer's legacy spacing or add_space_prefix and convert again")
    expected = gguf.get("add_bos")
    if expected is None:  # a GGUF recorded before the export aligned the flag
        expected = template_adds_bos(template, weights_dir)
    add_bos = read_add_bos(gguf["path"])
    if add_bos != expected:
        raise InvalidInput(f"{Path(gguf['path']).name} {'does not add' if expected else 'adds'} a BOS token "
                           f"where the {template} template {'does' if expected else 'does not'}; "
                           "convert it again (Export → GGUF) so it answers as the arena saw")
    return bool(add_bos)


def plan_deploy(wb: Workbench, model_id: int, mode: str = "merged", gguf_type: str | None = None,
                quantize: str | None = None, stable_tag: bool = True) -> dict[str, Any]:
    """Everything the deploy job sends, worked out without touching Ollama: the blobs to
    upload (path → file name in the create request) and the create request itself."""
    mv = get_model(wb, model_id)
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if quantize and quantize not in QUANTIZE:
        raise InvalidInput(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if mv.kind not in ("base", "adapter", "full"):
        raise InvalidInput(f"{mv.name!r} is served by {mv.kind} already; only local versions deploy")
    with wb.session() as s:  # a merged export answers to the gate of the version it came from
        source = s.get(ModelVersion, mv.parent_id) if mv.parent_id and mv.run_id is None else None
    if why := gate_block(mv) or (gate_block(source) if source else None):
        raise Conflict(why)
    with wb.session() as s:
        if mode == "adapter":
            adapters = [a for a in (mv.adapter_path or "").split(",") if a]
            if len(adapters) != 1:
                raise InvalidInput(f"{mv.name!r} has {len(adapters)} adapters; deploying as base + adapter "
                                   "needs exactly one on a base: deploy it merged instead")
            base = s.get(ModelVersion, mv.parent_id) if mv.parent_id else None
            if base is None or base.adapter_path:
                raise InvalidInput(f"the base of {mv.name!r} must be a registered base or full model")
            gguf = _pick_gguf(base, gguf_type)
            folder = Path(adapters[0])
            adapter_files = {f.name: str(f) for f in (folder / "adapter_model.safetensors",
                                                      folder / "adapter_config.json")}
            if not all(Path(p).is_file() for p in adapter_files.values()):
                raise InvalidInput(f"{folder} lacks adapter_model.safetensors or adapter_config.json")
            weights_dir = Path(base.base_path)
        else:
            if mv.adapter_path:
                raise InvalidInput(f"{mv.name!r} is a LoRA version: merge it and convert the merged model "
                                   "to GGUF, or deploy it as base + adapter")
            gguf, adapter_files, weights_dir = _pick_gguf(mv, gguf_type), {}, Path(mv.base_path)
        name = ollama_name(wb, s, mv)
        latest = ollama_name(wb, s, mv, STABLE_TAG) if stable_tag else None
    fmt = ollama_format(mv, runner_adds_bos=_check_tokenizer(gguf, mv.template, weights_dir))
    if fmt.extra_bos:  # unreachable after _check_tokenizer, kept as the last guard
        raise InvalidInput(f"Ollama would put a BOS token before prompts the {mv.template} template "
                           "never starts with; convert the model again (Export → GGUF)")
    parameters: dict[str, Any] = {"stop": fmt.stop}
    if ctx := context_length(weights_dir):
        parameters["num_ctx"] = ctx
    gguf_name = Path(gguf["path"]).name
    create: dict[str, Any] = {"model": name, "template": fmt.template, "parameters": parameters}
    if fmt.system:
        create["system"] = fmt.system
    if quantize:
        create["quantize"] = quantize
    return {"host": wb.settings.ollama_host, "model_id": mv.id, "name": name, "latest": latest,
            "mode": mode, "gguf_type": gguf["type"],
            "blobs": {"files": {gguf_name: gguf["path"]}, "adapters": adapter_files},
            "create": create}


def start_deploy(wb: Workbench, model_id: int, mode: str = "merged", gguf_type: str | None = None,
                 quantize: str | None = None, stable_tag: bool = True) -> Job:
    """Queue a deploy of ``model_id`` to the configured Ollama host."""
    plan = plan_deploy(wb, model_id, mode, gguf_type, quantize, stable_tag)
    with wb.session() as s:
        for job in s.exec(select(Job).where(Job.kind == DEPLOY, Job.status.in_(ACTIVE))):
            if job.params.get("name") == plan["name"]:
                raise Conflict(f"job #{job.id} is already deploying {plan['name']}")
    folder = wb.settings.jobs_dir / f"deploy-{_slug(plan['name'])}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps(plan, indent=2))
    spec = JobSpec(command=python_command("app.models.deploy_job", str(folder / "plan.json")),
                   cwd=folder, log_path=folder / "job.log", progress_path=folder / "progress.jsonl",
                   result_path=folder / "result.json", title=f"deploy {plan['name']} to Ollama",
                   params={"model_id": plan["model_id"], "name": plan["name"], "latest": plan["latest"],
                           "host": plan["host"], "mode": mode, "gguf_type": plan["gguf_type"],
                           "quantize": quantize})
    return wb.jobs.submit(DEPLOY, spec)


def retry_deploy(wb: Workbench, job_id: int) -> Job:
    """Run a failed or cancelled deploy again from its saved plan; Ollama's blob store keeps
    what was uploaded, so only missing blobs are sent."""
    old = wb.jobs.get(job_id)
    if old.kind != DEPLOY:
        raise InvalidInput(f"job #{job_id} is a {old.kind} job, not a deploy")
    if old.status in ACTIVE or old.status == "succeeded":
        raise Conflict(f"job #{job_id} is {old.status}; only a failed deploy can be retried")
    p = old.params
    return start_deploy(wb, p["model_id"], p["mode"], p["gguf_type"], p["quantize"], bool(p["latest"]))


def finish_deploy(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    default_finish(wb, s, job, outcome)
    result = job.result or {}
    if job.status == "failed" and result.get("error"):
        job.error = result["error"]  # the job's own one-line reason beats a log tail
    if job.status == "succeeded" and result.get("name") != job.params["name"]:
        job.status, job.error = "failed", "the deploy ended without Ollama confirming the model"
    if job.status != "succeeded":
        return
    if s.get(ModelVersion, job.params["model_id"]) is None:
        raise InvalidInput("the deployed version has been deleted meanwhile")
    meta = {"job_id": job.id, "digest": result.get("digest"), "mode": job.params["mode"],
            "gguf_type": job.params["gguf_type"], "quantize": job.params.get("quantize")}
    _upsert(s, job.params["model_id"], job.params["name"], job.params["host"], meta)
    if job.params.get("latest"):
        _upsert(s, job.params["model_id"], job.params["latest"], job.params["host"],
                {"alias_of": job.params["name"], "digest": result.get("digest")})


def _upsert(s: Session, model_id: int, name: str, host: str, meta: dict[str, Any]) -> Deployment:
    """One live row per Ollama name and host: a redeploy replaces what the name pointed at."""
    row = s.exec(select(Deployment).where(Deployment.target == OLLAMA, Deployment.name == name,
                                          Deployment.url == host, Deployment.status.not_in(GONE))).first()
    row = row or Deployment(model_id=model_id, target=OLLAMA, name=name, url=host)
    row.model_id, row.status, row.meta = model_id, "deployed", meta
    s.add(row)
    s.flush()
    return row


DEPLOY_KIND = JobKind(DEPLOY, finish=finish_deploy)


# -- after the deploy: list, delete, roll back, battle -----------------------------------------------
def _client(host: str):
    import ollama

    # Short: these calls list, copy or delete; a host that does not answer is reported, not waited on.
    return ollama.Client(host=host, timeout=15)


def _ollama_call(host: str, what: str, call):
    """Run one Ollama client call; unreachable hosts and Ollama's errors become EngineError."""
    import httpx
    import ollama

    try:
        return call(_client(host))
    except ollama.ResponseError as exc:
        raise EngineError(f"Ollama refused to {what}: {exc.error}") from exc
    except (httpx.HTTPError, ConnectionError) as exc:
        raise EngineError(f"Ollama at {host} is unreachable ({what}): {exc}") from exc


def get_deployment(wb: Workbench, deployment_id: int) -> Deployment:
    with wb.session() as s:
        row = s.get(Deployment, deployment_id)
        if row is None or row.status in GONE:
            raise NotFound(f"no deployment with id {deployment_id}")
        return row


def deployment_json(row: Deployment, model_name: str | None = None, present: bool | None = None
                    ) -> dict[str, Any]:
    return {"id": row.id, "model_id": row.model_id, "model": model_name, "target": row.target,
            "name": row.name, "host": row.url, "status": row.status, "present": present,
            "alias_of": (row.meta or {}).get("alias_of"), "digest": (row.meta or {}).get("digest"),
            "created_at": row.created_at.isoformat() if row.created_at else None}


def list_deployments(wb: Workbench, check_ollama: bool = True) -> dict[str, Any]:
    """Forgeloop's deployments next to what Ollama actually has. ``present`` is None when
    Ollama could not be asked; ``unknown`` lists Ollama models no deployment accounts for."""
    host = wb.settings.ollama_host
    with wb.session() as s:
        rows = list(s.exec(select(Deployment).where(Deployment.status.not_in(GONE))
                           .order_by(Deployment.id)))
        names = {m.id: m.name for m in s.exec(select(ModelVersion))}
    have: dict[str, str] | None = None
    error = None
    if check_ollama:
        try:
            listed = _ollama_call(host, "list models", lambda c: c.list())
            have = {m.model: m.digest for m in listed.models}
        except EngineError as exc:
            error = str(exc)
    out = []
    for row in rows:
        present = None
        if row.target == OLLAMA and have is not None and row.url == host:
            present = _canonical(row.name) in have
        out.append(deployment_json(row, names.get(row.model_id), present))
    ours = {_canonical(r.name) for r in rows if r.target == OLLAMA and r.url == host}
    unknown = sorted(n for n in (have or {}) if n not in ours)
    return {"host": host, "reachable": have is not None, "error": error, "deployments": out,
            "unknown": [{"name": n, "forgeloop_prefix": n.startswith(f"{_slug(wb.settings.ollama_prefix)}/")}
                        for n in unknown]}


def _canonical(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def delete_deployment(wb: Workbench, deployment_id: int) -> dict[str, Any]:
    """Remove the model from Ollama (already gone is fine) and mark the row deleted. The
    stable tag pointing at it goes too, and arena entries serving it leave the arena."""
    import ollama

    row = get_deployment(wb, deployment_id)
    if row.target != OLLAMA:
        raise InvalidInput(f"deployment #{row.id} is on {row.target}; delete it there")

    def drop(c):
        try:
            c.delete(row.name)
        except ollama.ResponseError as exc:
            if exc.status_code != 404:
                raise
    _ollama_call(row.url, f"delete {row.name}", drop)
    with wb.session() as s:
        live = s.get(Deployment, row.id)
        live.status = "deleted"
        s.add(live)
        for alias in s.exec(select(Deployment).where(Deployment.status.not_in(GONE))):
            if (alias.meta or {}).get("alias_of") == row.name and alias.url == row.url:
                alias.meta = {**alias.meta, "stale": True}  # the tag still exists in Ollama on its own
                s.add(alias)
        for mv in s.exec(select(ModelVersion).where(ModelVersion.kind == OLLAMA)):
            if mv.base_path == row.name and (mv.meta or {}).get("endpoint") == row.url:
                mv.in_arena = False
                s.add(mv)
        s.commit()
        s.refresh(live)
        return deployment_json(live)


def rollback(wb: Workbench, deployment_id: int, tag: str = STABLE_TAG) -> dict[str, Any]:
    """Point the family's stable tag (``:latest``) at this deployment's version with Ollama's
    ``copy``; the stable tag's row then names this version."""
    row = get_deployment(wb, deployment_id)
    if row.target != OLLAMA:
        raise InvalidInput(f"deployment #{row.id} is on {row.target}; roll back there")
    if not TAG_RE.match(tag or ""):
        raise InvalidInput(f"tag {tag!r}: use letters, digits, '_', '.' or '-'")
    if (row.meta or {}).get("alias_of"):
        raise InvalidInput(f"{row.name} is itself a stable tag; roll back to a version's deployment")
    stable = f"{row.name.rsplit(':', 1)[0]}:{tag}"
    if stable == row.name:
        raise InvalidInput(f"{row.name} already is the {tag} tag")
    _ollama_call(row.url, f"copy {row.name} to {stable}", lambda c: c.copy(row.name, stable))
    with wb.session() as s:
        alias = _upsert(s, row.model_id, stable, row.url,
                        {"alias_of": row.name, "digest": (row.meta or {}).get("digest")})
        s.commit()
        s.refresh(alias)
        return deployment_json(alias)


def add_to_arena(wb: Workbench, deployment_id: int, name: str | None = None) -> ModelVersion:
    """Register the deployed model as an Ollama contestant, a child of the version it serves,
    so its battles count for that lineage."""
    row = get_deployment(wb, deployment_id)
    if row.target != OLLAMA:
        raise InvalidInput(f"deployment #{row.id} is on {row.target}, not Ollama")
    with wb.session() as s:
        for mv in s.exec(select(ModelVersion).where(ModelVersion.kind == OLLAMA)):
            if mv.base_path == row.name and (mv.meta or {}).get("endpoint") == row.url:
                raise Conflict(f"{row.name} is already registered as {mv.name!r}")
    name = name or f"{row.name.replace('/', '-').replace(':', '-')}"
    mv = register_remote_model(wb, name, OLLAMA, row.url, row.name)
    with wb.session() as s:
        live = s.get(ModelVersion, mv.id)
        live.parent_id, live.in_arena = row.model_id, True
        live.meta = {**live.meta, "deployment_id": row.id}
        s.add(live)
        s.commit()
        s.refresh(live)
        return live


def file_digest(path: Path, on_bytes=None) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return f"sha256:{sha.hexdigest()}"
