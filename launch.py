"""Start Forgeloop: `python launch.py [--port P] [--storage DIR] [--auth user:pass] ...`."""

from __future__ import annotations

import argparse
import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from app.core.config import CONFIG_FILE, SPECS, SettingError, Spec, check_exposure, load_settings
from app.core.settings import Settings

METAVAR_BY_KIND = {"int": "N", "float": "N", "str": "TEXT", "path": "DIR", "auth": "USER:PASS",
                   "pairs": "KEY=VALUE"}
METAVAR_BY_NAME = {"host": "HOST", "port": "PORT", "voter_port": "PORT", "database_url": "URL"}


def _help(spec: Spec) -> str:
    """The help text, the variables that set it too, and the default (None: the text says)."""
    notes = [f"env {' or '.join(spec.env)}"]
    if spec.kind in ("auth", "pairs"):
        env_form = "comma-separated" + (" or a JSON object" if spec.kind == "pairs" else "")
        notes.insert(0, f"repeat for several; {env_form} in the env")
    if spec.kind == "bool":
        notes.append(f"default {'on' if spec.default else 'off'}")
    elif spec.default is not None:
        notes.append(f"default {spec.default or 'none'}")
    return f"{spec.help} ({'; '.join(notes)})".replace("%", "%%")


def settings_parser() -> argparse.ArgumentParser:
    """One flag per Settings field, named after it (app/core/config.py)."""
    p = argparse.ArgumentParser(
        prog="forgeloop", description=__doc__,
        epilog=f"Each option can also be set by its environment variable or as a key in {CONFIG_FILE} "
               "in the storage folder. Flags win over the environment, which wins over the file.")
    for spec in SPECS:
        kw: dict = {"dest": spec.name, "default": None, "help": _help(spec)}
        if spec.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = METAVAR_BY_NAME.get(spec.name, METAVAR_BY_KIND[spec.kind])
            if spec.kind in ("auth", "pairs"):
                kw["action"] = "append"
        p.add_argument(spec.flag, **kw)
    return p


def parse_settings(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, the environment and forgeloop.toml; a bad value exits with its source
    named, and so does a workbench open to the network without a login."""
    p = settings_parser()
    a = p.parse_args(argv)
    try:
        settings = load_settings(vars(a), environ)
        check_exposure(settings)
        return settings
    except SettingError as e:
        p.error(str(e))


def build_server(settings: Settings):
    """The FastAPI app with the workbench UI mounted at /, plus the Blocks and the workbench."""
    import gradio as gr
    from fastapi import FastAPI

    from app.bootstrap import open_workbench
    from app.inference.workers import worker_pool
    from app.web.access import AccessGate, workbench_gate
    from app.web.annotation_routes import annotation_router
    from app.web.arena_routes import arena_router
    from app.web.assistant_routes import assistant_router
    from app.web.auth import api_auth, api_user
    from app.web.dataset_routes import datasets_router
    from app.web.deploy_routes import deploy_router
    from app.web.errors import install_api_fallback, install_error_handlers
    from app.web.eval_routes import eval_router
    from app.web.hub_routes import hub_router
    from app.web.job_routes import jobs_router
    from app.web.model_routes import models_router
    from app.web.playground_routes import playground_router
    from app.web.quality_routes import quality_router
    from app.web.selfinstruct_routes import selfinstruct_router
    from app.web.train_routes import training_router
    from app.web.votes_routes import votes_router
    from app.web.worker_routes import workers_router
    from tabs import build_ui

    wb = open_workbench(settings)
    worker_pool(wb)  # adopts the model workers an earlier run left, then watches them
    demo = build_ui(wb)
    server = FastAPI(title="Forgeloop")

    @server.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "schema": wb.schema_version}

    login = api_auth(settings)
    routers = (training_router(wb, login), arena_router(wb, api_user, login), jobs_router(wb, login),
               models_router(wb, login), deploy_router(wb, login), hub_router(wb, login),
               quality_router(wb, login), annotation_router(wb, api_user, login),
               selfinstruct_router(wb, login), votes_router(wb, login), eval_router(wb, login),
               workers_router(wb, login), assistant_router(wb, login), playground_router(wb, login),
               datasets_router(wb, login))
    for router in routers:
        # Route by route, not include_router: newer FastAPI keeps an included router as one
        # opaque entry, and the API fallback and the error-contract test read server.routes.
        server.router.routes.extend(router.routes)
    # The UI is mounted at / and would answer unknown /api paths with its own 404.
    install_api_fallback(server)
    install_error_handlers(server)

    server = gr.mount_gradio_app(server, demo, path="/", auth=list(settings.auth) or None)
    ui = quiet_failures(server)
    gate = workbench_gate(settings, gradio_login(ui))
    if gate is not None:
        accept_in_gradio(ui, gate["user_of"])
        server.add_middleware(AccessGate, **gate)
    return server, demo, wb


def mounted_gradio_apps(app) -> list:
    """The Gradio apps mounted on ``app``."""
    return [r.app for r in getattr(app, "routes", ()) if hasattr(getattr(r, "app", None), "get_blocks")]


def quiet_failures(app):
    """The Gradio app mounted on ``app``, set to answer an unexpected error with a plain 500:
    Gradio builds it in debug mode, which sends the traceback to the client."""
    (ui,) = mounted_gradio_apps(app)
    ui.debug = False  # read when the app builds its middleware, at the first request
    return ui


def gradio_login(ui):
    """Who a connection is signed in as through ``ui``'s login form (its session cookie)."""
    names = (f"access-token-{ui.cookie_id}", f"access-token-unsecure-{ui.cookie_id}")

    def user_of(conn) -> str | None:
        for name in names:
            token = conn.cookies.get(name)
            if token and token in ui.tokens:
                return ui.tokens[token]
        return None

    return user_of


def accept_in_gradio(ui, user_of) -> None:
    """Let Gradio's own login checks (config, files, queue, uploads) accept whoever the
    gate accepts, HTTP Basic included: they all ask Gradio's get_current_user."""
    from app.web.access import as_dependency, walk_routes

    current = [r.endpoint for _, r in walk_routes(ui.routes) if getattr(r, "name", "") == "get_current_user"]
    if not current:
        raise RuntimeError("this Gradio has no get_current_user route; check launch.accept_in_gradio")
    ui.dependency_overrides[current[0]] = as_dependency(user_of)


def voter_auth(wb):
    """Gradio auth callable for the voter app: accounts and invite codes from the DB."""
    from app.arena import voters

    return lambda username, password: voters.authenticate(wb, username, password)


VOTER_LOGIN = "Sign in with your voter account or an invite code."


def build_voter_server(wb):
    """The arena-only voter app on its own FastAPI app, behind voter logins, for strangers:
    no API docs, no uploads, capped bodies, event calls checked, no route without a login
    but the login page. --auth accounts are not voters."""
    import gradio as gr
    from fastapi import FastAPI

    from app.web.access import AccessGate
    from app.web.guards import BodyLimit, VoterRules, events_of, voter_body_limit
    from tabs import build_voter_app

    demo = build_voter_app(wb)
    server = FastAPI(title="Forgeloop Arena", docs_url=None, redoc_url=None, openapi_url=None)
    # show_error off: voters read gr.Error messages, not the text of unexpected exceptions.
    server = gr.mount_gradio_app(server, demo, path="/", auth=voter_auth(wb), auth_message=VOTER_LOGIN,
                                 show_error=False, app_kwargs={"openapi_url": None})
    ui = quiet_failures(server)
    # The last added runs first: the size cap, then the login, then the voter rules.
    server.add_middleware(VoterRules, events=events_of(demo.config))
    server.add_middleware(AccessGate, user_of=gradio_login(ui),
                          message="sign in first: log in at / with your voter account or an invite code")
    server.add_middleware(BodyLimit, max_bytes=voter_body_limit(wb.settings))
    return server, demo


# Seconds uvicorn waits for open responses when it stops, after Gradio's streams end.
GRACE_S = 1


def stop_gradio_streams(app) -> None:
    """End the long-lived streams of each Gradio app mounted on ``app``: the session
    heartbeat a browser tab or gradio_client keeps open, and the queue's event streams.
    Gradio's own launch() does this when it closes; a mounted app is left to us, and
    until then uvicorn's shutdown waits on those connections."""
    for mounted in mounted_gradio_apps(app):
        mounted.get_blocks().close(verbose=False)  # queue streams answer "server stopped"
        mounted.stop_event.set()  # heartbeats return


def uvicorn_server(app, host: str, port: int, on_stop=None):
    """A uvicorn server for ``app`` that stops within about a second, open tabs or not, then
    calls ``on_stop()``. (After SIGTERM or Ctrl-C uvicorn raises the signal again once it has
    stopped, so code after ``run()`` would never see it.)"""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            stop_gradio_streams(app)  # here, on the server's own event loop
            await super().shutdown(sockets)
            if on_stop is not None:
                on_stop()

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                 timeout_graceful_shutdown=GRACE_S))


