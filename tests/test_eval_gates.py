"""Eval gates and the evals that follow training: a held version waits for its gated suites,
joins the arena when it did not fall below its parent, stays out (and cannot be deployed)
when it did, and can be waived; a real training run queues its chosen and gated suites on
the new version and its parent, and the Registry's latest scores pick the newest run."""

from __future__ import annotations

import time

import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput
from app.core.tables import EvalRun, ModelVersion
from app.evals import gates, runs, scores, suites
from app.evals.suites import SuiteRequest
from app.models import deploy, registry
from app.train import training
from tests.conftest import FAST, ROOT
from tests.test_evals import contenders  # noqa: F401  (a fixture)


def contains(text):
    return {"type": "contains", "value": text}


def hold(wb, model_id, in_arena=True):
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        mv.in_arena = in_arena
        gates.hold(s, mv, gates.gated_suites(s))
        s.commit()


def run_to_end(wb, suite_id, model_id):
    run = runs.start_eval(wb, suite_id, model_id)
    job = wb.jobs.wait(run.job_id, 120)
    assert job.status == "succeeded", job.error
    return run


def model(wb, model_id):
    with wb.session() as s:
        return s.get(ModelVersion, model_id)


def test_a_gate_passes_a_child_that_held_and_stops_one_that_fell(wb, stub, contenders):  # noqa: F811
    alpha, beta, _ = contenders  # beta (alpha's child) writes "a longer and more detailed answer"
    detail = suites.save_suite(wb, SuiteRequest("detail", ["rain", "snow"],
                                                checks=[{"type": "contains", "value": "longer"}]))
    gates.set_gate(wb, detail.id, 0.1)
    assert gates.list_gates(wb) == [{"suite": "detail", "margin": 0.1}]
    hold(wb, beta.id)
    held = model(wb, beta.id)
    assert not held.in_arena and held.meta["gate"]["status"] == "pending"
    with pytest.raises(Conflict, match="held back by its eval gate"):
        registry.set_in_arena(wb, beta.id, True)

    # The child's score alone decides nothing: the parent has none on that suite version.
    run_to_end(wb, detail.id, beta.id)
    gate = model(wb, beta.id).meta["gate"]
    assert gate["status"] == "incomplete" and "without a score" in gate["reason"]
    run_to_end(wb, detail.id, alpha.id)
    after = model(wb, beta.id)
    gate = after.meta["gate"]
    assert gate["status"] == "passed" and after.in_arena  # it was meant for the arena
    assert gate["suites"][0]["child_rate"] == 1.0 and gate["suites"][0]["parent_rate"] == 0.0
    assert "held at 1.00 vs the parent's 0.00" in gate["reason"]

    # A second gated suite the child does worse on: held back, with the numbers as the reason.
    terse = suites.save_suite(wb, SuiteRequest("terse", ["rain", "snow"],
                                               checks=[{"type": "not_contains", "value": "longer"}]))
    gates.set_gate(wb, terse.id, 0.2)
    hold(wb, beta.id)
    assert {g["suite"] for g in model(wb, beta.id).meta["gate"]["suites"]} == {"detail", "terse"}
    run_to_end(wb, terse.id, alpha.id)
    run_to_end(wb, terse.id, beta.id)
    gate = model(wb, beta.id).meta["gate"]
    assert gate["status"] == "failed" and not model(wb, beta.id).in_arena
    assert "terse: fell at 0.00 vs the parent's 1.00 (margin 0.20)" in gate["reason"]
    assert "detail: held" in gate["reason"]
    with pytest.raises(Conflict, match="fell at 0.00"):
        registry.set_in_arena(wb, beta.id, True)

    waived = gates.waive(wb, beta.id, "checked by hand")
    assert waived["status"] == "waived" and "checked by hand" in waived["reason"]
    assert model(wb, beta.id).in_arena
    # A waived gate is settled: a later run does not reopen it.
    run_to_end(wb, terse.id, beta.id)
    assert model(wb, beta.id).meta["gate"]["status"] == "waived"

    with pytest.raises(InvalidInput, match="between 0 and 1"):
        gates.set_gate(wb, terse.id, 1.5)
    gates.set_gate(wb, terse.id, None)
    assert [g["suite"] for g in gates.list_gates(wb)] == ["detail"]


def test_latest_scores_pick_the_newest_succeeded_run_per_suite(wb, stub, contenders):  # noqa: F811
    _, beta, _ = contenders
    suite = suites.save_suite(wb, SuiteRequest("s", ["a", "b"], checks=[contains("longer")]))
    run_to_end(wb, suite.id, beta.id)
    stub.models["beta:1b"].brain = lambda m, p: "short"
    newer = run_to_end(wb, suite.id, beta.id)
    v2 = suites.edit_suite(wb, suite.id, SuiteRequest("", ["a"], checks=[contains("short")]))
    newest = run_to_end(wb, v2.id, beta.id)
    found = scores.latest_scores(wb, beta.id)
    got = [(x["suite"], x["suite_version"], x["run_id"], x["rate"]) for x in found]
    assert got == [("s", 2, newest.id, 1.0)]
    assert scores.score_text(found[0]) == "s v2: 1.00 [0.21, 1.00] of 1"
    with wb.session() as s:
        by_version = scores.latest_scores_in(s, [beta.id], suite_id=suite.id)[beta.id]
    assert by_version[0]["run_id"] == newer.id and by_version[0]["rate"] == 0.0


def test_deploy_refuses_a_version_its_gate_holds_back(wb, starter):
    with wb.session() as s:
        mv = s.get(ModelVersion, starter.id)
        mv.meta = {**mv.meta, "gate": {"status": "failed", "reason": "x: fell at 0.10 vs the parent's 0.90"}}
        s.add(mv)
        s.commit()
    with pytest.raises(Conflict, match="fell at 0.10"):
        deploy.plan_deploy(wb, starter.id)


