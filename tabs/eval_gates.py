"""The Evaluate tab's gates section: put a gate on a suite, see why a version is held back,
and waive a gate by hand."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.core.workbench import Workbench
from app.evals import gates
from tabs.common import UserError, model_choices, user_errors


def gates_markdown(found: list[dict[str, Any]]) -> str:
    if not found:
        return "No gates: new versions join the arena as soon as they are trained."
    return "**Gates:** " + "; ".join(f"`{g['suite']}` (margin {g['margin']:.2f})" for g in found)


def gate_markdown(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "This version has no gate (it was not trained while a suite was gated)."
    lines = [f"**Gate: {gate['status']}** — {gate.get('reason', '')}"]
    for g in gate.get("suites", []):
        child, parent = g.get("child_rate"), g.get("parent_rate")
        if child is not None and parent is not None:
            lines.append(f"- `{g['suite']}` v{g['version']}: {child:.2f} vs the parent's {parent:.2f} "
                         f"(eval runs {g['child_run']} and {g['parent_run']})")
    return "\n".join(lines)


def build_gates(wb: Workbench, suite: gr.Dropdown) -> gr.Dropdown:
    """The section; ``suite`` is the tab's suite picker. Returns its model picker (to refresh)."""
    with gr.Accordion("Gates: keep worse versions out of the arena", open=False,
                      elem_id="eval-gate-section"):
        gr.Markdown("A gated suite runs on every newly trained version and on its parent. The version "
                    "joins the arena, and may be deployed, only if its pass rate is not below the "
                    "parent's by more than the margin.")
        with gr.Row():
            margin = gr.Number(label="Gate margin (pass-rate drop allowed)", value=0.05, minimum=0, maximum=1)
            put = gr.Button("Gate the chosen suite")
            remove = gr.Button("Remove its gate")
        listing = gr.Markdown(lambda: gates_markdown(gates.list_gates(wb)))
        with gr.Row():
            version = gr.Dropdown(model_choices(wb), label="Version to check", elem_id="eval-gate-model")
            show = gr.Button("Show its gate")
            note = gr.Textbox(label="Why waive (optional)")
            waive = gr.Button("Waive its gate", variant="stop")
        verdict = gr.Markdown(elem_id="eval-gate-verdict")

    def _suite(suite_id) -> int:
        if suite_id is None:
            raise UserError("choose a suite in '2 · Run it' first")
        return int(suite_id)

    def _version(model_id) -> int:
        if model_id is None:
            raise UserError("choose a version first")
        return int(model_id)

    @user_errors
    def on_put(suite_id, value):
        gates.set_gate(wb, _suite(suite_id), None if value is None else float(value))
        return gates_markdown(gates.list_gates(wb))

    @user_errors
    def on_remove(suite_id):
        gates.set_gate(wb, _suite(suite_id), None)
        return gates_markdown(gates.list_gates(wb))

    @user_errors
    def on_show(model_id):
        return gate_markdown(gates.gate_of(wb, _version(model_id)))

    @user_errors
    def on_waive(model_id, why):
        return gate_markdown(gates.waive(wb, _version(model_id), why or ""))

    put.click(on_put, [suite, margin], listing, api_name="set_eval_gate")
    remove.click(on_remove, suite, listing, api_name="remove_eval_gate")
    show.click(on_show, version, verdict, api_name="eval_gate")
    waive.click(on_waive, [version, note], verdict, api_name="waive_eval_gate")
    return version
