"""Train tab: pick a recipe, a model and data; start; watch progress and loss."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app import training
from app.workbench import Workbench
from tabs.common import dataset_choices, model_choices, user_errors

RUN_COLUMNS = ["id", "name", "stage", "status", "final_loss", "model"]


def runs_frame(wb: Workbench) -> pd.DataFrame:
    rows = [
        {"id": r.id, "name": r.name, "stage": r.stage, "status": r.status,
         "final_loss": r.metrics.get("final_loss"), "model": r.output_model_id or ""}
        for r in training.list_runs(wb)
    ]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def progress_html(view: dict) -> str:
    pct = max(0.0, min(100.0, view["percent"]))
    eta = f" · ETA {view['eta']}" if view["status"] == "running" and view["eta"] else ""
    return (
        f"<div class='fl-progress' data-status='{view['status']}'>"
        f"<b>{view['name']}</b> — {view['status']} · step {view['step']}/{view['total_steps']}{eta}"
        f"<div style='background:#ddd;border-radius:4px;height:14px'>"
        f"<div style='background:#4a7;width:{pct:.1f}%;height:14px;border-radius:4px'></div>"
        f"</div></div>"
    )


def build(wb: Workbench) -> gr.Tab:
    recipes = training.load_recipes()
    with gr.Tab("Train", id="train") as tab:
        with gr.Row():
            recipe = gr.Dropdown([(r.title, r.name) for r in recipes.values()],
                                 value="sft_lora", label="Recipe")
            model = gr.Dropdown(model_choices(wb), label="Start from model")
            data = gr.Dropdown(dataset_choices(wb, "sft"), multiselect=True, label="Datasets")
        with gr.Row():
            run_name = gr.Textbox(label="Run name (optional)")
            epochs = gr.Number(value=3, label="Epochs", minimum=0.01)
            lr = gr.Number(value=1e-3, label="Learning rate")
            start = gr.Button("Start training", variant="primary")
        status = gr.Markdown()
        with gr.Row():
            watch = gr.Dropdown(label="Watch run", choices=[])
            cancel = gr.Button("Cancel run", variant="stop")
        progress = gr.HTML()
        plot = gr.LinePlot(x="step", y="value", color="series", label="Loss", height=260)
        command = gr.Code(label="Equivalent command", language="shell", interactive=False)
        log = gr.Textbox(label="Log tail", lines=8, max_lines=8, autoscroll=True)
        runs = gr.Dataframe(value=lambda: runs_frame(wb), label="Runs", interactive=False)
        timer = gr.Timer(2.0)

        def refresh_choices(recipe_name):
            stage = recipes[recipe_name].stage if recipe_name in recipes else "sft"
            return gr.update(choices=model_choices(wb)), gr.update(choices=dataset_choices(wb, stage),
                                                                  value=[])

        def run_choices():
            return [(f"#{r.id} {r.name} ({r.status})", r.id) for r in training.list_runs(wb)]

        @user_errors
        def on_start(recipe_name, model_id, dataset_ids, name, n_epochs, rate):
            if model_id is None:
                raise gr.Error("choose a model to start from")
            req = training.TrainRequest(
                recipe=recipe_name, model_id=int(model_id), dataset_ids=[int(i) for i in dataset_ids or []],
                name=(name or "").strip() or None,
                overrides={"num_train_epochs": float(n_epochs), "learning_rate": float(rate)},
            )
            run = training.start_run(wb, req)
            return (f"Queued run **{run.name}**.", gr.update(choices=run_choices(), value=run.id),
                    runs_frame(wb))

        def on_tick(run_id):
            if run_id is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), runs_frame(wb)
            view = training.run_view(wb, int(run_id))
            text = view["log"] + (f"\n\nERROR: {view['error']}" if view["error"] else "")
            return (progress_html(view), pd.DataFrame(view["points"], columns=["step", "value", "series"]),
                    view["command"], text, runs_frame(wb))

        @user_errors
        def on_cancel(run_id):
            if run_id is None:
                raise gr.Error("choose a run to cancel")
            run = wb.jobs.cancel(int(run_id))
            return f"Cancelling **{run.name}**; it will save what it has trained."

        recipe.change(refresh_choices, recipe, [model, data], show_api=False)
        tab.select(refresh_choices, recipe, [model, data], show_api=False)
        tab.select(lambda: gr.update(choices=run_choices()), None, watch, show_api=False)
        start.click(on_start, [recipe, model, data, run_name, epochs, lr], [status, watch, runs],
                    api_name="start_training")
        cancel.click(on_cancel, watch, status, api_name="cancel_run")
        outputs = [progress, plot, command, log, runs]
        watch.change(on_tick, watch, outputs, show_api=False)
        timer.tick(on_tick, watch, outputs, show_api=False)
    return tab
