"""The walking skeleton of the loop, through app functions only:
dataset → SFT → arena battle and votes → DPO dataset → DPO run, with lineage."""

import json
from pathlib import Path

import pytest
import yaml

from app.arena import battles, preference_export
from app.data import datasets
from app.inference.chat_engines import model_engines
from app.inference.generation import GenSettings
from app.models import registry
from app.train import lf_loader, training
from tests.conftest import FAST, ROOT

pytestmark = pytest.mark.slow
PROMPTS = ["What does a cat say?", "What is 2 plus 3?", "Hello!", "How are you?",
           "What is the opposite of hot?", "Which day comes after Monday?"]


def test_whole_loop(wb, starter):
    # 1. A dataset: the shipped sample, registered like any upload.
    sft_data = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")
    assert sft_data.num_rows > 100
    assert lf_loader.loadable_rows(wb, sft_data, starter) == sft_data.num_rows

    # 2. SFT (LoRA) through a real llamafactory-cli subprocess.
    run = training.start_run(wb, training.TrainRequest("sft_lora", starter.id, [sft_data.id],
                                                       name="sft-1", overrides=FAST))
    run = training.wait_run(wb, run.id, timeout=600)
    assert run.status == "succeeded", run.error
    out = Path(run.output_dir)
    assert (out / "adapter_model.safetensors").is_file()
    ran = yaml.safe_load((out.parent / "config.yaml").read_text())
    assert ran["stage"] == "sft" and ran["dataset"] == "sft-data" and ran["template"] == "chatml"
    log = [json.loads(x) for x in (out / "trainer_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert run.metrics["final_loss"] == losses[-1] > 0
    assert run.metrics["first_loss"] == losses[0]
    assert run.metrics["steps"] == log[-1]["total_steps"] == len(losses)
    sft_model = registry.get_model(wb, run.output_model_id)
    assert (sft_model.kind, sft_model.parent_id, sft_model.run_id) == ("adapter", starter.id, run.id)
    assert f"llamafactory-cli train {out.parent}/config.yaml" in training.shell_command(run)

    # 3. Arena: the same prompts to base and fine-tune; votes stored.
    gen = GenSettings(temperature=0.0, max_new_tokens=16)
    for i, prompt in enumerate(PROMPTS):
        battle = battles.new_battle(wb, starter.id, sft_model.id, gen=gen)
        turn = battles.play_turn(wb, battle.id, prompt)
        assert turn.answer_a.strip() and turn.answer_b.strip()
        assert turn.messages == [{"role": "user", "content": prompt}]
        assert turn.timings["a"]["ttft_s"] is not None
        battles.vote(wb, battle.id, ["b", "a", "tie", "b", "both_bad", "b"][i])
    assert battles.reveal(wb, battle.id) == {"a": "starter", "b": sft_model.name}

    # 4. Votes → a DPO dataset LLaMA-Factory accepts row for row.
    rows, vote_ids = preference_export.preference_rows(wb)
    decisive = [r for r in rows if r["chosen"]["content"] != r["rejected"]["content"]]
    assert len(rows) == len(decisive) >= 3  # ties and both-bad are not pairs
    dpo_data = preference_export.build_dpo_dataset(wb, "votes-1")
    assert dpo_data.source == "votes" and dpo_data.meta["vote_ids"] == vote_ids
    assert lf_loader.loadable_rows(wb, dpo_data, starter) == dpo_data.num_rows == len(rows)

    # 5. DPO on the votes, on top of the SFT model; lineage reaches the votes.
    run2 = training.start_run(wb, training.TrainRequest("dpo_lora", sft_model.id, [dpo_data.id],
                                                        name="dpo-1", overrides=FAST))
    run2 = training.wait_run(wb, run2.id, timeout=600)
    assert run2.status == "succeeded", run2.error
    assert "final_loss" in run2.metrics and "final_accuracy" in run2.metrics
    chain = registry.lineage(wb, run2.output_model_id)
    assert [c["name"] for c in chain] == ["dpo-1", "sft-1", "starter"]
    assert chain[0]["datasets"] == [{"id": dpo_data.id, "name": "votes-1", "source": "votes"}]
    dpo_model = registry.get_model(wb, run2.output_model_id)
    assert dpo_model.in_arena  # the new model joins the arena by itself (auto_arena)
    assert dpo_model.adapter_path.split(",") == [run.output_dir, run2.output_dir]
    # The new model answers in the arena like any other.
    assert model_engines(wb).complete(dpo_model, [{"role": "user", "content": "Hello!"}], gen).strip()

    # 6. The model card tells that story: lineage, recipes, datasets with hashes, the record.
    from app.models.card import arena_record, model_card

    with wb.session() as s:
        card = model_card(s, dpo_model.id)
        sft_record = arena_record(s, sft_model.id)
    assert card.startswith("---\nlibrary_name: peft") and "# dpo-1" in card
    assert card.index("**dpo-1**") < card.index("**sft-1**") < card.index("**starter**")
    assert "recipe `dpo_lora`" in card and f"sha256 `{dpo_data.sha256}`" in card
    assert f"sha256 `{sft_data.sha256}`" in card and "No arena votes yet." in card
    # Votes above: b, a, tie, b, both_bad, b with the fine-tune always on side B.
    assert sft_record == {"wins": 3, "losses": 1, "ties": 2}

    # 7. The version leaves: merge the DPO chain, convert to GGUF, deploy to the Ollama
    #    stand-in (llama.cpp on that GGUF, prompt rendered by Go's text/template), and the
    #    deployed model answers token for token what the arena's local engine answered.
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is built by `make test` (make llama)")
    from dataclasses import replace

    import ollama

    from app.models import deploy, export
    from tests.ollama_llama import LlamaRunner
    from tests.ollama_stub import OllamaStub

    job = wb.jobs.wait(export.start_merge(wb, dpo_model.id, dtype="float32").id, 600)
    assert job.status == "succeeded", job.error
    merged = registry.get_model(wb, job.result["model_id"])
    job = wb.jobs.wait(export.start_gguf(wb, merged.id, "f32").id, 600)
    assert job.status == "succeeded", job.error
    from gguf import GGUFReader

    reader = GGUFReader(registry.get_model(wb, merged.id).meta["gguf"][0]["path"])
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama" and "tokenizer.ggml.tokens" in reader.fields
    from safetensors import safe_open

    with safe_open(Path(merged.base_path) / "model.safetensors", "pt") as weights:
        assert len(reader.tensors) == len(list(weights.keys())) > 10  # every weight made it across
    with OllamaStub(runner=LlamaRunner()) as stub:
        wb.settings = replace(wb.settings, ollama_host=stub.url)
        job = wb.jobs.wait(deploy.start_deploy(wb, merged.id).id, 600)
        assert job.status == "succeeded", job.error
        client = ollama.Client(host=stub.url)
        name = "forgeloop/starter:dpo-1-merged"
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(dpo_model.base_path)
        for prompt in PROMPTS:
            messages = [{"role": "user", "content": prompt}]
            judged = model_engines(wb).complete(dpo_model, messages, gen)  # what the arena saw
            served = client.chat(name, messages=messages,
                                 options={"temperature": 0, "num_predict": gen.max_new_tokens})
            assert tok.encode(served.message.content, add_special_tokens=False) == \
                tok.encode(judged, add_special_tokens=False), prompt
        # Listed, rolled back, in the arena, deleted.
        listing = {d["name"]: d for d in deploy.list_deployments(wb)["deployments"]}
        assert listing[name]["present"] and listing["forgeloop/starter:latest"]["model_id"] == merged.id
        contestant = deploy.add_to_arena(wb, listing[name]["id"])
        battle = battles.new_battle(wb, contestant.id, sft_model.id, gen=gen)
        assert battles.play_turn(wb, battle.id, "Hello!").answer_a.strip()
        assert deploy.rollback(wb, listing[name]["id"])["model_id"] == merged.id
        assert deploy.delete_deployment(wb, listing[name]["id"])["status"] == "deleted"
        assert name not in {m.model for m in client.list().models}
