"""Real CPU training runs through the job runner: every stage, cancel, resume, kill,
restart and the queue."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from app.core.progress_log import TRAINER_LOG, ProgressTail
from app.core.tables import ModelVersion
from app.data import datasets
from app.inference.chat_engines import model_engines
from app.train import training
from tests.conftest import FAST, ROOT, make_workbench

pytestmark = pytest.mark.slow
# A run long enough to interrupt: ~150 slower steps, a checkpoint every 10.
LONG = {**FAST, "max_steps": 150, "save_steps": 10, "per_device_train_batch_size": 32,
        "cutoff_len": 256}


def sample(wb, kind="sft"):
    path = {"sft": "sft_starter.jsonl", "cpt": "cpt_starter.jsonl"}[kind]
    return datasets.register_file(wb, ROOT / "data/samples" / path, f"{kind}-data", kind)


def wait_for_step(wb, run_id, step, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = training.get_run(wb, run_id)
        tail = ProgressTail(Path(run.output_dir) / TRAINER_LOG)
        tail.poll()
        if tail.last and tail.last.get("current_steps", 0) >= step:
            return run
        assert run.status in ("queued", "starting", "running"), run.error
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} did not reach step {step}")


def test_cpt_with_validation_and_kto_register_models(wb, starter, tmp_path):
    cpt = training.start_run(wb, training.TrainRequest(
        "cpt_lora", starter.id, [sample(wb, "cpt").id], name="cpt", val_size=0.2,
        overrides={**FAST, "num_train_epochs": 2, "per_device_train_batch_size": 2, "cutoff_len": 128}))
    kto_file = tmp_path / "kto.csv"
    lines = ["prompt,completion,label"] + [
        f"What color is {t}?,{t} is {c}.,{ok}" for t, c, ok in
        [("snow", "white", "true"), ("grass", "green", "true"), ("coal", "pink", "false"),
         ("the sky", "green", "false"), ("milk", "white", "true"), ("a crow", "yellow", "false")]]
    kto_file.write_text("\n".join(lines) + "\n")
    kto_data = datasets.register_file(wb, kto_file, "kto-data", "kto")
    kto = training.start_run(wb, training.TrainRequest("kto_lora", starter.id, [kto_data.id],
                                                       name="kto", overrides=FAST))
    for run in (training.wait_run(wb, cpt.id, 600), training.wait_run(wb, kto.id, 600)):
        assert run.status == "succeeded", run.error
        with wb.session() as s:
            mv = s.get(ModelVersion, run.output_model_id)
        assert mv.parent_id == starter.id and mv.run_id == run.id and mv.kind == "adapter"
        assert mv.meta["recipe"] == run.recipe and "final_loss" in mv.meta["metrics"]
        assert (Path(run.output_dir) / "adapter_model.safetensors").is_file()
        # TensorBoard event files are written for every run.
        assert list((training.run_dir(run) / "tensorboard").glob("events.out.tfevents.*"))
    cpt = training.get_run(wb, cpt.id)
    assert "final_eval_loss" in cpt.metrics
    assert any(p["series"] == "eval_loss" for p in training.run_view(wb, cpt.id)["points"])


def test_cancel_keeps_a_loadable_adapter_and_resume_continues(wb, starter):
    from app.inference.generation import GenSettings

    data = sample(wb)
    run = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [data.id],
                                                       name="long", overrides=LONG))
    wait_for_step(wb, run.id, 14)
    training.cancel_run(wb, run.id)
    run = training.wait_run(wb, run.id, 120)
    assert run.status == "cancelled"
    stopped_at = run.metrics["steps"]
    assert 14 <= stopped_at < 150
    assert run.output_model_id is None
    adapter = ModelVersion(id=-1, name="probe", kind="adapter", base_path=starter.base_path,
                           adapter_path=run.output_dir, template="chatml")
    # LLaMA-Factory loads it and generates with it (a half-trained model may end at once)...
    answer = model_engines(wb).complete(adapter, [{"role": "user", "content": "Hello!"}],
                                     GenSettings(temperature=0, max_new_tokens=8))
    assert isinstance(answer, str)
    # ...and it holds what the steps before the cancel learned (LoRA B starts at zero).
    from safetensors.torch import load_file

    weights = load_file(str(Path(run.output_dir) / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for k, t in weights.items() if "lora_B" in k)

    ckpt = training.newest_checkpoint(run)
    ckpt_step = int(ckpt.name.split("-")[-1])
    assert ckpt_step >= 10
    training.resume_run(wb, run.id)
    run = training.wait_run(wb, run.id, 600)
    assert run.status == "succeeded", run.error
    records = [json.loads(x) for x in (Path(run.output_dir) / TRAINER_LOG).read_text().splitlines()]
    steps = [r["current_steps"] for r in records if "loss" in r]
    # Each step once: the steps between the checkpoint and the cancel were dropped and trained again.
    assert steps == sorted(set(steps)) and steps[-1] == 150 and run.output_model_id is not None
    assert run.metrics["steps"] == 150 and len(training.run_view(wb, run.id)["points"]) >= len(steps)


def test_kill_minus_nine_marks_run_interrupted(wb, starter):
    run = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [sample(wb).id],
                                                       overrides=LONG))
    run = wait_for_step(wb, run.id, 2)
    os.kill(run.job.pid, signal.SIGKILL)
    run = training.wait_run(wb, run.id, 60)
    assert run.status == "interrupted" and "signal 9" in run.error
    assert run.output_model_id is None


def test_restart_reattaches_to_a_live_trainer(tmp_path, starter_dir):
    from app.models import registry

    home = tmp_path / "home"
    wb1 = make_workbench(home)
    base = registry.register_base_model(wb1, "starter", str(starter_dir))
    run = training.start_run(wb1, training.TrainRequest("sft_lora", base.id, [sample(wb1).id],
                                                        overrides=LONG))
    wait_for_step(wb1, run.id, 2)
    wb1.close()  # the app goes away; the trainer keeps going
    wb2 = make_workbench(home)
    try:
        assert training.get_run(wb2, run.id).status == "running"
        training.cancel_run(wb2, run.id)
        run = training.wait_run(wb2, run.id, 120)
        assert run.status == "cancelled"
        assert (Path(run.output_dir) / "adapter_config.json").is_file()
    finally:
        wb2.close()


def test_queue_runs_jobs_one_after_the_other(wb, starter):
    data = sample(wb)
    first = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [data.id],
                                                         name="first", overrides=FAST))
    second = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [data.id],
                                                          name="second", overrides=FAST))
    assert training.get_run(wb, second.id).status == "queued"
    first, second = training.wait_run(wb, first.id, 600), training.wait_run(wb, second.id, 600)
    assert first.status == second.status == "succeeded"
    assert second.job.started_at >= first.job.finished_at
    # Re-run with edits makes a new run from the old request.
    third = training.rerun(wb, first.id, name="third", overrides={"lora_rank": 4})
    assert third.request["overrides"]["lora_rank"] == 4 and third.config["lora_rank"] == 4
    assert third.request["overrides"]["num_train_epochs"] == FAST["num_train_epochs"]
    third = training.wait_run(wb, third.id, 600)
    assert third.status == "succeeded"


def test_delete_refuses_runs_with_models_and_removes_others(wb, starter):
    from app.core.errors import Conflict

    run = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [sample(wb).id],
                                                       overrides=LONG))
    with pytest.raises(Conflict, match="cancel it first"):
        training.delete_run(wb, run.id)
    training.cancel_run(wb, run.id)
    run = training.wait_run(wb, run.id, 120)
    folder = training.run_dir(run)
    training.delete_run(wb, run.id)
    assert not folder.exists() and training.list_runs(wb) == []
