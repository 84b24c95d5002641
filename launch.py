"""Start Forgeloop: `python launch.py [--host H] [--port P] [--storage DIR] [--share] [--auth u:p]`."""

from __future__ import annotations

import argparse
import os

from app.core.settings import Settings, parse_auth


def parse_settings(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="forgeloop", description=__doc__)
    p.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860)")
    p.add_argument("--storage", default=None,
                   help="runtime home for the DB, runs, models, datasets (env FORGELOOP_HOME)")
    p.add_argument("--share", action="store_true",
                   help="share the arena-only voter app through a public Gradio link "
                        "(the workbench stays on --host/--port)")
    p.add_argument("--voter-port", type=int, default=None,
                   help="local port of the voter app with --share (default: --port + 1)")
    p.add_argument("--chat-gpu", type=int, default=None,
                   help="GPU index for arena models served in-process (default: the first visible)")
    p.add_argument("--auth", action="append", metavar="USER:PASS",
                   help="require a login; repeat for several accounts")
    a = p.parse_args(argv)
    try:
        auth = parse_auth(a.auth)
    except ValueError as e:
        p.error(str(e))
    return Settings.from_env(home=a.storage, host=a.host, port=a.port, share=a.share or None,
                             auth=auth or None, voter_port=a.voter_port, chat_gpu=a.chat_gpu)


def build_server(settings: Settings):
    """The FastAPI app with the workbench UI mounted at /, plus the Blocks and the workbench."""
    import gradio as gr
    from fastapi import FastAPI

    from app.bootstrap import open_workbench
    from app.web.arena_routes import arena_router
    from app.web.auth import api_auth, api_user
    from app.web.errors import install_api_fallback, install_error_handlers
    from app.web.train_routes import training_router
    from tabs import build_ui

    wb = open_workbench(settings)
    demo = build_ui(wb)
    server = FastAPI(title="Forgeloop")

    @server.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "schema": wb.schema_version}

    login = api_auth(settings)
    for router in (training_router(wb, login), arena_router(wb, api_user, login)):
        # Route by route, not include_router: newer FastAPI keeps an included router as one
        # opaque entry, and the API fallback and the error-contract test read server.routes.
        server.router.routes.extend(router.routes)
    # The UI is mounted at / and would answer unknown /api paths with its own 404.
    install_api_fallback(server)
    install_error_handlers(server)

    server = gr.mount_gradio_app(server, demo, path="/", auth=list(settings.auth) or None)
    return server, demo, wb


def voter_auth(wb):
    """Gradio auth callable for the voter app: accounts and invite codes from the DB."""
    from app.arena import voters

    return lambda username, password: voters.authenticate(wb, username, password)


def build_voter_server(wb):
    """The arena-only voter app on its own FastAPI app, behind voter logins."""
    import gradio as gr
    from fastapi import FastAPI

    from tabs import build_voter_app

    demo = build_voter_app(wb)
    return gr.mount_gradio_app(FastAPI(title="Forgeloop Arena"), demo, path="/", auth=voter_auth(wb),
                               auth_message="Sign in with your voter account or an invite code."), demo


# Seconds uvicorn waits for open responses when it stops, after Gradio's streams end.
GRACE_S = 1


def stop_gradio_streams(app) -> None:
    """End the long-lived streams of each Gradio app mounted on ``app``: the session
    heartbeat a browser tab or gradio_client keeps open, and the queue's event streams.
    Gradio's own launch() does this when it closes; a mounted app is left to us, and
    until then uvicorn's shutdown waits on those connections."""
    for route in app.routes:
        mounted = getattr(route, "app", None)
        if hasattr(mounted, "stop_event") and hasattr(mounted, "get_blocks"):
            mounted.get_blocks().close(verbose=False)  # queue streams answer "server stopped"
            mounted.stop_event.set()  # heartbeats return


def uvicorn_server(app, host: str, port: int):
    """A uvicorn server for ``app`` that stops within about a second, open tabs or not."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            stop_gradio_streams(app)  # here, on the server's own event loop
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                 timeout_graceful_shutdown=GRACE_S))


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if settings.chat_gpu is not None:  # before anything imports torch
        os.environ["CUDA_VISIBLE_DEVICES"] = str(settings.chat_gpu)
    server, _, wb = build_server(settings)
    workbench = uvicorn_server(server, settings.host, settings.port)

    print(f"Forgeloop on http://{settings.host}:{settings.port}  (storage: {settings.home})")
    if not settings.share:
        workbench.run()
        return
    import threading

    from tabs import build_voter_app

    threading.Thread(target=workbench.run, daemon=True).start()
    # Only the voter app goes through the share link; the workbench stays local.
    build_voter_app(wb).launch(server_name="127.0.0.1", server_port=settings.voter_port or settings.port + 1,
                               share=True, auth=voter_auth(wb),
                               auth_message="Sign in with your voter account or an invite code.")


if __name__ == "__main__":
    main()
