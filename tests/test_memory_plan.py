"""The GPU memory plan: the parameter count from a config matches the real weights, the
micro-batch is chosen from the free memory of simulated GPUs while the effective batch
stays the recipe's, runs that cannot fit are refused, and a run that ran out of GPU memory
says so and re-runs at half the micro-batch."""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import pytest

from app.core.errors import InvalidInput
from app.core.hardware import Gpu, Hardware
from app.core.jobs import JobSpec
from app.core.progress_log import TRAINER_LOG
from app.core.tables import Run
from app.data import datasets
from app.train import memory, training
from tests.conftest import ROOT, make_workbench

FAKE = Path(__file__).resolve().parent / "fake_trainer.py"
# A Llama of about 0.8B parameters, the size bench/gpu.py builds.
LLAMA_08B = memory.ModelShape(hidden=1536, layers=24, intermediate=4096, vocab=32000, heads=16, kv_heads=16,
                              tied=False)


def gpu(total_gib: float, used_gib: float = 0.5, index: int = 0) -> Gpu:
    return Gpu(index, "Simulated", int(total_gib * 1024), int(used_gib * 1024), 9.0)


def lora_cfg(**kw):
    return {"stage": "sft", "finetuning_type": "lora", "lora_rank": 8, "cutoff_len": 1024, "bf16": True,
            "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, **kw}


def safetensors_params(path: Path) -> int:
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")


def test_the_parameter_count_from_config_matches_the_real_weights(starter_dir):
    shape = memory.read_shape(starter_dir)
    assert shape is not None and shape.params == safetensors_params(starter_dir / "model.safetensors")
    assert memory.read_shape(starter_dir / "missing") is None
    assert 0.75e9 < LLAMA_08B.params < 0.85e9


def test_a_large_gpu_gets_the_largest_micro_batch_keeping_the_effective_batch():
    cfg = lora_cfg()
    plan = memory.fit_batch(cfg, LLAMA_08B, (gpu(80),), asked={})
    assert (cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"]) == (8, 1)
    assert "micro-batch 8 × accumulation 1 (effective batch 8" in plan["reason"]
    assert plan["estimate"]["total"] <= plan["free_bytes"] * memory.HEADROOM

    # A smaller card: the largest divisor of the effective batch that fits, more accumulation.
    small = lora_cfg(per_device_train_batch_size=2, gradient_accumulation_steps=16)
    memory.fit_batch(small, LLAMA_08B, (gpu(10, used_gib=2), gpu(80, index=1)), asked={})
    mb = small["per_device_train_batch_size"]  # planned against the smaller card's 8 GiB free
    assert mb * small["gradient_accumulation_steps"] == 32 and 1 < mb < 32
    assert memory.estimate(LLAMA_08B, small, mb)["total"] <= 8 * memory.GIB * memory.HEADROOM
    assert memory.estimate(LLAMA_08B, small, mb * 2)["total"] > 8 * memory.GIB * memory.HEADROOM


def test_what_the_user_set_is_kept_and_what_cannot_fit_is_refused():
    cfg = lora_cfg(per_device_train_batch_size=2)
    plan = memory.fit_batch(cfg, LLAMA_08B, (gpu(80),), asked={"per_device_train_batch_size": 2})
    assert cfg["per_device_train_batch_size"] == 2 and "as you set it" in plan["reason"]
    full = {**lora_cfg(), "finetuning_type": "full"}
    with pytest.raises(InvalidInput, match=r"needs about .* GiB per GPU at micro-batch 1 .* try LoRA"):
        memory.fit_batch(full, LLAMA_08B, (gpu(8, used_gib=1),), asked={})
    # QLoRA shrinks the weights: the same small card takes it.
    memory.fit_batch(lora_cfg(quantization_bit=4), LLAMA_08B, (gpu(8, used_gib=1),), asked={})
    # DPO holds two sequences a row: more activation memory than SFT at the same micro-batch.
    assert (memory.estimate(LLAMA_08B, lora_cfg(stage="dpo"), 4)["activations"]
            == 2 * memory.estimate(LLAMA_08B, lora_cfg(), 4)["activations"])
    # The CPU keeps the recipe's batch.
    cpu = lora_cfg()
    assert "on the CPU" in memory.fit_batch(cpu, LLAMA_08B, (), asked={})["reason"]
    assert cpu["per_device_train_batch_size"] == 4


def test_halving_keeps_the_effective_batch():
    assert memory.halved({"per_device_train_batch_size": 8, "gradient_accumulation_steps": 1}) == {
        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    assert memory.halved({"per_device_train_batch_size": 3, "gradient_accumulation_steps": 2}) == {
        "per_device_train_batch_size": 1, "gradient_accumulation_steps": 6}
    with pytest.raises(InvalidInput, match="micro-batch 1"):
        memory.halved({"per_device_train_batch_size": 1})


def test_a_planned_run_records_its_memory_plan(wb, starter):
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    req = training.TrainRequest("sft_lora", starter.id, [data.id], name="planned")
    plan = training.plan_run(wb, req, wb.settings.runs_dir / "planned", Hardware((gpu(80),)))
    assert plan.config["per_device_train_batch_size"] == 8 and plan.config["bf16"]
    assert "is the largest that fits" in plan.memory["reason"]
    preview = training.preview_run(wb, req)  # this machine: the CPU
    assert "on the CPU" in preview["memory"]["reason"] and preview["memory"]["estimate"]["total"] > 0
    assert not (wb.settings.runs_dir / "planned").exists()  # a preview writes nothing


def test_short_sft_rows_are_packed_on_a_gpu_only(wb, starter, tmp_path):
    short = tmp_path / "short.jsonl"
    answer = "yes " * 40  # about 45 tokens a row against cutoff_len 1024
    rows = ({"instruction": f"Say {i}.", "input": "", "output": f"{i}, said: {answer}"} for i in range(20000))
    short.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = datasets.register_file(wb, short, "short-rows", "sft")
    req = training.TrainRequest("sft_lora", starter.id, [data.id], name="packed")
    plan = training.plan_run(wb, req, wb.settings.runs_dir / "packed", Hardware((gpu(80),)))
    assert plan.config["packing"] is True and plan.config["neat_packing"] is True
    packed = plan.memory["packing"]
    assert "packed into each sequence" in packed and packed in plan.memory["reason"]
    assert "packing" not in training.preview_run(wb, req)["config"]  # the CPU: as the recipe says
    mine = training.TrainRequest("sft_lora", starter.id, [data.id], name="mine", overrides={"packing": False})
    kept = training.plan_run(wb, mine, wb.settings.runs_dir / "mine", Hardware((gpu(80),)))
    assert kept.config["packing"] is False
    # Long rows, few rows, or a preference stage: nothing is packed.
    on_gpu = (gpu(80),)
    assert memory.plan_packing(lora_cfg(), "sft", 600, 10**6, on_gpu, {}) is None
    assert memory.plan_packing(lora_cfg(), "sft", 20, 300, on_gpu, {}) is None
    assert memory.plan_packing(lora_cfg(stage="dpo"), "dpo", 20, 10**6, on_gpu, {}) is None
    assert 30 < memory.row_tokens([str(short)]) < 60


def test_an_out_of_memory_failure_says_so_and_reruns_at_half_the_micro_batch(tmp_path, starter_dir):
    from app.models import registry

    wb = make_workbench(tmp_path / "home")
    try:
        base = registry.register_base_model(wb, "starter", str(starter_dir))
        data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
        req = training.TrainRequest("sft_lora", base.id, [data.id], name="oom")
        folder = wb.settings.runs_dir / "oom"
        plan = training.plan_run(wb, req, folder, Hardware((gpu(80),)))
        folder.mkdir(parents=True)
        out = folder / "output"
        spec = JobSpec(command=[sys.executable, str(FAKE), str(out), "2", "0.01", "oom"], cwd=folder,
                       log_path=folder / "train.log", progress_path=out / TRAINER_LOG,
                       resources=frozenset({"cpu"}), title="oom")
        run = Run(name="oom", stage="sft", model_id=base.id, dataset_ids=[data.id], recipe="sft_lora",
                  request=req.as_dict(), config=plan.config, output_dir=str(out))
        run = training.wait_run(wb, training.queue_run(wb, run, spec).id, 60)
        assert run.status == "failed"
        assert run.error.startswith("The GPU ran out of memory at micro-batch 8. Re-run at half")
        assert "CUDA out of memory" in run.error  # the trainer's own words follow
    finally:
        wb.close()
    # The re-run, on a workbench that does not start jobs (no trainer launched here).
    from app.bootstrap import open_workbench
    from app.core.settings import Settings

    quiet = open_workbench(Settings(home=tmp_path / "home"), start_jobs=False)
    try:
        again = training.rerun_half_batch(quiet, run.id)
        assert again.config["per_device_train_batch_size"] == 4
        assert again.config["gradient_accumulation_steps"] == 2
        assert again.request["overrides"]["per_device_train_batch_size"] == 4
    finally:
        quiet.close()


def test_the_plan_through_rest_and_the_train_tab(tmp_path, starter_dir):
    from fastapi.testclient import TestClient
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from app.models import registry
    from tabs.train_tab import FIELDS
    from tests.conftest import ServerThread

    home = tmp_path / "home"
    setup = make_workbench(home)  # the Train tab's pickers offer what exists when it is built
    base = registry.register_base_model(setup, "starter", str(starter_dir))
    data = datasets.register_file(setup, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    setup.close()
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with TestClient(server) as c, ServerThread(server) as srv:
            r = c.post("/api/train/sft/plan", json={"model_id": base.id, "dataset_ids": [data.id]})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["gpus"] == [] and body["config"]["per_device_train_batch_size"] == 4
            assert "on the CPU" in body["memory"]["reason"] and body["memory"]["estimate"]["weights"] > 0
            assert training.list_runs(wb) == []  # nothing started
            bad = c.post("/api/train/sft/plan", json={"model_id": base.id, "dataset_ids": [data.id],
                                                       "overrides": {"quantization_bit": 4}})
            assert bad.status_code == 422 and "QLoRA needs a CUDA GPU" in bad.json()["error"]["message"]
            assert c.post("/api/runs/999/rerun_half_batch").status_code == 404

            client = Client(srv.url, verbose=False)
            shown = client.predict("sft_lora", base.id, [data.id], "", 0, [], "", "", [], None,
                                   *[None] * len(FIELDS), api_name="/plan_training")
            assert shown.startswith("**Plan:** on the CPU: micro-batch 4 × accumulation 2")
            assert "Estimated memory per device" in shown and ", CPU." in shown
            assert training.list_runs(wb) == []
    finally:
        wb.close()
