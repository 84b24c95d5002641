"""The loop report over a three-version lineage of stand-in models: alpha → beta (a DPO run
on a vote snapshot by two voters) → gamma (a copy), real eval jobs and a pairwise judge,
blind votes for the ratings; the rows, the Markdown table, the plot and the zipped export,
through the function, REST and the Evaluate tab."""

from __future__ import annotations

import io
import zipfile

import pytest

from app.arena import battles
from app.arena import preference_export as pe
from app.core.tables import ModelVersion, Run
from app.evals import loop_report, runs, suites
from app.evals.suites import SuiteRequest
from app.models import registry
from tests.test_arena_data import GREEDY, cast
from tests.test_judge import longer_wins

LONG = "a longer and more detailed answer about "


def link(wb, child_id, parent_id, run_id=None):
    with wb.session() as s:
        row = s.get(ModelVersion, child_id)
        row.parent_id, row.run_id = parent_id, run_id
        s.add(row)
        s.commit()


def build_lineage(wb, stub, served):
    alpha, beta, gamma = served
    stub.models["beta:1b"].brain = lambda m, p: LONG + p
    stub.models["gamma:1b"].brain = lambda m, p: LONG + p + " and more"
    stub.add_model("judge:1b", brain=longer_wins)
    judge = registry.register_remote_model(wb, "judge", "ollama", stub.url, "judge:1b")
    registry.set_in_arena(wb, judge.id, False)
    registry.set_in_arena(wb, gamma.id, False)
    # Named votes by two voters → the DPO snapshot beta was trained on.
    for i, voter in enumerate(["ann", "bob", "ann"]):
        cast(wb, alpha, beta, f"question {i}", "b", voter=voter)
    snap = pe.build_dpo_dataset(wb, "round-1")
    with wb.session() as s:
        run = Run(name="round-1-dpo", stage="dpo", model_id=alpha.id, dataset_ids=[snap.id],
                  recipe="dpo_lora", output_dir=str(wb.settings.runs_dir / "round-1-dpo" / "output"))
        s.add(run)
        s.commit()
        s.refresh(run)
    link(wb, beta.id, alpha.id, run.id)
    link(wb, gamma.id, beta.id)
    # Blind votes: beta beats alpha, so the ratings move.
    for i in range(6):  # only alpha and beta are in the arena: the blind pair is theirs
        battle = battles.new_battle(wb, gen=GREEDY, mode="anonymous")
        battles.play_turn(wb, battle.id, f"blind {i}")
        beta_side = "a" if battle.model_a_id == beta.id else "b"
        battles.vote(wb, battle.id, beta_side if i < 5 else {"a": "b", "b": "a"}[beta_side], voter=f"v{i}")
    suite = suites.save_suite(wb, SuiteRequest("detail", ["rain", "snow", "wind"],
                                               checks=[{"type": "contains", "value": "longer"}]))
    for model in (alpha, beta, gamma):
        assert wb.jobs.wait(runs.start_eval(wb, suite.id, model.id).job_id, 120).status == "succeeded"
    pair = runs.start_eval(wb, suite.id, beta.id, mode="pairwise", judge_model_id=judge.id)
    assert wb.jobs.wait(pair.job_id, 120).status == "succeeded"
    return alpha, beta, gamma, snap


def test_a_lineage_round_by_round(wb, stub, served):
    alpha, beta, gamma, snap = build_lineage(wb, stub, served)
    report = loop_report.loop_report(wb, gamma.id)
    assert [v["name"] for v in report["lineage"]] == ["alpha", "beta", "gamma"]
    assert report["suites"] == ["detail"] and len(report["rounds"]) == 2
    first, second = report["rounds"]
    assert (first["parent"]["name"], first["child"]["name"]) == ("alpha", "beta")
    assert first["run"]["recipe"] == "dpo_lora" and first["how"] == "dpo run round-1-dpo"
    assert first["datasets"] == [{"id": snap.id, "name": "round-1", "kind": "dpo", "rows": 3, "votes": 3,
                                  "voters": 2}]
    detail = first["scores"]["detail"]
    assert (detail["parent"]["rate"], detail["child"]["rate"], detail["same_version"]) == (0.0, 1.0, True)
    assert first["pairwise"]["rate"] == 1.0 and first["pairwise"]["low"] > 0.3
    assert first["rating"]["change"] > 0 and first["rating"]["child"]["votes"] == 6
    assert second["run"] is None and second["how"] == "ollama copy (no training)"
    assert second["rating"]["child"] is None and second["rating"]["change"] is None  # not in the arena
    assert [p["rate"] for p in report["series"]["detail"]] == [0.0, 1.0, 1.0]

    md = loop_report.report_markdown(report)
    assert "Lineage: **alpha** → **beta** → **gamma**" in md
    row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "alpha → beta" in row and "round-1 (dpo, 3 rows, 3 votes by 2 voters)" in row
    assert "0.00 [0.00, 0.56] → 1.00 [0.44, 1.00]" in row and "1.00 [" in row
    assert "![Pass rate over the lineage](pass-rates.png)" in md

    path = loop_report.export_loop_report(wb, gamma.id)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["pass-rates.png", "report.md"]
        assert z.read("pass-rates.png")[:8] == b"\x89PNG\r\n\x1a\n"
        assert z.read("report.md").decode() == md

    base = loop_report.loop_report(wb, alpha.id)
    assert base["rounds"] == [] and "no parent" in loop_report.report_markdown(base)


@pytest.fixture
def report_server(tmp_path, stub):
    import launch
    from app.core.settings import Settings
    from tests.conftest import home_with_served

    home = tmp_path / "home"  # the models exist before the page is built: its pickers list them
    served = home_with_served(home, stub, ("alpha:1b", "beta:1b", "gamma:1b"))
    server, _, wb = launch.build_server(Settings(home=home))
    yield server, wb, served
    wb.close()


def test_the_loop_report_through_rest_and_the_evaluate_tab(report_server, stub):
    from fastapi.testclient import TestClient
    from gradio_client import Client

    from tests.conftest import ServerThread

    server, wb, served = report_server
    _, beta, gamma = served
    build_lineage(wb, stub, served)
    with TestClient(server) as c, ServerThread(server) as srv:
        body = c.get(f"/api/evals/loop_report/{gamma.id}").json()
        assert [r["child"]["name"] for r in body["rounds"]] == ["beta", "gamma"]
        assert c.get("/api/evals/loop_report/999").status_code == 404
        z = c.get(f"/api/evals/loop_report/{beta.id}/export")
        assert z.headers["content-type"] == "application/zip"
        assert "report.md" in zipfile.ZipFile(io.BytesIO(z.content)).namelist()

        table, image, download = Client(srv.url, verbose=False).predict(gamma.id, api_name="/loop_report")
        assert table.startswith("# Loop report: gamma") and "alpha → beta" in table
        assert "pass-rates.png" not in table  # the tab shows the plot as an image instead
        assert open(image if isinstance(image, str) else image["value"], "rb").read(4) == b"\x89PNG"
        assert str(download if isinstance(download, str) else download["value"]).endswith(".zip")
