"""Train tab: pick a recipe, a model and data; start; watch progress and loss; manage runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import yaml

from app.assistant.service import explain_run
from app.core.workbench import Workbench
from app.evals.suites import list_suites
from app.models.registry import list_models
from app.train import presets, training
from app.train.overrides import parse_advanced
from tabs import train_assistant
from tabs.common import UserError, dataset_choices, model_choices, progress_html, user_errors
from tabs.plots import curve_figure
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

WARNINGS = {"not_learning": "The model did not learn.", "diverging": "Training diverged.",
            "overfitting": "The model over-fitted."}
RUN_COLUMNS = ["id", "name", "stage", "status", "final loss", "base model", "new model", "gpus"]
# Form fields mapped onto LLaMA-Factory keys; the recipe's value is the default.
FIELDS = {
    "num_train_epochs": ("Epochs", 3.0),
    "learning_rate": ("Learning rate", 1e-4),
    "per_device_train_batch_size": ("Batch size per device", 4),
    "cutoff_len": ("Max tokens per example", 1024),
    "lora_rank": ("LoRA rank", 8),
}


def runs_frame(wb: Workbench) -> pd.DataFrame:
    names = {m.id: m.name for m in list_models(wb)}
    rows = []
    for r in training.list_runs(wb):
        loss = r.metrics.get("final_loss")
        rows.append({"id": r.id, "name": r.name, "stage": r.stage, "status": r.status,
                     "final loss": "" if loss is None else f"{loss:.4g}",
                     "base model": names.get(r.model_id, ""), "new model": names.get(r.output_model_id, ""),
                     "gpus": r.gpus or "cpu"})
    return to_frame(rows, RUN_COLUMNS)


def run_choices(wb: Workbench) -> list[tuple[str, int]]:
    return [(f"#{r.id} {r.name} ({r.status})", r.id) for r in training.list_runs(wb)]


def gpu_choices(wb: Workbench) -> list[tuple[str, int]]:
    return [(g.label, g.index) for g in wb.hardware().gpus]


@dataclass
class Form:
    recipe: gr.Dropdown
    about: gr.Markdown
    model: gr.Dropdown
    data: gr.Dropdown
    name: gr.Textbox
    fields: dict[str, gr.Number]
    val_size: gr.Slider
    gpus: gr.CheckboxGroup
    deepspeed: gr.Dropdown
    advanced: gr.Code
    evals: gr.Dropdown
    eval_judge: gr.Dropdown
    plan: gr.Button
    start: gr.Button


def plan_markdown(preview: dict) -> str:
    """The memory plan before a run: the micro-batch chosen and why, the estimate by part."""
    mem = preview["memory"]
    lines = [f"**Plan:** {mem['reason']}."]
    if mem.get("estimate"):
        parts = ", ".join(f"{k.replace('_', ' ')} {v / 2**30:.2f} GiB" for k, v in mem["estimate"].items()
                          if k not in ("total", "trainable_params") and v)
        lines.append(f"Estimated memory per device: **{mem['estimate']['total'] / 2**30:.2f} GiB** ({parts}; "
                     f"{mem['estimate']['trainable_params']:,} trainable parameters).")
    cfg = preview["config"]
    lines.append(f"Micro-batch {cfg.get('per_device_train_batch_size')} × accumulation "
                 f"{cfg.get('gradient_accumulation_steps')}, cutoff {cfg.get('cutoff_len')} tokens, "
                 + ("bf16" if cfg.get("bf16") else "fp16" if cfg.get("fp16") else "fp32")
                 + (f", GPUs {', '.join(map(str, preview['gpus']))}" if preview["gpus"] else ", CPU") + ".")
    return "\n\n".join(lines)


def suite_names(wb: Workbench) -> list[str]:
    return sorted({x.name for x in list_suites(wb)})


def build_form(wb: Workbench, recipes: dict[str, training.Recipe]) -> Form:
    with gr.Row():
        recipe = gr.Dropdown([(r.title, r.name) for r in recipes.values()], value="sft_lora",
                             label="Recipe", scale=2)
        model = gr.Dropdown(model_choices(wb), label="Start from model", scale=2)
        data = gr.Dropdown(dataset_choices(wb, "sft"), multiselect=True, label="Datasets", scale=3)
    about = gr.Markdown(recipes["sft_lora"].description if "sft_lora" in recipes else "")
    with gr.Row():
        name = gr.Textbox(label="Run name (optional)")
        fields = {key: gr.Number(value=default, label=label) for key, (label, default) in FIELDS.items()}
    with gr.Row():
        val_size = gr.Slider(0.0, 0.5, value=0.0, step=0.01, label="Validation split")
        gpus = gr.CheckboxGroup(gpu_choices(wb), label="GPUs (none ticked = all; CPU when none exist)")
        deepspeed = gr.Dropdown([("none", ""), ("ZeRO-2", "ds_z2.json"), ("ZeRO-3", "ds_z3.json")],
                                value="", label="DeepSpeed")
    with gr.Accordion("Advanced: any other LLaMA-Factory key (YAML)", open=False):
        advanced = gr.Code(language="yaml", label="Extra keys", value="", interactive=True)
    with gr.Row():
        evals = gr.Dropdown(suite_names(wb), multiselect=True, scale=3,
                            label="Evaluate when done (none picked: the recipe's; gated suites always run)")
        eval_judge = gr.Dropdown(model_choices(wb), label="Judge for rubric checks (optional)", scale=2)
    with gr.Row():
        plan = gr.Button("Check the plan (memory, batch)")
        start = gr.Button("Start training", variant="primary")
    return Form(recipe, about, model, data, name, fields, val_size, gpus, deepspeed, advanced, evals,
                eval_judge, plan, start)


@dataclass
class Monitor:
    watch: gr.Dropdown
    cancel: gr.Button
    resume: gr.Button
    rerun: gr.Button
    half: gr.Button
    delete: gr.Button
    new_name: gr.Textbox
    rename: gr.Button
    progress: gr.HTML
    plot: gr.Plot
    command: gr.Code
    tensorboard: gr.Code
    gpu_memory: gr.Markdown
    verdict: gr.Markdown  # a finished run that did not learn, diverged or over-fitted says so
    log: gr.Textbox
    runs: gr.Dataframe


def build_monitor(wb: Workbench) -> Monitor:
    with gr.Row():
        watch = gr.Dropdown(run_choices(wb), label="Watch run", scale=3)
        cancel = gr.Button("Cancel", variant="stop")
        resume = gr.Button("Resume")
        rerun = gr.Button("Re-run with edits")
        half = gr.Button("Re-run at half the micro-batch")
        delete = gr.Button("Delete")
    with gr.Row():
        new_name = gr.Textbox(label="New name for the watched run", scale=3)
        rename = gr.Button("Rename run")
    progress = gr.HTML()
    plot = gr.Plot(label="Training curves", visible=False, elem_id="run-curves")
    with gr.Row():
        command = gr.Code(label="Equivalent command", language="shell", interactive=False)
        tensorboard = gr.Code(label="TensorBoard", language="shell", interactive=False)
    gpu_memory = gr.Markdown()
    verdict = gr.Markdown(elem_id="run-verdict")
    log = gr.Textbox(label="Log tail", lines=8, max_lines=8, autoscroll=True)
    runs = Table(value=lambda: runs_frame(wb), headers=RUN_COLUMNS, label="Runs", interactive=False)
    return Monitor(watch, cancel, resume, rerun, half, delete, new_name, rename, progress, plot, command,
                   tensorboard, gpu_memory, verdict, log, runs)


def prefill_updates(wb: Workbench, recipes: dict[str, training.Recipe], request: dict) -> list:
    """Form updates that load a request (recipe, model, datasets) into the Train form."""
    recipe = recipes[request["recipe"]]
    over = dict(request.get("overrides") or {})
    values = [gr.update(value=over.pop(k, recipe.defaults.get(k, FIELDS[k][1])),
                        visible=k != "lora_rank" or recipe.finetuning_type == "lora") for k in FIELDS]
    return [gr.update(value=recipe.name), gr.update(choices=model_choices(wb), value=request["model_id"]),
            gr.update(choices=dataset_choices(wb, recipe.stage), value=request["dataset_ids"]),
            recipe.description + (f"\n\n**Schedule:** {request['schedule']['reason']}"
                                  if request.get("schedule") else ""),
            yaml.safe_dump(over) if over else "", *values]


def build(wb: Workbench) -> tuple[gr.Tab, Form, tuple]:
    """The tab, its form, and (function, outputs) for the page's load event (re-attach to a
    run still training)."""
    recipes = training.load_recipes()
    with gr.Tab("Train", id="train") as tab:
        form = build_form(wb, recipes)
        with gr.Accordion("Presets: save this form under a name, load one back", open=False):
            with gr.Row():
                preset = gr.Dropdown(preset_names(wb), label="Preset", scale=2, elem_id="preset-pick")
                load_preset = gr.Button("Load preset", elem_id="preset-load")
                preset_name = gr.Textbox(label="Save as", scale=2, elem_id="preset-name")
                save_preset = gr.Button("Save preset", elem_id="preset-save")
        status = gr.Markdown(elem_id="train-status")
        mon = build_monitor(wb)
        train_assistant.build(wb, form, mon.watch, prefill_outputs(form),
                              lambda request: prefill_updates(wb, recipes, request))
        timer = gr.Timer(2.0)
        shown = gr.State("")  # which run and how many points the plot shows
        seen = gr.State("")  # which run and status the labels show
        field_keys = list(FIELDS)

        def on_recipe(recipe_name):
            recipe = recipes[recipe_name]
            values = [gr.update(value=recipe.defaults.get(k, FIELDS[k][1]),
                                visible=k != "lora_rank" or recipe.finetuning_type == "lora")
                      for k in field_keys]
            return (recipe.description, gr.update(choices=model_choices(wb)),
                    gr.update(choices=dataset_choices(wb, recipe.stage), value=[]), *values)

        def form_request(recipe_name, model_id, dataset_ids, name, val_size, gpus, ds, advanced, evals, judge,
                         *values) -> training.TrainRequest:
            if model_id is None:
                raise UserError("choose a model to start from")
            recipe = recipes[recipe_name]
            overrides = {}
            for key, value in zip(field_keys, values, strict=True):
                if value is None or (key == "lora_rank" and recipe.finetuning_type != "lora"):
                    continue
                if value != recipe.defaults.get(key):
                    overrides[key] = int(value) if float(value).is_integer() and key != "learning_rate" \
                        else float(value)
            overrides.update(parse_advanced(advanced))
            return training.TrainRequest(
                recipe=recipe_name, model_id=int(model_id),
                dataset_ids=[int(i) for i in dataset_ids or []], name=(name or "").strip() or None,
                overrides=overrides, gpus=[int(g) for g in gpus or []], deepspeed=ds or None,
                val_size=float(val_size or 0), eval_suites=list(evals) if evals else None,
                eval_judge_id=int(judge) if judge is not None else None,
            )

        @user_errors
        def on_start(*form_values):
            run = training.start_run(wb, form_request(*form_values))
            plan = training.run_memory(run).get("reason")
            return (f"Run **{run.name}** submitted." + (f" {plan[0].upper()}{plan[1:]}." if plan else ""),
                    gr.update(choices=run_choices(wb), value=run.id), runs_frame(wb))

        @user_errors
        def on_plan(*form_values):
            return plan_markdown(training.preview_run(wb, form_request(*form_values)))

        def on_tick(run_id, shown, seen):
            """Refresh the live view; the plot only when it has new points (no flicker); the
            run picker's labels and the banner when the watched run's status changes."""
            if run_id is None:
                return ((gr.skip(),) * 7 + (runs_frame(wb), shown) + (gr.update(interactive=False),) * 4
                        + (gr.skip(), gr.skip(), seen))
            view = training.run_view(wb, int(run_id))
            choices = run_choices(wb)
            now = f"{run_id}:{view['status']}|" + "|".join(label for label, _ in choices)
            watched_before, watched_now = seen.split("|", 1)[0], now.split("|", 1)[0]
            labels = (gr.skip() if now == seen else gr.update(choices=choices),
                      status_banner(wb, int(run_id)) if watched_before != watched_now
                      and watched_before.startswith(f"{run_id}:") else gr.skip(), now)
            text = view["log"] + (f"\n\nERROR: {view['error']}" if view["error"] else "")
            key = f"{run_id}:{len(view['points'])}"
            if key == shown:
                points = gr.skip()
            elif view["points"]:
                points = gr.update(value=curve_figure(view["points"]), visible=True)
            else:
                points = gr.update(visible=False)
            run = training.get_run(wb, int(run_id))
            gpus = [g for g in wb.hardware(refresh=view["status"] == "running").gpus
                    if not run.gpus or str(g.index) in run.gpus.split(",")]
            memory = " · ".join(g.label for g in gpus) or "Training on the CPU."
            return (progress_html(view), points, view["command"], training.tensorboard_command(run),
                    memory, run_verdict(wb, run, view["status"]) if key != shown else gr.skip(), text,
                    runs_frame(wb), key, *button_states(run), *labels)

        def refresh_runs(message):
            return message, gr.update(choices=run_choices(wb)), runs_frame(wb)

        @user_errors
        def on_cancel(run_id):
            run = training.cancel_run(wb, _need(run_id))
            return refresh_runs(f"Cancelling **{run.name}**; it stops at the next step and saves.")

        @user_errors
        def on_resume(run_id):
            run = training.resume_run(wb, _need(run_id))
            return refresh_runs(f"Resuming **{run.name}** from its newest checkpoint.")

        @user_errors
        def on_half(run_id):
            run = training.rerun_half_batch(wb, _need(run_id))
            return (f"Submitted **{run.name}** at micro-batch {run.config['per_device_train_batch_size']} × "
                    f"accumulation {run.config['gradient_accumulation_steps']}.",
                    gr.update(choices=run_choices(wb), value=run.id), runs_frame(wb))

        @user_errors
        def on_delete(run_id):
            run = training.get_run(wb, _need(run_id))
            training.delete_run(wb, run.id)
            return refresh_runs(f"Deleted run **{run.name}** and its folder.")

        @user_errors
        def on_load(run_id):
            """Re-run with edits: load the run's request into the form."""
            run = training.get_run(wb, _need(run_id))
            req = dict(run.request or {"recipe": run.recipe, "model_id": run.model_id,
                                       "dataset_ids": run.dataset_ids})
            return (*prefill_updates(wb, recipes, req), "", req.get("val_size", 0.0),
                    req.get("gpus") or [], req.get("deepspeed") or "",
                    f"Loaded **{run.name}** into the form; edit and start a new run.")

        outs = [form.about, form.model, form.data, *form.fields.values()]
        form.recipe.input(on_recipe, form.recipe, outs, show_api=False)
        def on_show(recipe_name):
            """Models, datasets and runs may have changed in other tabs."""
            stage = recipes[recipe_name].stage if recipe_name in recipes else "sft"
            models = gr.update(choices=model_choices(wb))
            return (models, gr.update(choices=dataset_choices(wb, stage)), gr.update(choices=run_choices(wb)),
                    gr.update(choices=suite_names(wb)), models)

        tab.select(on_show, form.recipe, [form.model, form.data, mon.watch, form.evals, form.eval_judge],
                   show_api=False)
        inputs = [form.recipe, form.model, form.data, form.name, form.val_size, form.gpus,
                  form.deepspeed, form.advanced, form.evals, form.eval_judge, *form.fields.values()]
        form.start.click(on_start, inputs, [status, mon.watch, mon.runs], api_name="start_training")
        form.plan.click(on_plan, inputs, status, api_name="plan_training")
        manage = [status, mon.watch, mon.runs]
        mon.cancel.click(on_cancel, mon.watch, manage, api_name="cancel_run")
        mon.resume.click(on_resume, mon.watch, manage, api_name="resume_run")
        mon.delete.click(on_delete, mon.watch, manage, api_name="delete_run")
        mon.half.click(on_half, mon.watch, manage, api_name="rerun_half_batch")
        mon.rerun.click(on_load, mon.watch, [*prefill_outputs(form), form.name, form.val_size, form.gpus,
                                             form.deepspeed, status], show_api=False)
        def on_page_load():
            """After a reload: watch the run still training and show its settings in the form."""
            run = training.active_run(wb)
            if run is None:
                return (gr.skip(),) * (2 + len(prefill_outputs(form)))
            req = dict(run.request or {"recipe": run.recipe, "model_id": run.model_id,
                                       "dataset_ids": run.dataset_ids})
            return (gr.update(choices=run_choices(wb), value=run.id),
                    f"Watching **{run.name}** ({run.status}); the form shows its settings.",
                    *prefill_updates(wb, recipes, req))

        reattach = (on_page_load, [mon.watch, status, *prefill_outputs(form)])

        @user_errors
        def on_save_preset(name, *form_values):
            request = form_request(*form_values).as_dict()
            request.pop("name", None)
            row = presets.save_preset(wb, name, request)
            return f"Saved preset **{row.name}**.", gr.update(choices=preset_names(wb), value=row.name)

        @user_errors
        def on_load_preset(name):
            if not name:
                raise UserError("choose a preset first")
            row = presets.get_preset(wb, name)
            return (f"Loaded preset **{row.name}**.", *prefill_updates(wb, recipes, row.request))

        @user_errors
        def on_rename(run_id, name):
            run = presets.rename_run(wb, _need(run_id), name)
            return refresh_runs(f"Renamed the run to **{run.name}**.")

        def on_pick_row(evt: gr.SelectData):
            """A click on a row of the runs table watches that run."""
            row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
            runs = training.list_runs(wb)
            return gr.update(value=runs[row].id) if 0 <= row < len(runs) else gr.skip()

        save_preset.click(on_save_preset, [preset_name, *inputs], [status, preset], api_name="save_preset")
        load_preset.click(on_load_preset, preset, [status, *prefill_outputs(form)], api_name="load_preset")
        mon.rename.click(on_rename, [mon.watch, mon.new_name], manage, api_name="rename_run")
        mon.runs.select(on_pick_row, None, mon.watch, show_api=False)
        views = [mon.progress, mon.plot, mon.command, mon.tensorboard, mon.gpu_memory, mon.verdict, mon.log,
                 mon.runs, shown, mon.cancel, mon.resume, mon.delete, mon.half, mon.watch, status, seen]
        mon.watch.change(on_tick, [mon.watch, shown, seen], views, show_api=False)
        timer.tick(on_tick, [mon.watch, shown, seen], views, show_api=False)
    return tab, form, reattach


