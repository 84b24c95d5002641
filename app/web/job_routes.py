"""REST routes for every background job, whatever its kind: list, follow, cancel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.params import Depends

from app.core.errors import InvalidInput
from app.core.tables import Job

if TYPE_CHECKING:
    from app.core.workbench import Workbench


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "title": job.title, "status": job.status,
        "resources": [r for r in job.resources.split(",") if r], "returncode": job.returncode,
        "error": job.error, "result": job.result, "progress": job.progress,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def jobs_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """Job routes, each needing ``dependencies`` (the login check with --auth)."""
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.get("/jobs")
    def jobs(kind: str | None = None, limit: int = 100):
        known = wb.jobs.kinds()
        if kind is not None and kind not in known:  # a typo is an error, not an empty list
            raise InvalidInput(f"kind must be one of {', '.join(known)}; got {kind!r}")
        return [job_json(j) for j in wb.jobs.list(kind=kind, limit=min(max(limit, 1), 1000))]

    @r.get("/jobs/{job_id}")
    def job(job_id: int):
        found = wb.jobs.get(job_id)
        return {**job_json(found), **wb.jobs.view(found)}

    @r.post("/jobs/{job_id}/cancel")
    def cancel(job_id: int):
        return job_json(wb.jobs.cancel(job_id))

    return r
