"""The quality report and the clean-up as background jobs, run to the end by the real job
runner: the same findings as the in-process analysis, a new version registered only on
success, bad input refused before anything is queued."""

import json
import time
from pathlib import Path

import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Job
from app.data import datasets, quality
from app.data.quality_jobs import (
    CLEAN,
    QUALITY,
    latest_quality_report,
    quality_job_report,
    start_clean,
    start_quality_report,
)
from tests.test_browser import page  # noqa: F401  (the headless browser fixture)
from tests.test_quality import GERMAN, LONG, planted

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
         "papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def big_dataset(wb, tmp_path, rows: int = 20_000):
    """Rows enough to keep a clean-up busy for a few seconds (mostly near-duplicates)."""
    def text(i: int) -> str:
        pairs = (WORDS[(i * k + i // 7) % 26] + WORDS[(i + k * k) % 26] for k in range(1, 25))
        return f"row {i}: " + " ".join(pairs)

    src = tmp_path / "big.jsonl"
    src.write_text("".join(json.dumps({"text": text(i)}) + "\n" for i in range(rows)))
    return datasets.register_file(wb, src, "big", "cpt")


def _job_count(wb) -> int:
    with wb.session() as s:
        return len(list(s.exec(select(Job))))


def test_report_job_matches_the_in_process_report(wb, starter, tmp_path):
    ds = planted(wb, tmp_path)
    job = wb.jobs.wait(start_quality_report(wb, ds.id, model_id=starter.id, max_tokens=200).id, 120)
    assert job.status == "succeeded", job.error
    r = quality_job_report(wb, job.id)
    assert r["status"] == "succeeded" and not r["active"] and r["result"] is None
    report = r["report"]
    assert report["exact_duplicates"]["count"] == 1 and report["near_duplicates"]["count"] == 1
    assert report["pii"]["email"]["examples"][0]["match"] == "bob@example.org"
    assert report["over_long"]["count"] == 1
    # The job's process gives what the in-process analysis gives, to the last example.
    in_process = quality.quality_report(wb, ds.id, model_id=starter.id, max_tokens=200)
    assert report == json.loads(json.dumps(in_process))
    # Each stage was a progress record and a log line.
    stages = [json.loads(x)["status"] for x in Path(job.progress_path).read_text().splitlines()]
    assert stages == ["reading", "near-duplicates", "tokens", "language", "PII", "done"]
    assert "near-duplicates" in Path(job.log_path).read_text()
    assert latest_quality_report(wb, ds.id)["job_id"] == job.id  # what a reloaded tab finds


def test_clean_job_registers_a_new_version_with_its_parent(wb, tmp_path):
    ds = planted(wb, tmp_path)
    before = Path(ds.path).read_text()
    job = wb.jobs.wait(start_clean(wb, ds.id, pii_action="redact").id, 120)
    assert job.status == "succeeded", job.error
    new = datasets.get_dataset(wb, job.result["dataset_id"])
    assert new.name == "planted-clean" and new.source == "cleaned" and new.kind == ds.kind
    assert new.meta["parent_id"] == ds.id and new.meta["job_id"] == job.id
    counts = new.meta["cleaned"]
    assert (counts["exact_duplicates"], counts["near_duplicates"], counts["empty"],
            counts["pii_redacted_rows"]) == (1, 1, 1, 1)
    texts = [json.loads(x)["text"] for x in open(new.path)]
    assert "Reach me at [EMAIL] or [CREDIT_CARD]." in texts and GERMAN in texts and texts[0] == LONG
    assert not any("bob@example.org" in t for t in texts)
    assert Path(ds.path).read_text() == before  # the parent is never edited
    # The same rows as the in-process clean-up.
    again = quality.clean_dataset(wb, ds.id)
    assert Path(again.path).read_text() == Path(new.path).read_text() and again.name == "planted-clean-2"
    assert quality_job_report(wb, job.id)["result"]["name"] == "planted-clean"


def test_a_failed_or_cancelled_clean_job_registers_nothing(wb, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("...", "-", "  ?")))
    ds = datasets.register_file(wb, empty, "blank", "cpt")
    failed = wb.jobs.wait(start_clean(wb, ds.id).id, 120)
    assert failed.status == "failed" and "leave no rows" in (failed.error or "")
    # A bigger dataset, cancelled while it runs.
    ds_big = big_dataset(wb, tmp_path)
    job = start_clean(wb, ds_big.id)
    deadline = time.monotonic() + 30
    while wb.jobs.get(job.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = wb.jobs.wait(wb.jobs.cancel(job.id).id, 60)
    assert stopped.status == "cancelled"
    assert quality_job_report(wb, job.id)["result"] is None
    assert [d.name for d in datasets.list_datasets(wb)] == ["blank", "big"]


def test_bad_input_is_refused_before_a_job_is_queued(wb, tmp_path):
    ds = planted(wb, tmp_path)
    with pytest.raises(NotFound):
        start_quality_report(wb, 999)
    with pytest.raises(NotFound):
        start_clean(wb, 999)
    with pytest.raises(NotFound):
        start_quality_report(wb, ds.id, model_id=999)
    with pytest.raises(InvalidInput, match="threshold"):
        start_quality_report(wb, ds.id, threshold=1.5)
    with pytest.raises(InvalidInput, match="max_tokens"):
        start_clean(wb, ds.id, max_tokens=0)
    with pytest.raises(InvalidInput, match="pii_action"):
        start_clean(wb, ds.id, pii_action="shred")
    with pytest.raises(InvalidInput, match="name"):
        start_clean(wb, ds.id, name="../x")
    with pytest.raises(Conflict, match="already exists"):
        start_clean(wb, ds.id, name="PLANTED")
    assert _job_count(wb) == 0
    with pytest.raises(NotFound, match="no quality report"):
        latest_quality_report(wb, ds.id)


def test_rest_routes_and_named_endpoints_follow_the_jobs(tmp_path):
    import gradio as gr
    from fastapi.testclient import TestClient

    import launch
    from app.core.settings import Settings
    from tests.test_bad_files import data_tab_fns

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        ds = planted(wb, tmp_path)
        with TestClient(server) as client:
            r = client.post(f"/api/datasets/{ds.id}/quality/jobs", json={"threshold": 0.9})
            assert r.status_code == 202 and r.json()["kind"] == QUALITY, r.text
            wb.jobs.wait(r.json()["id"], 120)
            r = client.get(f"/api/quality/jobs/{r.json()['id']}")
            assert r.status_code == 200 and r.json()["report"]["near_duplicates"]["threshold"] == 0.9
            assert client.get(f"/api/datasets/{ds.id}/quality/latest").json()["job_id"] == r.json()["job_id"]
            bad = client.post(f"/api/datasets/{ds.id}/quality/jobs", json={"threshold": 0})
            assert bad.status_code == 422 and "threshold" in bad.text
            r = client.post(f"/api/datasets/{ds.id}/clean/jobs", json={"name": "tidy", "pii_action": "drop"})
            assert r.status_code == 202 and r.json()["kind"] == CLEAN, r.text
            assert wb.jobs.wait(r.json()["id"], 120).status == "succeeded"
            done = client.get(f"/api/quality/jobs/{r.json()['id']}").json()
            assert done["result"]["name"] == "tidy" and done["result"]["rows"] == 4

        fns, _ = data_tab_fns(wb)
        names = {"start_quality_report", "start_clean", "latest_quality_report", "quality_job_report"}
        assert names <= set(fns)
        said, job_id = fns["start_quality_report"](ds.id, None, 1024, 0.85)
        assert said.startswith(f"Job {job_id} submitted: quality report of planted")
        wb.jobs.wait(job_id, 120)
        assert fns["latest_quality_report"](ds.id) == job_id  # a reloaded tab finds it again
        bar, summary, details, _, _ = fns["quality_job_report"](job_id)
        assert "succeeded" in bar
        assert "- exact duplicates: 1\n- near-duplicates (similarity ≥ 0.85): 1\n- empty rows: 1" in summary
        assert "personal data in 1 row: emails 1, card numbers 1" in summary and details["value"]["rows"] == 8
        _, job_id = fns["start_clean"](ds.id, None, 1024, 0.85, True, True, True, "redact", "")
        wb.jobs.wait(job_id, 120)
        _, message, _, _, _ = fns["quality_job_report"](job_id)
        assert message.startswith("Wrote **planted-clean** (5 rows) from planted: ")
        with pytest.raises(gr.Error, match="pick a dataset"):
            fns["start_clean"](None, None, 1024, 0.85, True, True, True, "redact", "")
    finally:
        wb.close()


@pytest.mark.browser
def test_the_data_tab_follows_a_report_job_and_finds_it_after_a_reload(page, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    import launch
    from app.core.settings import Settings
    from tests.conftest import ServerThread, make_workbench

    home = tmp_path / "home"
    wb = make_workbench(home)
    planted(wb, tmp_path)
    wb.close()
    app, _, wb = launch.build_server(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))
    try:
        with ServerThread(app) as srv:
            page.goto(srv.url)
            page.get_by_role("tab", name="Data").click()
            section = page.locator("#quality-section")
            section.get_by_label("Dataset", exact=True).click()
            page.get_by_role("option", name="planted · cpt · 8 rows").click()
            section.get_by_role("button", name="Quality report").click()
            # The timer follows the job to its end; then the counts replace the progress.
            expect(section.locator(".fl-progress[data-status='succeeded']")).to_be_visible(timeout=60_000)
            expect(section.get_by_text("exact duplicates: 1")).to_be_visible()
            expect(section.get_by_text("personal data in 1 row: emails 1, card numbers 1")).to_be_visible()
            # A reload forgets the job; the dataset's latest report is one click away.
            page.reload()
            page.get_by_role("tab", name="Data").click()
            expect(section.get_by_text("exact duplicates: 1")).to_have_count(0)
            section.get_by_label("Dataset", exact=True).click()
            page.get_by_role("option", name="planted · cpt · 8 rows").click()
            section.get_by_role("button", name="Show the latest report of this dataset").click()
            expect(section.get_by_text("near-duplicates (similarity ≥ 0.85): 1")).to_be_visible()
    finally:
        wb.close()


def test_a_clean_job_that_ends_while_the_app_is_down_registers_at_the_restart(tmp_path):
    from tests.conftest import make_workbench

    home = tmp_path / "home"
    wb = make_workbench(home)
    ds = big_dataset(wb, tmp_path)
    job = start_clean(wb, ds.id, name="big-tidy")
    deadline = time.monotonic() + 30
    while wb.jobs.get(job.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    result = Path(job.result_path)
    assert not result.is_file()  # still at work when the app goes away
    wb.close()  # the app goes away; the job's process goes on
    while not result.is_file():
        assert time.monotonic() < deadline + 60, "the job never finished"
        time.sleep(0.1)
    time.sleep(0.3)  # let the process exit
    wb = make_workbench(home)  # start-up settles it
    try:
        done = wb.jobs.wait(job.id, 30)
        assert done.status == "succeeded", done.error
        new = datasets.get_dataset(wb, done.result["dataset_id"])
        assert new.name == "big-tidy" and new.meta["parent_id"] == ds.id
        assert new.num_rows == done.result["rows"] and new.meta["cleaned"]["near_duplicates"] > 10_000
    finally:
        wb.close()
