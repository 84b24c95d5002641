"""Eval gates: a newly trained version joins the arena, and may be deployed, only if its pass
rate on each gated suite is not below its parent's by more than the suite's margin.

A gate is set per suite name (``EvalGate``). When a training run registers a version, every
gated suite applies to it: the version is held out of the arena with its gate ``pending``
(``hold``), the suites run on it and, where missing, on its parent (``app.evals.auto_eval``),
and each eval run's finish step re-decides the gate (``refresh``) in its own transaction.
The decision and its reason live in the version's ``meta["gate"]``, which the models layer
reads to refuse arena and deploy (``app.models.registry.gate_block``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.core.errors import InvalidInput, NotFound
from app.core.jobs import ACTIVE
from app.core.tables import EvalGate, EvalRun, EvalSuite, Job, ModelVersion, utcnow
from app.evals.scores import latest_scores_in
from app.evals.suites import get_suite
from app.models.registry import GATE_BLOCKS, get_model

if TYPE_CHECKING:
    from sqlmodel import Session

    from app.core.workbench import Workbench

SETTLED = ("passed", "waived")  # decisions a later eval run does not reopen
NOTES = {"held": ": no parent to compare with", "waiting": ": eval still running",
         "missing": ": an eval run ended without a score (run the suite again)"}


def set_gate(wb: Workbench, suite_id: int, margin: float | None) -> dict[str, Any]:
    """Gate on suite ``suite_id``'s name with ``margin`` (a pass-rate drop from 0 to 1), or
    remove the gate with None."""
    suite = get_suite(wb, suite_id)
    if margin is not None and not 0 <= margin <= 1:
        raise InvalidInput("the gate margin is a pass-rate drop between 0 and 1 (e.g. 0.05)")
    with wb.write_lock, wb.session() as s:
        row = s.get(EvalGate, suite.name)
        if margin is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(EvalGate(suite_name=suite.name, margin=margin))
        else:
            row.margin = margin
            s.add(row)
        s.commit()
    return {"suite": suite.name, "margin": margin}


def list_gates(wb: Workbench) -> list[dict[str, Any]]:
    with wb.session() as s:
        return [{"suite": g.suite_name, "margin": g.margin} for g in s.exec(select(EvalGate))]


def gated_suites(s: Session) -> list[tuple[EvalSuite, float]]:
    """Each gated suite's latest version with its margin (gates on deleted suites skipped)."""
    out = []
    for gate in s.exec(select(EvalGate).order_by(EvalGate.suite_name)):
        suite = s.exec(select(EvalSuite).where(EvalSuite.name == gate.suite_name)
                       .order_by(EvalSuite.version.desc())).first()
        if suite is not None:
            out.append((suite, gate.margin))
    return out


def _set_gate_meta(s: Session, mv: ModelVersion, gate: dict[str, Any]) -> None:
    mv.meta = {**(mv.meta or {}), "gate": gate}  # a new dict: JSON columns track assignment
    s.add(mv)


def hold(s: Session, mv: ModelVersion, suites: list[tuple[EvalSuite, float]]) -> None:
    """Keep a new version out of the arena until its gated suites have decided."""
    gate = {"status": "pending", "join_arena": bool(mv.in_arena), "reason": "waiting for the gated evals",
            "suites": [{"suite_id": x.id, "suite": x.name, "version": x.version, "margin": m}
                       for x, m in suites], "decided_at": None}
    mv.in_arena = False
    _set_gate_meta(s, mv, gate)


def _active(s: Session, model_ids: list[int], suite_id: int) -> bool:
    q = (select(EvalRun.id).join(Job, Job.id == EvalRun.job_id)
         .where(EvalRun.model_id.in_(model_ids), EvalRun.suite_id == suite_id, Job.status.in_(ACTIVE)))
    return s.exec(q).first() is not None


