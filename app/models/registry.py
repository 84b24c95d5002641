"""The model registry: base models, trained versions and their lineage."""

from __future__ import annotations

import ast
import contextlib
import difflib
import functools
import importlib.util
import json
import re
import secrets
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.jobs import ACTIVE, JobKind, JobSpec, Outcome, default_finish, python_command
from app.core.tables import Deployment, Job, ModelVersion, Run
from app.models import version_record
from app.models.starter_model import STARTER_TEMPLATE
from app.models.version_record import ENDED_DEPLOYMENTS, LOCAL_KINDS

if TYPE_CHECKING:
    from app.core.workbench import Workbench
    from app.models.starter_model import StarterSpec

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
STARTER_NAME = "starter-tiny"


def check_name(s, name: str) -> None:
    if not name or not name.strip():
        raise InvalidInput("a model needs a name")
    if s.exec(select(ModelVersion).where(ModelVersion.name == name)).first():
        raise Conflict(f"a model named {name!r} already exists")


# Markers of a Jinja chat template → the LLaMA-Factory template that renders the same text.
CHAT_MARKERS = (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"), ("<start_of_turn>", "gemma"),
                ("[INST]", "llama2"))


def chat_template_text(model_dir: Path) -> str:
    """The model's Jinja chat template: ``chat_template.jinja`` (where transformers 5 writes
    it) or ``tokenizer_config.json``'s ``chat_template``; "" when it has none."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace")
    try:
        chat = json.loads((model_dir / "tokenizer_config.json").read_text()).get("chat_template") or ""
    except (OSError, ValueError, AttributeError):
        return ""
    if isinstance(chat, list):  # several named templates
        chat = " ".join(t.get("template", "") for t in chat if isinstance(t, dict))
    return chat if isinstance(chat, str) else ""


def guess_template(model_dir: Path) -> str | None:
    """Pick a LLaMA-Factory template from the model's own chat template, if it has one."""
    chat = chat_template_text(model_dir)
    return next((name for marker, name in CHAT_MARKERS if marker in chat), None)


@functools.cache
def lf_template_names() -> frozenset[str]:
    """The template names LLaMA-Factory knows, read from its source (importing it would
    import torch)."""
    spec = importlib.util.find_spec("llamafactory")
    if spec is None or spec.origin is None:
        return frozenset()
    source = Path(spec.origin).parent / "data" / "template.py"
    names = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_template":
            for kw in node.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    names.add(kw.value.value)
    return frozenset(names)


def check_template(template: str) -> None:
    known = lf_template_names()
    if known and template not in known:
        close = difflib.get_close_matches(template, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see LLaMA-Factory's template list"
        raise InvalidInput(f"LLaMA-Factory has no chat template named {template!r}{hint}")


def register_base_model(
    wb: Workbench, name: str, path_or_hub_id: str, template: str | None = None
) -> ModelVersion:
    """Register a local HF model folder or a Hugging Face Hub id as a base model."""
    ref = (path_or_hub_id or "").strip()
    if not ref:
        raise InvalidInput("give a local model folder or a Hub id such as Qwen/Qwen2.5-0.5B")
    template = (template or "").strip() or None
    if template:
        check_template(template)
    source = "given" if template else "default"
    local = Path(ref).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise InvalidInput(f"{local} has no config.json; is it a Hugging Face model folder?")
        ref = str(local.resolve())
        if template is None and (template := guess_template(local)):
            source = "the model's chat template"
    elif ref.startswith(("/", ".", "~")) or not HUB_ID_RE.match(ref):
        raise InvalidInput(f"model path {ref} does not exist (and is not a Hub id like org/name)")
    with wb.session() as s:
        check_name(s, name)
        mv = ModelVersion(
            name=name, kind="base", base_path=ref, template=template or "default", in_arena=True,
            meta={"template_source": source},
        )
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def start_starter_build(wb: Workbench, name: str = STARTER_NAME, spec: StarterSpec | None = None) -> Job:
    """Queue a job that builds the tiny starter model; its finish step registers it."""
    from app.models.starter_model import StarterSpec

    with wb.session() as s:
        check_name(s, name)
    folder = wb.settings.jobs_dir / f"starter-{name}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    job_spec = JobSpec(
        command=python_command("app.models.starter_job", str(folder / "model"),
                               json.dumps(asdict(spec or StarterSpec()))),
        cwd=folder, log_path=folder / "job.log", progress_path=folder / "progress.jsonl",
        result_path=folder / "result.json", title=f"build {name}",
        params={"name": name, "target": str(wb.settings.models_dir / name)},
    )
    return wb.jobs.submit(STARTER, job_spec)


