"""One error contract: every /api route answers bad input with {"error": {"code", "message"}}.

The walk reads the routes off the built server, so a new route is probed without
touching this file; a body or parameter type the probes cannot fake fails loudly.
"""

from __future__ import annotations

import typing

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from app.core import errors
from app.core.settings import Settings
from app.web.errors import install_error_handlers
from tests.conftest import make_workbench

# The codes a client may see; documented in docs/guide/train.md#api.
CODES = {"error", "bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "conflict",
         "too_large", "invalid_input", "rate_limited", "engine_error", "internal_error"}
MISSING_ID = 999_999
API_PATHS = {"/api/train/{stage}", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/cancel",
             "/api/experiments", "/api/metrics/{run_id}", "/api/predict", "/api/feedback",
             "/api/leaderboard", "/api/battles", "/api/jobs", "/api/jobs/{job_id}",
             "/api/jobs/{job_id}/cancel", "/api/models", "/api/models/{model_id}",
             "/api/models/{model_id}/export", "/api/models/{model_id}/card", "/api/deploy",
             "/api/models/{model_id}/check", "/api/battles/{battle_id}/turns",
             "/api/battles/{battle_id}/turns/{turn}/replay",
             "/api/deploy/{job_id}/retry", "/api/deployments", "/api/deployments/{deployment_id}",
             "/api/deployments/{deployment_id}/rollback", "/api/deployments/{deployment_id}/arena",
             "/api/models/{model_id}/push", "/api/hub/pull", "/api/hub/token", "/api/models/compare"}
API_PATHS |= {"/api/datasets/{dataset_id}/quality", "/api/datasets/{dataset_id}/clean", "/api/corpus"}
API_PATHS |= {"/api/judge", "/api/annotation/next", "/api/annotation/{battle_id}/label",
              "/api/annotation/agreement"}
API_PATHS |= {"/api/votes/usage", "/api/votes/dpo", "/api/votes/kto", "/api/votes/training"}
API_PATHS |= {"/api/datasets/selfinstruct", "/api/datasets/selfinstruct/{job_id}/resume",
              "/api/datasets/selfinstruct/{job_id}"}
API_PATHS |= {"/api/datasets/{dataset_id}/quality/jobs", "/api/datasets/{dataset_id}/clean/jobs",
              "/api/datasets/{dataset_id}/quality/latest", "/api/quality/jobs/{job_id}"}
API_PATHS |= {"/api/evals/suites", "/api/evals/suites/{suite_id}", "/api/evals/suites/{suite_id}/versions",
              "/api/evals/runs", "/api/evals/runs/{run_id}", "/api/evals/runs/{run_id}/cancel",
              "/api/evals/runs/{run_id}/results", "/api/evals/compare", "/api/evals/export"}
API_PATHS |= {"/api/evals/suites/from_battles", "/api/evals/suites/from_dataset",
              "/api/evals/loop_report/{model_id}", "/api/evals/loop_report/{model_id}/export",
              "/api/evals/reference", "/api/evals/reference/{reference_id}",
              "/api/evals/reference/{reference_id}/cancel"}
API_PATHS |= {"/api/train/{stage}/plan", "/api/runs/{run_id}/rerun_half_batch"}
API_PATHS |= {"/api/evals/scores/{model_id}", "/api/evals/suites/{suite_id}/gate", "/api/evals/gates",
              "/api/evals/gates/{model_id}", "/api/evals/gates/{model_id}/waive"}
API_PATHS |= {"/api/workers", "/api/workers/{model_id}", "/api/workers/{model_id}/load",
              "/api/workers/{model_id}/unload"}
API_PATHS |= {"/api/assistant/suggest", "/api/assistant/detect", "/api/assistant/explain/{run_id}",
              "/api/assistant/diagnose/{run_id}"}
API_PATHS |= {"/api/playground/chat", "/api/playground/examples", "/api/playground/arena"}
API_PATHS |= {"/api/datasets", "/api/datasets/{dataset_id}", "/api/datasets/{dataset_id}/rows",
              "/api/datasets/{dataset_id}/download"}
