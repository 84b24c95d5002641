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



# -- every route of both servers, with no login, a voter's and an admin's ----------------------------

VOTER, VOTER_PW = "vera", "vera-pass"
ADMIN_VOTER_PW = "bob-voter-pw"  # bob is an admin who also has a voter account
# What anyone may fetch: the health check, the login page and form, and the page's files.
OPEN = {"/healthz", "/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css",
        "/gradio_api/theme.css", "/robots.txt", "/manifest.json", "/pwa_icon", "/pwa_icon/{size}",
        "/assets/{path:path}", "/static/{path:path}", "/svelte/{path:path}"}
# The voter server, route by route. A route that appears in a new Gradio version fails the
# walk until it is classified here: voters reach it, or it is closed to them.
VOTERS_REACH = {
    "/config", "/config/", "/gradio_api/info", "/gradio_api/info/", "/gradio_api/user", "/gradio_api/user/",
    "/gradio_api/login_check", "/gradio_api/login_check/", "/gradio_api/token", "/gradio_api/token/",
    "/gradio_api/app_id", "/gradio_api/app_id/", "/gradio_api/deep_link", "/gradio_api/startup-events",
    "/gradio_api/heartbeat/{session_hash}", "/gradio_api/queue/join", "/gradio_api/queue/data",
    "/gradio_api/queue/status", "/gradio_api/call/{api_name}", "/gradio_api/call/{api_name}/",
    "/gradio_api/call/{api_name}/{event_id}", "/gradio_api/cancel", "/gradio_api/reset", "/gradio_api/reset/",
    "/gradio_api/file={path_or_url:path}", "/gradio_api/file/{path:path}",
    "/gradio_api/custom_component/{id}/{environment}/{type}/{file_name}",
}
VOTERS_FORBIDDEN = {"/gradio_api/upload", "/gradio_api/upload_progress", "/gradio_api/process_recording"}
VOTERS_NOT_FOUND_PREFIXES = ("/openapi.json", "/docs", "/redoc", "/monitoring", "/gradio_api/openapi.json",
                             "/gradio_api/run/", "/gradio_api/api/", "/gradio_api/component_server",
                             "/gradio_api/dev/", "/gradio_api/proxy=", "/gradio_api/stream/",
                             "/gradio_api/vibe-", "/gradio_api/undo-vibe-")
# Paths that are no route at all, probed too: everything but the open list needs a login first.
NOT_ROUTES = ["/file=/etc/passwd", "/nope", "/api/nope", "/gradio_api/nope"]


@pytest.fixture(scope="module")
def both_servers(tmp_path_factory):
    """The workbench with --auth and the voter server on one workbench, on real sockets."""
    import launch
    from app.arena import voters
    from tests.conftest import ServerThread

    settings = Settings(home=tmp_path_factory.mktemp("home"),
                        auth=((ADMIN, ADMIN_PW), (OTHER_ADMIN, OTHER_PW)))
    server, _, wb = launch.build_server(settings)
    voters.create_voter(wb, VOTER, VOTER_PW)
    voters.create_voter(wb, OTHER_ADMIN, ADMIN_VOTER_PW)
    voter_server, _ = launch.build_voter_server(wb)
    with ServerThread(server) as main, ServerThread(voter_server) as shared:
        yield (server, main.url), (voter_server, shared.url)
    wb.close()


def concrete(path: str) -> str:
    """A request path for a route path: each parameter becomes "1"."""
    out, depth = "", 0
    for ch in path:
        depth += ch == "{"
        if depth == 0:
            out += ch
        elif ch == "}":
            depth, out = depth - 1, out + "1"
    return out


def probes(app) -> list[tuple[str, str, str]]:
    """(route path, method, request path) for every HTTP route of ``app``, mounted ones included,
    and for the paths that are no route; the logout route last (it ends cookie sessions)."""
    from app.web.access import walk_routes

    found = {(path, method) for path, route in walk_routes(app.routes)
             for method in (getattr(route, "methods", None) or ())}
    found |= {(path, "GET") for path in NOT_ROUTES}
    return [(path, method, concrete(path)) for path, method in
            sorted(found, key=lambda p: (p[0] == "/logout", p))]


def status_of(client, method: str, path: str) -> int:
    """The status line only: some routes answer with an endless event stream."""
    with client.stream(method, path, timeout=15) as r:
        return r.status_code


def walk(client, app) -> dict[tuple[str, str], int]:
    return {(path, method): status_of(client, method, url) for path, method, url in probes(app)}


def log_in(client, user: str, password: str):
    r = client.post("/login", data={"username": user, "password": password})
    assert r.status_code == 200, (user, r.status_code, r.text)
    return client


def test_the_walk_sees_mounted_and_included_routes(both_servers):
    (server, _), (voter_server, _) = both_servers
    for app in (server, voter_server):
        paths = {path for path, _, _ in probes(app)}
        assert {"/gradio_api/upload", "/gradio_api/queue/join", "/config", "/"} <= paths
    assert "/api/feedback" in {path for path, _, _ in probes(server)}


