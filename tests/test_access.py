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


# -- the workbench with --auth: one login for every route but the health check -------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """The workbench with --auth, called in-process."""
    import launch

    server, _, wb = launch.build_server(Settings(home=tmp_path_factory.mktemp("home"),
                                                 auth=((ADMIN, ADMIN_PW),)))
    with TestClient(server, raise_server_exceptions=False) as client:
        yield server, client
    wb.close()


def logged_in(server) -> TestClient:
    """A client holding the UI's login cookie (and no HTTP Basic credentials)."""
    client = TestClient(server, raise_server_exceptions=False)
    assert client.post("/login", data={"username": ADMIN, "password": ADMIN_PW}).status_code == 200
    return client


def assert_refused(r) -> None:
    where = f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}"
    assert r.status_code == 401, where
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == "unauthorized", where


def test_auth_guards_the_api_docs_and_either_login_opens_them(guarded):
    server, client = guarded
    with logged_in(server) as browser:
        for path in ("/docs", "/openapi.json", "/redoc"):
            for auth in (None, (ADMIN, "wrong"), ("mallory", ADMIN_PW)):
                assert_refused(client.get(path, auth=auth))
            assert client.get(path, auth=(ADMIN, ADMIN_PW)).status_code == 200, path
            assert browser.get(path).status_code == 200, path
    assert "/api/feedback" in client.get("/openapi.json", auth=(ADMIN, ADMIN_PW)).json()["paths"]
    assert client.get("/healthz").json()["ok"] is True


def test_auth_guards_gradio_files_and_uploads_for_basic_and_cookie_logins(guarded):
    server, client = guarded
    upload = {"files": ("note.txt", b"for admins only")}
    assert_refused(client.post("/gradio_api/upload", files=upload))
    stored = client.post("/gradio_api/upload", files=upload, auth=(ADMIN, ADMIN_PW))
    assert stored.status_code == 200, stored.text
    url = f"/gradio_api/file={stored.json()[0]}"
    for path in (url, url.replace("/gradio_api", "", 1)):
        assert_refused(client.get(path))
        assert_refused(client.get(path, auth=(ADMIN, "wrong")))
    assert client.get(url, auth=(ADMIN, ADMIN_PW)).content == b"for admins only"
    with logged_in(server) as browser:
        assert browser.get(url).content == b"for admins only"
        assert browser.get("/config").status_code == 200
        # The REST API takes HTTP Basic only: a cookie there would let any site post as the admin.
        assert_refused(browser.get("/api/runs"))

