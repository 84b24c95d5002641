"""Dataset quality REST routes: the quality report, the clean-up into a new version (both as
background jobs, and in-process for small datasets), and the CPT corpus import. They call the
same functions as the Data tab."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response
from fastapi.params import Depends
from pydantic import BaseModel

from app.core.errors import InvalidInput
from app.data import corpus, datasets, quality, quality_jobs
from app.web.job_routes import job_json

if TYPE_CHECKING:
    from app.core.tables import Dataset
    from app.core.workbench import Workbench


class CleanBody(BaseModel):
    name: str | None = None
    dedup_exact: bool = True
    dedup_near: bool = True
    pii_action: quality.PiiAction = "redact"
    drop_empty: bool = True
    model_id: int | None = None
    max_tokens: int = 1024
    threshold: float = 0.85


class QualityJobBody(BaseModel):
    model_id: int | None = None
    max_tokens: int = 1024
    threshold: float = 0.85


class CorpusBody(BaseModel):
    paths: list[str]  # files or folders on the server
    model_id: int
    name: str | None = None  # needed unless preview
    chunk_tokens: int = 512
    overlap: int = 64
    preview: bool = False


def dataset_json(ds: Dataset) -> dict[str, Any]:
    return {"id": ds.id, "name": ds.name, "kind": ds.kind, "format": ds.format, "num_rows": ds.num_rows,
            "sha256": ds.sha256, "source": ds.source, "meta": ds.meta,
            "created_at": ds.created_at.isoformat() if ds.created_at else None}


def quality_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """The routes, each needing ``dependencies`` (the login check with --auth)."""
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.get("/datasets/{dataset_id}/quality")
    def report(dataset_id: int, model_id: int | None = None, max_tokens: int = 1024, threshold: float = 0.85):
        return quality.quality_report(wb, dataset_id, model_id, max_tokens, threshold)

    @r.post("/datasets/{dataset_id}/clean", status_code=201)
    def clean(dataset_id: int, body: CleanBody):
        datasets.get_dataset(wb, dataset_id)  # an unknown id is a 404 whatever the body says
        return dataset_json(quality.clean_dataset(wb, dataset_id, **body.model_dump()))

    @r.post("/datasets/{dataset_id}/quality/jobs", status_code=202)
    def report_job(dataset_id: int, body: QualityJobBody):
        return job_json(quality_jobs.start_quality_report(wb, dataset_id, **body.model_dump()))

    @r.post("/datasets/{dataset_id}/clean/jobs", status_code=202)
    def clean_job(dataset_id: int, body: CleanBody):
        datasets.get_dataset(wb, dataset_id)  # an unknown id is a 404 whatever the body says
        return job_json(quality_jobs.start_clean(wb, dataset_id, **body.model_dump()))

    @r.get("/datasets/{dataset_id}/quality/latest")
    def latest_report(dataset_id: int):
        return quality_jobs.latest_quality_report(wb, dataset_id)

    @r.get("/quality/jobs/{job_id}")
    def job_report(job_id: int):
        return quality_jobs.quality_job_report(wb, job_id)

    @r.post("/corpus", status_code=201)
    def import_corpus(body: CorpusBody, response: Response):
        if body.preview:  # stores nothing
            response.status_code = 200
            return corpus.preview_corpus(wb, body.paths, body.model_id, body.chunk_tokens, body.overlap)
        if not body.name:
            raise InvalidInput("name the dataset (or ask for a preview)")
        return dataset_json(corpus.import_corpus(wb, body.paths, body.name, body.model_id,
                                                 body.chunk_tokens, body.overlap))

    return r
