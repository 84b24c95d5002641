"""Eval suites and runs: every check type on planted answers, the Wilson interval at known
points, pairwise judging in both orders, real eval jobs (stand-in models and the starter
model) that store every answer, compare matrices and exports."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import EvalResult, ModelVersion
from app.evals import checks, results, runs, stats, suites
from app.evals.suites import Sampling, SuiteRequest
from app.models import registry
from tests.test_judge import first_wins, longer_wins


def check(kind, value=None):
    return checks.validate({"type": kind, "value": value})


@pytest.mark.parametrize("kind, value, answer, passed", [
    ("contains", "Paris", "The capital is paris.", True),  # case-insensitive
    ("contains", "Paris", "The capital is Lyon.", False),
    ("not_contains", "sorry", "Sure, here it is.", True),
    ("not_contains", "sorry", "Sorry, I cannot.", False),
    ("regex", r"\b\d{4}\b", "It was 1969.", True),
    ("regex", r"^\d+$", "about 12", False),
    ("equals", "42", "  42\n", True),
    ("equals", "42", "42.0", False),
    ("valid_json", None, '{"a": [1, 2]}', True),
    ("valid_json", None, '```json\n{"a": 1}\n```', True),
    ("valid_json", None, "{a: 1}", False),
    ("max_length", 5, "short", True),
    ("max_length", "5", "longer", False),
])
def test_each_check_on_planted_answers(kind, value, answer, passed):
    assert checks.apply(check(kind, value), "q", answer)["passed"] is passed


def test_rubric_check_asks_the_grader_and_keeps_its_rationale():
    asked = []

    def grade(prompt):
        asked.append(prompt)
        return "It is polite and short.\nVerdict: PASS" if "please" in prompt else "Rude.\nVerdict: FAIL"

    rubric = check("rubric", "The answer is polite.")
    ok = checks.apply(rubric, "ask nicely", "Yes please.", grade)
    assert ok["passed"] and ok["rationale"] == "It is polite and short.\nVerdict: PASS"
    assert "[Rubric]\nThe answer is polite." in asked[0] and "[Answer]\nYes please." in asked[0]
    assert checks.apply(rubric, "ask", "No.", grade)["passed"] is False
    unsure = checks.apply(rubric, "ask", "No.", lambda p: "hard to say")
    assert unsure["passed"] is False and unsure["unparsed"]
    assert checks.apply(rubric, "ask", "No.")["passed"] is False  # no judge: a failure, said so
    assert checks.parse_rubric('"Verdict: PASS" or "Verdict: FAIL"\nVerdict: **pass**') is True


def test_checks_are_validated_when_a_suite_is_saved():
    for bad, match in [({"type": "nope"}, "needs a type"), ({"type": "contains"}, "needs a value"),
                       ({"type": "regex", "value": "("}, "bad regex"),
                       ({"type": "max_length", "value": "ten"}, "number of characters"),
                       ({"type": "max_length", "value": 0}, "at least 1")]:
        with pytest.raises(InvalidInput, match=match):
            checks.validate(bad)
    passed, res = checks.apply_all([check("contains", "a"), check("max_length", 3)], "q", "abcd")
    assert not passed and [r["passed"] for r in res] == [True, False]
    assert checks.apply_all([], "q", "anything") == (True, [])


def test_wilson_interval_at_known_points():
    low, high = stats.wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = stats.wilson(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = stats.wilson(50, 100)
    assert (round(low, 4), round(high, 4)) == (0.4038, 0.5962)
    assert stats.wilson(0, 0) == (0.0, 1.0)
    w = stats.win_rate(["a", "a", "tie", "b"], [True, True, False, True])
    assert w["rate"] == 0.625 and w["ties_count_half"] and w["position_consistency"] == 0.75
    assert (w["wins"], w["losses"], w["ties"]) == (2, 1, 1)


def test_suites_are_versioned_and_sampling_checked(wb):
    two = {"prompt": "two", "checks": [{"type": "contains", "value": "2"}]}
    req = SuiteRequest("basics", ["one", two, " "],
                       checks=[{"type": "max_length", "value": 100}])
    v1 = suites.save_suite(wb, req)
    assert (v1.version, [p["prompt"] for p in v1.prompts]) == (1, ["one", "two"])
    greedy = {"samples": 1, "temperature": 0.0, "max_new_tokens": 256, "seed": None}
    assert v1.sampling == greedy  # by default
    v2 = suites.edit_suite(wb, v1.id, SuiteRequest("ignored", ["three"], sampling=Sampling(3, 0.8, 32)))
    assert (v2.name, v2.version, v2.sampling["samples"]) == ("basics", 2, 3)
    assert suites.get_suite(wb, v1.id).prompts[0]["prompt"] == "one"  # the old version stays
    assert [s.id for s in suites.list_suites(wb)] == [v2.id]
    assert len(suites.list_suites(wb, latest_only=False)) == 2
    assert suites.parse_prompts("a\n\nb\n") == ["a", "b"]
    assert suites.parse_prompts("line 1\nline 2\n---\nother") == ["line 1\nline 2", "other"]
    with pytest.raises(InvalidInput, match="temperature above 0"):
        Sampling(samples=4)
    with pytest.raises(InvalidInput, match="at least one prompt"):
        suites.save_suite(wb, SuiteRequest("empty", [" "]))
    with pytest.raises(NotFound):
        suites.get_suite(wb, 999)


def test_a_suite_from_a_dataset(wb):
    from app.data import datasets
    from tests.conftest import ROOT

    ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
    suite = suites.save_suite(wb, SuiteRequest("from data", dataset_id=ds.id))
    assert suite.source == f"dataset:{ds.id}" and suite.prompts[1]["prompt"] == "Count up by one.\n\n15"


@pytest.fixture
def contenders(wb, stub, served):
    """alpha answers short, beta (alpha's child) long, gamma judges: the longer answer wins."""
    alpha, beta, gamma = served
    stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
    stub.models["gamma:1b"].brain = longer_wins
    with wb.session() as s:
        row = s.get(ModelVersion, beta.id)
        row.parent_id = alpha.id
        s.add(row)
        s.commit()
    return alpha, beta, gamma


def test_pairwise_run_judges_both_orders_against_the_parent(wb, stub, contenders):
    alpha, beta, gamma = contenders
    suite = suites.save_suite(wb, SuiteRequest("pairs", ["name a colour", "what is rain", "why"],
                                               checks=[{"type": "contains", "value": "answer"}]))
    run = runs.start_eval(wb, suite.id, beta.id, mode="pairwise", judge_model_id=gamma.id)
    assert run.baseline_id == alpha.id  # the parent, by default
    job = wb.jobs.wait(run.job_id, 120)
    assert job.status == "succeeded", job.error
    summary = runs.get_run(wb, run.id).summary
    win = summary["win_rate"]
    assert (win["wins"], win["n"], win["position_consistency"]) == (3, 3, 1.0)
    assert round(win["low"], 3) == round(stats.wilson(3, 3)[0], 3)
    rows = runs.run_results(wb, run.id)
    assert all(r.choice == "a" and r.consistent for r in rows)
    assert rows[0].baseline_answer == "answer 8 colour a name"  # alpha:1b is 8 characters
    assert len(rows[0].meta["prompts"]) == 2  # the judge was asked in both orders

    # A judge that always prefers what it reads first contradicts itself: ties, counted half.
    stub.models["gamma:1b"].brain = first_wins
    biased = runs.start_eval(wb, suite.id, beta.id, mode="pairwise", judge_model_id=gamma.id)
    assert wb.jobs.wait(biased.job_id, 120).status == "succeeded"
    win = runs.get_run(wb, biased.id).summary["win_rate"]
    assert (win["ties"], win["rate"], win["position_consistency"]) == (3, 0.5, 0.0)

    with pytest.raises(InvalidInput, match="no parent"):
        runs.start_eval(wb, suite.id, alpha.id, mode="pairwise", judge_model_id=gamma.id)
    with pytest.raises(InvalidInput, match="judge"):
        runs.start_eval(wb, suite.id, beta.id, mode="pairwise")
    with pytest.raises(InvalidInput, match="mode"):
        runs.start_eval(wb, suite.id, beta.id, mode="vibes")


def test_rubric_run_needs_a_judge_and_stores_its_rationale(wb, stub, contenders):
    alpha, _, gamma = contenders
    stub.models["gamma:1b"].brain = lambda m, p: ("Mentions the colour.\nVerdict: PASS" if "colour" in
                                                  p.split("[Answer]")[1] else "Off topic.\nVerdict: FAIL")
    suite = suites.save_suite(wb, SuiteRequest("rubric", ["name a colour", "what is rain"],
                                               checks=[{"type": "rubric", "value": "on topic"}]))
    with pytest.raises(InvalidInput, match="rubric"):
        runs.start_eval(wb, suite.id, alpha.id)
    run = runs.start_eval(wb, suite.id, alpha.id, judge_model_id=gamma.id)
    assert wb.jobs.wait(run.job_id, 120).status == "succeeded"
    rows = runs.run_results(wb, run.id)
    assert [r.passed for r in rows] == [True, False]
    assert rows[0].checks[0]["rationale"].startswith("Mentions the colour")


def test_a_cancelled_run_stores_nothing(wb, stub, contenders):
    alpha, *_ = contenders

    def slow(model, prompt):
        time.sleep(0.5)
        return "slow " + prompt

    stub.models["alpha:1b"].brain = slow
    suite = suites.save_suite(wb, SuiteRequest("slow", [f"prompt {i}" for i in range(40)]))
    run = runs.start_eval(wb, suite.id, alpha.id)
    deadline = time.monotonic() + 60
    while not runs.run_json(wb, runs.get_run(wb, run.id))["progress"]["step"]:
        assert time.monotonic() < deadline, "no progress reported"
        time.sleep(0.2)
    runs.cancel_run(wb, run.id)
    job = wb.jobs.wait(run.job_id, 60)
    assert job.status == "cancelled" and job.result == {"eval_run_id": run.id, "stored": False}
    with wb.session() as s:
        assert not list(s.exec(select(EvalResult).where(EvalResult.run_id == run.id)))
    assert runs.get_run(wb, run.id).summary == {}


def test_a_run_whose_model_fails_part_way_stores_nothing(wb, stub, contenders):
    alpha, *_ = contenders
    stub.models["alpha:1b"].brain = lambda m, p: 1 / 0 if "second" in p else "fine"
    suite = suites.save_suite(wb, SuiteRequest("breaks", ["first", "second", "third"]))
    run = runs.start_eval(wb, suite.id, alpha.id)
    job = wb.jobs.wait(run.job_id, 60)
    assert job.status == "failed" and "Ollama" in job.error, job.error
    assert runs.run_results(wb, run.id) == [] and runs.get_run(wb, run.id).summary == {}
    assert runs.run_json(wb, runs.get_run(wb, run.id))["status"] == "failed"


def test_starter_eval_job_stores_answers_pass_rates_compare_and_export(wb, starter):
    suite = suites.save_suite(wb, SuiteRequest(
        "starter", ["Say hello.", "Count up by one.\n\n15"],
        checks=[{"type": "max_length", "value": 10_000}, {"type": "not_contains", "value": "zzzz-never"}],
        sampling=Sampling(max_new_tokens=8)))
    strict = suites.edit_suite(wb, suite.id, SuiteRequest("", ["Say hello.", "Count up by one.\n\n15"],
                                                          checks=[{"type": "max_length", "value": 1}],
                                                          sampling=Sampling(2, 0.9, 8)))
    first = runs.start_eval(wb, suite.id, starter.id)
    second = runs.start_eval(wb, strict.id, starter.id)
    for run in (first, second):
        job = wb.jobs.wait(run.job_id, 300)
        assert job.status == "succeeded", job.error
        assert runs.run_json(wb, run)["progress"]["step"] == 2
    rows = runs.run_results(wb, first.id)
    assert [r.prompt_index for r in rows] == [0, 1] and all(r.answer for r in rows)
    assert all(r.passed and len(r.checks) == 2 for r in rows)
    summary = runs.get_run(wb, first.id).summary
    assert summary["pass_rate"]["rate"] == 1.0 and summary["pass_rate"]["n"] == 2
    assert (round(summary["pass_rate"]["low"], 4), summary["pass_rate"]["high"]) == (0.3424, 1.0)
    strict_summary = runs.get_run(wb, second.id).summary["pass_rate"]
    assert (strict_summary["n"], strict_summary["rate"]) == (4, 0.0)  # 2 prompts × 2 samples, all too long

    matrix = results.compare_runs(wb, [first.id, second.id])
    assert [r["prompt"] for r in matrix["rows"]] == ["Say hello.", "Count up by one.\n\n15"]
    cell_a, cell_b = matrix["rows"][0]["cells"]
    assert cell_a["passed"] and not cell_b["passed"] and cell_b["samples"] == 2
    assert [r["suite"] for r in matrix["runs"]] == ["starter v1", "starter v2"]

    table = list(csv.reader(io.StringIO(results.export(wb, [first.id, second.id], "csv"))))
    assert table[0] == ["prompt", f"run {first.id} starter answer", f"run {first.id} starter passed",
                        f"run {second.id} starter answer", f"run {second.id} starter passed"]
    assert table[1][0] == "Say hello." and table[1][2] == "True" and table[1][4] == "False"
    lines = [json.loads(x) for x in results.export(wb, [first.id, second.id], "jsonl").splitlines()]
    assert len(lines) == 4 and lines[0]["run_id"] == first.id
    assert lines[0]["checks"][0]["type"] == "max_length"
    with pytest.raises(InvalidInput, match="format"):
        results.export(wb, [first.id], "xml")
    with pytest.raises(NotFound):
        results.compare_runs(wb, [first.id, 999])


def test_eval_api(tmp_path, stub):
    from fastapi.testclient import TestClient

    import launch
    from app.core.settings import Settings
    from tests.conftest import home_with_served

    home = tmp_path / "home"
    alpha, beta = home_with_served(home, stub)
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with TestClient(server) as c:
            r = c.post("/api/evals/suites", json={
                "name": "api", "prompts": ["hello there"],
                "items": [{"prompt": "two words", "checks": [{"type": "regex", "value": "^answer"}]}],
                "checks": [{"type": "contains", "value": "there"}]})
            assert r.status_code == 201, r.text
            suite = r.json()
            assert suite["version"] == 1 and suite["prompts"][1]["checks"][0]["type"] == "regex"
            bad = c.post("/api/evals/suites", json={"name": "x", "prompts": ["p"],
                                                    "checks": [{"type": "regex", "value": "("}]})
            assert bad.status_code == 422 and "bad regex" in bad.json()["error"]["message"]
            v2 = c.post(f"/api/evals/suites/{suite['id']}/versions", json={"prompts": ["hello there"]})
            assert v2.status_code == 201 and (v2.json()["name"], v2.json()["version"]) == ("api", 2)
            assert [s["version"] for s in c.get("/api/evals/suites").json()] == [2]
            assert len(c.get("/api/evals/suites", params={"all_versions": True}).json()) == 2

            ids = []
            for model in (alpha, beta):
                r = c.post("/api/evals/runs", json={"suite_id": suite["id"], "model_id": model.id})
                assert r.status_code == 202 and r.json()["suite"] == "api v1", r.text
                ids.append(r.json()["id"])
                assert wb.jobs.wait(r.json()["job_id"], 120).status == "succeeded"
            run = c.get(f"/api/evals/runs/{ids[0]}").json()
            # alpha echoes the words reversed: "hello there" keeps "there", "two words" lacks it.
            assert run["status"] == "succeeded" and run["summary"]["pass_rate"]["rate"] == 0.5
            res = c.get(f"/api/evals/runs/{ids[0]}/results").json()
            assert [x["passed"] for x in res] == [True, False] and res[1]["checks"][0]["passed"]
            assert c.post(f"/api/evals/runs/{ids[0]}/cancel").status_code == 409  # already done
            by_beta = c.get("/api/evals/runs", params={"model_id": beta.id}).json()
            assert [x["id"] for x in by_beta] == [ids[1]]
            matrix = c.get("/api/evals/compare", params={"run_ids": ids}).json()
            assert [run["model"] for run in matrix["runs"]] == ["alpha", "beta"]
            assert len(matrix["rows"]) == 2 and len(matrix["rows"][0]["cells"]) == 2
            csv_out = c.get("/api/evals/export", params={"run_ids": ids, "format": "csv"})
            assert csv_out.headers["content-type"].startswith("text/csv")
            assert csv_out.text.splitlines()[0].startswith("prompt,run ")
            jsonl = c.get("/api/evals/export", params={"run_ids": ids, "format": "jsonl"})
            assert len(jsonl.text.splitlines()) == 4
            assert c.get("/api/evals/compare", params={"run_ids": [ids[0], 999]}).status_code == 404
            # A model with eval runs is kept until they are deleted.
            with pytest.raises(Conflict, match="eval runs"):
                registry.delete_model(wb, alpha.id)
            assert c.delete(f"/api/evals/runs/{ids[0]}").status_code == 204
            assert c.get(f"/api/evals/runs/{ids[0]}").status_code == 404
            registry.delete_model(wb, alpha.id)
    finally:
        wb.close()


def test_evaluate_tab_through_its_api_endpoints(tmp_path, stub):
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from app.data import datasets
    from tests.conftest import ROOT, ServerThread, home_with_served, make_workbench

    home = tmp_path / "home"
    alpha, beta, gamma = home_with_served(home, stub, ("alpha:1b", "beta:1b", "gamma:1b"))
    stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
    stub.models["gamma:1b"].brain = longer_wins
    setup = make_workbench(home)  # the pickers list what exists when the page is built
    ds = datasets.register_file(setup, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
    setup.close()
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with ServerThread(server) as srv:
            client = Client(srv.url, verbose=False)
            note, _ = client.predict("tab", "name a colour\nwhat is rain", "contains: answer\nmax_length: 30",
                                     1, 0, 32, None, None, api_name="/save_eval_suite")
            assert note == "Saved **tab v1**: 2 prompts, 2 checks."
            (suite,) = suites.list_suites(wb)
            progress, ids, table = client.predict(suite.id, alpha.id, beta.id, gamma.id, True,
                                                  api_name="/run_eval_suite")
            assert "data-status='succeeded'" in progress
            first, second = (int(x) for x in ids.split(","))
            # alpha's short echo passes both checks; beta's long answers break max_length.
            assert table.count("data-state='pass'") == 2 and table.count("data-state='fail'") == 2
            assert "win 100%" in table and "vs alpha" in table
            assert runs.get_run(wb, second).summary["win_rate"]["wins"] == 2
            assert client.predict(f"{first}", api_name="/compare_eval_runs").count("<tr>") == 3
            update = client.predict(ids, "jsonl", api_name="/export_eval_runs")
            path = update["value"] if isinstance(update, dict) else update  # a visibility update
            assert len(open(path).read().splitlines()) == 4
            with pytest.raises(Exception, match="needs a value"):
                client.predict("bad", "q", "contains", 1, 0, 32, None, None, api_name="/save_eval_suite")
            note, _ = client.predict("from data", "", "", 1, 0, 32, ds.id, None, api_name="/save_eval_suite")
            assert note == f"Saved **from data v1**: {ds.num_rows} prompts, 0 checks."
    finally:
        wb.close()


def test_an_existing_database_gains_the_eval_tables_without_a_migration(tmp_path):
    """New tables need no schema step: create_all adds them when an older database opens."""
    from sqlalchemy import inspect, text

    from app.core import db
    from tests.conftest import make_workbench

    home = tmp_path / "home"
    bench = make_workbench(home)
    with bench.engine.begin() as conn:
        for table in ("eval_results", "eval_runs", "eval_suites"):
            conn.execute(text(f"DROP TABLE {table}"))
    bench.close()
    bench = make_workbench(home)
    try:
        assert {"eval_suites", "eval_runs", "eval_results"} <= set(inspect(bench.engine).get_table_names())
        assert bench.schema_version == db.SCHEMA_VERSION
        assert suites.save_suite(bench, SuiteRequest("after upgrade", ["hi"])).version == 1
    finally:
        bench.close()


def test_a_seeded_suite_repeats_its_answers(wb, starter):
    suite = suites.save_suite(wb, SuiteRequest("seeded", ["What does a cat say?", "How are you?"],
                                               sampling=Sampling(3, 1.2, 12, seed=5)))
    assert suite.sampling["seed"] == 5
    answers = []
    for _ in range(2):
        run = runs.start_eval(wb, suite.id, starter.id)
        assert wb.jobs.wait(run.job_id, 300).status == "succeeded"
        answers.append([r.answer for r in runs.run_results(wb, run.id)])
    assert answers[0] == answers[1] and len(answers[0]) == 6
    assert len(set(answers[0])) > 2  # the samples of one prompt still differ from each other
    with pytest.raises(InvalidInput, match="seed must be between"):
        Sampling(seed=-3)
