"""Registry tab, "Deploy to Ollama" section: deploy the chosen version as a job with a
progress bar, list deployments next to what Ollama has, roll back, delete, battle."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import gradio as gr

from app.core.workbench import Workbench
from app.models import deploy
from tabs.common import UserError, follow_job, progress_html, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["id", "ollama name", "version", "points to", "in Ollama", "created"]


def deployments_view(wb: Workbench) -> tuple[pd.DataFrame, str]:
    listing = deploy.list_deployments(wb)
    rows = [{"id": d["id"], "ollama name": d["name"], "version": d["model"] or f"#{d['model_id']}",
             "points to": d["alias_of"] or "",
             "in Ollama": {True: "yes", False: "missing", None: "?"}[d["present"]],
             "created": (d["created_at"] or "")[:19].replace("T", " ")}
            for d in listing["deployments"] if d["target"] == deploy.OLLAMA]
    if not listing["reachable"]:
        note = f"⚠️ {listing['error']}"
    elif listing["unknown"]:
        note = "Ollama also has models Forgeloop did not deploy: " + ", ".join(
            f"`{u['name']}`" + (" (in Forgeloop's namespace!)" if u["forgeloop_prefix"] else "")
            for u in listing["unknown"])
    else:
        note = f"Ollama at `{listing['host']}` has every deployment listed."
    return to_frame(rows, COLUMNS), note


def build(wb: Workbench, target: gr.Dropdown, status: gr.Markdown, models: gr.Dataframe,
          models_view: Callable[[], tuple]) -> None:
    """The section; ``target`` is the tab's version picker, ``status`` its message line,
    ``models`` its models table, which ``models_view()`` (table, picker update) refreshes."""
    with gr.Accordion("Deploy the chosen model to Ollama", open=False, elem_id="deploy-section") as section:
        with gr.Row():
            mode = gr.Radio([("merged GGUF", "merged"), ("base GGUF + LoRA adapter", "adapter")],
                            value="merged", label="What to send")
            gguf = gr.Dropdown([("lossless (auto)", ""), *[(t, t) for t in ("f16", "bf16", "f32", "q8_0")]],
                               value="", label="GGUF file")
            quantize = gr.Dropdown([("none", ""), *[(q, q) for q in deploy.QUANTIZE]], value="",
                                   label="Ollama quantizes to")
            stable = gr.Checkbox(value=True, label="Also tag it :latest")
        with gr.Row():
            go = gr.Button("Deploy", variant="primary")
            retry = gr.Button("Retry the last failed deploy")
        progress = gr.HTML()
        last_job = gr.State(None)
        table = Table(headers=COLUMNS, label="Deployments", interactive=False)
        note = gr.Markdown()
        with gr.Row():
            chosen = gr.Number(label="Deployment id", precision=0)
            refresh = gr.Button("Refresh")
            rollback = gr.Button("Point :latest here (roll back)")
            to_arena = gr.Button("Add to arena")
            drop = gr.Button("Delete from Ollama", variant="stop")

    def follow(job):
        for view in follow_job(wb, job.id):
            yield f"{job.title} (job #{job.id})…", progress_html(view), job.id, gr.skip(), gr.skip()
        if view["status"] != "succeeded":
            raise UserError(f"{job.title} {view['status']}: {view['error']}")
        frame, text = deployments_view(wb)
        yield f"Deployed **{view['result']['name']}**.", progress_html(view), job.id, frame, text

    @user_errors
    def on_deploy(model_id, mode_, gguf_, quantize_, stable_):
        if model_id is None:
            raise UserError("choose a model first")
        yield from follow(deploy.start_deploy(wb, int(model_id), mode_, gguf_ or None, quantize_ or None,
                                              bool(stable_)))

    @user_errors
    def on_retry(job_id):
        if job_id is None:
            raise UserError("no deploy was started from this page")
        yield from follow(deploy.retry_deploy(wb, int(job_id)))

    def need(deployment_id) -> int:
        if deployment_id is None:
            raise UserError("type a deployment id from the table first")
        return int(deployment_id)

    @user_errors
    def on_rollback(deployment_id):
        row = deploy.rollback(wb, need(deployment_id))
        return (f"`{row['name']}` now serves `{row['alias_of']}`.", *deployments_view(wb))

    @user_errors
    def on_drop(deployment_id):
        row = deploy.delete_deployment(wb, need(deployment_id))
        return (f"Deleted `{row['name']}` from Ollama.", *deployments_view(wb))

    @user_errors
    def on_arena(deployment_id):
        mv = deploy.add_to_arena(wb, need(deployment_id))
        # A new version: the tab's models table and picker learn it at once.
        return (f"**{mv.name}** battles in the arena, served by Ollama.", *deployments_view(wb),
                *models_view())

    outs = [status, progress, last_job, table, note]
    go.click(on_deploy, [target, mode, gguf, quantize, stable], outs, api_name="deploy")
    retry.click(on_retry, last_job, outs, api_name="deploy_retry")
    refresh.click(user_errors(lambda: deployments_view(wb)), None, [table, note], api_name="deployments")
    section.expand(user_errors(lambda: deployments_view(wb)), None, [table, note], show_api=False)
    rollback.click(on_rollback, chosen, [status, table, note], api_name="rollback_deployment")
    drop.click(on_drop, chosen, [status, table, note], api_name="delete_deployment")
    to_arena.click(on_arena, chosen, [status, table, note, models, target], api_name="deployment_to_arena")
