"""Battle history: filters, one battle in full, a vote changed, withdrawn, flagged and
unflagged — the leaderboard and new DPO snapshots follow, built snapshots keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.arena import battles, history, preference_export
from app.arena.leaderboard import leaderboard_cache
from app.core.errors import InvalidInput, NotFound
from app.core.tables import Battle
from app.inference.generation import GenSettings

GREEDY = GenSettings(temperature=0.0)


def fight(wb, a, b, prompt: str, choice: str, voter: str) -> int:
    """A blind battle of ``a`` and ``b`` (anonymous battles sample their pair: set it here)."""
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    with wb.session() as s:
        row = s.get(Battle, battle.id)
        row.mode = "anonymous"
        s.add(row)
        s.commit()
    battles.play_turn(wb, battle.id, prompt)
    battles.vote(wb, battle.id, choice, voter=voter)
    return battle.id


def test_history_filters_and_vote_changes(wb, served):
    alpha, beta, gamma = served
    one = fight(wb, alpha, beta, "tell me about rivers", "a", "ann")
    two = fight(wb, beta, gamma, "tell me about lamps", "b", "bob")
    three = fight(wb, alpha, gamma, "tell me about bridges", "a", "ann")
    assert [b["id"] for b in history.battle_history(wb)["battles"]] == [three, two, one]
    assert {b["id"] for b in history.battle_history(wb, model_id=alpha.id)["battles"]} == {one, three}
    assert [b["id"] for b in history.battle_history(wb, voter="bob")["battles"]] == [two]
    assert history.battle_history(wb, since="2000-01-01", until="2000-12-31")["total"] == 0
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        history.battle_history(wb, since="yesterday")
    detail = history.battle_detail(wb, one)
    assert detail["models"] == {"a": "alpha", "b": "beta"} and detail["turns"][0]["vote"]["choice"] == "a"

    before = preference_export.build_dpo_dataset(wb, name="before")
    rows_before = Path(before.path).read_text()
    board = leaderboard_cache(wb).get().table.set_index("model")
    changed = history.change_vote(wb, one, 0, "b")
    assert (changed.choice, changed.voter) == ("b", "ann")
    after = leaderboard_cache(wb).get().table.set_index("model")
    assert after.loc["beta", "rating"] > board.loc["beta", "rating"]  # the leaderboard follows
    assert Path(before.path).read_text() == rows_before  # a built snapshot keeps its content
    flagged = history.flag_vote(wb, two, 0, True)
    assert history.REVIEW_FLAG in flagged.flags
    assert [b["id"] for b in history.battle_history(wb, flagged=True)["battles"]] == [two]
    assert leaderboard_cache(wb).get().votes_used == 2  # flagged votes stay out
    assert history.REVIEW_FLAG not in history.flag_vote(wb, two, 0, False).flags
    newest = history.change_vote(wb, three, 0, "b")  # the newest vote: its replacement still looks new
    assert leaderboard_cache(wb).get().table.set_index("model").loc["gamma", "rating"] > \
        after.loc["gamma", "rating"] and newest.id > changed.id
    history.withdraw_vote(wb, three, 0)
    assert history.battle_detail(wb, three)["turns"][0]["vote"] is None
    new = preference_export.build_dpo_dataset(wb, name="after")
    rows = [json.loads(line) for line in Path(new.path).read_text().splitlines()]
    chosen = {r["messages"][-1]["content"]: r["chosen"]["content"] for r in rows}
    assert set(chosen) == {"tell me about rivers", "tell me about lamps"}  # the withdrawn vote is gone
    assert chosen["tell me about rivers"].startswith(f"answer {len('beta:1b')} ")  # the changed one flipped
    with pytest.raises(NotFound):
        history.withdraw_vote(wb, three, 0)
    with pytest.raises(InvalidInput):
        history.change_vote(wb, one, 0, "maybe")


def test_history_routes(wb, served):
    import launch

    alpha, beta, _ = served
    bid = fight(wb, alpha, beta, "tell me about rivers", "a", "ann")
    server, _, _ = launch.build_server(wb.settings)
    with TestClient(server) as client:
        found = client.get("/api/battles/history", params={"voter": "ann"}).json()
        assert found["total"] == 1 and found["battles"][0]["votes"][0]["choice"] == "a"
        assert client.get(f"/api/battles/{bid}").json()["models"]["a"] == "alpha"
        tie = client.put(f"/api/battles/{bid}/turns/0/vote", json={"choice": "tie"})
        assert tie.json()["choice"] == "tie"
        assert client.put(f"/api/battles/{bid}/turns/0/flag", json={"flagged": True}).json()["flags"]
        assert client.delete(f"/api/battles/{bid}/turns/0/vote").status_code == 204
        assert client.delete(f"/api/battles/{bid}/turns/0/vote").status_code == 404
        assert client.get("/api/battles/999").status_code == 404
