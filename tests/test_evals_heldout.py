"""Held-out suites: arena prompts already in a vote snapshot are not eligible, the seeded
draw repeats, votes on held-out prompts never reach a later snapshot, and a split training
set loses exactly the held-out rows; through the functions, REST and the Evaluate tab."""

from __future__ import annotations

import json

import pytest

from app.arena import preference_export as pe
from app.core.errors import InvalidInput
from app.data import datasets
from app.evals import heldout, suites
from tests.conftest import ROOT
from tests.test_arena_data import cast


def prompts_of(suite) -> list[str]:
    return [p["prompt"] for p in suite.prompts]


def test_arena_prompts_held_out_are_never_trained_on(wb, stub, served):
    a, b, _ = served
    with pytest.raises(InvalidInput, match="no arena prompt is free"):
        heldout.suite_from_battles(wb, "held", limit=5)
    cast(wb, a, b, "trained prompt", "a")
    snapshot = pe.build_dpo_dataset(wb, "first-round")
    assert snapshot.num_rows == 1
    for i in range(6):
        cast(wb, a, b, f"fresh prompt {i}", "a" if i % 2 else "b")
    # The prompt of the snapshotted vote is not eligible, even with a newer vote on it.
    cast(wb, b, a, "trained prompt", "b")
    assert heldout.eligible_battle_prompts(wb) == [f"fresh prompt {i}" for i in range(6)]

    suite = heldout.suite_from_battles(wb, "held", limit=3, seed=5,
                                       checks=[{"type": "max_length", "value": 500}])
    again = heldout.suite_from_battles(wb, "held", limit=3, seed=5)
    assert suite.source == "battles:held-out" and len(suite.prompts) == 3 and suite.checks[0]["value"] == 500
    assert prompts_of(again) == prompts_of(suite) and again.version == 2  # the same draw
    other = heldout.suite_from_battles(wb, "other", limit=3, seed=6)
    assert prompts_of(other) != prompts_of(suite)

    # From now on the held-out prompts' votes stay out of snapshots; the others still count.
    held = set(prompts_of(suite)) | set(prompts_of(other))
    rows, _ = pe.preference_rows(wb)
    trained = {r["messages"][0]["content"] for r in rows}
    assert not trained & held
    assert trained == {f"fresh prompt {i}" for i in range(6)} - held | {"trained prompt"}
    usage = pe.vote_usage(wb)
    assert usage["held_out"] == len(held) and usage["votes"] == 8 - len(held)
    every, _ = pe.preference_rows(wb, pe.VoteFilter(include_held_out=True))
    assert len(every) == len(rows) + len(held)
    assert pe.live_counts(wb)["votes"] == 8  # still counted as votes, just not trained on


def test_a_training_set_split_keeps_the_held_out_rows_out(wb):
    ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
    suite, train = heldout.suite_from_dataset_split(wb, ds.id, "split", count=20, seed=1)
    again, train2 = heldout.suite_from_dataset_split(wb, ds.id, "split", count=20, seed=1)
    assert prompts_of(again) == prompts_of(suite) and suite.source == f"dataset:{ds.id}:held-out"
    assert (train.name, train2.name) == ("sft-train", "sft-train-2")
    assert train.meta["parent_id"] == ds.id and train.meta["held_out"]["suite_id"] == suite.id
    rows = [json.loads(x) for x in open(train.path).read().splitlines()]
    kept_prompts = {"\n\n".join(p for p in (r["instruction"], r.get("input") or "") if p) for r in rows}
    assert len(suite.prompts) == 20 and not kept_prompts & set(prompts_of(suite))
    removed = train.meta["held_out"]["rows"]
    assert removed >= 20 and train.num_rows == ds.num_rows - removed

    with pytest.raises(InvalidInput, match="between 1 and"):
        heldout.suite_from_dataset_split(wb, ds.id, "x", count=ds.num_rows)
    with pytest.raises(InvalidInput, match="between 1 and"):
        heldout.suite_from_dataset_split(wb, ds.id, "x", count=0)
    corpus = datasets.register_file(wb, ROOT / "data/samples/cpt_starter.jsonl", "corpus", "cpt")
    with pytest.raises(InvalidInput, match="hold out rows of an SFT dataset"):
        heldout.suite_from_dataset_split(wb, corpus.id, "x", count=2)
    with pytest.raises(InvalidInput, match="name"):
        heldout.suite_from_dataset_split(wb, ds.id, " ", count=2)
    assert [s.name for s in suites.list_suites(wb)] == ["split"]  # nothing half made


def test_held_out_suites_through_rest_and_the_evaluate_tab(tmp_path, stub):
    from fastapi.testclient import TestClient
    from gradio_client import Client

    import launch
    from app.bootstrap import open_workbench
    from app.core.settings import Settings
    from tests.conftest import ServerThread, home_with_served

    home = tmp_path / "home"
    a, b = home_with_served(home, stub)
    setup = open_workbench(Settings(home=home), start_jobs=False)
    ds = datasets.register_file(setup, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
    setup.close()
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        for i in range(4):
            cast(wb, a, b, f"question {i}", "a")
        with TestClient(server) as c, ServerThread(server) as srv:
            r = c.post("/api/evals/suites/from_battles", json={
                "name": "arena-held", "limit": 2, "seed": 3, "checks": [{"type": "contains", "value": "x"}]})
            assert r.status_code == 201, r.text
            assert r.json()["source"] == "battles:held-out" and len(r.json()["prompts"]) == 2
            r = c.post("/api/evals/suites/from_dataset", json={"name": "sft-held", "dataset_id": ds.id,
                                                               "count": 5})
            assert r.status_code == 201 and r.json()["train_dataset"]["name"] == "sft-train", r.text
            assert c.post("/api/evals/suites/from_dataset", json={"name": "n", "dataset_id": 999,
                                                                  "count": 5}).status_code == 404

            client = Client(srv.url, verbose=False)
            note, _, _ = client.predict("tab-held", "max_length: 400", 1, 0, 64, None, 2, 0,
                                        api_name="/suite_from_battles")
            assert note.startswith("Held out **2** arena prompts as **tab-held v1**")
            note, _, _ = client.predict("tab-split", "", 1, 0, 64, None, 3, 0, ds.id,
                                        api_name="/suite_from_dataset")
            assert note.startswith("Split **3** prompts into **tab-split v1**; train on **sft-train-2**")
            with pytest.raises(Exception, match="give the suite a name"):
                client.predict(" ", "", 1, 0, 64, None, 2, 0, api_name="/suite_from_battles")
    finally:
        wb.close()
