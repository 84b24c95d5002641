"""The model registry: base models, trained versions and their lineage."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from sqlmodel import select

from app.errors import Conflict, InvalidInput, NotFound
from app.tables import Dataset, ModelVersion, Run
from app.workbench import Workbench

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
STARTER_NAME = "starter-tiny"


def _check_name(s, name: str) -> None:
    if not name or not name.strip():
        raise InvalidInput("a model needs a name")
    if s.exec(select(ModelVersion).where(ModelVersion.name == name)).first():
        raise Conflict(f"a model named {name!r} already exists")


def guess_template(model_dir: Path) -> str | None:
    """Pick a LLaMA-Factory template from the tokenizer's chat template, if it has one."""
    cfg = model_dir / "tokenizer_config.json"
    if not cfg.is_file():
        return None
    try:
        chat = json.loads(cfg.read_text()).get("chat_template") or ""
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(chat, list):  # several named templates
        chat = " ".join(t.get("template", "") for t in chat if isinstance(t, dict))
    if "<|im_start|>" in chat:
        return "chatml"
    if "[INST]" in chat:
        return "llama2"
    if "<|start_header_id|>" in chat:
        return "llama3"
    if "<start_of_turn>" in chat:
        return "gemma"
    return None


def register_base_model(
    wb: Workbench, name: str, path_or_hub_id: str, template: str | None = None
) -> ModelVersion:
    """Register a local HF model folder or a Hugging Face Hub id as a base model."""
    ref = (path_or_hub_id or "").strip()
    if not ref:
        raise InvalidInput("give a local model folder or a Hub id such as Qwen/Qwen2.5-0.5B")
    local = Path(ref).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise InvalidInput(f"{local} has no config.json; is it a Hugging Face model folder?")
        ref = str(local.resolve())
        template = template or guess_template(local)
    elif ref.startswith(("/", ".", "~")) or not HUB_ID_RE.match(ref):
        raise InvalidInput(f"model path {ref} does not exist (and is not a Hub id like org/name)")
    with wb.session() as s:
        _check_name(s, name)
        mv = ModelVersion(
            name=name, kind="base", base_path=ref, template=template or "default", in_arena=True
        )
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def create_starter_model(wb: Workbench, name: str = STARTER_NAME, spec=None) -> ModelVersion:
    """Build the tiny starter model under storage/models and register it as a base."""
    from app.starter_model import STARTER_TEMPLATE, build_starter_model

    with wb.session() as s:
        _check_name(s, name)
    out = wb.settings.models_dir / name
    if out.exists():
        shutil.rmtree(out)  # a leftover from an interrupted build, never registered
    tmp = out.with_name(f".{name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = build_starter_model(tmp, spec)
    tmp.rename(out)
    with wb.session() as s:
        mv = ModelVersion(
            name=name,
            kind="base",
            base_path=str(out),
            template=STARTER_TEMPLATE,
            meta={"starter": summary},
        )
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def list_models(wb: Workbench) -> list[ModelVersion]:
    with wb.session() as s:
        return list(s.exec(select(ModelVersion).order_by(ModelVersion.id)))


def get_model(wb: Workbench, model_id: int) -> ModelVersion:
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
    if mv is None:
        raise NotFound(f"no model with id {model_id}")
    return mv


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
    chain = []
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        if mv is None:
            raise NotFound(f"no model with id {model_id}")
        while mv is not None:
            step: dict[str, Any] = {"model_id": mv.id, "name": mv.name, "kind": mv.kind}
            if mv.run_id:
                run = s.get(Run, mv.run_id)
                step["run"] = {"id": run.id, "stage": run.stage, "recipe": run.recipe}
                step["datasets"] = [
                    {"id": d.id, "name": d.name, "source": d.source}
                    for d in (s.get(Dataset, i) for i in run.dataset_ids)
                    if d is not None
                ]
            chain.append(step)
            mv = s.get(ModelVersion, mv.parent_id) if mv.parent_id else None
    return chain


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
        _check_name(s, name)
        mv = ModelVersion(name=name, kind=kind, base_path=model.strip(), template="", meta=meta)
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv


def set_in_arena(wb: Workbench, model_id: int, in_arena: bool) -> ModelVersion:
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        if mv is None:
            raise NotFound(f"no model with id {model_id}")
        mv.in_arena = in_arena
        s.add(mv)
        s.commit()
        s.refresh(mv)
    wb.leaderboard.invalidate()
    return mv


def delete_model(wb: Workbench, model_id: int) -> None:
    """Forget a model that nothing depends on (no children, runs or battles)."""
    from app.tables import Battle

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
        s.delete(mv)
        s.commit()


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
        _check_name(s, name)
        mv = ModelVersion(name=name, kind="adapter", base_path=parent.base_path, adapter_path=",".join(chain),
                          template=parent.template, parent_id=parent.id)
        s.add(mv)
        s.commit()
        s.refresh(mv)
    return mv
