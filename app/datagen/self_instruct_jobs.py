"""Start a Self-Instruct job and register what it kept as an SFT (alpaca) dataset."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import Session, func, select

from app.core.errors import Conflict, ForgeloopError, InvalidInput
from app.core.jobs import ACTIVE, JobKind, JobSpec, Outcome, default_finish, python_command
from app.core.tables import Dataset, Job
from app.data.datasets import check_name, register_rows
from app.data.self_instruct import SEED_PATH, choose_seeds, parse_seed_text
from app.models.registry import get_model

if TYPE_CHECKING:
    from app.core.workbench import Workbench

SELFINSTRUCT = "selfinstruct"
# The teacher's API key reaches the job through its environment, never the plan file.
KEY_ENV = "FORGELOOP_TEACHER_API_KEY"
MAX_CONCURRENCY = 16


def start_selfinstruct(wb: Workbench, teacher_id: int, name: str, target: int = 100,
                       max_rounds: int | None = None, seed: int = 0, temperature: float = 0.7,
                       max_new_tokens: int = 512, concurrency: int = 2, seed_tasks: str = "",
                       use_shipped_seeds: bool = True) -> Job:
    """Queue a run that asks model ``teacher_id`` for tasks until ``target`` rows are kept
    (or ``max_rounds`` teacher rounds, default 4×target); the rows become dataset ``name``.
    At most ``concurrency`` teacher calls run at once. ``seed_tasks``: the user's own seeds
    (JSON lines or one instruction per line), used with or instead of the shipped ones."""
    check_name(name)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f"concurrency must be between 1 and {MAX_CONCURRENCY} teacher calls")
    seeds = choose_seeds(seed_tasks, use_shipped_seeds)
    if not 1 <= target <= 100_000:
        raise InvalidInput("target must be between 1 and 100000 rows")
    max_rounds = max_rounds or 4 * target
    if not 1 <= max_rounds <= 1_000_000:
        raise InvalidInput("max_rounds must be between 1 and 1000000")
    if not 0 <= temperature <= 2:
        raise InvalidInput("temperature must be between 0 and 2")
    if not 16 <= max_new_tokens <= 8192:
        raise InvalidInput("max_new_tokens must be between 16 and 8192")
    mv = get_model(wb, teacher_id)
    with wb.session() as s:
        if s.exec(select(Dataset).where(func.lower(Dataset.name) == name.lower())).first():
            raise Conflict(f"a dataset named {name!r} already exists")
    teacher = mv.model_dump(mode="json")
    api_key = (teacher.get("meta") or {}).pop("api_key", None)
    folder = wb.settings.jobs_dir / f"{SELFINSTRUCT}-{name}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    user_seeds = len(parse_seed_text(seed_tasks or ""))
    plan = {"teacher": teacher, "target": target, "max_rounds": max_rounds, "seed": seed,
            "temperature": temperature, "max_new_tokens": max_new_tokens, "concurrency": concurrency,
            "seeds": [asdict(t) for t in seeds] if user_seeds else None}
    (folder / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")
    params = {"teacher_id": mv.id, "teacher": mv.name, "name": name, "target": target,
              "max_rounds": max_rounds, "seed": seed, "temperature": temperature,
              "max_new_tokens": max_new_tokens, "concurrency": concurrency,
              "seed_tasks": {"shipped": SEED_PATH.name if use_shipped_seeds or not user_seeds else None,
                             "user": user_seeds, "total": len(seeds)},
              "secret_teacher": bool(api_key)}
    spec = JobSpec(command=python_command("app.datagen.self_instruct_job", str(folder / "plan.json")),
                   cwd=folder, log_path=folder / "job.log", progress_path=folder / "progress.jsonl",
                   result_path=folder / "result.json", title=f"self-instruct {name} from {mv.name}",
                   params=params, secret_env={KEY_ENV: api_key} if api_key else {})
    return wb.jobs.submit(SELFINSTRUCT, spec)


def finish_selfinstruct(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Register the kept rows (with where they came from) or leave no dataset."""
    default_finish(wb, s, job, outcome)
    if job.status != "succeeded":
        return
    lines = (Path(job.cwd) / "rows.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    if not rows:
        job.status, job.error = "failed", "the teacher's answers gave no usable task"
        return
    result = job.result or {}
    p = job.params
    meta = {"provenance": {"method": "self-instruct", "job_id": job.id, "teacher_id": p["teacher_id"],
                           "teacher": p["teacher"], "seed_tasks": p.get("seed_tasks", SEED_PATH.name),
                           "seed": p["seed"], "temperature": p["temperature"],
                           "max_new_tokens": p.get("max_new_tokens"), "concurrency": p.get("concurrency"),
                           "rounds": result.get("rounds"),
                           "generated": result.get("generated"), "rejected": result.get("rejected"),
                           "classification_rows": sum(bool(r["is_classification"]) for r in rows)}}
    alpaca = [{k: r[k] for k in ("instruction", "input", "output")} for r in rows]
    try:
        ds = register_rows(wb, p["name"], "sft", alpaca, fmt="alpaca", source="self-instruct", meta=meta)
    except ForgeloopError as e:  # e.g. the name was taken while the job ran: rows stay in the folder
        job.status, job.error = "failed", f"{e}; the rows are in {Path(job.cwd) / 'rows.jsonl'}"
        return
    job.result = {**result, "dataset_id": ds.id, "rows": ds.num_rows}


def resume_selfinstruct(wb: Workbench, job_id: int) -> Job:
    """Run a stopped (failed, cancelled or interrupted) Self-Instruct job again in its own
    folder: every teacher answer it already has comes from its answer cache, so only what
    is missing is asked again. The teacher is read from the registry again, so a fixed
    endpoint (the usual reason a run stopped) is used."""
    job = wb.jobs.get(job_id)
    if job.kind != SELFINSTRUCT:
        raise InvalidInput(f"job #{job_id} is a {job.kind} job, not a Self-Instruct run")
    if job.params.get("secret_teacher"):
        raise InvalidInput("this run's teacher needs its API key, which is not kept; start a new run")
    if job.status not in (*ACTIVE, "succeeded"):  # else requeue refuses, leave the plan alone
        teacher = get_model(wb, job.params["teacher_id"]).model_dump(mode="json")
        (teacher.get("meta") or {}).pop("api_key", None)
        plan_path = Path(job.cwd) / "plan.json"
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        plan_path.write_text(json.dumps({**plan, "teacher": teacher}, indent=1), encoding="utf-8")
    return wb.jobs.requeue(job_id)


def selfinstruct_view(wb: Workbench, job_id: int) -> dict[str, Any]:
    """A Self-Instruct job's live view: the job's progress plus its counts (kept, generated,
    rejected by reason) and a sample of the newest kept instructions."""
    job = wb.jobs.get(job_id)
    if job.kind != SELFINSTRUCT:
        raise InvalidInput(f"job #{job_id} is a {job.kind} job, not a Self-Instruct run")
    tail = wb.jobs.progress(job)
    last = dict(tail.last or {})
    if job.result:  # the final counts once it has finished
        last.update({k: job.result[k] for k in ("kept", "generated", "rejected", "sample", "rounds")
                     if k in job.result})
    return {**wb.jobs.view(job, tail=tail), "settings": job.params,
            "counts": {k: last.get(k) for k in ("kept", "generated", "rounds", "teacher_calls",
                                               "cached_answers")},
            "rejected": last.get("rejected") or {}, "sample": last.get("sample") or []}


SELFINSTRUCT_KIND = JobKind(SELFINSTRUCT, finish=finish_selfinstruct)
