"""Recipes, override rules and hardware-dependent YAML, checked without running a trainer."""

import dataclasses
import json
from pathlib import Path

import pytest

from app.core.errors import InvalidInput
from app.core.hardware import Gpu, Hardware, parse_nvidia_smi
from app.core.settings import Settings
from app.data import datasets
from app.train import training
from app.train.overrides import ALLOWED_KEYS, parse_advanced
from tests.conftest import ROOT

TWO_A100 = Hardware((Gpu(0, "A100", 81920, 1000, 8.0), Gpu(1, "A100", 81920, 500, 8.0)), True)
ONE_V100 = Hardware((Gpu(0, "V100", 32768, 0, 7.0),), True)
CPU_ONLY = Hardware((), True)


@pytest.fixture
def sft_data(wb):
    return datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")


def plan(wb, starter, ds, hw=CPU_ONLY, **kw):
    req = training.TrainRequest(kw.pop("recipe", "sft_lora"), starter.id, [ds.id], **kw)
    return training.plan_run(wb, req, wb.settings.runs_dir / "x", hardware=hw)


def test_recipes_cover_every_stage_and_method():
    recipes = training.load_recipes()
    assert {"cpt_full", "cpt_lora", "sft_lora", "sft_qlora", "sft_full", "dpo_lora", "kto_lora",
            "pretrain_scratch"} <= set(recipes)
    for r in recipes.values():
        assert r.title and r.description and r.stage in training.LF_STAGE
    assert recipes["dpo_lora"].defaults["pref_beta"] > 0 and "pref_loss" in recipes["dpo_lora"].defaults
    assert recipes["sft_qlora"].defaults["quantization_bit"] == 4
    assert recipes["pretrain_scratch"].defaults["train_from_scratch"] is True
    assert recipes["sft_full"].finetuning_type == "full"


def test_allowed_keys_exist_in_llamafactory():
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments, TrainingArguments

    known = set()
    for cls in (DataArguments, FinetuningArguments, ModelArguments, TrainingArguments):
        known |= {f.name for f in dataclasses.fields(cls)}
    assert sorted(ALLOWED_KEYS - known) == []


@pytest.mark.parametrize("overrides, message", [
    ({"trust_remote_code": True}, "runs code"),
    ({"deepspeed": "/etc/passwd"}, "recipes/"),
    ({"deepspeed": "../pyproject.toml"}, "recipes/"),
    ({"output_dir": "/tmp/elsewhere"}, "set by Forgeloop"),
    ({"model_name_or_path": "/x"}, "set by Forgeloop"),
    ({"tokenized_path": "/x"}, "not a LLaMA-Factory training key Forgeloop allows"),
    ({"lerning_rate": 1e-4}, "lerning_rate"),
    ({"resume_from_checkpoint": "/tmp/other/checkpoint-5"}, "inside this run"),
])
def test_bad_overrides_are_refused(wb, starter, sft_data, overrides, message):
    with pytest.raises(InvalidInput, match=message):
        plan(wb, starter, sft_data, overrides=overrides)


def test_unsafe_overrides_pass_when_settings_allow(tmp_path, starter_dir):
    from app.bootstrap import open_workbench
    from app.models import registry

    wb = open_workbench(Settings(home=tmp_path, allow_unsafe_overrides=True), start_jobs=False)
    try:
        model = registry.register_base_model(wb, "s", str(starter_dir))
        ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "d", "sft")
        cfg = plan(wb, model, ds, overrides={"trust_remote_code": True}).config
        assert cfg["trust_remote_code"] is True
    finally:
        wb.close()


def test_cpu_defaults_and_reproducible_fields(wb, starter, sft_data):
    p = plan(wb, starter, sft_data, overrides={"learning_rate": 5e-4}, val_size=0.1)
    cfg = p.config
    assert "bf16" not in cfg and "fp16" not in cfg  # fp32 on the CPU
    assert cfg["learning_rate"] == 5e-4 and cfg["lora_rank"] == 8
    assert cfg["val_size"] == 0.1 and cfg["eval_strategy"] == "steps"
    assert cfg["report_to"] == "tensorboard" and p.env["TENSORBOARD_LOGGING_DIR"].endswith("tensorboard")
    assert "CUDA_VISIBLE_DEVICES" not in p.env and p.gpus == ()


def test_qlora_needs_cuda_and_bitsandbytes(wb, starter, sft_data):
    with pytest.raises(InvalidInput, match="QLoRA needs a CUDA GPU"):
        plan(wb, starter, sft_data, recipe="sft_qlora", hw=Hardware((), True))
    no_bnb = Hardware(ONE_V100.gpus, has_bitsandbytes=False)
    with pytest.raises(InvalidInput, match="bitsandbytes"):
        plan(wb, starter, sft_data, recipe="sft_qlora", hw=no_bnb)
    cfg = plan(wb, starter, sft_data, recipe="sft_qlora", hw=ONE_V100).config
    assert cfg["quantization_bit"] == 4 and cfg["finetuning_type"] == "lora"
    assert cfg["fp16"] is True and "bf16" not in cfg  # compute 7.0 has no bf16
    with pytest.raises(InvalidInput, match="only with finetuning_type: lora"):
        plan(wb, starter, sft_data, recipe="sft_full", hw=ONE_V100, overrides={"quantization_bit": 4})


def test_two_gpu_deepspeed_run(wb, starter, sft_data):
    p = plan(wb, starter, sft_data, recipe="sft_full", hw=TWO_A100, deepspeed="ds_z3.json")
    cfg = p.config
    assert cfg["bf16"] is True and cfg["finetuning_type"] == "full"
    ds_path = Path(cfg["deepspeed"])
    assert ds_path.is_absolute() and ds_path.parent == training.RECIPES_DIR
    assert json.loads(ds_path.read_text())["zero_optimization"]["stage"] == 3
    assert p.env["CUDA_VISIBLE_DEVICES"] == "0,1" and p.env["FORCE_TORCHRUN"] == "1"
    assert p.gpus == (0, 1)
    one = plan(wb, starter, sft_data, hw=TWO_A100, gpus=[1])
    assert one.env["CUDA_VISIBLE_DEVICES"] == "1" and "FORCE_TORCHRUN" not in one.env
    with pytest.raises(InvalidInput, match="no GPU with index 7"):
        plan(wb, starter, sft_data, hw=TWO_A100, gpus=[7])
    with pytest.raises(InvalidInput, match="DeepSpeed needs"):
        plan(wb, starter, sft_data, hw=Hardware(), deepspeed="ds_z2.json")


def test_nvidia_smi_parsing():
    gpus = parse_nvidia_smi("0, NVIDIA A100-SXM4-80GB, 81920, 1234, 8.0\n1, Tesla T4, 15360, 0, 7.5\n")
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[1].memory_total_mib == 15360 and gpus[1].compute_capability == 7.5
    assert "GPU 0" in gpus[0].label and "80.0 GiB" in gpus[0].label


def test_advanced_box_parsing():
    assert parse_advanced("") == {}
    assert parse_advanced("lora_rank: 16\npref_beta: 0.2") == {"lora_rank": 16, "pref_beta": 0.2}
    assert parse_advanced('{"seed": 3}') == {"seed": 3}
    with pytest.raises(InvalidInput, match="mapping"):
        parse_advanced("- a\n- b")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        parse_advanced("a: [1, 2")
