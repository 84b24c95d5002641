"""Export jobs: a LoRA version merged by the real `llamafactory-cli export` answers exactly as
the adapter chain did, and converts to a GGUF that the gguf reader accepts."""

import shutil
from pathlib import Path

import pytest

from app.core.errors import Conflict, InvalidInput
from app.inference.chat_engines import model_engines
from app.inference.generation import GenSettings
from app.models import export, registry

GREEDY = GenSettings(temperature=0, max_new_tokens=12)
PROMPTS = ["Hello!", "What is the capital of France?"]


def answers(wb, mv) -> list[str]:
    return [model_engines(wb).complete(mv, [{"role": "user", "content": p}], GREEDY) for p in PROMPTS]


@pytest.mark.slow
def test_merge_then_gguf_registers_what_it_made_and_answers_the_same(wb, duel):
    starter, tuned = duel
    job = wb.jobs.wait(export.start_merge(wb, tuned.id, dtype="float32").id, 600)
    assert job.status == "succeeded", job.error
    merged = registry.get_model(wb, job.result["model_id"])
    assert (merged.name, merged.kind, merged.parent_id) == ("tuned-merged", "full", tuned.id)
    assert merged.adapter_path is None and Path(merged.base_path, "config.json").is_file()
    assert Path(merged.base_path).parent == wb.settings.models_dir
    assert answers(wb, merged) == answers(wb, tuned)  # the merge changed nothing the arena sees
    assert [s["name"] for s in registry.lineage(wb, merged.id)] == ["tuned-merged", "tuned", "starter"]
    card = (Path(merged.base_path) / "README.md").read_text()  # the model card travels with the weights
    assert "# tuned-merged" in card and card.index("**tuned**") < card.index("**starter**")

    job = wb.jobs.wait(export.start_gguf(wb, merged.id, "f32").id, 600)
    assert job.status == "succeeded", job.error
    (record,) = registry.get_model(wb, merged.id).meta["gguf"]
    path = Path(record["path"])
    assert record["type"] == "f32" and record["bytes"] == path.stat().st_size > 100_000
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    assert len(reader.tensors) > 10 and "tokenizer.ggml.tokens" in reader.fields
    # A second conversion of the same type replaces the first record.
    wb.jobs.wait(export.start_gguf(wb, merged.id, "f32").id, 600)
    assert len(registry.get_model(wb, merged.id).meta["gguf"]) == 1


def test_exports_refuse_what_cannot_work_before_anything_runs(wb, duel):
    starter, tuned = duel
    with pytest.raises(InvalidInput, match="no adapters to merge"):
        export.start_merge(wb, starter.id)
    with pytest.raises(InvalidInput, match="merge it first"):
        export.start_gguf(wb, tuned.id)
    with pytest.raises(InvalidInput, match="dtype must be one of"):
        export.start_merge(wb, tuned.id, dtype="int3")
    with pytest.raises(InvalidInput, match="GGUF type must be one of"):
        export.start_gguf(wb, starter.id, "q4_K_M")
    with pytest.raises(Conflict, match="already exists"):
        export.start_merge(wb, tuned.id, name="starter")
    with pytest.raises(InvalidInput, match="use letters"):
        export.start_merge(wb, tuned.id, name="../escape")
    served = registry.register_remote_model(wb, "far", "ollama", "http://127.0.0.1:9", "x:1b")
    with pytest.raises(InvalidInput, match="only local weights"):
        export.start_gguf(wb, served.id)
    assert wb.jobs.list() == []


@pytest.mark.slow
def test_a_failed_merge_leaves_no_model_and_no_folder(wb, starter, sft_adapter_dir, tmp_path):
    broken = tmp_path / "broken-adapter"
    shutil.copytree(sft_adapter_dir, broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    bad = registry.register_adapter(wb, "bad", starter.id, str(broken))
    job = wb.jobs.wait(export.start_merge(wb, bad.id).id, 600)
    assert job.status == "failed" and "exited with code" in job.error
    assert [m.name for m in registry.list_models(wb)] == ["starter", "bad"]
    assert not (wb.settings.models_dir / "bad-merged").exists()
    assert not (Path(job.cwd) / "model").exists()


def test_the_export_route_queues_a_job_and_records_the_gguf(starter_server):
    from fastapi.testclient import TestClient

    server, wb, base = starter_server
    with TestClient(server) as client:
        r = client.post(f"/api/models/{base.id}/export", json={"format": "gguf", "gguf_type": "f32"})
        assert r.status_code == 202 and r.json()["kind"] == "gguf", r.text
        assert wb.jobs.wait(r.json()["id"], 600).status == "succeeded"
        (record,) = client.get(f"/api/models/{base.id}").json()["gguf"]
        assert record["type"] == "f32" and Path(record["path"]).read_bytes()[:4] == b"GGUF"
        bad = client.post(f"/api/models/{base.id}/export", json={"format": "onnx"})
        assert bad.status_code == 422 and "merged or gguf" in bad.json()["error"]["message"]
        lora = client.post(f"/api/models/{base.id}/export", json={"format": "merged"})
        assert lora.status_code == 422 and "no adapters" in lora.json()["error"]["message"]


def test_the_registry_tab_converts_through_its_api_endpoint(starter_server):
    from gradio_client import Client

    from tests.conftest import ServerThread

    server, wb, base = starter_server
    with ServerThread(server) as srv:
        client = Client(srv.url, verbose=False)
        message, progress, *_ = client.predict(base.id, "f32", api_name="/convert_to_gguf")
        assert message.startswith("Wrote a f32 GGUF of") and "data-status='succeeded'" in progress
        with pytest.raises(Exception, match="no adapters to merge"):
            client.predict(base.id, "", "float32", api_name="/merge_model")
    (record,) = registry.get_model(wb, base.id).meta["gguf"]
    assert record["path"] in message


def test_a_model_being_exported_cannot_be_deleted(wb, starter, starter_dir):
    job = export.start_gguf(wb, starter.id, "f32")
    with pytest.raises(Conflict, match=f"job #{job.id} .* is using 'starter'"):
        registry.delete_model(wb, starter.id)
    job = wb.jobs.wait(job.id, 600)
    assert job.status == "succeeded" and Path(job.result["path"]).is_file()
    registry.delete_model(wb, starter.id)  # free again once the job ended
    assert registry.list_models(wb) == []
    # Its GGUF under storage/models goes with it; the weights folder it was registered from stays.
    assert not Path(job.result["path"]).parent.exists() and (starter_dir / "config.json").is_file()
