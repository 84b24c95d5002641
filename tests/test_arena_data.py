"""Votes become a leaderboard and training data; the arena API and concurrent voters."""

import json
import threading
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from app.arena import battles, leaderboard, preference_export
from app.arena.leaderboard import leaderboard_cache
from app.arena.preference_export import VoteFilter
from app.core.errors import InvalidInput
from app.core.settings import Settings
from app.core.tables import Vote
from app.inference.generation import GenSettings
from app.train import lf_loader
from tests.conftest import ServerThread, home_with_served

GREEDY = GenSettings(temperature=0.0, max_new_tokens=24)


def cast(wb, a, b, prompt, choice, voter="local"):
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY, voter=voter)
    battles.play_turn(wb, battle.id, prompt)
    return battles.vote(wb, battle.id, choice, voter=voter)


def test_leaderboard_orders_models_by_their_votes(wb, stub, served):
    alpha, beta, gamma = served
    for i in range(12):
        cast(wb, alpha, beta, f"q{i} a-b", "a" if i % 4 else "b")
        cast(wb, beta, gamma, f"q{i} b-g", "a" if i % 4 else "tie")
        cast(wb, gamma, alpha, f"q{i} g-a", "b")
    # Named battles: they count only when asked for (test_leaderboard.py covers the default).
    view = leaderboard_cache(wb).get(rounds=50, include_named=True)
    assert list(view.table["model"]) == ["alpha", "beta", "gamma"]
    assert (view.table["lower"] <= view.table["rating"]).all()
    assert view.votes_used == 36 and view.counts.loc["alpha", "beta"] == 12
    assert view.win_rates.loc["alpha", "gamma"] == 1.0
    assert [s["better"] for s in view.separation] == ["alpha", "beta"]
    # Flagged votes stay out unless asked for; a new vote refreshes the cached board.
    stub.models["gamma:1b"].brain = lambda m, p: "I am Llama, " + p
    for i in range(20):
        cast(wb, gamma, alpha, f"leak {i}", "a")
    clean = leaderboard_cache(wb).get(rounds=50, include_named=True)
    assert clean.votes_used == 36 and clean.excluded == {"flagged:identity": 20}
    flagged = leaderboard.compute(wb, rounds=50, include_flagged=True, include_named=True)
    def gamma(view):
        return float(view.table.set_index("model").loc["gamma", "rating"])

    assert flagged.votes_used == 56 and gamma(flagged) > gamma(clean) + 100


def test_snapshots_are_filtered_immutable_and_exportable(wb, stub, served, tmp_path):
    alpha, beta, gamma = served
    cast(wb, alpha, beta, "one", "a")
    cast(wb, alpha, beta, "two", "b")
    cast(wb, beta, gamma, "three", "a")
    cast(wb, beta, gamma, "four", "both_bad")
    cast(wb, alpha, gamma, "five", "tie")
    counts = preference_export.live_counts(wb)
    assert counts == {"votes": 5, "flagged": 0, "dpo_pairs": 3}

    ds = preference_export.build_dpo_dataset(wb)
    assert ds.num_rows == 3 and ds.name.startswith("votes-dpo-") and ds.source == "votes"
    again = preference_export.build_dpo_dataset(wb, "another-name")
    assert again.id == ds.id  # same votes, same content hash: the snapshot is reused
    rows = [json.loads(x) for x in open(ds.path)]
    assert rows[0]["messages"] == [{"role": "user", "content": "one"}]
    assert rows[1]["chosen"]["content"] == "answer 7 two"  # B (beta:1b, 7 letters) won "two"

    only_ab = preference_export.build_dpo_dataset(wb, "ab", VoteFilter(model_ids=[alpha.id, beta.id]))
    assert only_ab.num_rows == 2 and only_ab.meta["filter"]["model_ids"] == [alpha.id, beta.id]
    with pytest.raises(InvalidInput, match="no usable votes"):
        preference_export.build_dpo_dataset(wb, "future", VoteFilter(since=datetime.now() + timedelta(1)))
    assert preference_export.preference_rows(wb, VoteFilter(min_votes=4))[0] == []

    kto = preference_export.build_kto_dataset(wb, "kto-votes")
    labels = [json.loads(x)["label"] for x in open(kto.path)]
    assert labels.count(True) == 3 and labels.count(False) == 5  # both-bad gives two negatives

    out = tmp_path / "trl.jsonl"
    assert preference_export.export_trl_jsonl(wb, out) == 3
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected"}
    assert first["prompt"][-1]["role"] == "user" and first["chosen"][0]["role"] == "assistant"


@pytest.mark.slow
def test_kto_snapshot_passes_llamafactory_loader_and_leader_is_suggested(wb, starter, served):
    alpha = served[0]
    cast(wb, starter, alpha, "Hello!", "a")
    cast(wb, alpha, starter, "What does a cat say?", "both_bad")
    kto = preference_export.build_kto_dataset(wb, "kto")
    assert lf_loader.loadable_rows(wb, kto, starter) == kto.num_rows == 4  # 2 per vote
    dpo = preference_export.build_dpo_dataset(wb, "dpo")
    suggestion = preference_export.suggest_vote_training(wb, dpo.id)
    assert suggestion == {"recipe": "dpo_lora", "model_id": starter.id, "dataset_ids": [dpo.id]}
    assert preference_export.suggest_vote_training(wb, kto.id, alpha.id)["recipe"] == "kto_lora"


