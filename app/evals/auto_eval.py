"""Evals that follow a training run: the suites the run (or its recipe) names, plus every
gated suite, run on the new version as soon as it is registered; a gated suite also runs on
the parent when the parent has no score on that suite version yet.

The training job kind is extended here rather than in ``app.train`` so training stays below
evals in the layers: the finish step (same transaction as the registration) holds a gated
version out of the arena, and the kind's ``after`` step queues the eval jobs once that has
been committed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.core.errors import ForgeloopError
from app.core.jobs import ACTIVE, JobKind, Outcome
from app.core.tables import EvalRun, EvalSuite, Job, ModelVersion, Run
from app.evals import gates
from app.evals.runs import start_eval
from app.train.training import TRAIN_KIND, finish_training, get_recipe

if TYPE_CHECKING:
    from sqlmodel import Session

    from app.core.workbench import Workbench

log = logging.getLogger(__name__)


def chosen_suites(run: Run) -> list[str]:
    """The suite names a run asked for, or its recipe's when the run did not say."""
    asked = (run.request or {}).get("eval_suites")
    if asked is not None:
        return list(asked)
    try:
        return get_recipe(run.recipe).eval_suites if run.recipe else []
    except ForgeloopError:  # the recipe file is gone since
        return []


def finish_and_hold(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    finish_training(wb, s, job, outcome)
    run = s.exec(select(Run).where(Run.job_id == job.id)).first()
    if job.status != "succeeded" or run is None or run.output_model_id is None:
        return
    suites = gates.gated_suites(s)
    if suites:
        gates.hold(s, s.get(ModelVersion, run.output_model_id), suites)


def _scored_or_running(s: Session, model_id: int, suite_id: int) -> bool:
    q = (select(EvalRun.id).join(Job, Job.id == EvalRun.job_id)
         .where(EvalRun.model_id == model_id, EvalRun.suite_id == suite_id,
                Job.status.in_((*ACTIVE, "succeeded"))))
    return s.exec(q).first() is not None


def queue_evals(wb: Workbench, job_id: int) -> list[dict[str, Any]]:
    """Queue the follow-up eval runs of a succeeded training job; what was queued (or why a
    suite could not be) is kept in the new version's ``meta["auto_evals"]``."""
    with wb.session() as s:
        run = s.exec(select(Run).where(Run.job_id == job_id)).first()
        job = s.get(Job, job_id)
        if job is None or job.status != "succeeded" or run is None or run.output_model_id is None:
            return []
        mv = s.get(ModelVersion, run.output_model_id)
        gated = {x.name: x for x, _ in gates.gated_suites(s)}
        names = list(dict.fromkeys([*chosen_suites(run), *gated]))
        latest = {}
        for name in names:
            suite = s.exec(select(EvalSuite).where(EvalSuite.name == name)
                           .order_by(EvalSuite.version.desc())).first()
            if suite is not None:
                latest[name] = suite
        judge = (run.request or {}).get("eval_judge_id")
        parent_needs = {n for n, x in latest.items()
                        if n in gated and mv.parent_id and not _scored_or_running(s, mv.parent_id, x.id)}
    queued: list[dict[str, Any]] = []
    for name in names:
        suite = latest.get(name)
        targets = [mv.id] + ([mv.parent_id] if name in parent_needs else [])
        for model_id in targets:
            entry: dict[str, Any] = {"suite": name, "model_id": model_id}
            try:
                if suite is None:
                    raise ForgeloopError(f"no eval suite named {name!r} any more")
                entry["eval_run_id"] = start_eval(wb, suite.id, model_id, judge_model_id=judge).id
            except ForgeloopError as e:
                entry["error"] = str(e)
            queued.append(entry)
    with wb.write_lock, wb.session() as s:
        row = s.get(ModelVersion, mv.id)
        row.meta = {**(row.meta or {}), "auto_evals": queued}
        s.add(row)
        gates.refresh(s, mv.id)  # a suite that could not start leaves the gate incomplete
        s.commit()
    return queued


def after_training(wb: Workbench, job_id: int) -> None:
    queue_evals(wb, job_id)


TRAIN_WITH_EVALS_KIND: JobKind = dataclasses.replace(TRAIN_KIND, finish=finish_and_hold, after=after_training)
