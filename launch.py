"""Start Forgeloop: `python launch.py [--host H] [--port P] [--storage DIR] [--share] [--auth u:p]`."""

from __future__ import annotations

import argparse
import os

from app.settings import Settings, parse_auth


def parse_settings(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(prog="forgeloop", description=__doc__)
    p.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860)")
    p.add_argument("--storage", default=None,
                   help="runtime home for the DB, runs, models, datasets (env FORGELOOP_HOME)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link")
    p.add_argument("--auth", action="append", metavar="USER:PASS",
                   help="require a login; repeat for several accounts")
    a = p.parse_args(argv)
    try:
        auth = parse_auth(a.auth)
    except ValueError as e:
        p.error(str(e))
    return Settings.from_env(home=a.storage, host=a.host, port=a.port, share=a.share or None,
                             auth=auth or None)


def build_server(settings: Settings):
    """The FastAPI app with the workbench UI mounted at /, plus the Blocks and the workbench."""
    import gradio as gr
    from fastapi import FastAPI

    from app.api import api_auth, training_router
    from app.workbench import Workbench
    from tabs import build_ui

    wb = Workbench(settings)
    demo = build_ui(wb)
    server = FastAPI(title="Forgeloop")

    @server.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "schema": wb.schema_version}

    server.include_router(training_router(wb), dependencies=api_auth(settings))

    server = gr.mount_gradio_app(server, demo, path="/", auth=list(settings.auth) or None)
    return server, demo, wb


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    server, demo, wb = build_server(settings)
    if settings.share:
        demo.launch(server_name=settings.host, server_port=settings.port, share=True,
                    auth=list(settings.auth) or None)
        return
    import uvicorn

    print(f"Forgeloop on http://{settings.host}:{settings.port}  (storage: {settings.home})")
    uvicorn.run(server, host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