def arena_server(tmp_path, stub):
    import launch

    home = tmp_path / "home"
    models = home_with_served(home, stub)
    server, _, wb = launch.build_server(Settings(home=home, voter_votes_per_minute=0,
                                                 voter_messages_per_minute=3))
    return server, wb, models


@pytest.fixture
def api(tmp_path, stub):
    """The workbench server, called in-process."""
    server, wb, models = arena_server(tmp_path, stub)
    with TestClient(server) as client:
        yield client, wb, models
    wb.close()


@pytest.fixture
def live_api(tmp_path, stub):
    """The same server on a real socket, for many clients at once."""
    server, wb, models = arena_server(tmp_path, stub)
    with ServerThread(server) as srv:
        yield srv.url, wb, models
    wb.close()


def test_arena_api(api):
    client, wb, (a, b) = api
    r = client.post("/api/predict", json={"model_id": a.id, "temperature": 0,
                                          "messages": [{"role": "user", "content": "hello world"}]})
    assert r.status_code == 200 and r.json()["answer"].endswith("world hello")
    assert client.post("/api/predict", json={"model_id": a.id, "messages": []}).status_code == 422
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    battles.play_turn(wb, battle.id, "pick one")
    r = client.post("/api/feedback", json={"battle_id": battle.id, "choice": "b"})
    assert r.status_code == 201 and r.json()["voter"] == "api"
    assert client.post("/api/feedback", json={"battle_id": battle.id, "choice": "a"}).status_code == 409
    assert client.post("/api/feedback", json={"battle_id": 999, "choice": "a"}).status_code == 404
    board = client.get("/api/leaderboard").json()
    assert board["votes"] == 0 and board["excluded"] == {"named": 1}  # blind battles only by default
    board = client.get("/api/leaderboard", params={"include_named": "true"}).json()
    assert board["votes"] == 1 and board["models"][0]["model"] == "beta" and board["excluded"] == {}
    listed = client.get("/api/battles").json()
    assert listed[0]["turns"][0]["vote"]["choice"] == "b"
    # The message budget (3 a minute here) is enforced per caller.
    codes = [client.post("/api/predict", json={"model_id": a.id, "messages": [
        {"role": "user", "content": "again"}]}).status_code for _ in range(3)]
    assert codes[-1] == 429 and "try again in" in client.post("/api/predict", json={
        "model_id": a.id, "messages": [{"role": "user", "content": "x"}]}).json()["error"]["message"]


def test_fifty_concurrent_voters_lose_no_vote(live_api):
    url, wb, (a, b) = live_api
    battle_ids = []
    for i in range(50):
        battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
        battles.play_turn(wb, battle.id, f"question {i}")
        battle_ids.append(battle.id)
    barrier = threading.Barrier(50)
    codes = []

    def voter(bid, i):
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            codes.append(c.post("/api/feedback", json={"battle_id": bid, "choice": "ab"[i % 2]}).status_code)

    threads = [threading.Thread(target=voter, args=(bid, i)) for i, bid in enumerate(battle_ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(201) == 50
    with wb.session() as s:
        assert s.exec(select(func.count(Vote.id))).one() == 50


def test_date_filters_compare_in_utc(wb, served):
    from datetime import UTC, timezone

    alpha, beta, _ = served
    for i in range(3):
        cast(wb, alpha, beta, f"q{i}", "a")
    half_hour_ago = datetime.now(timezone(timedelta(hours=2))) - timedelta(minutes=30)
    assert len(preference_export.select_votes(wb, VoteFilter(since=half_hour_ago))) == 3
    assert preference_export.select_votes(wb, VoteFilter(until=half_hour_ago)) == []
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert len(preference_export.select_votes(wb, VoteFilter(until=tomorrow))) == 3


def test_refused_votes_cost_no_budget(tmp_path, stub):
    import launch

    home = tmp_path / "home"
    a, b = home_with_served(home, stub)
    server, _, wb = launch.build_server(Settings(home=home, voter_votes_per_minute=2))
    try:
        battle_ids = []
        for i in range(2):
            battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
            battles.play_turn(wb, battle.id, f"q{i}")
            battle_ids.append(battle.id)
        with TestClient(server) as c:
            assert c.post("/api/feedback", json={"battle_id": 999, "choice": "a"}).status_code == 404
            bad_choice = {"battle_id": battle_ids[0], "choice": "c"}
            assert c.post("/api/feedback", json=bad_choice).status_code == 422
            codes = [c.post("/api/feedback", json={"battle_id": bid, "choice": "a"}).status_code
                     for bid in battle_ids]
            assert codes == [201, 201]
            over_budget = {"battle_id": battle_ids[0], "choice": "b"}
            assert c.post("/api/feedback", json=over_budget).status_code == 429
    finally:
        wb.close()
