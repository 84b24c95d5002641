"""The full version view and "compare two versions": runs planned from the real recipes and
datasets (their trainer is tests/fake_trainer.py, so the real finish step registers each
version), real battles and votes through app.arena, real folders for sizes, and the delete
protections that deployments and export jobs add."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from app.arena import battles, preference_export
from app.arena.version_view import compare_versions, head_to_head, version_view
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.jobs import JobSpec
from app.core.progress_log import TRAINER_LOG
from app.core.tables import Deployment, Run
from app.data import datasets
from app.inference.generation import GenSettings
from app.models import export, registry
from app.models.card import model_card
from app.train import training
from tabs.version_panel import human_bytes
from tests.conftest import ROOT, register_served

FAKE = Path(__file__).resolve().parent / "fake_trainer.py"
STEPS = 4
# Answers of the starter and its fine-tune end by themselves well within this (no truncation flag).
GREEDY = GenSettings(temperature=0.0, max_new_tokens=48)
PROMPTS = ["Hello!", "What color is the sky?", "What does a cat say?", "What is 2 plus 3?",
           "Which day comes after Monday?", "What is the opposite of hot?", "Hi there!"]


def trained(wb, parent, data, name, recipe="sft_lora", **overrides) -> Run:
    """A run planned exactly as ``training.start_run`` plans it (recipe, datasets, YAML) whose
    job runs the fake trainer; the real finish step records its metrics and its version."""
    req = training.TrainRequest(recipe, parent.id, [d.id for d in data], name=name, overrides=overrides)
    folder = wb.settings.runs_dir / name
    plan = training.plan_run(wb, req, folder)
    folder.mkdir(parents=True)
    out = folder / "output"
    spec = JobSpec(command=[sys.executable, str(FAKE), str(out), str(STEPS), "0.01", "eval"], cwd=folder,
                   log_path=folder / "train.log", progress_path=out / TRAINER_LOG,
                   resources=frozenset({"cpu"}), title=name)
    run = Run(name=name, stage=plan.recipe.stage, model_id=parent.id, dataset_ids=req.dataset_ids,
              recipe=plan.recipe.name, request=req.as_dict(), config=plan.config, output_dir=str(out))
    run = training.wait_run(wb, training.queue_run(wb, run, spec).id, 60)
    assert run.status == "succeeded", run.error
    return run


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def test_sizes_read_as_people_write_them():
    assert [human_bytes(n) for n in (None, 0, 1023, 1536, 5 * 2**20, 3 * 2**30, 2**41)] == [
        "—", "0 B", "1023 B", "1.5 KiB", "5.0 MiB", "3.0 GiB", "2048.0 GiB"]


@pytest.fixture
def sft_data(wb):
    return datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft-data", "sft")


def test_a_trained_version_shows_its_run_recipe_datasets_losses_size_and_deployments(wb, starter, sft_data):
    run = trained(wb, starter, [sft_data], "sft-a", learning_rate=1e-3)
    registry.edit_model(wb, run.output_model_id, tags=["candidate"], notes="first try")
    with wb.session() as s:
        s.add(Deployment(model_id=run.output_model_id, target="ollama", name="sft-a:latest",
                         status="deployed", url="http://127.0.0.1:11434"))
        s.commit()
    v = version_view(wb, run.output_model_id)

    assert (v["name"], v["kind"], v["parent"]) == ("sft-a", "adapter", {"id": starter.id, "name": "starter"})
    assert {k: v["run"][k] for k in ("id", "name", "stage", "recipe", "status")} == {
        "id": run.id, "name": "sft-a", "stage": "sft", "recipe": "sft_lora", "status": "succeeded"}
    # The recipe: the run's own YAML (recipe defaults, our override), not a second copy of the defaults.
    ran = run.config
    assert v["recipe"] == {"name": "sft_lora", "stage": "sft", "finetuning_type": "lora",
                           "learning_rate": 1e-3,
                           "num_train_epochs": ran["num_train_epochs"], "lora_rank": 8, "lora_alpha": 16,
                           "per_device_train_batch_size": ran["per_device_train_batch_size"],
                           "gradient_accumulation_steps": ran["gradient_accumulation_steps"],
                           "cutoff_len": ran["cutoff_len"], "template": starter.template,
                           "datasets": ["sft-data"]}
    assert v["datasets"] == [{"id": sft_data.id, "name": "sft-data", "kind": "sft", "format": sft_data.format,
                              "source": "upload", "rows": sft_data.num_rows, "sha256": sft_data.sha256}]
    # Losses as the trainer logged them: the last step's loss, and the evaluation at the end.
    log = [json.loads(x) for x in (Path(run.output_dir) / TRAINER_LOG).read_text().splitlines()]
    assert v["losses"] == {"final_loss": [r["loss"] for r in log if "loss" in r][-1],
                           "eval_loss": [r["eval_loss"] for r in log if "eval_loss" in r][-1]}
    assert v["losses"]["final_loss"] == 1 / STEPS
    # The adapter version's size is its own adapter folder, byte for byte.
    assert v["size"]["folder"] == run.output_dir
    assert v["size"]["bytes"] == v["size"]["weights_bytes"] == disk_bytes(run.output_dir) > 0
    assert v["rating"] is None and v["arena_record"] == {"wins": 0, "losses": 0, "ties": 0}
    assert (v["tags"], v["notes"], v["archived"]) == (["candidate"], "first try", False)
    assert v["created_at"] == registry.get_model(wb, v["id"]).created_at.isoformat()
    (dep,) = v["deployments"]
    assert (dep["target"], dep["name"], dep["status"], dep["url"], dep["active"]) == (
        "ollama", "sft-a:latest", "deployed", "http://127.0.0.1:11434", True)
    assert [s["name"] for s in v["lineage"]] == ["sft-a", "starter"]
    # The brief lineage the registry always gave is the same chain.
    assert registry.lineage(wb, v["id"]) == [
        {"model_id": v["id"], "name": "sft-a", "kind": "adapter",
         "run": {"id": run.id, "stage": "sft", "recipe": "sft_lora"},
         "datasets": [{"id": sft_data.id, "name": "sft-data", "source": "upload"}]},
        {"model_id": starter.id, "name": "starter", "kind": "base"}]

    # The base: its whole weights folder; nothing trained it here.
    base = version_view(wb, starter.id)
    assert base["size"]["bytes"] == disk_bytes(Path(starter.base_path)) > 100_000
    assert (base["run"], base["recipe"], base["datasets"], base["parent"]) == (None, None, [], None)
    assert base["losses"] == {"final_loss": None, "eval_loss": None} and base["deployments"] == []
    # The card is rendered from the same record.
    with wb.session() as s:
        card = model_card(s, v["id"])
    assert "recipe `sft_lora`; `finetuning_type`: lora, `learning_rate`: 0.001" in card
    assert f"sha256 `{sft_data.sha256}`" in card and "final_loss 0.25" in card


def test_a_votes_dataset_counts_its_votes_and_voters(wb, starter, stub):
    alpha, beta = register_served(wb, stub, ("alpha:1b", "beta:1b"))
    cast = [("ann", "a"), ("bob", "b"), ("ann", "a"), ("cy", "tie"), ("dee", "b")]
    for i, (voter, choice) in enumerate(cast):
        battle = battles.new_battle(wb, alpha.id, beta.id, voter=voter)
        battles.play_turn(wb, battle.id, f"question number {i}")
        battles.vote(wb, battle.id, choice, voter=voter)
    votes_data = preference_export.build_dpo_dataset(wb, "votes-1")
    run = trained(wb, starter, [votes_data], "dpo-a", recipe="dpo_lora")
    (ds,) = version_view(wb, run.output_model_id)["datasets"]
    decisive = [voter for voter, choice in cast if choice in ("a", "b")]
    assert (ds["name"], ds["source"], ds["rows"]) == ("votes-1", "votes", len(decisive))
    assert (ds["votes"], ds["voters"]) == (len(decisive), len(set(decisive))) == (4, 3)
    # Served models have nothing on this disk.
    assert version_view(wb, alpha.id)["size"] == {"bytes": None, "weights_bytes": None, "gguf_bytes": 0,
                                                  "folder": None}


@pytest.mark.slow
def test_rating_interval_and_head_to_head_follow_the_blind_votes(wb, duel, sft_adapter_dir):
    starter, tuned = duel
    assert version_view(wb, tuned.id)["rating"] is None  # no votes yet
    assert version_view(wb, tuned.id)["size"]["bytes"] == disk_bytes(sft_adapter_dir)
    # Blind battles (the arena holds just these two): tuned wins 4, starter 1, a tie, a both-bad.
    plan = ["tuned", "tuned", "starter", "tuned", "tie", "both_bad", "tuned"]
    for prompt, outcome in zip(PROMPTS, plan, strict=True):
        battle = battles.new_battle(wb, mode="anonymous", gen=GREEDY)
        battles.play_turn(wb, battle.id, prompt)
        side = "a" if battle.model_a_id == tuned.id else "b"
        choice = {"tuned": side, "starter": "b" if side == "a" else "a"}.get(outcome, outcome)
        assert battles.vote(wb, battle.id, choice).flags == []
    named = battles.new_battle(wb, starter.id, tuned.id, gen=GREEDY)  # seen names: not rated
    battles.play_turn(wb, named.id, "How are you?")
    battles.vote(wb, named.id, "a")

    t, s = version_view(wb, tuned.id)["rating"], version_view(wb, starter.id)["rating"]
    assert t["votes"] == s["votes"] == len(plan) and t["battles"] == s["battles"] == len(plan)
    assert t["lower"] <= t["rating"] <= t["upper"] and s["lower"] <= s["rating"] <= s["upper"]
    assert t["rating"] > s["rating"] and t["upper"] > t["lower"]

    cmp = compare_versions(wb, tuned.id, starter.id)
    assert cmp["head_to_head"] == {"a_wins": 4, "b_wins": 1, "ties": 1, "both_bad": 1, "votes": 7,
                                   "excluded": {"named": 1}, "blind_only": True}
    assert head_to_head(wb, starter.id, tuned.id, include_named=True) == {
        "a_wins": 2, "b_wins": 4, "ties": 1, "both_bad": 1, "votes": 8, "excluded": {}, "blind_only": False}
    rows = {m["key"]: (m["a"], m["b"]) for m in cmp["metrics"]}
    assert rows["rating"] == (t["rating"], s["rating"])
    assert rows["size_bytes"] == (disk_bytes(sft_adapter_dir), disk_bytes(Path(starter.base_path)))
    # The card keeps counting every vote, named ones included.
    assert version_view(wb, tuned.id)["arena_record"] == {"wins": 4, "losses": 2, "ties": 2}


def test_compare_shows_the_changed_learning_rate_and_refuses_bad_pairs(wb, starter, sft_data):
    a = trained(wb, starter, [sft_data], "sft-a", learning_rate=1e-3)
    b = trained(wb, starter, [sft_data], "sft-b", learning_rate=5e-4)
    cmp = compare_versions(wb, a.output_model_id, b.output_model_id)
    assert (cmp["a"]["name"], cmp["b"]["name"]) == ("sft-a", "sft-b")
    assert cmp["recipe_diff"] == [{"key": "learning_rate", "a": 1e-3, "b": 5e-4}]
    rows = {m["key"]: (m["a"], m["b"]) for m in cmp["metrics"]}
    assert rows["final_loss"] == (1 / STEPS, 1 / STEPS) and rows["rating"] == (None, None)
    assert rows["size_bytes"] == (disk_bytes(a.output_dir), disk_bytes(b.output_dir))
    assert cmp["head_to_head"]["votes"] == 0
    # Against the untrained base every training key differs: the base has none.
    against_base = compare_versions(wb, a.output_model_id, starter.id)["recipe_diff"]
    diff = {d["key"]: (d["a"], d["b"]) for d in against_base}
    assert diff["learning_rate"] == (1e-3, None) and diff["stage"] == ("sft", None)
    assert "output_dir" not in diff
    with pytest.raises(InvalidInput, match="two different versions"):
        compare_versions(wb, starter.id, starter.id)
    with pytest.raises(NotFound):
        compare_versions(wb, starter.id, 999_999)


def test_delete_refuses_a_live_deployment_and_removes_owned_files_after_the_row(wb, starter, starter_dir):
    folder = wb.settings.models_dir / "mine"
    shutil.copytree(starter_dir, folder)
    mine = registry.register_base_model(wb, "mine", str(folder))
    twin = registry.register_base_model(wb, "twin", str(folder))  # the same weights, another name
    with wb.session() as s:
        dep = Deployment(model_id=mine.id, target="ollama", name="mine", status="running")
        s.add(dep)
        s.commit()
        s.refresh(dep)
    with pytest.raises(Conflict, match="'mine' is deployed \\(ollama 'mine', running\\)"):
        registry.delete_model(wb, mine.id)
    assert (folder / "config.json").is_file() and registry.get_model(wb, mine.id)
    with wb.session() as s:  # the deployment failed: it no longer holds the version
        s.get(Deployment, dep.id).status = "failed"
        s.commit()
    registry.delete_model(wb, mine.id)
    with wb.session() as s:
        assert s.get(Deployment, dep.id) is None
    assert folder.is_dir()  # twin still points at it
    registry.delete_model(wb, twin.id)
    assert not folder.exists() and wb.settings.models_dir.is_dir()
    # A folder outside storage/models is the user's: never removed.
    registry.delete_model(wb, starter.id)
    assert (starter_dir / "config.json").is_file()
    assert registry.list_models(wb) == []


def test_delete_refuses_while_a_merge_job_reads_the_version(wb, duel):
    starter, tuned = duel
    job = export.start_merge(wb, tuned.id)
    with pytest.raises(Conflict, match=f"job #{job.id} .* is using 'tuned'"):
        registry.delete_model(wb, tuned.id)
    wb.jobs.cancel(job.id)
    assert wb.jobs.wait(job.id, 120).status == "cancelled"
    registry.delete_model(wb, tuned.id)  # free once the job ended
    assert [m.name for m in registry.list_models(wb)] == ["starter"]


def test_the_rest_routes_give_the_full_view_and_the_comparison(starter_server):
    from fastapi.testclient import TestClient

    server, wb, base = starter_server
    other = registry.register_base_model(wb, "other", base.base_path)
    with TestClient(server) as client:
        r = client.get(f"/api/models/{base.id}")
        body = r.json()
        assert r.status_code == 200, r.text
        # The list fields stay as they were; the view's fields come with them.
        assert {"id", "name", "kind", "parent_id", "run_id", "template", "in_arena", "base_path",
                "adapter_path", "gguf", "tags", "notes", "archived", "created_at", "lineage"} <= set(body)
        assert body["size"]["bytes"] == disk_bytes(Path(base.base_path))
        assert (body["rating"], body["deployments"], body["run"]) == (None, [], None)
        r = client.get(f"/api/models/compare?a={base.id}&b={other.id}")
        assert r.status_code == 200, r.text
        pair = r.json()
        assert (pair["a"]["name"], pair["b"]["name"], pair["recipe_diff"]) == ("starter", "other", [])
        same = client.get(f"/api/models/compare?a={base.id}&b={base.id}")
        assert same.status_code == 422 and "two different" in same.json()["error"]["message"]
        missing = client.get(f"/api/models/compare?a={base.id}&b=999999")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_registry_tab_shows_and_compares_through_its_api_endpoints(tmp_path, starter_dir):
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from tests.conftest import ServerThread, make_workbench

    setup = make_workbench(tmp_path / "home")  # both versions exist before the pickers are built
    base = registry.register_base_model(setup, "starter", str(starter_dir))
    other = registry.register_base_model(setup, "other", str(starter_dir))
    setup.close()
    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        with ServerThread(server) as srv:
            client = Client(srv.url, verbose=False)
            shown = client.predict(base.id, api_name="/version_view")
            compared = client.predict(base.id, other.id, False, api_name="/compare_versions")
            with pytest.raises(Exception, match="two different versions"):
                client.predict(base.id, base.id, False, api_name="/compare_versions")
    finally:
        wb.close()
    size = human_bytes(disk_bytes(Path(base.base_path)))
    assert "### starter" in shown and f"| size on disk | {size} |" in shown
    assert "no blind votes yet" in shown and "**Deployments:** none" in shown
    assert "| A: starter | B: other |" in compared and "**Recipe diff:** none" in compared
    assert "A won 0, B won 0" in compared
