"""The shared voter app: login, arena-only functions, limits, votes under the voter's name."""

import socket
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from gradio_client import Client
from sqlmodel import select

from app.arena import voters
from app.core.settings import Settings
from app.core.tables import Vote
from app.web.guards import voter_body_limit
from tests.conftest import ServerThread, free_port, home_with_served, make_workbench

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
    client.predict("anonymous", None, None, 0.7, 0.9, 64, None, "", "hello arena", "", api_name="/arena_send")
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
        client.predict("anonymous", None, None, 0.7, 0.9, 64, None, "", text, "", api_name="/arena_send")
        client.predict(api_name="/arena_vote_a")
    with pytest.raises(Exception, match="too many messages"):
        client.predict("anonymous", None, None, 0.7, 0.9, 64, None, "", "three", "", api_name="/arena_send")


# -- what strangers can send the voter server ------------------------------------------------------

VOTER_FORM = {"username": "ann", "password": "secret123"}


def signed_in(app) -> TestClient:
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/login", data=VOTER_FORM).status_code == 200
    return client


def assert_4xx_in_shape(r) -> dict:
    where = f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}"
    assert 400 <= r.status_code < 500, where
    assert "Traceback" not in r.text, where
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, where
    return body["error"]


def test_voters_cannot_upload_files(voter_server):
    import launch

    app, _, _ = voter_server
    (ui,) = launch.mounted_gradio_apps(app)
    marker = b"voter-upload-" + str(id(app)).encode()
    with signed_in(app) as c:
        for path in ("/gradio_api/upload", "/gradio_api/upload?upload_id=x", "/gradio_api/process_recording"):
            r = c.post(path, files={"files": ("evil.txt", marker)})
            assert r.status_code in (403, 404), (path, r.status_code, r.text)
            assert_4xx_in_shape(r)
    folder = Path(ui.uploaded_file_dir)
    stored = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size == len(marker)
              and p.read_bytes() == marker] if folder.exists() else []
    assert stored == []


def test_the_voter_server_has_no_api_docs(voter_server):
    app, _, _ = voter_server
    with signed_in(app) as c:
        for path in ("/docs", "/redoc", "/openapi.json", "/gradio_api/openapi.json", "/monitoring/summary"):
            assert c.get(path).status_code == 404, path


def raw_request(url: str, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and ``body`` on one socket and read the answer until the server closes
    the connection, sending nothing more."""
    host, port = url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_big_bodies_are_refused_before_they_are_read(voter_app):
    url, wb, _ = voter_app
    limit = voter_body_limit(wb.settings)
    assert limit == 64 * 1024  # with the default max_prompt_chars
    # Declared too big: refused at once, though only a few bytes ever arrive.
    head = (b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (10 * limit))
    answer = raw_request(url, head, b'{"data": [')
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer
    # Streamed without a length: refused once the limit passes, before the body ends.
    head = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (limit + 1, b"a" * (limit + 1))  # and no final 0-length chunk
    answer = raw_request(url, head, chunk)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Under the limit: an ordinary answer.
    with httpx.Client(base_url=url) as c:
        r = c.post("/login", data={"username": "ann", "password": "x" * (limit // 2)})
        assert r.status_code == 400


MALFORMED_CALLS = [
    ("/gradio_api/queue/join", b"{not json"),
    ("/gradio_api/queue/join", b"[1, 2]"),
    ("/gradio_api/queue/join", b'{"fn_index": 999, "data": [], "session_hash": "s1"}'),
    ("/gradio_api/queue/join", b'{"fn_index": -1, "data": [], "session_hash": "s1"}'),
    ("/gradio_api/queue/join", b'{"fn_index": "0", "data": [], "session_hash": "s1"}'),
    ("/gradio_api/queue/join", b'{"fn_index": 0, "data": [1], "session_hash": "s1"}'),
    ("/gradio_api/queue/join", b'{"fn_index": 0, "data": "text", "session_hash": "s1"}'),
    ("/gradio_api/queue/join", b'{"data": [], "session_hash": "s1"}'),
    ("/gradio_api/call/arena_send", b"{not json"),
    ("/gradio_api/call/arena_send", b'{"data": [1]}'),
    ("/gradio_api/call/arena_new", b'{"data": [1, 2, 3]}'),
    ("/gradio_api/call/no_such_event", b'{"data": []}'),
    ("/gradio_api/call/arena_new/", b'{"data": [null], "fn_index": 7}'),
    ("/gradio_api/run/arena_send", b'{"data": [1]}'),
    ("/gradio_api/api/arena_send", b'{"data": [1]}'),
    ("/gradio_api/component_server", b'{"session_hash": "s1", "component_id": 9, "fn_name": "x", "data": 1}'),
]


@pytest.mark.parametrize(("path", "body"), MALFORMED_CALLS)
def test_malformed_event_calls_get_a_clean_4xx(voter_server, path, body):
    app, _, _ = voter_server
    with signed_in(app) as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
        assert_4xx_in_shape(r)


def test_hidden_events_still_run_through_the_queue(voter_server):
    """Well-formed calls still run: to an event the API does not list (the prompt's Enter
    key) by its index, and to a listed one by its name."""
    app, _, _ = voter_server
    (hidden,) = [d for d in app_config(app)["dependencies"] if d.get("api_name") is False
                 and len(d["inputs"]) == 11]
    with signed_in(app) as c:
        r = c.post("/gradio_api/queue/join", json={"fn_index": hidden["id"], "data": [None] * 11,
                                                    "session_hash": "s1"})
        assert r.status_code == 200 and r.json()["event_id"], r.text
        r = c.post("/gradio_api/call/arena_new", json={"data": []})  # by name, as curl users call
        assert r.status_code == 200 and r.json()["event_id"], r.text


def app_config(app) -> dict:
    import launch

    (ui,) = launch.mounted_gradio_apps(app)
    return ui.get_blocks().config


def test_the_share_link_leads_to_the_guarded_voter_server(voter_server):
    """--share serves build_voter_server, not a bare Gradio launch without these guards."""
    import launch

    _, wb, _ = voter_server
    opened = []

    def tunnel(host, port, token):  # stands in for Gradio's share servers: no network in tests
        opened.append((host, port, bool(token)))
        return f"http://{host}:{port}"

    server, url = launch.share_voters(wb, free_port(), open_tunnel=tunnel)
    try:
        assert opened == [("127.0.0.1", int(url.rsplit(":", 1)[1]), True)]
        with httpx.Client(base_url=url) as c:
            assert c.get("/docs").status_code == 401
            assert "Disallow: /" in c.get("/robots.txt").text
            assert c.post("/login", data=VOTER_FORM).status_code == 200
            assert c.get("/docs").status_code == 404
            assert c.post("/gradio_api/upload", files={"files": ("a.txt", b"x")}).status_code == 403
    finally:
        server.should_exit = True
