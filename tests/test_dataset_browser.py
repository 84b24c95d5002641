"""The dataset browser: search and pages, lineage and the runs that used a dataset,
rename (row, file and LLaMA-Factory entry together), delete refused while a run uses it,
download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.errors import Conflict, InvalidInput
from app.data import browse, datasets, quality
from app.train import training
from tests.conftest import ROOT

SAMPLE = ROOT / "data/samples/sft_starter.jsonl"


def test_rows_are_searched_and_paged(wb):
    ds = datasets.register_file(wb, SAMPLE, "sample", "sft")
    first = browse.browse_rows(wb, ds.id, page=1, per_page=50)
    assert first["total"] == first["of"] == ds.num_rows and first["pages"] == -(-ds.num_rows // 50)
    assert [r["row"] for r in first["rows"]] == list(range(1, 51))
    last = browse.browse_rows(wb, ds.id, page=first["pages"], per_page=50)
    assert last["rows"][-1]["row"] == ds.num_rows
    word = json.dumps(first["rows"][3]["data"]).split('"')[3].split()[0]  # a word of row 4
    hits = browse.browse_rows(wb, ds.id, query=word.upper(), per_page=200)
    assert 0 < hits["total"] <= ds.num_rows and 4 in [r["row"] for r in hits["rows"]]
    assert all(word.lower() in json.dumps(r["data"]).lower() for r in hits["rows"])
    with pytest.raises(InvalidInput):
        browse.browse_rows(wb, ds.id, per_page=0)


def test_lineage_runs_and_delete_refused_while_a_run_uses_it(wb, starter):
    ds = datasets.register_file(wb, SAMPLE, "sample", "sft")
    cleaned = quality.clean_dataset(wb, ds.id, name="sample-clean")
    view = browse.dataset_view(wb, cleaned.id)
    assert [p["name"] for p in view["parents"]] == ["sample"]
    assert browse.dataset_view(wb, ds.id)["children"] == [{"id": cleaned.id, "name": "sample-clean"}]
    run = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [ds.id], name="uses-it"))
    wb.jobs.cancel(run.job_id)
    assert [r["name"] for r in browse.dataset_view(wb, ds.id)["runs"]] == ["uses-it"]
    with pytest.raises(Conflict, match="used by 1 run"):
        browse.delete_dataset(wb, ds.id)
    browse.delete_dataset(wb, cleaned.id)  # no run trained on it
    assert not Path(cleaned.path).exists()
    assert "sample-clean" not in json.loads(datasets.info_path(wb).read_text())


def test_rename_moves_the_file_and_the_entry_and_training_still_finds_it(wb, starter):
    ds = datasets.register_file(wb, SAMPLE, "sample", "sft")
    other = datasets.register_file(wb, SAMPLE, "other", "sft")
    with pytest.raises(Conflict):
        browse.rename_dataset(wb, ds.id, "Other")
    with pytest.raises(InvalidInput):
        browse.rename_dataset(wb, ds.id, "bad/name")
    renamed = browse.rename_dataset(wb, ds.id, "renamed")
    assert renamed.name == "renamed" and Path(renamed.path).name == "renamed.jsonl"
    assert Path(renamed.path).is_file() and not Path(ds.path).exists()
    info = json.loads(datasets.info_path(wb).read_text())
    assert "sample" not in info and info["renamed"]["file_name"] == "renamed.jsonl"
    plan = training.plan_run(wb, training.TrainRequest("sft_lora", starter.id, [renamed.id, other.id]),
                             wb.settings.runs_dir / "planned")
    assert plan.config["dataset"] == "renamed,other"


def test_the_routes(starter_server):
    server, wb, _ = starter_server
    ds = datasets.register_file(wb, SAMPLE, "sample", "sft")
    with TestClient(server) as client:
        assert [d["name"] for d in client.get("/api/datasets").json()] == ["sample"]
        assert client.get(f"/api/datasets/{ds.id}").json()["rows"] == ds.num_rows
        page = client.get(f"/api/datasets/{ds.id}/rows", params={"page": 2, "per_page": 10}).json()
        assert [r["row"] for r in page["rows"]] == list(range(11, 21))
        got = client.get(f"/api/datasets/{ds.id}/download")
        assert got.status_code == 200 and got.content == Path(ds.path).read_bytes()
        assert client.patch(f"/api/datasets/{ds.id}", json={"name": "kept"}).json()["name"] == "kept"
        assert client.delete(f"/api/datasets/{ds.id}").status_code == 204
        missing = client.get(f"/api/datasets/{ds.id}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
