"""Training presets, renaming a run, and which run actions apply in which state."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.errors import Conflict, InvalidInput, NotFound
from app.data import datasets
from app.train import presets, training
from tests.conftest import ROOT
from tests.test_assistant import finished_run


def test_presets_save_replace_load_and_delete(wb, starter):
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sample", "sft")
    form = {"recipe": "sft_lora", "model_id": starter.id, "dataset_ids": [data.id],
            "overrides": {"learning_rate": 0.001}}
    presets.save_preset(wb, "fast", form)
    presets.save_preset(wb, "fast", {**form, "overrides": {"learning_rate": 0.002}})  # replaces it
    assert [p.name for p in presets.list_presets(wb)] == ["fast"]
    assert presets.get_preset(wb, "fast").request["overrides"] == {"learning_rate": 0.002}
    with pytest.raises(InvalidInput):
        presets.save_preset(wb, "no spaces", form)
    with pytest.raises(Exception, match="recipe"):
        presets.save_preset(wb, "bad", {**form, "recipe": "nope"})
    presets.delete_preset(wb, "fast")
    with pytest.raises(NotFound):
        presets.get_preset(wb, "fast")


def test_rename_and_the_actions_a_run_allows(wb, starter):
    ok = finished_run(wb, starter, wb.settings.runs_dir / "done", "ok")
    failed = finished_run(wb, starter, wb.settings.runs_dir / "broke", "oom")
    assert presets.run_actions(ok) == {"cancel": False, "resume": False, "delete": True,
                                       "half": ok.config["per_device_train_batch_size"] > 1, "rerun": True}
    assert presets.run_actions(failed)["delete"] and not presets.run_actions(failed)["cancel"]
    renamed = presets.rename_run(wb, ok.id, "done-well")
    assert renamed.name == "done-well" and training.run_dir(renamed) == training.run_dir(ok)
    with pytest.raises(Conflict):
        presets.rename_run(wb, ok.id, "broke")
    with pytest.raises(InvalidInput):
        presets.rename_run(wb, ok.id, "bad name")


def test_preset_and_rename_routes(starter_server):
    server, wb, base = starter_server
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sample", "sft")
    with TestClient(server) as client:
        body = {"recipe": "sft_lora", "model_id": base.id, "dataset_ids": [data.id],
                "overrides": {"cutoff_len": 256}}
        saved = client.put("/api/train/presets/small", json=body).json()
        assert saved["request"]["overrides"] == {"cutoff_len": 256}
        assert [p["name"] for p in client.get("/api/train/presets").json()] == ["small"]
        assert client.delete("/api/train/presets/small").status_code == 204
        assert client.delete("/api/train/presets/small").status_code == 404
        assert client.patch("/api/runs/999", json={"name": "x"}).status_code == 404


def test_the_starter_fine_tune_is_one_call(tmp_path):
    from app.bootstrap import open_workbench
    from app.core.settings import Settings
    from app.models import registry
    from app.models.starter_model import StarterSpec
    from app.train import quickstart
    from tests.conftest import make_workbench

    builder = make_workbench(tmp_path / "home")
    try:
        with pytest.raises(InvalidInput, match="create the starter model first"):
            quickstart.start_starter_sft(builder)
        starter = registry.create_starter_model(builder, spec=StarterSpec(pretrain_steps=5))
    finally:
        builder.close()
    wb = open_workbench(Settings(home=tmp_path / "home"), start_jobs=False)  # queued, never trained here
    try:
        first, second = quickstart.start_starter_sft(wb), quickstart.start_starter_sft(wb)
        assert (first.name, second.name) == (f"{starter.name}-sft", f"{starter.name}-sft-2")
        assert first.model_id == starter.id and first.recipe == quickstart.STARTER_RECIPE
        assert first.config["num_train_epochs"] == quickstart.STARTER_SFT["num_train_epochs"]
        # registered once
        assert [d.name for d in datasets.list_datasets(wb)] == [quickstart.STARTER_CHAT_NAME]
    finally:
        wb.close()
