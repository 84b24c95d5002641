"""Models handed to a job process. The plan file holds each model's registry row without
its API key; the keys travel in the job's secret environment (``JobSpec.secret_env``)
as JSON by role, and the process puts them back."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.tables import ModelVersion

if TYPE_CHECKING:
    from sqlmodel import SQLModel

    from app.core.workbench import Workbench


def plan_models(models: dict[str, ModelVersion | None]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each model's row for the plan file, and the API keys taken out of them, by role."""
    rows, keys = {}, {}
    for role, mv in models.items():
        if mv is None:
            continue
        fields = mv.model_dump(mode="json")
        meta = dict(fields.get("meta") or {})
        if meta.get("api_key"):
            keys[role] = meta.pop("api_key")
        rows[role] = {**fields, "meta": meta}
    return rows, keys


def load_plan_models(rows: dict[str, dict[str, Any]], keys_env: str) -> dict[str, ModelVersion]:
    """In the job process: the plan's models with their keys from ``keys_env`` again."""
    keys = json.loads(os.environ.get(keys_env) or "{}")
    models = {}
    for role, fields in rows.items():
        mv = ModelVersion(**fields)
        if role in keys:
            mv.meta = {**(mv.meta or {}), "api_key": keys[role]}
        models[role] = mv
    return models


def write_json_atomic(path: str | Path | None, data: Any) -> None:
    """Replace ``path`` in one step: a finish step never reads half a file."""
    if path:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)


def attach_job(wb: Workbench, table: type[SQLModel], row_id: int, job_id: int) -> Any:
    """Record on a domain row (an eval run, a measurement) the job that does its work;
    the row as stored."""
    with wb.write_lock, wb.session() as s:
        row = s.get(table, row_id)
        row.job_id = job_id
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def exit_job(code: int) -> None:
    """End a job process that ran local models without the interpreter's teardown: its
    result is written by now, and torch's native threads can abort the process while it
    unwinds ("terminate called without an active exception", SIGABRT), which would turn a
    finished job into an interrupted one."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
