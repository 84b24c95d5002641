"""Identity and access: who the REST API says acted, and who may reach which route of each server."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.arena import battles
from app.core.settings import Settings
from app.inference.generation import GenSettings
from tests.conftest import home_with_served

ADMIN, ADMIN_PW = "ann", "admin-pw"
OTHER_ADMIN, OTHER_PW = "bob", "bob-pw"


@pytest.fixture
def arena_home(tmp_path, stub):
    home = tmp_path / "home"
    return home, home_with_served(home, stub)


def open_battles(wb, models, n: int) -> list[int]:
    """``n`` battles, each with one turn waiting for a vote."""
    a, b = models
    ids = []
    for _ in range(n):
        battle = battles.new_battle(wb, a.id, b.id, gen=GenSettings(temperature=0.0, max_new_tokens=8))
        battles.play_turn(wb, battle.id, "hello")
        ids.append(battle.id)
    return ids


def vote(client, battle_id: int, auth=None):
    return client.post("/api/feedback", json={"battle_id": battle_id, "choice": "a"}, auth=auth)


def test_without_auth_every_api_caller_is_api_whatever_name_it_sends(arena_home):
    import launch

    home, models = arena_home
    server, _, wb = launch.build_server(Settings(home=home, voter_votes_per_minute=2))
    try:
        first, second, third = open_battles(wb, models, 3)
        with TestClient(server) as client:
            assert vote(client, first, auth=("mallory", "x")).json()["voter"] == "api"
            assert vote(client, second, auth=("eve", "y")).json()["voter"] == "api"
            # One budget for both names: a third name does not get a fresh one.
            refused = vote(client, third, auth=("trent", "z"))
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
    finally:
        wb.close()


def test_with_auth_the_verified_account_votes(arena_home):
    import launch

    home, models = arena_home
    accounts = ((ADMIN, ADMIN_PW), (OTHER_ADMIN, OTHER_PW))
    settings = Settings(home=home, voter_votes_per_minute=1, auth=accounts)
    server, _, wb = launch.build_server(settings)
    try:
        first, second, third = open_battles(wb, models, 3)
        with TestClient(server) as client:
            for auth in ((ADMIN, "wrong"), ("mallory", ADMIN_PW), None):
                assert vote(client, first, auth=auth).status_code == 401
            assert vote(client, first, auth=(ADMIN, ADMIN_PW)).json()["voter"] == ADMIN
            # Each account has its own budget, spent only by its own verified calls.
            assert vote(client, second, auth=(ADMIN, ADMIN_PW)).status_code == 429
            assert vote(client, third, auth=(OTHER_ADMIN, OTHER_PW)).json()["voter"] == OTHER_ADMIN
    finally:
        wb.close()