API_PATHS |= {"/api/train/presets", "/api/train/presets/{name}"}
API_PATHS |= {"/api/battles/history", "/api/battles/{battle_id}",
              "/api/battles/{battle_id}/turns/{turn}/vote", "/api/battles/{battle_id}/turns/{turn}/flag"}


# Query parameters that are free text (a search, a voter's name): every value is valid.
FREE_TEXT = {("/api/datasets/{dataset_id}/rows", "q"), ("/api/battles/history", "voter")}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import launch

    server, _, wb = launch.build_server(Settings(home=tmp_path_factory.mktemp("home")))
    with TestClient(server) as client:
        yield server, client
    wb.close()


def assert_error(r, status: int | None = None, code: str | None = None) -> dict:
    """``r`` is a 4xx in exactly the contract's shape; returns the error object."""
    where = f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert 400 <= r.status_code < 500, where
    assert status is None or r.status_code == status, where
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, where
    err = body["error"]
    assert err["code"] in CODES and isinstance(err["message"], str) and err["message"].strip(), where
    assert code is None or err["code"] == code, where
    return err


def sample(annotation, name: str):
    """A well-formed value of ``annotation`` whose ids exist nowhere."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is int:
        return MISSING_ID
    if annotation is float:
        return 0.5
    if annotation is bool:
        return False
    if annotation is str:
        return "a"  # also a valid vote choice
    if origin is list:
        return [sample(args[0], name)]
    if origin is dict and args == (str, str) and name == "messages":
        return {"role": "user", "content": "hello"}
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return sample(next(a for a in args if a is not type(None)), name)
    raise AssertionError(f"teach sample() a value for {name}: {annotation}")


def valid_body(model: type[BaseModel]) -> dict:
    return {name: sample(f.annotation, name) for name, f in model.model_fields.items() if f.is_required()}


def wrong_value(annotation) -> str:
    """A query or path value that cannot be parsed as ``annotation`` (str params are enums here)."""
    return {int: "abc", float: "abc", bool: "maybe"}.get(annotation, "nope")


def api_routes(server: FastAPI) -> list[APIRoute]:
    return [r for r in server.routes if isinstance(r, APIRoute) and r.path.startswith("/api/")]


def fill(path: str, params: dict) -> str:
    for name, value in params.items():
        path = path.replace("{" + name + ":path}", str(value)).replace("{" + name + "}", str(value))
    return path


def probe(client: TestClient, route: APIRoute) -> int:
    """Send ``route`` bad input of every kind it takes; returns how many probes were sent."""
    method = sorted(route.methods)[0]
    dep = route.dependant
    body_model = dep.body_params[0].field_info.annotation if dep.body_params else None
    body = valid_body(body_model) if body_model else None
    # Ids and names that exist nowhere: 404, whatever else is right.
    missing = {p.name: MISSING_ID if p.field_info.annotation is int else "nope" for p in dep.path_params}

    def call(path_params=missing, query=None, **kw):
        kw.setdefault("json", body)
        return client.request(method, fill(route.path, path_params), params=query, **kw)

    probed = 0
    if dep.path_params:
        assert_error(call(), 404, "not_found")
        probed += 1
    for p in dep.path_params:
        if p.field_info.annotation is not str:
            err = assert_error(call({**missing, p.name: wrong_value(p.field_info.annotation)}),
                               422, "invalid_input")
            assert p.name in err["message"]
            probed += 1
    # Query parameters of the wrong type or outside their choices (free text takes anything).
    for q in (q for q in dep.query_params if (route.path, q.name) not in FREE_TEXT):
        err = assert_error(call(query={q.name: wrong_value(q.field_info.annotation)}), 422, "invalid_input")
        assert q.name in err["message"]
        probed += 1
    if body_model is not None:
        required = [n for n, f in body_model.model_fields.items() if f.is_required()]
        if required:  # else an empty body is valid (e.g. a PATCH of optional fields)
            err = assert_error(call(json={}), 422, "invalid_input")
            assert all(n in err["message"] for n in required), err
        assert_error(call(json=[]), 422, "invalid_input")
        assert_error(call(json="text"), 422, "invalid_input")
        err = assert_error(call(json={n: {"not": "this"} for n in body_model.model_fields}), 422,
                           "invalid_input")
        assert all(n in err["message"] for n in required), err
        assert_error(call(json=None, content=b"{not json", headers={"content-type": "application/json"}),
                     422, "invalid_input")
        if not dep.path_params:  # else the 404 probe above already sent this body
            assert_error(call())  # well-formed, but every id in it is missing
        probed += 6
    # A method the route does not take.
    # (A URL may match several routes, one per method, or a literal path and a parameter's
    # such as /models/compare and /models/{model_id}: Allow lists them all. The catch-all
    # that answers unknown paths is no route of its own.)
    url = fill(route.path, missing)
    methods = route.methods.union(*(r.methods for r in api_routes(client.app)
                                    if r.include_in_schema and r.path_regex.match(url)))
    other = next((m for m in ("DELETE", "PUT", "PATCH") if m not in methods), None)
    if other is not None:
        r = client.request(other, url)
        assert_error(r, 405, "method_not_allowed")
        assert set(r.headers["allow"].split(", ")) == methods
        probed += 1
    return probed


def test_every_api_route_answers_bad_input_in_one_shape(server):
    server, client = server
    routes = api_routes(server)
    assert API_PATHS <= {r.path for r in routes}  # the walk sees the routes themselves
    probed = {route.path: probe(client, route) for route in routes}
    assert all(probed.values()), probed  # no route went unprobed


def test_unknown_api_routes_are_json_404s_and_the_ui_still_serves(server):
    _, client = server
    for method, path in (("GET", "/api/nope"), ("POST", "/api/runs/1/nope"), ("GET", "/api/")):
        err = assert_error(client.request(method, path), 404, "not_found")
        assert path in err["message"]
    ui = client.get("/")
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    assert client.get("/config").status_code == 200
    assert client.get("/healthz").json()["ok"] is True


def test_the_login_refusal_has_the_same_shape(tmp_path):
    import launch

    server, _, wb = launch.build_server(Settings(home=tmp_path, auth=(("ann", "pw"),)))
    try:
        with TestClient(server) as client:
            for auth in (None, ("ann", "bad"), ("bob", "pw")):
                r = client.get("/api/runs", auth=auth)
                assert_error(r, 401, "unauthorized")
                assert r.headers["www-authenticate"] == "Basic"
            assert client.get("/api/runs", auth=("ann", "pw")).json() == []
    finally:
        wb.close()


def test_each_error_class_has_its_status_and_a_known_code():
    classes = [errors.ForgeloopError, *errors.ForgeloopError.__subclasses__()]
    assert {c.__name__ for c in classes} >= {"InvalidInput", "NotFound", "Conflict", "EngineError",
                                             "RateLimited"}
    assert len({c.code for c in classes}) == len(classes)
    for cls in classes:
        assert cls.code in CODES and 400 <= cls.status < 600, cls


def test_unexpected_errors_answer_500_in_the_same_shape():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret detail")

    @app.get("/api/engine")
    def engine():
        raise errors.EngineError("the model server did not answer")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/api/boom")
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "secret" not in r.text
        r = client.get("/api/engine")
        assert r.status_code == 502
        assert r.json() == {"error": {"code": "engine_error", "message": "the model server did not answer"}}


def test_the_voter_server_has_no_rest_routes(tmp_path):
    """Nothing there to hold to the contract: voters reach the arena through Gradio only."""
    import launch

    wb = make_workbench(tmp_path)
    try:
        app, _ = launch.build_voter_server(wb)
        assert not [r for r in app.routes if isinstance(r, APIRoute)]
        assert not [r for r in app.routes if getattr(r, "path", "").startswith("/api")]
    finally:
        wb.close()
