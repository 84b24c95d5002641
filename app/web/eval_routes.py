"""Eval REST routes: suites (create, list, read, new version), eval runs (start, list, read,
cancel, results), a model's latest scores, the side-by-side matrix of several runs and its
CSV/JSONL export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.params import Depends
from fastapi.responses import Response
from pydantic import BaseModel

from app.evals import gates, heldout, loop_report, reference, results, runs, scores, suites
from app.evals.suites import Sampling, SuiteRequest

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class CheckBody(BaseModel):
    type: str  # contains | not_contains | regex | equals | valid_json | max_length | rubric
    value: str | int | None = None


class PromptBody(BaseModel):
    prompt: str
    checks: list[CheckBody] = []


class SuiteFields(BaseModel):
    prompts: list[str] = []  # plain prompts, checked by the suite-wide checks only
    items: list[PromptBody] = []  # prompts with their own checks (after ``prompts``)
    dataset_id: int | None = None  # its prompts, after those given
    checks: list[CheckBody] = []  # suite-wide
    samples: int = 1
    temperature: float = 0.0  # greedy by default
    max_new_tokens: int = 256
    seed: int | None = None  # sample k of prompt i: seed + i·samples + k

    def request(self, name: str) -> SuiteRequest:
        items = [*self.prompts, *(i.model_dump() for i in self.items)]
        return SuiteRequest(name, items, [c.model_dump() for c in self.checks],
                            Sampling(self.samples, self.temperature, self.max_new_tokens, self.seed),
                            self.dataset_id)


class SuiteBody(SuiteFields):
    name: str


RunIds = Annotated[list[int], Query()]  # ?run_ids=1&run_ids=2, columns in that order


class RunBody(BaseModel):
    suite_id: int
    model_id: int
    mode: str = "checks"  # checks | pairwise
    baseline_id: int | None = None  # pairwise: default the model's parent
    judge_model_id: int | None = None  # pairwise and rubric checks


class HeldOutBody(BaseModel):
    name: str
    seed: int = 0  # draws the prompts: the same seed draws the same ones
    checks: list[CheckBody] = []
    samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    sampling_seed: int | None = None

    def sampling(self) -> Sampling:
        return Sampling(self.samples, self.temperature, self.max_new_tokens, self.sampling_seed)


class FromBattlesBody(HeldOutBody):
    limit: int = 100


class FromDatasetBody(HeldOutBody):
    dataset_id: int
    count: int


class ReferenceBody(BaseModel):
    model_id: int
    dataset_id: int
    metric: str = "loss"  # loss (eval loss, perplexity) | generation (BLEU-4, ROUGE)
    max_samples: int = 200
    max_new_tokens: int = 128


class GateBody(BaseModel):
    margin: float | None  # a pass-rate drop allowed below the parent; null removes the gate


class WaiveBody(BaseModel):
    note: str = ""


def eval_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api/evals", dependencies=list(dependencies))

    @r.post("/suites", status_code=201)
    def create_suite(body: SuiteBody):
        return suites.suite_json(suites.save_suite(wb, body.request(body.name)))

    @r.get("/suites")
    def list_suites(all_versions: bool = False):
        return [suites.suite_json(x) for x in suites.list_suites(wb, latest_only=not all_versions)]

    @r.get("/suites/{suite_id}")
    def get_suite(suite_id: int):
        return suites.suite_json(suites.get_suite(wb, suite_id))

    @r.post("/suites/{suite_id}/versions", status_code=201)
    def new_version(suite_id: int, body: SuiteFields):
        suites.get_suite(wb, suite_id)  # an unknown suite is a 404 before the body is judged
        return suites.suite_json(suites.edit_suite(wb, suite_id, body.request("")))

    @r.post("/suites/from_battles", status_code=201)
    def suite_from_battles(body: FromBattlesBody):
        suite = heldout.suite_from_battles(wb, body.name, body.limit, body.seed,
                                           [c.model_dump() for c in body.checks], body.sampling())
        return suites.suite_json(suite)

    @r.post("/suites/from_dataset", status_code=201)
    def suite_from_dataset(body: FromDatasetBody):
        checks = [c.model_dump() for c in body.checks]
        suite, train = heldout.suite_from_dataset_split(wb, body.dataset_id, body.name, body.count, body.seed,
                                                        checks, body.sampling())
        return {"suite": suites.suite_json(suite),
                "train_dataset": {"id": train.id, "name": train.name, "rows": train.num_rows}}

    @r.put("/suites/{suite_id}/gate")
    def set_gate(suite_id: int, body: GateBody):
        return gates.set_gate(wb, suite_id, body.margin)

    @r.get("/gates")
    def list_gates():
        return gates.list_gates(wb)

    @r.get("/gates/{model_id}")
    def model_gate(model_id: int):
        return {"model_id": model_id, "gate": gates.gate_of(wb, model_id)}

    @r.post("/gates/{model_id}/waive")
    def waive_gate(model_id: int, body: WaiveBody):
        return gates.waive(wb, model_id, body.note)

    @r.post("/runs", status_code=202)
    def start_run(body: RunBody):
        run = runs.start_eval(wb, body.suite_id, body.model_id, body.mode, body.baseline_id,
                              body.judge_model_id)
        return runs.run_json(wb, run)

    @r.get("/runs")
    def list_runs(suite_id: int | None = None, model_id: int | None = None):
        return [runs.run_json(wb, x) for x in runs.list_runs(wb, suite_id, model_id)]

    @r.get("/runs/{run_id}")
    def get_run(run_id: int):
        return runs.run_json(wb, runs.get_run(wb, run_id))

    @r.delete("/runs/{run_id}", status_code=204)
    def delete_run(run_id: int):
        runs.delete_run(wb, run_id)

    @r.post("/runs/{run_id}/cancel")
    def cancel_run(run_id: int):
        return runs.run_json(wb, runs.cancel_run(wb, run_id))

    @r.get("/runs/{run_id}/results")
    def run_results(run_id: int):
        return [runs.result_json(x) for x in runs.run_results(wb, run_id)]

    @r.get("/scores/{model_id}")
    def model_scores(model_id: int):
        return scores.latest_scores(wb, model_id)

    @r.post("/reference", status_code=202)
    def start_reference(body: ReferenceBody):
        row = reference.start_reference_eval(wb, body.model_id, body.dataset_id, body.metric,
                                             body.max_samples, body.max_new_tokens)
        return reference.reference_json(wb, row)

    @r.get("/reference")
    def list_reference(model_id: int | None = None):
        return [reference.reference_json(wb, x) for x in reference.list_reference_evals(wb, model_id)]

    @r.get("/reference/{reference_id}")
    def get_reference(reference_id: int):
        return reference.reference_json(wb, reference.get_reference_eval(wb, reference_id))

    @r.post("/reference/{reference_id}/cancel")
    def cancel_reference(reference_id: int):
        row = reference.get_reference_eval(wb, reference_id)
        wb.jobs.cancel(row.job_id)
        return reference.reference_json(wb, row)

    @r.get("/loop_report/{model_id}")
    def get_loop_report(model_id: int):
        return loop_report.loop_report(wb, model_id)

    @r.get("/loop_report/{model_id}/export")
    def export_loop_report(model_id: int):
        path = loop_report.export_loop_report(wb, model_id)
        return Response(path.read_bytes(), media_type="application/zip",
                        headers={"content-disposition": f'attachment; filename="{path.name}"'})

    @r.get("/compare")
    def compare(run_ids: RunIds):
        return results.compare_runs(wb, run_ids)

    @r.get("/export")
    def export(run_ids: RunIds, format: Literal["csv", "jsonl"] = "csv"):  # noqa: A002
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        name = "eval-" + "-".join(str(i) for i in run_ids) + "." + format
        return Response(results.export(wb, run_ids, format), media_type=media,
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    return r
