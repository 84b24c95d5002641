"""The assistant: its rules on planted datasets and recorded curves and logs, suggestions
on simulated GPUs, the LLM rewording through the Ollama stand-in and the starter model,
and the fallback when the LLM does not answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.assistant import service
from app.assistant.diagnose import diagnose
from app.assistant.explain import explain_curves
from app.assistant.suggest import suggest_settings
from app.assistant.task_detect import detect_task
from app.core.errors import InvalidInput
from app.core.hardware import Gpu, Hardware
from app.core.jobs import JobSpec
from app.core.progress_log import TRAINER_LOG
from app.core.tables import Run
from app.data import datasets
from app.models import registry
from app.train import training
from tests.conftest import ROOT

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "assistant"
FAKE = Path(__file__).resolve().parent / "fake_trainer.py"


def curve(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


# -- diagnosing failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(("log", "cause"), [
    ("oom", "oom"), ("skipped_rows", "skipped_rows"), ("nan", "nan_loss"), ("template", "template"),
    ("bitsandbytes", "bitsandbytes"), ("no_cuda", "no_cuda"), ("disk_full", "disk_full"),
    ("offline", "offline_hub"), ("killed", "cpu_oom"),
])
def test_each_known_failure_is_recognised_with_its_fix(log, cause):
    findings = diagnose((FIXTURES / f"{log}.log").read_text())
    assert findings[0].cause == cause, [f.cause for f in findings]
    assert findings[0].fix and findings[0].lines  # the lines that gave it away are quoted
    assert all(f.cause != "unknown" for f in findings)


def test_an_unknown_failure_quotes_the_likely_lines():
    [finding] = diagnose((FIXTURES / "unknown.log").read_text())
    assert finding.cause == "unknown" and any("KeyError: 'frobnicate_steps'" in ln for ln in finding.lines)


# -- explaining curves -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "stage", "verdict", "words"), [
    ("converging", "sft", "converged", "flattened"),
    ("still_improving", "sft", "improving", "still falling"),
    ("diverging", "sft", "diverging", "overshoot"),
    ("flat", "sft", "not_learning", "barely moved"),
    ("overfitting", "sft", "overfitting", "memorising"),
    ("nan", "sft", "diverging", "nan"),
    ("dpo_chance", "dpo", "not_learning", "ln 2"),
    ("dpo_learned", "dpo", "improving", "learned the preferences"),
])
def test_each_curve_reads_as_what_it_is(name, stage, verdict, words):
    ex = explain_curves(curve(name), {"stage": stage, "learning_rate": 1e-4})
    assert ex.verdict == verdict, ex.sentences
    assert words in ex.text() and ex.next_steps
    if name == "converging":
        assert ex.figures["last_loss"] < ex.figures["first_loss"]  # the numbers are quoted
        assert f"{ex.figures['last_loss']:.3f}" in ex.text()


def test_too_few_points_say_so():
    assert explain_curves(curve("converging")[:2], {}).verdict == "too_short"
    assert explain_curves([], {}).verdict == "no_data"


# -- detecting a dataset's task --------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "task", "kind", "mapping"), [
    ([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}] * 5,
     "chat", "sft", {"messages": "conversations"}),
    ([{"question": f"q{i}", "answer": f"a long answer {i}"} for i in range(30)],
     "instruction", "sft", {"instruction": "question", "output": "answer"}),
    ([{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(10)],
     "preference", "dpo", {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
    ([{"prompt": f"p{i}", "completion": f"c{i}", "label": i % 2 == 0} for i in range(10)],
     "kto", "kto", {"prompt": "prompt", "completion": "completion", "label": "label"}),
    ([{"text": "word " * 80} for _ in range(10)], "pretraining", "cpt", {"text": "text"}),
    ([{"instruction": f"review {i}", "output": ["pos", "neg"][i % 2]} for i in range(40)],
     "classification", "sft", {"instruction": "instruction", "output": "output"}),
])
def test_the_task_and_column_map_are_detected(rows, task, kind, mapping):
    found = detect_task(rows)
    assert (found.task, found.kind, found.column_map) == (task, kind, mapping), found.reasons
    assert 0.5 <= found.confidence <= 1 and found.reasons
    renamed = datasets.apply_column_map(rows, found.column_map)
    assert set(renamed[0]) == set(mapping)


def test_unknown_columns_and_bad_pairs_lower_the_confidence():
    assert detect_task([{"a": 1, "b": 2}]).task == "unknown"
    same = [{"prompt": "p", "chosen": "x", "rejected": "x"}] * 4
    same.append({"prompt": "p", "chosen": "x", "rejected": "y"})
    found = detect_task(same)
    assert found.task == "preference" and found.confidence == pytest.approx(0.2)
    assert "same chosen and rejected" in " ".join(found.reasons)


# -- suggesting settings ---------------------------------------------------------------------------


def gpu(total_gib: float, cc: float = 9.0) -> Gpu:
    return Gpu(0, "Simulated", int(total_gib * 1024), 512, cc)


def test_suggestions_follow_the_data_and_the_hardware(wb, starter):
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    cpu = suggest_settings(wb, starter.id, [data.id], hardware=Hardware())
    assert cpu.recipe == "sft_lora" and cpu.stage == "sft"
    assert cpu.values["cutoff_len"] >= cpu.lengths["p95"] and cpu.values["cutoff_len"] % 128 == 0
    assert "model's tokenizer" in cpu.reasons["cutoff_len"]
    assert cpu.values["lora_rank"] == 8 and cpu.values["lora_alpha"] == 16
    assert "bf16" not in cpu.values and "on the CPU" in cpu.reasons["per_device_train_batch_size"]
    big = suggest_settings(wb, starter.id, [data.id], hardware=Hardware((gpu(80),)))
    assert big.values["bf16"] is True and big.values["per_device_train_batch_size"] == 8
    assert big.values["gradient_accumulation_steps"] == 1  # the recipe's effective batch of 8 kept
    old = suggest_settings(wb, starter.id, [data.id], hardware=Hardware((gpu(16, cc=7.0),)))
    assert old.values["fp16"] is True and "bf16" not in old.values
    # Every value is a valid training override: the planner accepts the suggestion as is.
    req = training.TrainRequest(big.recipe, starter.id, [data.id], name="suggested", overrides=big.values)
    plan = training.plan_run(wb, req, wb.settings.runs_dir / "suggested", Hardware((gpu(80),)))
    assert plan.config["cutoff_len"] == big.values["cutoff_len"]


def test_data_problems_are_warned_about(wb, starter, tmp_path):
    from app.assistant.suggest import data_warnings

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"p{i % 5}", "chosen": f"good {i}", "rejected": "bad"} for i in range(20)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:3]))
    data = datasets.register_file(wb, pairs, "pairs", "dpo")
    s = suggest_settings(wb, starter.id, [data.id], hardware=Hardware())
    text = " ".join(s.warnings)
    assert s.recipe == "dpo_lora" and "only 23 rows" in text
    assert "3 of 23 sampled rows are exact duplicates" in text
    assert s.values["num_train_epochs"] > 1 and "optimizer steps" in s.reasons["num_train_epochs"]
    # Pairs the import would refuse, and one-sided KTO labels, as rows arrive from elsewhere.
    same = data_warnings("dpo", [{"prompt": "p", "chosen": "a", "rejected": "a"}] * 2, 500)
    assert "2 of 2 sampled pairs have the same chosen and rejected answer" in " ".join(same)
    one_sided = data_warnings("kto", [{"prompt": "p", "completion": "c", "label": True}] * 3, 500)
    assert "every sampled row has the label True" in " ".join(one_sided)
    sft = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    with pytest.raises(InvalidInput, match="different kinds"):
        suggest_settings(wb, starter.id, [data.id, sft.id], hardware=Hardware())


def test_a_model_too_big_for_lora_gets_qlora(wb, tmp_path):
    model = tmp_path / "big"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "num_hidden_layers": 80,
        "intermediate_size": 28672, "vocab_size": 128256, "num_attention_heads": 64,
        "num_key_value_heads": 8, "max_position_embeddings": 8192}))
    big = registry.register_base_model(wb, "seventy-b", str(model), template="chatml")
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    s = suggest_settings(wb, big.id, [data.id], hardware=Hardware((gpu(80),), has_bitsandbytes=True))
    assert s.recipe == "sft_qlora" and "QLoRA" in s.reasons["recipe"]
    none = suggest_settings(wb, big.id, [data.id], hardware=Hardware((gpu(24),), has_bitsandbytes=True))
    assert any("cannot fit" in w or "needs about" in w for w in none.warnings)


# -- the service, the LLM and the fallback ---------------------------------------------------------


def test_suggest_words_with_a_chosen_model_and_never_changes_a_value(wb, starter):
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    rules = service.suggest(wb, starter.id, [data.id], use_llm=False)
    assert rules["explanation"]["source"] == "rules" and "cutoff_len" in rules["explanation"]["text"]
    assert rules["explanation"]["note"].startswith("asked for the rules only")
    assert service.suggest(wb, starter.id, [data.id])["explanation"]["note"].startswith("no assistant model")
    worded = service.suggest(wb, starter.id, [data.id], llm_model_id=starter.id)
    assert worded["explanation"]["source"] == "llm" and worded["explanation"]["llm"] == "starter"
    assert worded["explanation"]["text"] != rules["explanation"]["text"]
    assert worded["values"] == rules["values"]  # the LLM never changes a value
    # The Ollama path and the time-out fallback: tests/test_deploy.py, with the deployed starter.


def test_the_starter_model_can_word_the_advice(wb, starter):
    worded = service.rewrite(wb, "Train for 3 epochs.", "advice", starter.id, timeout=120)
    assert worded["source"] == "llm" and worded["llm"] == "starter" and worded["text"]


def finished_run(wb, starter, folder: Path, mode: str, records: list[dict] | None = None) -> Run:
    data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", f"{folder.name}-data", "sft")
    req = training.TrainRequest("sft_lora", starter.id, [data.id], name=folder.name)
    plan = training.plan_run(wb, req, folder, Hardware())
    folder.mkdir(parents=True)
    out = folder / "output"
    spec = JobSpec(command=[sys.executable, str(FAKE), str(out), "2", "0.01", mode], cwd=folder,
                   log_path=folder / "train.log", progress_path=out / TRAINER_LOG,
                   resources=frozenset({"cpu"}), title=folder.name)
    run = Run(name=folder.name, stage="sft", model_id=starter.id, dataset_ids=[data.id], recipe="sft_lora",
              request=req.as_dict(), config=plan.config, output_dir=str(out))
    run = training.wait_run(wb, training.queue_run(wb, run, spec).id, 60)
    if records is not None:
        (out / TRAINER_LOG).write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_explain_and_diagnose_runs_through_rest(wb, starter, tmp_path):
    import launch

    good = finished_run(wb, starter, wb.settings.runs_dir / "good", "ok", curve("overfitting"))
    bad = finished_run(wb, starter, wb.settings.runs_dir / "bad", "oom")
    assert bad.status == "failed"
    server, _, _ = launch.build_server(wb.settings)
    with TestClient(server) as client:
        ex = client.get(f"/api/assistant/explain/{good.id}?use_llm=false").json()
        assert ex["verdict"] == "overfitting" and ex["explanation"]["source"] == "rules"
        dx = client.get(f"/api/assistant/diagnose/{bad.id}").json()
        assert dx["findings"][0]["cause"] == "oom" and "half the micro-batch" in dx["explanation"]["text"]
        refused = client.get(f"/api/assistant/diagnose/{good.id}")
        assert refused.status_code == 422 and "has not failed" in refused.json()["error"]["message"]
        detected = client.post("/api/assistant/detect", json={"rows": [{"prompt": "p", "chosen": "a",
                                                                       "rejected": "b"}]}).json()
        assert detected["task"] == "preference"
        assert client.post("/api/assistant/detect", json={}).status_code == 422
        assert client.get("/api/assistant/explain/999").status_code == 404


def test_the_data_tab_detects_an_uploaded_file_and_fills_the_kind_and_column_map(tmp_path):
    from gradio_client import Client, handle_file

    import launch
    from app.core.settings import Settings
    from tests.conftest import ServerThread

    upload = tmp_path / "pairs.csv"
    upload.write_text("question,good,bad\nWhat is 2+2?,4,5\nName a colour.,Blue,Seven\n")
    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        with ServerThread(server) as srv:
            client = Client(srv.url, verbose=False)
            message, kind, column_map = client.predict(handle_file(str(upload)), "sft", "",
                                                       api_name="/detect_task")
            kind = kind["value"] if isinstance(kind, dict) else kind  # gradio_client passes the update on
            assert "Looks like preference data" in message and kind == "dpo"
            assert yaml_map(column_map) == {"chosen": "good", "rejected": "bad", "prompt": "question"}
            # The map the assistant wrote is one the import takes as it is.
            shown = client.predict(handle_file(str(upload)), kind, column_map, False,
                                   api_name="/preview_dataset")
            assert "2 rows" in shown[0]
    finally:
        wb.close()


def yaml_map(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def test_the_train_tab_says_when_a_finished_dpo_run_did_not_learn(wb, starter):
    from tabs.train_tab import run_verdict

    run = finished_run(wb, starter, wb.settings.runs_dir / "flat-dpo", "ok", curve("dpo_chance"))
    with wb.session() as s:
        row = s.get(Run, run.id)
        row.config = {**row.config, "stage": "dpo"}
        s.add(row)
        s.commit()
    shown = run_verdict(wb, training.get_run(wb, run.id), "succeeded")
    assert shown.startswith("**The model did not learn.**") and "ln 2" in shown and "more pairs" in shown
    good = finished_run(wb, starter, wb.settings.runs_dir / "fine", "ok", curve("converging"))
    assert run_verdict(wb, good, "succeeded") == ""
    assert run_verdict(wb, good, "running") == ""
