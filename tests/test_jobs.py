"""Training jobs around real llamafactory-cli subprocesses: the run folder, conflicts, failures.
(The runner's lifecycle is tested with a fake trainer in test_job_runner.py.)"""

import json
import shutil

import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput
from app.core.tables import ModelVersion, Run
from app.data import datasets
from app.models import registry
from app.train import training
from tests.conftest import FAST, ROOT


@pytest.fixture
def sft_data(wb):
    return datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")


@pytest.mark.slow
def test_run_folder_has_exact_yaml_and_snapshot(wb, starter, sft_data):
    run = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [sft_data.id],
                                                       name="r1", overrides=FAST))
    folder = training.run_dir(run)
    snap = json.loads((folder / "snapshot.json").read_text())
    assert snap["datasets"] == [{"id": sft_data.id, "name": "sft-data", "sha256": sft_data.sha256}]
    assert snap["model"]["base"] == starter.base_path
    # A second start of the same job, while it is queued or running, is refused.
    with pytest.raises(Conflict, match="already"):
        wb.jobs.requeue(run.job_id)
    with pytest.raises(Conflict, match="already exists"):
        training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [sft_data.id], name="r1"))
    done = training.wait_run(wb, run.id, timeout=600)
    assert done.status == "succeeded", done.error
    with pytest.raises(Conflict, match="already finished"):
        wb.jobs.requeue(run.job_id)
    view = training.run_view(wb, run.id)
    assert view["percent"] == 100.0 and view["points"][0]["series"] == "loss"
    assert view["command"].endswith("r1/config.yaml")


def test_bad_requests_are_refused_before_anything_runs(wb, starter, sft_data, tmp_path):
    pref = tmp_path / "p.jsonl"
    pref.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}],
                                "chosen": "a", "rejected": "b"}) + "\n")
    dpo = datasets.register_file(wb, pref, "pref", "dpo")
    with pytest.raises(InvalidInput, match="needs sft"):
        training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [dpo.id]))
    with pytest.raises(InvalidInput, match="at least one dataset"):
        training.start_run(wb, training.TrainRequest("sft_lora", starter.id, []))
    copy = tmp_path / "copy"
    shutil.copytree(starter.base_path, copy)
    gone = registry.register_base_model(wb, "gone", str(copy))
    shutil.rmtree(copy)
    with pytest.raises(InvalidInput, match="missing"):
        training.start_run(wb, training.TrainRequest("sft_lora", gone.id, [sft_data.id]))
    with wb.session() as s:
        assert s.exec(select(Run)).all() == []
    assert list(wb.settings.runs_dir.iterdir()) == []


@pytest.mark.slow
def test_failed_trainer_shows_error_and_registers_nothing(wb, starter_dir, sft_data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(starter_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    model = registry.register_base_model(wb, "broken", str(broken))
    run = training.start_run(wb, training.TrainRequest("sft_lora", model.id, [sft_data.id],
                                                       overrides=FAST))
    run = training.wait_run(wb, run.id, timeout=600)
    assert run.status == "failed"
    assert "exited with code" in run.error and run.returncode != 0
    assert len(run.error.splitlines()) > 3  # carries the log tail
    with wb.session() as s:
        assert [m.name for m in s.exec(select(ModelVersion))] == ["broken"]
