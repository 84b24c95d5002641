"""The quality report and the clean-up as background jobs.

The start functions check everything a request can get wrong (unknown dataset or model, bad
options) before a job is queued, then hand the process (``app.data.quality_job``) a plan that
names files only: it never opens the database. A report job's result is the report itself; a
clean job leaves its rows in its folder and the finish step registers them as a new version
of the dataset, so a failed or cancelled clean-up registers nothing.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from app.core.errors import Conflict, ForgeloopError, InvalidInput, NotFound
from app.core.jobs import ACTIVE, JobKind, JobSpec, Outcome, default_finish, python_command
from app.core.tables import Dataset, Job
from app.data import datasets, quality

if TYPE_CHECKING:
    from app.core.workbench import Workbench

QUALITY = "quality"  # the report job's kind
CLEAN = "clean"  # the clean-up job's kind


def _plan(wb: Workbench, mode: str, ds: Dataset, model_id: int | None, options: dict[str, Any]) -> Path:
    tokenizer = quality.tokenizer_path(wb, model_id) if model_id is not None else None
    folder = wb.settings.jobs_dir / f"{mode}-{ds.id}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    plan = {"mode": mode, "dataset": {"id": ds.id, "name": ds.name, "path": ds.path},
            "tokenizer": tokenizer, "model_id": model_id, "options": options}
    (folder / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return folder


def _spec(folder: Path, title: str, params: dict[str, Any]) -> JobSpec:
    return JobSpec(command=python_command("app.data.quality_job", str(folder / "plan.json")),
                   cwd=folder, log_path=folder / "job.log", progress_path=folder / "progress.jsonl",
                   result_path=folder / "result.json", title=title, params=params)


def start_quality_report(wb: Workbench, dataset_id: int, model_id: int | None = None,
                         max_tokens: int = 1024, threshold: float = 0.85) -> Job:
    """Queue the quality report of ``dataset_id``; the finished job's result is the report
    (``quality_job_report``). Token counts and over-long rows need ``model_id``."""
    ds = datasets.get_dataset(wb, dataset_id)
    quality.check_options(threshold, max_tokens)
    options = {"max_tokens": max_tokens, "threshold": threshold}
    folder = _plan(wb, QUALITY, ds, model_id, options)
    params = {"dataset_id": ds.id, "dataset": ds.name, "model_id": model_id, **options}
    return wb.jobs.submit(QUALITY, _spec(folder, f"quality report of {ds.name}", params))


def start_clean(
    wb: Workbench,
    dataset_id: int,
    name: str | None = None,
    dedup_exact: bool = True,
    dedup_near: bool = True,
    pii_action: quality.PiiAction = "redact",
    drop_empty: bool = True,
    model_id: int | None = None,
    max_tokens: int = 1024,
    threshold: float = 0.85,
) -> Job:
    """Queue the clean-up of ``dataset_id`` (the options of ``quality.clean_dataset``); the
    job registers the cleaned rows as dataset ``name`` (default NAME-clean) with a parent link."""
    ds = datasets.get_dataset(wb, dataset_id)
    quality.check_options(threshold, max_tokens, pii_action)
    if name is not None:
        datasets.check_name(name)
        if any(d.name.lower() == name.lower() for d in datasets.list_datasets(wb)):
            raise Conflict(f"a dataset named {name!r} already exists")
    options = {"dedup_exact": dedup_exact, "dedup_near": dedup_near, "pii_action": pii_action,
               "drop_empty": drop_empty, "max_tokens": max_tokens, "threshold": threshold}
    folder = _plan(wb, CLEAN, ds, model_id, options)
    params = {"dataset_id": ds.id, "dataset": ds.name, "model_id": model_id, "name": name, **options}
    return wb.jobs.submit(CLEAN, _spec(folder, f"clean-up of {ds.name}", params))


def finish_quality(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """The outcome, where a process that ended unseen (while Forgeloop was down) succeeded
    when it left its result: the process writes result.json last, atomically."""
    result = job.result or {}
    if outcome.returncode is None and not outcome.cancelled and result and "unreadable" not in result:
        outcome = Outcome(0)
    default_finish(wb, s, job, outcome)


def finish_clean(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Register the cleaned rows as a new dataset whose meta links its parent; only when the
    process succeeded, so a failed or cancelled clean-up leaves no dataset."""
    finish_quality(wb, s, job, outcome)
    if job.status != "succeeded":
        return
    p, result = job.params, job.result or {}
    # No flush of the job's pending changes here: register_rows writes in its own session,
    # which SQLite would refuse while this one holds the write lock.
    with s.no_autoflush:
        parent = s.get(Dataset, p["dataset_id"])
    if parent is None:
        job.status, job.error = "failed", f"dataset {p['dataset']!r} was deleted while it was cleaned"
        return
    lines = (Path(job.cwd) / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    dropped = result.get("dropped") or {}
    options = {"dedup_exact": p["dedup_exact"], "dedup_near": p["dedup_near"], "pii": p["pii_action"],
               "drop_empty": p["drop_empty"], "model_id": p["model_id"], "max_tokens": p["max_tokens"],
               "threshold": p["threshold"]}
    try:
        ds = datasets.register_rows(wb, p["name"] or quality.free_name(wb, parent.name), parent.kind, rows,
                                    fmt=parent.format, source="cleaned",
                                    meta={**quality.clean_meta(parent, dropped, options), "job_id": job.id})
    except ForgeloopError as e:  # e.g. the name was taken meanwhile: the rows stay in the folder
        job.status, job.error = "failed", f"{e}; the rows are in {Path(job.cwd) / 'rows.jsonl'}"
        return
    job.result = {**result, "dataset_id": ds.id, "name": ds.name}


QUALITY_KIND = JobKind(QUALITY, finish=finish_quality)  # the report is the result: nothing to register
CLEAN_KIND = JobKind(CLEAN, finish=finish_clean)


def quality_job_report(wb: Workbench, job_id: int) -> dict[str, Any]:
    """A report or clean-up job as the UI follows it: status, progress and, once the job
    succeeded, its ``report`` (report jobs) or ``result`` (the new dataset, for clean-ups)."""
    job = wb.jobs.get(job_id)
    if job.kind not in (QUALITY, CLEAN):
        raise InvalidInput(f"job #{job_id} is a {job.kind} job, not a quality report or clean-up")
    view = wb.jobs.view(job, log_lines=5)
    done = job.status == "succeeded"
    return {"job_id": job.id, "kind": job.kind, "status": job.status, "dataset_id": job.params["dataset_id"],
            "percent": view["percent"], "stage": view["stage"], "error": job.error,
            "active": job.status in ACTIVE,
            "report": job.result if done and job.kind == QUALITY else None,
            "result": job.result if done and job.kind == CLEAN else None}


def quality_jobs(wb: Workbench, dataset_id: int, limit: int = 20) -> list[Job]:
    """The report and clean-up jobs of ``dataset_id``, newest first."""
    datasets.get_dataset(wb, dataset_id)
    found = [j for kind in (QUALITY, CLEAN) for j in wb.jobs.list(kind=kind, limit=500)
             if j.params.get("dataset_id") == dataset_id]
    return sorted(found, key=lambda j: j.id, reverse=True)[:limit]


def latest_quality_report(wb: Workbench, dataset_id: int) -> dict[str, Any]:
    """The newest report job of ``dataset_id`` (running or done), as ``quality_job_report``."""
    reports = [j for j in quality_jobs(wb, dataset_id, limit=500) if j.kind == QUALITY]
    if not reports:
        raise NotFound(f"dataset {dataset_id} has no quality report yet; start one")
    return quality_job_report(wb, reports[0].id)
