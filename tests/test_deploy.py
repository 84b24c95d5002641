"""Deploying to Ollama (the stand-in in tests/ollama_stub.py, whose created models answer
through llama.cpp): the job uploads digest-checked blobs, creates the model with a template
generated from the version's chat template, registers the deployment only once Ollama has
it, retries without re-sending blobs, and lists, rolls back, deletes and battles."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import ollama
import pytest
from sqlmodel import select

from app.core.errors import Conflict, EngineError, InvalidInput, NotFound
from app.core.jobs import tool_path
from app.core.tables import Deployment
from app.inference.chat_engines import model_engines
from app.inference.generation import GenSettings
from app.models import deploy, registry
from app.models.gguf_meta import align_gguf
from app.models.ollama_template import ollama_format
from tests.conftest import CACHE, _starter_key, cache_lock, free_port, make_workbench

GREEDY = GenSettings(temperature=0, max_new_tokens=16)
PROMPTS = ["Hello!", "What color is the sky?", "What is 2 plus 3?"]


@pytest.fixture(scope="session")
def starter_gguf(starter_dir) -> Path:
    """The starter converted to an f32 GGUF by the real convert-hf-to-gguf, cached."""
    target = CACHE / f"starter-{_starter_key()}.f32.gguf"
    with cache_lock():
        if not target.is_file():
            tmp = target.with_suffix(".tmp")
            subprocess.run([tool_path("convert-hf-to-gguf"), str(starter_dir), "--outtype", "f32",
                            "--outfile", str(tmp)], check=True, capture_output=True)
            tmp.replace(target)
    return target


@pytest.fixture(scope="module")
def llama_stub():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is built by `make test` (make llama)")
    from tests.ollama_llama import LlamaRunner
    from tests.ollama_stub import OllamaStub

    with OllamaStub(models=["someone-else:1b"], runner=LlamaRunner()) as s:
        yield s


@pytest.fixture
def dwb(tmp_path, llama_stub):
    """A workbench whose Ollama host is the stand-in."""
    from dataclasses import replace

    wb = make_workbench(tmp_path / "home")
    wb.settings = replace(wb.settings, ollama_host=llama_stub.url)
    yield wb
    wb.close()


def with_gguf(wb, mv, gguf: Path, kind: str = "f32"):
    """Record a GGUF on a version the way the GGUF export job does."""
    target = wb.settings.models_dir / f"{mv.name}-gguf" / f"{mv.name}.{kind}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf, target)
    aligned = align_gguf(target, mv.template, mv.base_path)  # as the export does
    with wb.session() as s:
        live = s.get(type(mv), mv.id)
        record = {"path": str(target), "type": kind, "bytes": target.stat().st_size, **aligned}
        live.meta = {**live.meta, "gguf": [record]}
        s.add(live)
        s.commit()
        s.refresh(live)
        return live


def deploy_ok(wb, model_id, **kw):
    job = wb.jobs.wait(deploy.start_deploy(wb, model_id, **kw).id, 300)
    assert job.status == "succeeded", job.error
    return job


def test_plan_is_built_from_the_versions_own_template(wb, starter, starter_gguf):
    base = with_gguf(wb, starter, starter_gguf)
    plan = deploy.plan_deploy(wb, base.id, quantize="q4_K_M")
    fmt = ollama_format(base)
    assert plan["name"] == "forgeloop/starter:starter" and plan["latest"] == "forgeloop/starter:latest"
    create = plan["create"]
    assert create["template"] == fmt.template and create["parameters"]["stop"] == fmt.stop
    assert "<|im_end|>" in fmt.stop and create["quantize"] == "q4_K_M"
    config = json.loads((Path(base.base_path) / "config.json").read_text())
    assert create["parameters"]["num_ctx"] == config["max_position_embeddings"]
    assert plan["blobs"]["files"] == {"starter.f32.gguf": base.meta["gguf"][0]["path"]}


def test_plan_refuses_what_cannot_deploy(wb, starter, sft_adapter_dir, starter_gguf):
    tuned = registry.register_adapter(wb, "tuned", starter.id, str(sft_adapter_dir))
    with pytest.raises(InvalidInput, match="no GGUF file yet"):
        deploy.plan_deploy(wb, starter.id)
    with pytest.raises(InvalidInput, match="LoRA version: merge it"):
        deploy.plan_deploy(wb, tuned.id)
    with pytest.raises(InvalidInput, match="quantize must be one of"):
        deploy.plan_deploy(wb, starter.id, quantize="q1")
    with pytest.raises(InvalidInput, match="mode must be one of"):
        deploy.plan_deploy(wb, starter.id, mode="zip")
    with_gguf(wb, starter, starter_gguf)
    with pytest.raises(InvalidInput, match="no f16 GGUF"):
        deploy.plan_deploy(wb, starter.id, gguf_type="f16")
    # Base + adapter: the base's GGUF and the adapter's own files, for Ollama's `adapters`.
    plan = deploy.plan_deploy(wb, tuned.id, mode="adapter")
    assert set(plan["blobs"]["adapters"]) == {"adapter_model.safetensors", "adapter_config.json"}
    assert plan["name"] == "forgeloop/starter:tuned"
    deeper = registry.register_adapter(wb, "deeper", tuned.id, str(sft_adapter_dir))
    with pytest.raises(InvalidInput, match="has 2 adapters"):
        deploy.plan_deploy(wb, deeper.id, mode="adapter")


def test_deploy_then_chat_answers_like_the_arena(dwb, llama_stub, starter, starter_gguf):
    base = with_gguf(dwb, starter, starter_gguf)
    job = deploy_ok(dwb, base.id)
    assert job.progress["steps"] == job.progress["total_steps"] > 1
    with dwb.session() as s:
        rows = {d.name: d for d in s.exec(select(Deployment))}
    assert set(rows) == {"forgeloop/starter:starter", "forgeloop/starter:latest"}
    assert rows["forgeloop/starter:latest"].meta["alias_of"] == "forgeloop/starter:starter"
    client = ollama.Client(host=llama_stub.url)
    shown = client.show("forgeloop/starter:starter")
    assert shown.template == ollama_format(base).template
    # Greedy answers through the official client equal the arena's local engine, token for token.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base.base_path)
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        local = model_engines(dwb).complete(base, messages, GREEDY)
        served = client.chat("forgeloop/starter:starter", messages=messages,
                             options={"temperature": 0, "num_predict": GREEDY.max_new_tokens})
        assert tok.encode(served.message.content, add_special_tokens=False) == \
            tok.encode(local, add_special_tokens=False), prompt
    # The stand-in saw the prompt Ollama would build: the chat template around the message.
    assert llama_stub.runner.prompts[-1].endswith("<|im_start|>assistant\n")


def test_failed_create_registers_nothing_and_retry_sends_no_blob_twice(dwb, llama_stub, starter,
                                                                      starter_gguf):
    base = with_gguf(dwb, starter, starter_gguf)
    llama_stub.fail_next("create", 500, "disk full")
    before = len(llama_stub.uploads)
    job = dwb.jobs.wait(deploy.start_deploy(dwb, base.id, stable_tag=False).id, 300)
    assert job.status == "failed"
    assert job.error == "Ollama refused to create forgeloop/starter:starter: disk full"
    with dwb.session() as s:
        assert s.exec(select(Deployment)).first() is None
    uploaded = llama_stub.uploads[before:]
    retried = dwb.jobs.wait(deploy.retry_deploy(dwb, job.id).id, 300)
    assert retried.status == "succeeded", retried.error
    assert llama_stub.uploads[before:] == uploaded  # the blob Ollama already held was not re-sent
    assert retried.result["sent"] == []
    with pytest.raises(Conflict, match="only a failed deploy"):
        deploy.retry_deploy(dwb, retried.id)


def test_unreachable_ollama_fails_clearly(tmp_path, starter_dir, starter_gguf):
    from dataclasses import replace

    wb = make_workbench(tmp_path / "home")
    try:
        wb.settings = replace(wb.settings, ollama_host=f"http://127.0.0.1:{free_port()}")
        base = with_gguf(wb, registry.register_base_model(wb, "starter", str(starter_dir)), starter_gguf)
        job = wb.jobs.wait(deploy.start_deploy(wb, base.id).id, 120)
        assert job.status == "failed" and "is unreachable" in job.error
        listing = deploy.list_deployments(wb)
        assert listing["deployments"] == [] and not listing["reachable"] and "unreachable" in listing["error"]
    finally:
        wb.close()


def test_list_rollback_delete_and_battle(dwb, llama_stub, starter, starter_gguf):
    base = with_gguf(dwb, starter, starter_gguf)
    again = registry.register_base_model(dwb, "starter-v2", starter.base_path)
    with dwb.session() as s:  # a second version of the same family
        live = s.get(type(again), again.id)
        live.parent_id = base.id
        s.add(live)
        s.commit()
    again = with_gguf(dwb, registry.get_model(dwb, again.id), starter_gguf, "f32")
    deploy_ok(dwb, base.id)
    deploy_ok(dwb, again.id)
    client = ollama.Client(host=llama_stub.url)
    digests = {m.model: m.digest for m in client.list().models}
    listing = deploy.list_deployments(dwb)
    by_name = {d["name"]: d for d in listing["deployments"]}
    assert by_name["forgeloop/starter:latest"]["model_id"] == again.id  # the newest deploy took :latest
    assert all(d["present"] for d in listing["deployments"])
    assert [u["name"] for u in listing["unknown"]] == ["someone-else:1b"]

    first = by_name["forgeloop/starter:starter"]
    rolled = deploy.rollback(dwb, first["id"])
    assert rolled["name"] == "forgeloop/starter:latest" and rolled["alias_of"] == "forgeloop/starter:starter"
    assert rolled["model_id"] == base.id
    after = {m.model: m.digest for m in client.list().models}
    assert after["forgeloop/starter:latest"] == digests["forgeloop/starter:starter"]
    with pytest.raises(InvalidInput, match="is itself a stable tag"):
        deploy.rollback(dwb, rolled["id"])

    # One click into the arena, as a child of the version it serves.
    contestant = deploy.add_to_arena(dwb, first["id"])
    assert (contestant.kind, contestant.parent_id, contestant.in_arena) == ("ollama", base.id, True)
    assert contestant.base_path == "forgeloop/starter:starter"
    from app.arena import battles

    battle = battles.new_battle(dwb, contestant.id, again.id, gen=GREEDY)
    turn = battles.play_turn(dwb, battle.id, "What color is the sky?")
    assert turn.answer_a.strip() and turn.answer_b.strip()
    with pytest.raises(Conflict, match="already registered"):
        deploy.add_to_arena(dwb, first["id"])

    gone = deploy.delete_deployment(dwb, first["id"])
    assert gone["status"] == "deleted"
    assert "forgeloop/starter:starter" not in {m.model for m in client.list().models}
    assert not registry.get_model(dwb, contestant.id).in_arena
    with pytest.raises(NotFound):
        deploy.delete_deployment(dwb, first["id"])
    assert "forgeloop/starter:starter" not in {d["name"] for d in deploy.list_deployments(dwb)["deployments"]}


def test_ollama_errors_on_delete_are_engine_errors(dwb, llama_stub, starter, starter_gguf):
    base = with_gguf(dwb, starter, starter_gguf)
    deploy_ok(dwb, base.id, stable_tag=False)
    (row,) = deploy.list_deployments(dwb)["deployments"]
    llama_stub.models.pop("forgeloop/starter:starter")  # someone removed it behind our back
    assert deploy.list_deployments(dwb)["deployments"][0]["present"] is False
    assert deploy.delete_deployment(dwb, row["id"])["status"] == "deleted"  # already gone is fine
    with pytest.raises(EngineError, match="unreachable"):
        deploy._ollama_call("http://127.0.0.1:9", "list models", lambda c: c.list())


def test_a_lora_version_deploys_as_base_gguf_plus_adapter(dwb, llama_stub, starter, sft_adapter_dir,
                                                          starter_gguf):
    with_gguf(dwb, starter, starter_gguf)
    tuned = registry.register_adapter(dwb, "tuned", starter.id, str(sft_adapter_dir))
    job = deploy_ok(dwb, tuned.id, mode="adapter", stable_tag=False)
    created = llama_stub.models["forgeloop/starter:tuned"]
    assert set(created.adapters) == {"adapter_model.safetensors", "adapter_config.json"}
    assert created.adapters == job.result["blobs"]["adapters"]  # digests Ollama checked on upload
    assert created.request["files"] == job.result["blobs"]["files"]
    assert "ADAPTER" in ollama.Client(host=llama_stub.url).show("forgeloop/starter:tuned").modelfile
    with pytest.raises(ollama.ResponseError, match="cannot apply adapters"):  # never the bare base
        ollama.Client(host=llama_stub.url).chat("forgeloop/starter:tuned",
                                                 messages=[{"role": "user", "content": "Hello!"}])


def test_the_assistant_words_its_advice_with_the_deployed_model_or_falls_back(dwb, llama_stub, starter,
                                                                              starter_gguf):
    from app.assistant import service

    text = "Lower the learning rate to 3e-05 and train 2 epochs."
    assert service.rewrite(dwb, text, "advice")["note"].startswith("no assistant model is registered")
    base = with_gguf(dwb, starter, starter_gguf)
    deploy_ok(dwb, base.id)
    listing = {d["name"]: d for d in deploy.list_deployments(dwb)["deployments"]}
    served = deploy.add_to_arena(dwb, listing["forgeloop/starter:latest"]["id"])
    assert served.kind == "ollama" and service.default_llm(dwb).id == served.id  # the default now
    worded = service.rewrite(dwb, text, "advice", timeout=120)
    assert worded["source"] == "llm" and worded["llm"] == served.name and worded["text"]
    assert worded["rules"] == text  # the rule-based text stays available
    llama_stub.chunk_delay = 2.0  # an assistant model too slow to wait for
    try:
        slow = service.rewrite(dwb, text, "advice", timeout=0.5)
    finally:
        llama_stub.chunk_delay = 0.0
    assert slow["source"] == "rules" and slow["text"] == text
    assert "did not answer within 0.5 s" in slow["note"]
