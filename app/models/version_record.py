"""Everything the registry knows about one version, gathered in one place.

``version_record`` is the one data-gathering function behind both the model card
(``card.model_card`` renders it as Markdown) and the full version view
(``app.arena.version_view`` adds the arena rating, which lives a layer up). It reads the
database and the file system only: the version, its parent, the run that trained it (its
recipe, hyper-parameters and losses), the datasets it learned from (a votes dataset also
says how many votes and voters it came from), its size on disk, its deployments, every
vote it was in, and its lineage down to the base. Values are plain JSON types.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from app.core.errors import NotFound
from app.core.tables import Dataset, Deployment, ModelVersion, Run

# The hyper-parameters a version's recipe shows (when its run set them).
RECIPE_PARAMS = ("finetuning_type", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "lora_rank", "lora_alpha", "pref_beta", "cutoff_len",
                 "val_size", "template")
LOCAL_KINDS = ("base", "adapter", "full")
# Deployments in these states no longer serve the version.
ENDED_DEPLOYMENTS = ("deleted", "failed")

RECORD_SQL = text(
    "SELECT b.model_a_id, b.model_b_id, v.choice FROM votes v JOIN battles b ON b.id = v.battle_id "
    "WHERE (b.model_a_id = :m OR b.model_b_id = :m) AND b.model_a_id != b.model_b_id"
)
# The votes a votes dataset was built from (preference_export records their ids in meta).
VOTERS_SQL = text("SELECT count(DISTINCT v.voter) FROM votes v JOIN json_each(:ids) j ON v.id = j.value")


def arena_record(s: Session, model_id: int) -> dict[str, int]:
    """Wins, losses and ties of a version over every vote it was in (both-bad counts as a tie)."""
    record = {"wins": 0, "losses": 0, "ties": 0}
    for a, _b, choice in s.connection().execute(RECORD_SQL, {"m": model_id}):
        if choice in ("tie", "both_bad"):
            record["ties"] += 1
        elif (choice == "a") == (a == model_id):
            record["wins"] += 1
        else:
            record["losses"] += 1
    return record


def chain(s: Session, mv: ModelVersion) -> list[ModelVersion]:
    """``mv``, its parent, its parent's parent… down to the base."""
    out = [mv]
    while out[-1].parent_id:
        parent = s.get(ModelVersion, out[-1].parent_id)
        if parent is None:
            break
        out.append(parent)
    return out


def dataset_facts(s: Session, ds: Dataset) -> dict[str, Any]:
    facts: dict[str, Any] = {"id": ds.id, "name": ds.name, "kind": ds.kind, "format": ds.format,
                             "source": ds.source, "rows": ds.num_rows, "sha256": ds.sha256}
    vote_ids = (ds.meta or {}).get("vote_ids")
    if ds.source == "votes" and isinstance(vote_ids, list):
        facts["votes"] = len(vote_ids)
        facts["voters"] = s.connection().execute(VOTERS_SQL, {"ids": json.dumps(vote_ids)}).scalar_one()
    return facts