def button_states(run) -> list:
    """Cancel, Resume, Delete and half-batch re-run are clickable only when they apply."""
    allowed = presets.run_actions(run)
    return [gr.update(interactive=allowed[k]) for k in ("cancel", "resume", "delete", "half")]


STATUS_WORDS = {"queued": "is queued", "starting": "is starting", "running": "is training",
                "cancelled": "was cancelled", "interrupted": "was interrupted (the app stopped); Resume "
                "continues it"}


def status_banner(wb: Workbench, run_id: int) -> str:
    """What the watched run is doing now, for the banner when its status changes."""
    run = training.get_run(wb, run_id)
    if run.status == "succeeded":
        model = next((m.name for m in list_models(wb) if m.id == run.output_model_id), None)
        return f"**{run.name}** finished" + (f": its model **{model}** is in the Registry." if model else ".")
    if run.status == "failed":
        return f"**{run.name}** failed: {((run.error or '').strip().splitlines() or ['see the log'])[-1]}"
    return f"**{run.name}** {STATUS_WORDS.get(run.status, run.status)}."


def preset_names(wb: Workbench) -> list[str]:
    return [p.name for p in presets.list_presets(wb)]


def run_verdict(wb: Workbench, run, status: str) -> str:
    """For a finished run whose curves show a problem, the assistant's reading of them."""
    if status != "succeeded":
        return ""
    found = explain_run(wb, run.id, use_llm=False)
    if found["verdict"] not in ("not_learning", "diverging", "overfitting"):
        return ""
    return f"**{WARNINGS[found['verdict']]}** {found['explanation']['text']}"


def prefill_outputs(form: Form) -> list:
    """The components ``prefill_updates`` fills, in its order."""
    return [form.recipe, form.model, form.data, form.about, form.advanced, *form.fields.values()]


def _need(run_id) -> int:
    if run_id is None:
        raise UserError("choose a run first")
    return int(run_id)