@contextmanager
def gc_paused() -> Iterator[None]:
    """No garbage collection while the app starts, and none of what start-up built in later
    ones. Start-up (Gradio's import included) makes some 250,000 objects that live as long as
    the process: modules, classes, tables, components, routes. Each collection meanwhile walks
    them all again (about half a second in all) and finds next to nothing to free; gc.freeze()
    then leaves them out of every later collection too."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    with gc_paused():
        server, _, wb = build_server(settings)
    # Closing the workbench stops the model workers this app started; job processes keep running.
    workbench = uvicorn_server(server, settings.host, settings.port, on_stop=wb.close)

    print(f"Forgeloop on http://{settings.host}:{settings.port}  (storage: {settings.home})")
    try:
        if not settings.share:
            workbench.run()
            return
        # Only the voter app goes through the share link; the workbench stays local.
        voter_server, url = share_voters(wb, settings.voter_port or settings.port + 1)
        print(f"Voter app shared at {url}" if url else "Could not open a share link; see the message above.")
        try:
            workbench.run()
        finally:
            voter_server.should_exit = True
            close_tunnels()
    finally:
        wb.close()


def share_voters(wb, port: int, open_tunnel=None):
    """Serve the voter server (`build_voter_server`, with all its guards) on 127.0.0.1:``port``
    and open a public link to it; returns the uvicorn server and the link (None if the
    tunnel failed). ``open_tunnel(host, port, token)`` defaults to Gradio's share tunnel."""
    import threading
    import time

    app, demo = build_voter_server(wb)
    server = uvicorn_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the voter app could not listen on 127.0.0.1:{port}")
        time.sleep(0.05)
    demo.share = True  # robots.txt then asks crawlers to stay away
    try:
        return server, (open_tunnel or gradio_tunnel)("127.0.0.1", port, demo.share_token)
    except Exception as e:  # no network: the workbench still runs, as with Gradio's own launch()
        print(f"Could not create a share link: {e}")
        return server, None


def gradio_tunnel(host: str, port: int, token: str) -> str:
    """A public https link to ``host:port`` through Gradio's share servers."""
    from gradio import networking

    address = networking.setup_tunnel(host, port, token, None, None)
    return "https://" + address.split("://", 1)[-1]


def close_tunnels() -> None:
    from gradio.tunneling import CURRENT_TUNNELS

    for tunnel in CURRENT_TUNNELS:
        tunnel.kill()


if __name__ == "__main__":
    main()