def finish_starter(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Move the built model into storage/models and register it, or leave nothing."""
    default_finish(wb, s, job, outcome)
    built = Path(job.cwd) / "model"
    if job.status == "succeeded":
        name, target = job.params["name"], Path(job.params["target"])
        check_name(s, name)  # taken while the build ran: fail rather than overwrite
        check_folder_free(s, target)  # a renamed version may still live there
        if target.exists():
            shutil.rmtree(target)  # a leftover from an interrupted build, never registered
        mv = ModelVersion(name=name, kind="base", base_path=str(target), template=STARTER_TEMPLATE,
                          meta={"starter": job.result})
        s.add(mv)
        s.flush()
        built.rename(target)
        job.result = {**job.result, "model_id": mv.id}
    else:
        shutil.rmtree(built, ignore_errors=True)


STARTER = "starter"
STARTER_KIND = JobKind(STARTER, finish=finish_starter)


def create_starter_model(wb: Workbench, name: str = STARTER_NAME, spec: StarterSpec | None = None,
                         timeout: float = 900.0) -> ModelVersion:
    """Build and register the starter model, waiting for the job (scripts and tests)."""
    job = wb.jobs.wait(start_starter_build(wb, name, spec).id, timeout)
    if job.status != "succeeded":
        raise InvalidInput(f"building the starter model {job.status}: {job.error}")
    return get_model(wb, job.result["model_id"])


def check_folder_free(s: Session, target: Path) -> None:
    """storage/models/NAME may be a leftover of an interrupted job, but never a registered model's."""
    for mv in s.exec(select(ModelVersion)):
        paths = [Path(p) for p in (mv.base_path, *(mv.adapter_path or "").split(",")) if p]
        if any(p == target or target in p.parents or p in target.parents for p in paths):
            raise InvalidInput(f"{target} holds the weights of {mv.name!r}; choose another name")


def list_models(wb: Workbench, include_archived: bool = True) -> list[ModelVersion]:
    with wb.session() as s:
        models = list(s.exec(select(ModelVersion).order_by(ModelVersion.id)))
    return models if include_archived else [m for m in models if not is_archived(m)]


def is_archived(mv: ModelVersion) -> bool:
    return bool((mv.meta or {}).get("archived"))


TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")


SYSTEM_PROMPT_LIMIT = 20_000


def model_system_prompt(mv: ModelVersion) -> str:
    """The version's own system prompt ("" when it has none): the arena's chat uses it when a
    request gives none, training passes it as LLaMA-Factory's ``default_system``, and an Ollama
    deployment writes it as SYSTEM. Without one, the template's default system prompt applies."""
    value = (mv.meta or {}).get("system_prompt")
    return value if isinstance(value, str) else ""


# How a local model's worker runs it (app/inference/workers.py): auto picks vLLM or SGLang on
# a GPU where installed, else LLaMA-Factory's huggingface backend.
WORKER_BACKENDS = ("auto", "huggingface", "vllm", "sglang")


def edit_model(wb: Workbench, model_id: int, name: str | None = None, tags: list[str] | None = None,
               notes: str | None = None, archived: bool | None = None,
               system_prompt: str | None = None, worker_backend: str | None = None) -> ModelVersion:
    """Rename, tag, annotate or archive a version (archived: hidden from pickers and out of
    the arena, kept on disk and in the lineage), set its system prompt ("" clears it) or the
    backend its worker uses ("auto": vLLM or SGLang on a GPU where installed).
    ``None`` leaves a field as it is."""
    if all(v is None for v in (name, tags, notes, archived, system_prompt, worker_backend)):
        raise InvalidInput("nothing to change: give a name, tags, notes, archived, a system prompt "
                           "or a worker backend")
    if worker_backend is not None and worker_backend not in WORKER_BACKENDS:
        raise InvalidInput(f"unknown worker backend {worker_backend!r} "
                           f"(choose from {', '.join(WORKER_BACKENDS)})")
    if system_prompt is not None and len(system_prompt) > SYSTEM_PROMPT_LIMIT:
        raise InvalidInput(f"a system prompt is limited to {SYSTEM_PROMPT_LIMIT:,} characters")
    if tags is not None:
        tags = sorted({t.strip() for t in tags if t.strip()})
        bad = [t for t in tags if not TAG_RE.match(t)]
        if bad:
            raise InvalidInput(f"tag {bad[0]!r}: use up to 40 letters, digits, '_', '.', ':' or '-'")
    if notes is not None and len(notes) > 10_000:
        raise InvalidInput("notes are limited to 10,000 characters")
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        if mv is None:
            raise NotFound(f"no model with id {model_id}")
        if name is not None and name.strip() != mv.name:
            check_name(s, name.strip())
            mv.name = name.strip()
        meta = dict(mv.meta or {})
        if tags is not None:
            meta["tags"] = tags
        if notes is not None:
            meta["notes"] = notes.strip()
        if system_prompt is not None:
            if system_prompt.strip():
                meta["system_prompt"] = system_prompt
            else:
                meta.pop("system_prompt", None)
        if worker_backend is not None:
            if mv.kind in ("ollama", "openai"):
                raise InvalidInput(f"model {mv.name!r} is served elsewhere: it has no worker")
            if worker_backend == "auto":
                meta.pop("worker_backend", None)
            else:
                meta["worker_backend"] = worker_backend
        if archived is not None:
            meta["archived"] = archived
            if archived:
                mv.in_arena = False
        mv.meta = meta
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def weights_key(mv: ModelVersion) -> tuple[str, ...]:
    """What a model's answers come from: versions with equal keys share their weights, whatever
    their names or templates. A served model is known only by its server and tag."""
    if mv.kind in ("ollama", "openai"):
        tag = mv.base_path.strip()
        if mv.kind == "ollama" and ":" not in tag:
            tag += ":latest"  # Ollama's own default tag
        return (mv.kind, str((mv.meta or {}).get("endpoint", "")).rstrip("/"), tag)
    return ("local", mv.base_path.rstrip("/"), mv.adapter_path or "")


def get_model(wb: Workbench, model_id: int) -> ModelVersion:
    return wb.row(ModelVersion, model_id, "model")


def check_model_files(mv: ModelVersion) -> None:
    """Fail early and clearly when a registered model's files have gone missing."""
    base = Path(mv.base_path)
    if (mv.base_path.startswith("/") or base.exists()) and not (base / "config.json").is_file():
        raise InvalidInput(f"model {mv.name!r}: weights folder {base} is missing or incomplete")
    for adapter in filter(None, (mv.adapter_path or "").split(",")):
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise InvalidInput(f"model {mv.name!r}: adapter folder {adapter} is missing")


def lineage(wb: Workbench, model_id: int) -> list[dict[str, Any]]:
    """The chain from ``model_id`` back to its base: each model with the run and
    datasets that produced it."""
    with wb.session() as s:
        return version_record.lineage(s, model_id)


def register_remote_model(
    wb: Workbench, name: str, kind: str, endpoint: str, model: str, api_key: str | None = None
) -> ModelVersion:
    """Register a model served elsewhere: ``kind`` is ollama (endpoint = the Ollama host)
    or openai (endpoint = an OpenAI-compatible base URL ending in /v1)."""
    if kind not in ("ollama", "openai"):
        raise InvalidInput("a served model is either ollama or openai")
    endpoint = (endpoint or "").strip().rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise InvalidInput(f"endpoint must be an http(s) URL, got {endpoint!r}")
    if not (model or "").strip():
        raise InvalidInput("give the model name the server knows, e.g. llama3.2:1b")
    meta: dict[str, Any] = {"endpoint": endpoint}
    if api_key:
        meta["api_key"] = api_key
    with wb.session() as s:
        check_name(s, name)
        mv = ModelVersion(name=name, kind=kind, base_path=model.strip(), template="", meta=meta)
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


# Gate states (written by app.evals.gates into meta["gate"]) that keep a version out of the
# arena and away from deployment; "passed" and "waived" let it through.
GATE_BLOCKS = ("pending", "failed", "incomplete")


def gate_block(mv: ModelVersion) -> str | None:
    """Why an eval gate holds ``mv`` back, or None when nothing does."""
    gate = (mv.meta or {}).get("gate") or {}
    if gate.get("status") not in GATE_BLOCKS:
        return None
    return (f"{mv.name} is held back by its eval gate ({gate['status']}): {gate.get('reason', '')}"
            " — wait for the evals, re-run them, or waive the gate in the Evaluate tab").strip()


def set_in_arena(wb: Workbench, model_id: int, in_arena: bool) -> ModelVersion:
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        if mv is None:
            raise NotFound(f"no model with id {model_id}")
        if in_arena and (why := gate_block(mv)):
            raise Conflict(why)
        mv.in_arena = in_arena
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def delete_model(wb: Workbench, model_id: int) -> None:
    """Forget a model that nothing depends on (no children, runs, battles, live deployments or
    jobs reading it), then remove the files it owns: its folder and GGUF files under
    storage/models, unless another version still points at them. Files go only once the row
    is gone, so a refused or failed delete leaves everything in place."""
    from app.core.tables import Battle, EvalRun

    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        if mv is None:
            raise NotFound(f"no model with id {model_id}")
        if s.exec(select(ModelVersion).where(ModelVersion.parent_id == model_id)).first():
            raise Conflict(f"{mv.name!r} has trained children; delete them first")
        if s.exec(select(Run).where(Run.model_id == model_id)).first():
            raise Conflict(f"runs started from {mv.name!r} still exist; delete them first")
        if s.exec(select(Battle).where((Battle.model_a_id == model_id) | (Battle.model_b_id == model_id))
                  ).first():
            raise Conflict(f"{mv.name!r} has arena battles; take it out of the arena instead")
        if s.exec(select(EvalRun).where((EvalRun.model_id == model_id) | (EvalRun.baseline_id == model_id)
                                        | (EvalRun.judge_model_id == model_id))).first():
            raise Conflict(f"{mv.name!r} has eval runs (as the model, baseline or judge); delete them first")
        deployed = s.exec(select(Deployment).where(Deployment.model_id == model_id)).all()
        for d in deployed:  # a Hub copy lives on without this version; an Ollama model needs it
            if d.target != "hub" and d.status not in ENDED_DEPLOYMENTS:
                raise Conflict(f"{mv.name!r} is deployed ({d.target} {d.name!r}, {d.status}); "
                               "remove the deployment first")
        # Jobs name the model they read in their params (an export's model_id or parent_id).
        for job in s.exec(select(Job).where(Job.status.in_(ACTIVE))):
            if model_id in (job.params.get("model_id"), job.params.get("parent_id")):
                raise Conflict(f"job #{job.id} ({job.title}) is using {mv.name!r}; "
                               "wait for it or cancel it first")
        # Records of ended deployments and of Hub copies go with it; the copies stay.
        for d in deployed:
            s.delete(d)
        s.flush()
        s.delete(mv)
        others = s.exec(select(ModelVersion).where(ModelVersion.id != model_id)).all()
        owned = _owned_paths(wb, mv, others)
        s.commit()
    for path in owned:  # the row is gone: a file left behind is litter, never an error
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        if path.parent != wb.settings.models_dir.resolve():
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the <name>-gguf folder, once empty


def _owned_paths(wb: Workbench, mv: ModelVersion, others: list[ModelVersion]) -> list[Path]:
    """What deleting ``mv`` may remove: its weights folder and GGUF files when they lie under
    storage/models (a starter build, a merge, a conversion) and no other version uses them.
    Adapters belong to their run's folder and user folders to the user: neither is touched."""
    root = wb.settings.models_dir.resolve()
    candidates = [g["path"] for g in (mv.meta or {}).get("gguf", []) if g.get("path")]
    if mv.kind in ("base", "full") and not mv.adapter_path:
        candidates.append(mv.base_path)
    used = set()
    for m in others:
        refs = [m.base_path, *(m.adapter_path or "").split(","),
                *(g.get("path", "") for g in (m.meta or {}).get("gguf", []))]
        used |= {str(Path(r).resolve()) for r in refs if r and m.kind in LOCAL_KINDS}
    out = []
    for c in candidates:
        path = Path(c).resolve()
        if path != root and path.is_relative_to(root) and str(path) not in used:
            out.append(path)
    return out


def register_adapter(wb: Workbench, name: str, parent_id: int, adapter_path: str) -> ModelVersion:
    """Register an existing LoRA adapter folder trained on ``parent_id``'s weights."""
    parent = get_model(wb, parent_id)
    folder = Path(adapter_path).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise InvalidInput(f"{folder} has no adapter_config.json; is it a LoRA adapter folder?")
    if parent.kind not in ("base", "adapter", "full"):
        raise InvalidInput(f"{parent.name!r} is served elsewhere; an adapter needs local weights")
    chain = [p for p in (parent.adapter_path or "").split(",") if p] + [str(folder.resolve())]
    with wb.session() as s:
        check_name(s, name)
        mv = ModelVersion(name=name, kind="adapter", base_path=parent.base_path, adapter_path=",".join(chain),
                          template=parent.template, parent_id=parent.id)
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv
