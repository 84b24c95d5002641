"""A scripted session of user mistakes against the real app process: each gets a clear
error, and the app's log stays free of tracebacks (a one-line warning at most)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from app.bootstrap import open_workbench
from app.core.settings import Settings
from app.data import datasets
from app.models import registry
from app.train import training
from tests.conftest import ROOT, free_port, home_with_served


def test_mistakes_get_clear_errors_and_no_tracebacks(tmp_path, stub, starter_dir):
    from gradio_client import Client

    home = tmp_path / "home"
    alpha, beta = home_with_served(home, stub)
    setup = open_workbench(Settings(home=home), start_jobs=False)
    try:
        base = registry.register_base_model(setup, "starter", str(starter_dir))
        data = datasets.register_file(setup, ROOT / "data/samples/sft_starter.jsonl", "in-use", "sft")
        run = training.start_run(setup, training.TrainRequest("sft_lora", base.id, [data.id], name="uses-it"))
        setup.jobs.cancel(run.job_id)  # still queued: dropped, never started
    finally:
        setup.close()
    port, log = free_port(), tmp_path / "app.log"
    with open(log, "wb") as out:
        app = subprocess.Popen([sys.executable, "launch.py", "--port", str(port), "--storage", str(home)],
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert app.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        api = httpx.Client(base_url=url, timeout=60)
        refused = []

        def expect(resp: httpx.Response, status: int, words: str) -> None:
            body = resp.json()
            assert resp.status_code == status and words in body["error"]["message"], (resp.status_code, body)
            refused.append(body["error"]["message"])

        # Empty names.
        expect(api.patch(f"/api/datasets/{data.id}", json={"name": ""}), 422, "name")
        preset = {"recipe": "sft_lora", "model_id": base.id}
        expect(api.put("/api/train/presets/%20", json=preset), 422, "preset name")
        expect(api.post("/api/playground/examples", json={"messages": [], "dataset": ""}), 422, "name")
        # Deleting what is in use.
        expect(api.delete(f"/api/datasets/{data.id}"), 409, "used by 1 run")
        # Voting twice.
        battle = api.post("/api/battles", json={"model_a_id": alpha.id, "model_b_id": beta.id,
                                                "prompt": "tell me about rivers"}).json()
        first = api.post("/api/feedback", json={"battle_id": battle["battle_id"], "choice": "a"})
        assert first.status_code == 201
        expect(api.post("/api/feedback", json={"battle_id": battle["battle_id"], "choice": "b"}), 409,
               "already has a vote")
        # Nonsense.
        expect(api.get("/api/battles/history", params={"since": "last tuesday"}), 422, "YYYY-MM-DD")
        expect(api.post("/api/assistant/suggest", json={"model_id": alpha.id, "dataset_ids": [data.id]}), 422,
               "served elsewhere")
        # The same mistakes through the UI's endpoints.
        ui = Client(url, verbose=False)
        for endpoint, args, words in [("/register_dataset", (None, "", "sft", "", False), "choose a file"),
                                      ("/delete_dataset", (data.id,), "used by 1 run"),
                                      ("/rename_dataset", (data.id, ""), "name"),
                                      ("/save_chat_example", ([], "", ""), "name")]:
            try:
                ui.predict(*args, api_name=endpoint)
            except Exception as e:  # gradio_client's AppError carries the gr.Error message
                assert words in str(e), (endpoint, e)
            else:
                raise AssertionError(f"{endpoint} accepted a mistake")
    finally:
        app.terminate()
        app.wait(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    assert len(refused) == 7  # every REST mistake was refused with its message
