"""Train tab's assistant panel: suggest settings (and apply them to the form), explain the
watched run, diagnose it when it failed."""

from __future__ import annotations

import gradio as gr

from app.assistant import service
from app.core.workbench import Workbench
from tabs.common import UserError, model_choices, user_errors

RULES_ONLY = "rules only"


def suggestion_markdown(s: dict) -> str:
    head = f"**Suggested for {s['rows']} rows ({s['stage'].upper()}):**"
    lengths = s.get("lengths") or {}
    if lengths:
        head += f" row lengths p50 {lengths['p50']}, p95 {lengths['p95']}, longest {lengths['max']} tokens."
    return f"{head}\n\n{s['explanation']['text']}\n\n_{s['explanation']['note']}._"


def explanation_markdown(view: dict, title: str) -> str:
    return f"**{title}**\n\n{view['explanation']['text']}\n\n_{view['explanation']['note']}._"


def build(wb: Workbench, form, watch: gr.Dropdown, prefill_outputs: list, prefill) -> None:
    """``form``: the Train form (model, datasets, GPUs); ``prefill(request)``: the form
    updates that load a request, written to ``prefill_outputs``."""
    with gr.Accordion("Assistant: suggest settings, explain or diagnose a run", open=False,
                      elem_id="train-assistant"):
        with gr.Row():
            llm = gr.Dropdown([RULES_ONLY, *model_choices(wb)], value=RULES_ONLY, scale=2,
                              label="Word the advice with (optional: any model; rules decide every value)")
            suggest = gr.Button("Suggest settings", elem_id="assistant-suggest")
            apply = gr.Button("Apply the suggestion to the form", elem_id="assistant-apply")
            explain = gr.Button("Explain the watched run")
            diagnose = gr.Button("Diagnose the watched run")
        advice = gr.Markdown(elem_id="assistant-advice")
        last = gr.State(None)

    def llm_args(choice) -> dict:
        if choice in (None, RULES_ONLY):
            return {"use_llm": False}
        return {"llm_model_id": int(choice)}

    def need_run(run_id) -> int:
        if run_id is None:
            raise UserError("choose a run to watch first")
        return int(run_id)

    @user_errors
    def on_suggest(model_id, dataset_ids, gpus, choice):
        if model_id is None or not dataset_ids:
            raise UserError("choose a model and at least one dataset first")
        s = service.suggest(wb, int(model_id), [int(i) for i in dataset_ids],
                            gpus=[int(g) for g in gpus or []] or None, **llm_args(choice))
        return suggestion_markdown(s), s

    def on_apply(s):
        if not s:
            raise UserError("ask for a suggestion first")
        request = {"recipe": s["recipe"], "model_id": s["model_id"], "dataset_ids": s["dataset_ids"],
                   "overrides": s["values"]}
        return prefill(request)

    @user_errors
    def on_explain(run_id, choice):
        view = service.explain_run(wb, need_run(run_id), **llm_args(choice))
        return explanation_markdown(view, f"Reading of the curves: {view['verdict'].replace('_', ' ')}.")

    @user_errors
    def on_diagnose(run_id, choice):
        view = service.diagnose_run(wb, need_run(run_id), **llm_args(choice))
        return explanation_markdown(view, f"Why it {view['status'].replace('cancelled', 'was cancelled')}:")

    suggest.click(on_suggest, [form.model, form.data, form.gpus, llm], [advice, last],
                  api_name="suggest_settings")
    apply.click(on_apply, last, prefill_outputs, show_api=False)
    explain.click(on_explain, [watch, llm], advice, api_name="explain_run")
    diagnose.click(on_diagnose, [watch, llm], advice, api_name="diagnose_run")