def _score(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A checks-mode score if there is one (a pairwise run's pass rate otherwise)."""
    found = [x for x in found if x["rate"] is not None]
    return next((x for x in found if x["mode"] == "checks"), found[0] if found else None)


def decide(s: Session, mv: ModelVersion) -> dict[str, Any]:
    """The gate of ``mv`` from the eval runs stored so far: ``failed`` when any gated suite
    fell too far, else ``pending`` while a needed run is queued or running, ``incomplete``
    when a needed run ended without a score, and ``passed`` when every suite held."""
    gate = dict((mv.meta or {}).get("gate") or {})
    items, states = [], []
    for g in gate.get("suites", []):
        ids = [mv.id] + ([mv.parent_id] if mv.parent_id else [])
        scores = latest_scores_in(s, ids, suite_id=g["suite_id"])
        child = _score(scores[mv.id])
        parent = _score(scores[mv.parent_id]) if mv.parent_id else None
        item = {**g, "child_rate": child and child["rate"], "parent_rate": parent and parent["rate"],
                "child_run": child and child["run_id"], "parent_run": parent and parent["run_id"]}
        if mv.parent_id is None:
            item["state"] = "held"  # nothing to fall below
        elif child and parent:
            held = child["rate"] >= parent["rate"] - g["margin"] - 1e-12
            item["state"] = "held" if held else "fell"
        else:
            item["state"] = "waiting" if _active(s, ids, g["suite_id"]) else "missing"
        items.append(item)
        states.append(item["state"])

    def line(i: dict[str, Any]) -> str:
        if i["state"] in ("held", "fell") and i["parent_rate"] is not None:
            verb = "held" if i["state"] == "held" else "fell"
            return (f"{i['suite']}: {verb} at {i['child_rate']:.2f} vs the parent's {i['parent_rate']:.2f} "
                    f"(margin {i['margin']:.2f})")
        return i["suite"] + NOTES[i["state"]]

    status = ("failed" if "fell" in states else "pending" if "waiting" in states
              else "incomplete" if "missing" in states else "passed")
    gate.update(status=status, suites=items, reason="; ".join(map(line, items)) or "no gated suites",
                decided_at=None if status == "pending" else utcnow().isoformat())
    return gate


def refresh(s: Session, model_id: int) -> None:
    """Re-decide the open gates an eval run of ``model_id`` bears on: its own and its
    children's (a parent's score completes a child's comparison). On ``passed`` a version
    that was meant for the arena joins it."""
    s.flush()  # the finishing run's rows and job status, for the queries below
    candidates = [s.get(ModelVersion, model_id), *s.exec(select(ModelVersion).where(
        ModelVersion.parent_id == model_id))]
    for mv in candidates:
        gate = (mv.meta or {}).get("gate") if mv else None
        if not gate or gate.get("status") in SETTLED:
            continue
        new = decide(s, mv)
        if new["status"] == "passed" and new.get("join_arena"):
            mv.in_arena = True
        _set_gate_meta(s, mv, new)


def waive(wb: Workbench, model_id: int, note: str = "") -> dict[str, Any]:
    """Let a held version through anyway, saying so; it joins the arena if it was meant to."""
    mv = get_model(wb, model_id)
    gate = (mv.meta or {}).get("gate")
    if not gate:
        raise NotFound(f"{mv.name} has no eval gate to waive")
    if gate["status"] not in GATE_BLOCKS:
        return gate
    with wb.write_lock, wb.session() as s:
        row = s.get(ModelVersion, model_id)
        gate = {**gate, "status": "waived", "decided_at": utcnow().isoformat(),
                "reason": f"waived{': ' + note.strip() if note.strip() else ''} (was: {gate['reason']})"}
        if gate.get("join_arena"):
            row.in_arena = True
        _set_gate_meta(s, row, gate)
        s.commit()
    return gate


def gate_of(wb: Workbench, model_id: int) -> dict[str, Any] | None:
    return (get_model(wb, model_id).meta or {}).get("gate")