def losses(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The last logged training loss (else the trainer's average) and the final evaluation loss
    (the trainer's end-of-run evaluation, else the last logged one)."""
    return {"final_loss": metrics.get("final_loss", metrics.get("train_loss")),
            "eval_loss": metrics.get("eval_loss", metrics.get("final_eval_loss"))}


def step_facts(s: Session, mv: ModelVersion) -> dict[str, Any]:
    """One version with the run that made it: stage, status, recipe and hyper-parameters, the
    exact config, metrics and losses, and its datasets. Versions no run made have no run keys."""
    step: dict[str, Any] = {"model_id": mv.id, "name": mv.name, "kind": mv.kind, "base_path": mv.base_path}
    run = s.get(Run, mv.run_id) if mv.run_id else None
    if run is None:
        return step
    datasets = [dataset_facts(s, d) for d in (s.get(Dataset, i) for i in run.dataset_ids) if d is not None]
    config = dict(run.config or {})
    step["run"] = {"id": run.id, "name": run.name, "stage": run.stage, "recipe": run.recipe,
                   "status": run.status, "config": config, "metrics": dict(run.metrics or {})}
    step["recipe"] = {"name": run.recipe, "stage": run.stage,
                      **{k: config[k] for k in RECIPE_PARAMS if k in config},
                      "datasets": [d["name"] for d in datasets]}
    step["datasets"] = datasets
    step["losses"] = losses(run.metrics or {})
    return step


def folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path``; links count as links, not as what they point to."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while we walked
    return total


def weights_folder(mv: ModelVersion) -> Path | None:
    """The folder that holds this version's own weights: its newest adapter, else its base
    folder; None for served models and Hub ids."""
    if mv.kind not in LOCAL_KINDS:
        return None
    own = mv.adapter_path.split(",")[-1] if mv.adapter_path else mv.base_path
    folder = Path(own)
    return folder if folder.is_dir() else None


def size_on_disk(mv: ModelVersion) -> dict[str, Any]:
    """Bytes of the version's own weights folder plus its GGUF files (bytes None when it has
    nothing on this disk: served elsewhere or a Hub id)."""
    folder = weights_folder(mv)
    weights = folder_bytes(folder) if folder is not None else None
    gguf = [Path(g["path"]) for g in (mv.meta or {}).get("gguf", []) if g.get("path")]
    gguf_bytes = sum(p.stat().st_size for p in gguf if p.is_file())
    has_any = weights is not None or any(p.is_file() for p in gguf)
    return {"bytes": (weights or 0) + gguf_bytes if has_any else None, "weights_bytes": weights,
            "gguf_bytes": gguf_bytes, "folder": str(folder) if folder else None}


def deployments(s: Session, model_id: int) -> list[dict[str, Any]]:
    rows = s.exec(select(Deployment).where(Deployment.model_id == model_id).order_by(Deployment.id))
    return [{"id": d.id, "target": d.target, "name": d.name, "status": d.status, "url": d.url,
             "active": d.status not in ENDED_DEPLOYMENTS,
             "created_at": d.created_at.isoformat() if d.created_at else None} for d in rows]


def version_record(s: Session, model_id: int) -> dict[str, Any]:
    """The version's own facts (its ``step_facts``) plus parent, size, deployments, tags and
    notes, its arena record over all votes, and ``lineage``: the step facts of the whole chain."""
    mv = s.get(ModelVersion, model_id)
    if mv is None:
        raise NotFound(f"no model with id {model_id}")
    steps = [step_facts(s, m) for m in chain(s, mv)]
    meta = mv.meta or {}
    parent = s.get(ModelVersion, mv.parent_id) if mv.parent_id else None
    return {
        "id": mv.id, "name": mv.name, "kind": mv.kind, "template": mv.template,
        "finetuning_type": mv.finetuning_type, "base_path": mv.base_path, "adapter_path": mv.adapter_path,
        "in_arena": mv.in_arena,
        "parent": {"id": parent.id, "name": parent.name} if parent else None,
        "run": steps[0].get("run"), "recipe": steps[0].get("recipe"),
        "datasets": steps[0].get("datasets", []),
        "losses": steps[0].get("losses", {"final_loss": None, "eval_loss": None}),
        "size": size_on_disk(mv), "gguf": meta.get("gguf", []),
        "created_at": mv.created_at.isoformat() if mv.created_at else None,
        "tags": meta.get("tags", []), "notes": meta.get("notes", ""), "archived": bool(meta.get("archived")),
        "deployments": deployments(s, mv.id), "arena_record": arena_record(s, mv.id),
        "lineage": steps,
    }


def lineage(s: Session, model_id: int) -> list[dict[str, Any]]:
    """The chain back to the base in brief: each version with its run's id, stage and recipe,
    and its datasets' ids, names and sources."""
    mv = s.get(ModelVersion, model_id)
    if mv is None:
        raise NotFound(f"no model with id {model_id}")
    out = []
    for step in (step_facts(s, m) for m in chain(s, mv)):
        brief = {k: step[k] for k in ("model_id", "name", "kind")}
        if "run" in step:
            brief["run"] = {k: step["run"][k] for k in ("id", "stage", "recipe")}
            brief["datasets"] = [{k: d[k] for k in ("id", "name", "source")} for d in step["datasets"]]
        out.append(brief)
    return out
