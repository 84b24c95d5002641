"""The Hugging Face Hub: the exact upload of a push, built without network; the token kept out of
the database and the logs; offline, refused and unreachable Hubs failing clearly with nothing
registered; and a real push and pull through a stand-in Hub on localhost (tests/hub_stub.py)."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
from sqlmodel import select

from app.core.errors import Conflict, EngineError, InvalidInput, NotFound
from app.core.tables import Deployment, ModelVersion
from app.models import hub, registry
from app.models.hub_job import pull_ignores
from tests.conftest import free_port, make_workbench
from tests.hub_stub import HubStub

ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "all_results.json",
                 "chat_template.jinja", "tokenizer.json", "tokenizer_config.json", "train_results.json",
                 "trainer_log.jsonl", "trainer_state.json"]
REPO = "me/starter-tiny"
STARTER_FILES = ["config.json", "forgeloop_starter.json", "generation_config.json", "model.safetensors",
                 "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json"]


@pytest.fixture(autouse=True)
def no_env_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)


def fake_token() -> str:
    return "hf_FORGELOOPtest" + secrets.token_hex(12)


def deployments(wb) -> list[Deployment]:
    with wb.session() as s:
        return list(s.exec(select(Deployment)))


def set_meta(wb, model_id: int, **meta) -> None:
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
        mv.meta = {**(mv.meta or {}), **meta}
        s.add(mv)
        s.commit()


def fake_gguf(wb, mv, folder: Path) -> Path:
    """A GGUF record as export.finish_gguf writes it (the conversion itself is tested in test_export)."""
    path = folder / f"{mv.name}-gguf" / f"{mv.name}.f16.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF" + bytes(60))
    set_meta(wb, mv.id, gguf=[{"path": str(path), "type": "f16", "bytes": 64}])
    return path


def test_an_adapter_version_pushes_its_adapter_folder_and_a_card_naming_its_base(wb, starter,
                                                                                 sft_adapter_dir):
    tuned = registry.register_adapter(wb, "tuned", starter.id, str(sft_adapter_dir))
    plan = hub.push_plan(wb, tuned.id, "me/tuned")
    assert (plan.repo_id, plan.kind, plan.private, plan.model_id) == ("me/tuned", "adapter", True, tuned.id)
    # The folder less its README (the card replaces it), local logs and the pickled trainer arguments.
    assert plan.files == [(str(sft_adapter_dir.resolve() / n), n) for n in ADAPTER_FILES]
    assert (sft_adapter_dir / "README.md").is_file() and (sft_adapter_dir / "training_args.bin").is_file()
    card = plan.card
    assert card.startswith("---\nlibrary_name: peft\n") and "base_model" not in card  # the starter is local
    assert "# tuned" in card and card.index("**tuned**") < card.index("**starter**")
    assert "load it on top of the local model `starter`, which is not on the Hub" in card
    assert 'PeftModel.from_pretrained(base, "me/tuned")' in card and "BASE_MODEL" in card

    # Once its base is known on the Hub (pulled from it here), the card names it.
    set_meta(wb, starter.id, hub={"repo_id": "org/starter-tiny", "revision": None, "sha": "0" * 40})
    card = hub.push_plan(wb, tuned.id, "me/tuned", private=False).card
    assert "\nbase_model: org/starter-tiny\n" in card.split("---")[1]
    assert "[`org/starter-tiny`](https://huggingface.co/org/starter-tiny)" in card
    assert 'AutoModelForCausalLM.from_pretrained("org/starter-tiny")' in card and "BASE_MODEL" not in card


def test_a_full_version_pushes_its_weights_and_its_gguf_on_request(wb, starter_dir, tmp_path):
    folder = tmp_path / "merged"
    shutil.copytree(starter_dir, folder)
    (folder / "README.md").write_text("an old card")
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"state")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("")
    base = registry.register_base_model(wb, "starter", str(starter_dir))
    with wb.session() as s:  # as export.finish_merge registers a merge
        merged = ModelVersion(name="merged", kind="full", base_path=str(folder), template="chatml",
                              finetuning_type="full", parent_id=base.id, meta={"merged_from": base.id})
        s.add(merged)
        s.commit()
        s.refresh(merged)
    gguf = fake_gguf(wb, merged, tmp_path)

    plan = hub.push_plan(wb, merged.id, "me/merged")
    assert plan.kind == "merged" and plan.files == [(str(folder / n), n) for n in STARTER_FILES]
    plan = hub.push_plan(wb, merged.id, "me/merged", include_gguf=True)
    assert plan.files == sorted([(str(folder / n), n) for n in STARTER_FILES] + [(str(gguf), gguf.name)],
                                key=lambda f: f[1])
    assert plan.card.startswith("---\nlibrary_name: transformers\n") and "an old card" not in plan.card
    assert "# merged" in plan.card and "GGUF for llama.cpp and Ollama: `merged.f16.gguf`." in plan.card
    assert 'AutoModelForCausalLM.from_pretrained("me/merged")' in plan.card
    assert hub.push_plan(wb, base.id, "me/starter").kind == "full"


def test_pushes_that_cannot_work_are_refused_before_anything_runs(wb, starter, sft_adapter_dir, tmp_path):
    for bad in ("", "noslash", "a/b/c", "me/..", "../x", "me/has space", "-me/x"):
        with pytest.raises(InvalidInput, match="use owner/name"):
            hub.push_plan(wb, starter.id, bad)
    with pytest.raises(NotFound):
        hub.push_plan(wb, 999, "me/x")
    served = registry.register_remote_model(wb, "far", "ollama", "http://127.0.0.1:9", "x:1b")
    with pytest.raises(InvalidInput, match="only local weights"):
        hub.push_plan(wb, served.id, "me/far")
    with pytest.raises(InvalidInput, match="no GGUF file: convert it first"):
        hub.push_plan(wb, starter.id, "me/starter", include_gguf=True)
    gguf = fake_gguf(wb, starter, tmp_path)
    gguf.write_bytes(b"not a gguf")
    with pytest.raises(InvalidInput, match="missing or damaged"):
        hub.push_plan(wb, starter.id, "me/starter", include_gguf=True)
    on_hub = registry.register_base_model(wb, "qwen", "Qwen/Qwen2.5-0.5B-Instruct", template="qwen")
    with pytest.raises(InvalidInput, match="lives on the Hub already"):
        hub.push_plan(wb, on_hub.id, "me/qwen")
    tuned = registry.register_adapter(wb, "tuned", starter.id, str(sft_adapter_dir))
    stacked = registry.register_adapter(wb, "stacked", tuned.id, str(sft_adapter_dir))
    with pytest.raises(InvalidInput, match="stacks 2 adapters .* push the merged version"):
        hub.push_plan(wb, stacked.id, "me/stacked")
    assert wb.jobs.list() == []


def test_the_token_comes_from_the_ui_or_hf_token_and_a_push_needs_one(wb, starter, monkeypatch):
    assert hub.token_status(wb) == {"set": False, "source": None}
    with pytest.raises(InvalidInput, match="no Hugging Face token: enter one in the Registry tab"):
        hub.start_push(wb, starter.id, "me/starter")
    assert wb.jobs.list() == [] and not any(wb.settings.jobs_dir.iterdir())
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    assert hub.token_status(wb) == {"set": True, "source": "env"}
    assert hub.hub_token(wb) == "hf_from_the_environment"
    token = fake_token()
    assert hub.set_hub_token(wb, f"  {token}\n") == {"set": True, "source": "ui"}  # wins over the env
    assert hub.hub_token(wb) == token and token not in repr(wb.service(hub.HubToken))
    for bad in ("short", "hf_has a space", "hf_ünïcode_token"):
        with pytest.raises(InvalidInput, match="no Hugging Face token"):
            hub.set_hub_token(wb, bad)
    assert hub.hub_token(wb) == token  # a refused token changes nothing
    assert hub.set_hub_token(wb, "") == {"set": True, "source": "env"}
    assert hub.hub_token(wb) == "hf_from_the_environment"


def test_a_pull_while_offline_fails_fast_and_leaves_nothing(wb, starter):
    offline = r"^Hugging Face Hub is unreachable \(offline mode\): .*HF_HUB_OFFLINE"
    with pytest.raises(EngineError, match=offline):
        hub.start_pull(wb, "org/some-model")
    # Bad requests are refused first, whatever the network.
    with pytest.raises(InvalidInput, match="use owner/name"):
        hub.start_pull(wb, "not-a-repo")
    with pytest.raises(InvalidInput, match="use letters"):
        hub.start_pull(wb, "org/model", name="../escape")
    with pytest.raises(InvalidInput, match="revision"):
        hub.start_pull(wb, "org/model", revision="../main")
    with pytest.raises(InvalidInput, match="no chat template named 'chatlm'"):
        hub.start_pull(wb, "org/model", template="chatlm")
    with pytest.raises(Conflict, match="already exists"):
        hub.start_pull(wb, "org/starter")
    assert wb.jobs.list() == [] and [m.name for m in registry.list_models(wb)] == ["starter"]
    assert not any(wb.settings.models_dir.iterdir()) and not any(wb.settings.jobs_dir.iterdir())


def test_an_offline_push_job_fails_clearly_and_the_token_stays_out_of_the_db_and_log(wb, starter):
    token = fake_token()
    hub.set_hub_token(wb, token)
    job = wb.jobs.wait(hub.start_push(wb, starter.id, "me/starter").id, 120)
    # The token reached the process (else it would say so), which then met offline mode.
    assert job.status == "failed" and job.error.startswith("Hugging Face Hub is unreachable (offline mode): ")
    assert "\n" not in job.error and job.result is None and job.env == {}
    assert deployments(wb) == []
    log = Path(job.log_path).read_text()
    assert "error: Hugging Face Hub is unreachable (offline mode)" in log
    written = [p for p in wb.settings.home.rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert any(p.name == "forgeloop.db" for p in written) and Path(job.log_path) in written
    leaks = [str(p) for p in written if token.encode() in p.read_bytes()]  # the DB, its WAL, the job folder
    assert leaks == []


def stub_workbench(tmp_path, stub_url: str):
    """A workbench whose jobs reach the stand-in Hub (offline mode off for them only)."""
    from app.bootstrap import open_workbench
    from app.core.settings import Settings

    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": stub_url, "HF_HOME": str(tmp_path / "hf-home")}
    return open_workbench(Settings(home=tmp_path / "home", job_env=env))


def test_a_push_then_a_pull_through_a_stand_in_hub(tmp_path, starter_dir, sft_adapter_dir):
    with HubStub(token=fake_token()) as stub:
        wb = stub_workbench(tmp_path, stub.url)
        try:
            base = registry.register_base_model(wb, "starter", str(starter_dir))
            hub.set_hub_token(wb, stub.token)
            plan = hub.push_plan(wb, base.id, REPO)
            job = wb.jobs.wait(hub.start_push(wb, base.id, REPO).id, 120)
            assert job.status == "succeeded", job.error
            # Exactly the plan arrived, in one commit, into a private repo, with the token.
            repo = stub.repos[REPO]
            assert repo["README.md"].decode() == plan.card
            assert {n: repo[n] for _, n in plan.files} == {n: Path(f).read_bytes() for f, n in plan.files}
            assert sorted(repo) == sorted(["README.md", *STARTER_FILES]) and stub.private[REPO]
            assert [c["files"] for c in stub.commits] == [sorted(repo)]
            assert {t for t in stub.seen_tokens if t} == {stub.token}  # (it also reads a list anonymously)
            assert all(signed for method, _, signed in stub.seen if method == "POST")
            (dep,) = deployments(wb)
            assert (dep.model_id, dep.target, dep.name, dep.status) == (base.id, "hub", REPO, "pushed")
            assert dep.url == f"{stub.url}/{REPO}" and dep.meta["commit"] == stub.sha(REPO)
            assert job.result["deployment_id"] == dep.id
            assert job.progress["steps"] == job.progress["total_steps"] == len(repo) + 1

            # Pull it back as a new base model: files, template from its chat template, Hub origin.
            job = wb.jobs.wait(hub.start_pull(wb, REPO, name="pulled").id, 120)
            assert job.status == "succeeded", job.error
            pulled = registry.get_model(wb, job.result["model_id"])
            assert (pulled.name, pulled.kind, pulled.template) == ("pulled", "base", "chatml")
            assert Path(pulled.base_path) == wb.settings.models_dir / "pulled"
            assert sorted(p.name for p in Path(pulled.base_path).iterdir()) == sorted(repo)
            weights = "model.safetensors"
            assert Path(pulled.base_path, weights).read_bytes() == (starter_dir / weights).read_bytes()
            assert pulled.meta["hub"] == {"repo_id": REPO, "revision": None,
                                          "sha": stub.sha(REPO)}
            assert pulled.meta["template_source"] == "the model's chat template"
            assert job.progress["steps"] == job.progress["total_steps"] == len(repo)
            assert not (Path(job.cwd) / "model").exists()

            # An adapter trained on the pushed base names it as its base_model.
            tuned = registry.register_adapter(wb, "tuned", base.id, str(sft_adapter_dir))
            assert "\nbase_model: me/starter-tiny\n" in hub.push_plan(wb, tuned.id, "me/tuned").card
            # Deleting the version forgets its pushes (the repo stays on the Hub).
            registry.delete_model(wb, tuned.id)
            registry.delete_model(wb, base.id)
            assert deployments(wb) == [] and REPO in stub.repos
        finally:
            wb.close()


def test_a_refused_token_or_an_unreachable_hub_fails_the_job_and_registers_nothing(tmp_path, starter_dir):
    with HubStub(token=fake_token()) as stub:
        stub.repos["org/model"] = {"config.json": b"{}"}
        wb = stub_workbench(tmp_path, stub.url)
        try:
            base = registry.register_base_model(wb, "starter", str(starter_dir))
            wrong = fake_token()
            hub.set_hub_token(wb, wrong)
            started = [hub.start_push(wb, base.id, "me/starter"), hub.start_pull(wb, "org/model")]
            push, pull = (wb.jobs.wait(j.id, 120) for j in started)  # they hold no resource: both run
            for job in (push, pull):
                assert job.status == "failed", job.error
                refused = "the Hub refused the token: 401 Invalid credentials in Authorization header"
                assert job.error == refused
            assert stub.repos.keys() == {"org/model"} and deployments(wb) == []
            hub.set_hub_token(wb, stub.token)
            missing = wb.jobs.wait(hub.start_pull(wb, "org/nothing-here").id, 120)
            assert missing.status == "failed" and missing.error.startswith("no such repo on the Hub")
            assert [m.name for m in registry.list_models(wb)] == ["starter"]
            assert sorted(p.name for p in wb.settings.models_dir.iterdir()) == []
            assert not any((Path(j.cwd) / "model").exists() for j in (pull, missing))
        finally:
            wb.close()
    wb = stub_workbench(tmp_path / "2", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        job = wb.jobs.wait(hub.start_pull(wb, "org/model").id, 120)
        assert job.status == "failed" and job.error.startswith("Hugging Face Hub is unreachable: "), job.error
        assert registry.list_models(wb) == [] and not (Path(job.cwd) / "model").exists()
    finally:
        wb.close()


def test_a_pull_skips_other_runtimes_formats_and_pickles_beside_safetensors():
    names = ["config.json", "model.safetensors", "pytorch_model.bin", "model.gguf", "onnx/model.onnx"]
    ignored = pull_ignores(names)
    assert "*.bin" in ignored and "*.gguf" in ignored and "onnx/*" in ignored
    assert "*.bin" not in pull_ignores(["config.json", "pytorch_model.bin"])  # the only weights there


def test_the_hub_routes_push_pull_and_set_the_token_without_echoing_it(starter_server):
    from fastapi.testclient import TestClient

    server, wb, base = starter_server
    token = fake_token()
    with TestClient(server) as client:
        assert client.get("/api/hub/token").json() == {"set": False, "source": None}
        r = client.post(f"/api/models/{base.id}/push", json={"repo_id": "me/starter"})
        assert r.status_code == 422 and "no Hugging Face token" in r.json()["error"]["message"]
        r = client.put("/api/hub/token", json={"token": token})
        assert r.json() == {"set": True, "source": "ui"} and token not in r.text
        assert client.put("/api/hub/token", json={"token": "x"}).status_code == 422
        r = client.post(f"/api/models/{base.id}/push", json={"repo_id": "me/starter", "include_gguf": False})
        assert r.status_code == 202 and r.json()["kind"] == "hub_push", r.text
        job = wb.jobs.wait(r.json()["id"], 120)
        assert job.status == "failed" and "offline mode" in job.error
        view = client.get(f"/api/jobs/{job.id}").json()
        assert view["error"] == job.error and token not in str(view)
        r = client.post("/api/hub/pull", json={"repo_id": "org/model", "name": "m"})
        assert r.status_code == 502 and r.json()["error"]["code"] == "engine_error"
        assert "offline mode" in r.json()["error"]["message"]
        assert client.post("/api/models/999/push", json={"repo_id": "me/x"}).status_code == 404
        assert client.put("/api/hub/token", json={"token": ""}).json() == {"set": False, "source": None}
    assert not any(m.name == "m" for m in registry.list_models(wb))


def test_the_registry_tab_sets_the_token_and_pulls_through_its_api_endpoints(starter_server):
    from gradio_client import Client

    from tests.conftest import ServerThread

    server, wb, base = starter_server
    token = fake_token()
    with ServerThread(server) as srv:
        client = Client(srv.url, verbose=False)
        status, box = client.predict(token, api_name="/set_hub_token")
        assert "set in this session" in status and box == "" and token not in status
        assert hub.hub_token(wb) == token
        with pytest.raises(Exception, match="offline mode"):
            client.predict("org/model", "", "", "", api_name="/pull_from_hub")
        with pytest.raises(Exception, match="use owner/name"):
            client.predict(base.id, "nope", False, True, api_name="/push_to_hub")
    assert wb.jobs.list() == []


def test_a_second_workbench_does_not_see_the_first_ones_token(tmp_path):
    first, second = make_workbench(tmp_path / "a"), make_workbench(tmp_path / "b")
    try:
        hub.set_hub_token(first, fake_token())
        assert hub.token_status(second) == {"set": False, "source": None}
    finally:
        first.close()
        second.close()