def test_every_workbench_route_but_the_open_ones_is_for_admins_only(both_servers):
    import httpx

    (server, url), _ = both_servers
    with httpx.Client(base_url=url) as anon, \
            httpx.Client(base_url=url, auth=(VOTER, VOTER_PW)) as voter, \
            httpx.Client(base_url=url, auth=(OTHER_ADMIN, ADMIN_VOTER_PW)) as voter_password, \
            httpx.Client(base_url=url, auth=(ADMIN, ADMIN_PW)) as admin:
        seen = {name: walk(c, server) for name, c in (("anon", anon), ("voter", voter),
                                                      ("admin with a voter password", voter_password),
                                                      ("admin", admin))}
    wrong = []
    for (path, method), status in seen["admin"].items():
        is_open = path in OPEN
        for who in ("anon", "voter", "admin with a voter password"):
            if (seen[who][path, method] == 401) == is_open:
                wrong.append(f"{who} {method} {path}: {seen[who][path, method]}")
        if status == 401:  # a 403 is Gradio's own refusal (a path it does not serve, a mode not on)
            wrong.append(f"admin {method} {path}: {status}")
    assert not wrong, "\n".join(wrong)
    assert seen["anon"]["/healthz", "GET"] == 200
    assert seen["admin"]["/docs", "GET"] == seen["admin"]["/openapi.json", "GET"] == 200


def voter_expectation(path: str) -> str | None:
    if path in OPEN:
        return "open"
    if path in VOTERS_FORBIDDEN:
        return "forbidden"
    if path.startswith(VOTERS_NOT_FOUND_PREFIXES) or path in NOT_ROUTES:
        return "absent"
    return "voters" if path in VOTERS_REACH else None


def test_every_voter_server_route_is_for_voters_only_and_no_api_exists(both_servers):
    import httpx

    _, (voter_server, url) = both_servers
    unclassified = sorted({path for path, _, _ in probes(voter_server) if voter_expectation(path) is None})
    assert not unclassified, f"classify these voter-server routes in tests/test_access.py: {unclassified}"
    assert not [p for p, _, _ in probes(voter_server) if p.startswith("/api/") and p not in NOT_ROUTES]
    # --auth accounts are not voters: their admin password does not sign in here.
    with httpx.Client(base_url=url) as c:
        assert c.post("/login", data={"username": ADMIN, "password": ADMIN_PW}).status_code == 400
        assert c.post("/login", data={"username": OTHER_ADMIN, "password": OTHER_PW}).status_code == 400
    with httpx.Client(base_url=url) as anon, \
            httpx.Client(base_url=url, auth=(ADMIN, ADMIN_PW)) as admin, \
            httpx.Client(base_url=url) as voter, httpx.Client(base_url=url) as admin_voter:
        log_in(voter, VOTER, VOTER_PW)
        log_in(admin_voter, OTHER_ADMIN, ADMIN_VOTER_PW)
        seen = {name: walk(c, voter_server) for name, c in (("anon", anon), ("admin", admin),
                                                            ("voter", voter), ("admin_voter", admin_voter))}
    wrong = []
    for (path, method), status in seen["voter"].items():
        kind = voter_expectation(path)
        for who in ("anon", "admin"):  # strangers, and admins without a voter login
            if (seen[who][path, method] == 401) == (kind == "open"):
                wrong.append(f"{who} {method} {path}: {seen[who][path, method]}")
        expected = {"forbidden": {403}, "absent": {404}}.get(kind)
        # Where voters get in, Gradio may still refuse (403: a file it does not serve).
        ok = status in expected if expected else status != 401 and status < 500
        if not ok or seen["admin_voter"][path, method] != status:
            wrong.append(f"voters {method} {path} ({kind}): {status}, {seen['admin_voter'][path, method]}")
    assert not wrong, "\n".join(wrong)


def test_websockets_need_the_same_logins(both_servers):
    from starlette.testclient import TestClient as Plain
    from starlette.websockets import WebSocketDisconnect

    (server, _), (voter_server, _) = both_servers
    for app in (server, voter_server):
        with pytest.raises(WebSocketDisconnect) as closed:
            with Plain(app).websocket_connect("/gradio_api/stream/1"):
                pass
        assert closed.value.code == 1008
    with Plain(server).websocket_connect("/gradio_api/stream/1", auth=(ADMIN, ADMIN_PW)) as ws:
        ws.close()
    voter = log_in(Plain(voter_server), VOTER, VOTER_PW)  # voters stream nothing: closed to them too
    with pytest.raises(WebSocketDisconnect) as closed:
        with voter.websocket_connect("/gradio_api/stream/1"):
            pass
    assert closed.value.code == 1008


def test_ui_failures_answer_without_a_traceback(tmp_path):
    """Gradio builds its app in debug mode, which sends a failure's traceback to the client."""
    import launch

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        with TestClient(server, raise_server_exceptions=False) as client:
            r = client.post("/gradio_api/call/no_such_event", json={"data": []})
            assert r.status_code == 500 and "Traceback" not in r.text and "gradio" not in r.text.lower()
    finally:
        wb.close()
