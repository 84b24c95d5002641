"""Training presets (a Train form saved under a name) and the small run chores: rename a
run, and which actions its state allows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Run, TrainPreset, utcnow
from app.train.training import ACTIVE, RUN_NAME_RE, TrainRequest, get_recipe, get_run, newest_checkpoint

if TYPE_CHECKING:
    from app.core.workbench import Workbench


def save_preset(wb: Workbench, name: str, request: dict[str, Any]) -> TrainPreset:
    """Save a form under ``name``; saving under a name that exists replaces it."""
    name = (name or "").strip()
    if not RUN_NAME_RE.match(name):
        raise InvalidInput(f"preset name {name!r}: use letters, digits, '_', '-' or '.'")
    get_recipe(request.get("recipe", ""))  # an unknown recipe is refused now, not when loaded
    TrainRequest(**{k: v for k, v in request.items() if k != "schedule"})  # the shape of a request
    with wb.session() as s:
        row = s.exec(select(TrainPreset).where(TrainPreset.name == name)).first() or TrainPreset(name=name)
        row.request, row.created_at = dict(request), utcnow()
        s.add(row)
        s.commit()
        s.refresh(row)
        return row


def list_presets(wb: Workbench) -> list[TrainPreset]:
    with wb.session() as s:
        return list(s.exec(select(TrainPreset).order_by(TrainPreset.name)))


def get_preset(wb: Workbench, name: str) -> TrainPreset:
    with wb.session() as s:
        row = s.exec(select(TrainPreset).where(TrainPreset.name == name)).first()
    if row is None:
        raise NotFound(f"no preset named {name!r}")
    return row


def delete_preset(wb: Workbench, name: str) -> None:
    with wb.session() as s:
        row = s.exec(select(TrainPreset).where(TrainPreset.name == name)).first()
        if row is None:
            raise NotFound(f"no preset named {name!r}")
        s.delete(row)
        s.commit()


def rename_run(wb: Workbench, run_id: int, name: str) -> Run:
    """A new name for a run (its folder keeps the one it was started with)."""
    name = (name or "").strip()
    if not RUN_NAME_RE.match(name):
        raise InvalidInput(f"run name {name!r}: use letters, digits, '_', '-' or '.'")
    with wb.session() as s:
        run = s.get(Run, run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id}")
        clash = s.exec(select(Run).where(Run.name == name, Run.id != run_id)).first()
        if clash is not None:
            raise Conflict(f"a run named {name!r} already exists")
        run.name = name
        s.add(run)
        s.commit()
    return get_run(wb, run_id)


def run_actions(run: Run) -> dict[str, bool]:
    """Which buttons apply to a run in its state."""
    stopped = run.status in ("cancelled", "interrupted", "failed")
    micro = int((run.config or {}).get("per_device_train_batch_size", 1))
    return {"cancel": run.status in ACTIVE,
            "resume": stopped and newest_checkpoint(run) is not None,
            "delete": run.status not in ACTIVE,
            "half": run.status not in ACTIVE and micro > 1,
            "rerun": True}
