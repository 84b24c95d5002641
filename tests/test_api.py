"""The training REST routes, served next to the UI, calling the same functions.
The server is called in-process (TestClient runs the ASGI app, lifespan included)."""

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.data import datasets
from app.models import registry
from app.train import training
from tests.conftest import FAST, ROOT, make_workbench


@pytest.fixture
def api(tmp_path, starter_dir):
    import launch

    home = tmp_path / "home"
    wb = make_workbench(home)
    model = registry.register_base_model(wb, "starter", str(starter_dir))
    ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    wb.close()
    server, _, wb = launch.build_server(Settings(home=home, job_env={"HF_HUB_OFFLINE": "1"}))
    with TestClient(server) as client:
        yield client, wb, model.id, ds.id
    wb.close()


@pytest.mark.slow
def test_train_and_follow_a_run_over_http(api):
    client, wb, model_id, ds_id = api
    r = client.post("/api/train/sft", json={"model_id": model_id, "dataset_ids": [ds_id],
                                            "name": "via-api", "overrides": FAST})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "queued" and run["recipe"] == "sft_lora"
    assert "llamafactory-cli train" in run["command"]
    assert client.post("/api/train/sft", json={"model_id": model_id, "dataset_ids": [ds_id],
                                               "name": "via-api"}).status_code == 409
    training.wait_run(wb, run["id"], 600)
    detail = client.get(f"/api/runs/{run['id']}").json()
    assert detail["status"] == "succeeded" and detail["percent"] == 100.0
    records = client.get(f"/api/metrics/{run['id']}").json()["records"]
    assert records and "loss" in records[0]
    assert [x["name"] for x in client.get("/api/runs").json()] == ["via-api"]
    exp = client.get("/api/experiments").json()[0]
    assert exp["metrics"]["final_loss"] > 0 and exp["params"]["learning_rate"] == FAST["learning_rate"]
    assert client.post(f"/api/runs/{run['id']}/cancel").status_code == 409


def test_api_errors_are_clear(api):
    client, _, model_id, ds_id = api
    assert client.post("/api/train/rlhf", json={"model_id": model_id, "dataset_ids": [ds_id]}
                       ).status_code == 404
    bad = client.post("/api/train/sft", json={"model_id": model_id, "dataset_ids": [ds_id],
                                              "overrides": {"trust_remote_code": True}})
    assert bad.status_code == 422 and "runs code" in bad.json()["error"]["message"]
    wrong = client.post("/api/train/dpo", json={"model_id": model_id, "dataset_ids": [ds_id]})
    assert wrong.status_code == 422 and "needs dpo" in wrong.json()["error"]["message"]
    assert client.get("/api/runs/999").status_code == 404
    assert client.post("/api/train/sft", json={"dataset_ids": [ds_id]}).status_code == 422
    assert client.get("/api/runs").json() == []


def test_api_requires_login_when_auth_is_set(tmp_path):
    import launch

    server, _, wb = launch.build_server(Settings(home=tmp_path, auth=(("ann", "pw"),)))
    try:
        with TestClient(server) as client:
            assert client.get("/api/runs").status_code == 401
            assert client.get("/api/runs", auth=("ann", "bad")).status_code == 401
            assert client.get("/api/runs", auth=("ann", "pw")).json() == []
    finally:
        wb.close()