@pytest.mark.slow
def test_training_queues_chosen_and_gated_suites_and_the_gate_decides(wb, starter):
    from app.data import datasets

    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    sane = suites.save_suite(wb, SuiteRequest("sane", ["Count up by one.\n\n3"],
                                              checks=[{"type": "max_length", "value": 100000}]))
    suites.save_suite(wb, SuiteRequest("extra", ["Say hi."]))
    gates.set_gate(wb, sane.id, 0.0)

    def request(**kw):
        return training.TrainRequest("sft_lora", starter.id, [data.id],
                                     overrides={**FAST, "max_steps": 2}, **kw)

    with pytest.raises(InvalidInput, match="no eval suite named 'nope'"):
        training.start_run(wb, request(name="bad", eval_suites=["nope"]))
    assert training.list_runs(wb) == []  # refused before anything was stored

    run = training.wait_run(wb, training.start_run(wb, request(name="gated", eval_suites=["extra"])).id, 600)
    assert run.status == "succeeded", run.error
    child = model(wb, run.output_model_id)
    assert child.meta["gate"]["status"] in ("pending", "passed")
    deadline = time.monotonic() + 30  # the follow-up evals are queued just after the run's finish
    while "auto_evals" not in child.meta and time.monotonic() < deadline:
        time.sleep(0.1)
        child = model(wb, child.id)
    asked = {(e["suite"], e["model_id"]) for e in child.meta["auto_evals"]}
    assert asked == {("extra", child.id), ("sane", child.id), ("sane", starter.id)}
    with wb.session() as s:
        eval_runs = list(s.exec(select(EvalRun)))
    assert len(eval_runs) == 3
    for r in eval_runs:
        job = wb.jobs.wait(r.job_id, 300)
        assert job.status == "succeeded", (job.error, wb.jobs.view(job)["log"][-3000:])
    child = model(wb, child.id)
    assert child.meta["gate"]["status"] == "passed" and child.in_arena, child.meta["gate"]
    assert {x["suite"] for x in scores.latest_scores(wb, child.id)} == {"sane", "extra"}


def test_gates_scores_and_waiving_through_rest_and_gradio(tmp_path, stub):
    from fastapi.testclient import TestClient
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from tests.conftest import ServerThread, home_with_served, make_workbench

    home = tmp_path / "home"
    alpha, beta = home_with_served(home, stub)
    stub.models["beta:1b"].brain = lambda m, p: "short"
    setup = make_workbench(home)
    with setup.session() as s:
        row = s.get(ModelVersion, beta.id)
        row.parent_id = alpha.id
        s.add(row)
        s.commit()
    # The Gradio pickers accept what existed when the page was built.
    made = suites.save_suite(setup, SuiteRequest("gated", ["one", "two"], checks=[contains("answer")]))
    setup.close()
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with TestClient(server) as c, ServerThread(server) as srv:
            suite = c.get(f"/api/evals/suites/{made.id}").json()
            assert c.put(f"/api/evals/suites/{suite['id']}/gate", json={"margin": 2}).status_code == 422
            r = c.put(f"/api/evals/suites/{suite['id']}/gate", json={"margin": 0.25})
            assert r.json() == {"suite": "gated", "margin": 0.25}
            assert c.get("/api/evals/gates").json() == [{"suite": "gated", "margin": 0.25}]
            hold(wb, beta.id)
            for m in (alpha, beta):
                job = c.post("/api/evals/runs", json={"suite_id": suite["id"], "model_id": m.id}).json()
                assert wb.jobs.wait(job["job_id"], 120).status == "succeeded"
            gate = c.get(f"/api/evals/gates/{beta.id}").json()["gate"]
            # alpha's echo keeps "answer"; beta's "short" never does: 0.00 vs 1.00, beyond 0.25.
            assert gate["status"] == "failed" and "fell at 0.00 vs the parent's 1.00" in gate["reason"]
            score = c.get(f"/api/evals/scores/{beta.id}").json()
            assert [(x["suite"], x["rate"]) for x in score] == [("gated", 0.0)]
            assert c.get("/api/evals/gates/999").status_code == 404

            client = Client(srv.url, verbose=False)
            with pytest.raises(Exception, match="held back by its eval gate"):
                client.predict(beta.id, api_name="/arena_on")
            shown = client.predict(beta.id, api_name="/eval_gate")
            assert shown.startswith("**Gate: failed**") and "`gated` v1: 0.00 vs the parent's 1.00" in shown
            assert "Eval scores (latest per suite)" in client.predict(beta.id, api_name="/version_view")
            waived = client.predict(beta.id, "answers differ by design", api_name="/waive_eval_gate")
            assert waived.startswith("**Gate: waived**") and "answers differ by design" in waived
            assert c.get(f"/api/evals/gates/{beta.id}").json()["gate"]["status"] == "waived"
            _, table = client.predict(beta.id, api_name="/arena_on")  # the Registry's table
            cols = table["headers"]
            row = next(r for r in table["data"] if r[cols.index("id")] == beta.id)
            assert row[cols.index("gate")] == "waived" and row[cols.index("arena")] == "yes"
            assert row[cols.index("eval scores")] == "gated v1: 0.00 [0.00, 0.66] of 2"
            assert "No gates" in client.predict(suite["id"], api_name="/remove_eval_gate")
            assert "`gated` (margin 0.10)" in client.predict(suite["id"], 0.1, api_name="/set_eval_gate")
            assert c.post(f"/api/evals/gates/{alpha.id}/waive", json={}).status_code == 404  # no gate
    finally:
        wb.close()
