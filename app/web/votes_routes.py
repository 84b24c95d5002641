"""Votes → training data REST routes: how much of the votes each option uses, DPO and KTO
snapshots, and the training request "Train on these votes" pre-fills (schedule sized)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel

from app.arena import preference_export as pe
from app.train.schedule import with_schedule
from app.web.quality_routes import dataset_json

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class VoteFilterBody(BaseModel):
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    model_ids: list[int] | None = None
    min_votes: int = 0
    include_flagged: bool = False

    def vote_filter(self) -> pe.VoteFilter:
        return pe.VoteFilter(self.since, self.until, self.model_ids, self.min_votes, self.include_flagged)


class SnapshotBody(VoteFilterBody):
    name: str | None = None
    ties: str = "skip"  # KTO only: "good" turns each tie into two good answers (every vote used)


class SuggestBody(BaseModel):
    dataset_id: int
    model_id: int | None = None


def votes_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api/votes", dependencies=list(dependencies))

    @r.get("/usage")
    def usage(include_flagged: bool = False):
        return pe.vote_usage(wb, pe.VoteFilter(include_flagged=include_flagged))

    @r.post("/dpo", status_code=201)
    def dpo(body: SnapshotBody):
        return dataset_json(pe.build_dpo_dataset(wb, body.name, body.vote_filter()))

    @r.post("/kto", status_code=201)
    def kto(body: SnapshotBody):
        return dataset_json(pe.build_kto_dataset(wb, body.name, body.vote_filter(), body.ties))

    @r.post("/training")
    def training_request(body: SuggestBody):
        return with_schedule(wb, pe.suggest_vote_training(wb, body.dataset_id, body.model_id))

    return r
