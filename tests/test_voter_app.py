"""The shared voter app: login, arena-only functions, limits, votes under the voter's name."""

import httpx
import pytest
from fastapi.testclient import TestClient
from gradio_client import Client
from sqlmodel import select

from app.arena import voters
from app.core.settings import Settings
from app.core.tables import Vote
from tests.conftest import ServerThread, home_with_served, make_workbench

ARENA_ENDPOINTS = {"/arena_send", "/arena_regenerate", "/arena_vote_a", "/arena_vote_b", "/arena_vote_tie",
                   "/arena_vote_both_bad", "/arena_new", "/leaderboard"}
WORKBENCH_WORDS = ("train", "register", "delete", "export", "invite", "voter", "dataset", "starter",
                   "cancel", "resume", "unload", "arena_on", "arena_off", "build", "preview")


@pytest.fixture
def voter_server(tmp_path, stub):
    """The voter app's server (not yet listening), its workbench and an invite code."""
    import launch

    home = tmp_path / "home"
    home_with_served(home, stub)
    wb = make_workbench(home)
    voters.create_voter(wb, "ann", "secret123")
    code = voters.create_invite(wb, max_uses=2).code
    wb.close()
    from app.bootstrap import open_workbench

    wb = open_workbench(Settings(home=home, voter_messages_per_minute=2))
    app, _ = launch.build_voter_server(wb)
    yield app, wb, code
    wb.close()


@pytest.fixture
def voter_app(voter_server):
    """The voter app on a real socket, for gradio_client."""
    app, wb, code = voter_server
    with ServerThread(app) as srv:
        yield srv.url, wb, code


def test_login_is_required_and_invites_work(voter_server):
    app, wb, code = voter_server
    with TestClient(app) as anon:
        assert anon.get("/config").status_code == 401
        assert anon.post("/login", data={"username": "ann", "password": "wrong"}).status_code == 400
    with TestClient(app) as c:
        assert c.post("/login", data={"username": "newbie", "password": code}).status_code == 200
        assert c.get("/config").status_code == 200
    assert "newbie" in [v.username for v in voters.list_voters(wb)]


def test_voter_reaches_only_arena_functions(voter_app):
    url, wb, _ = voter_app
    client = Client(url, auth=("ann", "secret123"), verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    named = set(api["named_endpoints"])
    assert named == ARENA_ENDPOINTS
    for name in named | set(api.get("unnamed_endpoints", {})):
        assert not any(word in str(name).lower() for word in WORKBENCH_WORDS), name
    # The workbench's REST routes do not exist on the voter server.
    with httpx.Client(base_url=url) as c:
        assert c.post("/login", data={"username": "ann", "password": "secret123"}).status_code == 200
        for method, path in (("GET", "/api/runs"), ("POST", "/api/train/sft"), ("GET", "/api/battles"),
                             ("POST", "/api/feedback"), ("GET", "/healthz")):
            assert c.request(method, path).status_code in (404, 405), path

    # Calling each arena endpoint as the voter: a battle, a vote under the voter's name.
    client.predict("anonymous", None, None, 0.7, 0.9, 64, "", "hello arena", "", api_name="/arena_send")
    status = client.predict(api_name="/arena_vote_a")[0]
    assert "Vote saved" in status
    with wb.session() as s:
        vote = s.exec(select(Vote)).one()
    assert vote.voter == "ann" and vote.choice == "a"
    client.predict(api_name="/arena_new")
    table = client.predict(api_name="/leaderboard")[0]
    assert "alpha" in str(table) and "beta" in str(table)


def test_voter_message_limit(voter_app):
    url, _, _ = voter_app
    client = Client(url, auth=("ann", "secret123"), verbose=False)
    for text in ("one", "two"):
        client.predict("anonymous", None, None, 0.7, 0.9, 64, "", text, "", api_name="/arena_send")
        client.predict(api_name="/arena_vote_a")
    with pytest.raises(Exception, match="too many messages"):
        client.predict("anonymous", None, None, 0.7, 0.9, 64, "", "three", "", api_name="/arena_send")
