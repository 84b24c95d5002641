"""A model version's latest eval scores: per suite name, its newest run that succeeded.

What the Registry shows next to the arena rating, what the loop report puts in its rows and
what a gate compares. One query for any number of models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.core.tables import EvalRun, EvalSuite, Job, ModelVersion

if TYPE_CHECKING:
    from sqlmodel import Session

    from app.core.workbench import Workbench


def _score(run: EvalRun, suite: EvalSuite, job: Job) -> dict[str, Any]:
    pass_rate = run.summary.get("pass_rate") or {}
    out = {"suite": suite.name, "suite_version": suite.version, "suite_id": suite.id, "run_id": run.id,
           "mode": run.mode, "rate": pass_rate.get("rate"), "low": pass_rate.get("low"),
           "high": pass_rate.get("high"), "n": pass_rate.get("n"),
           "finished_at": job.finished_at.isoformat() if job.finished_at else None}
    if run.mode == "pairwise":
        win = run.summary.get("win_rate") or {}
        out.update(baseline_id=run.baseline_id, win_rate=win.get("rate"), win_low=win.get("low"),
                   win_high=win.get("high"))
    return out


def latest_scores_in(s: Session, model_ids: list[int], suite_id: int | None = None
                     ) -> dict[int, list[dict[str, Any]]]:
    """For each model, its newest succeeded checks-mode run per suite name (or on one suite
    version), newest first. Pairwise runs are listed too, under their own mode, since their
    win rate answers a different question than a pass rate."""
    q = (select(EvalRun, EvalSuite, Job).join(EvalSuite, EvalSuite.id == EvalRun.suite_id)
         .join(Job, Job.id == EvalRun.job_id)
         .where(EvalRun.model_id.in_(model_ids), Job.status == "succeeded")
         .order_by(EvalRun.id.desc()))
    if suite_id is not None:
        q = q.where(EvalRun.suite_id == suite_id)
    out: dict[int, list[dict[str, Any]]] = {m: [] for m in model_ids}
    seen: set[tuple[int, str, str]] = set()
    for run, suite, job in s.exec(q):
        key = (run.model_id, suite.name, run.mode)
        if key not in seen:
            seen.add(key)
            out[run.model_id].append(_score(run, suite, job))
    return out


def latest_scores(wb: Workbench, model_id: int) -> list[dict[str, Any]]:
    """``model_id``'s latest score per suite name and mode (404 for an unknown model)."""
    wb.row(ModelVersion, model_id, "model")
    with wb.session() as s:
        return latest_scores_in(s, [model_id])[model_id]


def score_text(score: dict[str, Any]) -> str:
    """``is-check v2: 0.82 [0.71, 0.90] of 45`` (or the win rate of a pairwise run)."""
    head = f"{score['suite']} v{score['suite_version']}"
    if score["mode"] == "pairwise" and score.get("win_rate") is not None:
        return (f"{head}, win rate vs model {score['baseline_id']}: {score['win_rate']:.2f} "
                f"[{score['win_low']:.2f}, {score['win_high']:.2f}]")
    if score["rate"] is None:
        return f"{head}: no answers"
    return f"{head}: {score['rate']:.2f} [{score['low']:.2f}, {score['high']:.2f}] of {score['n']}"
