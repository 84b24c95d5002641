"""Registry tab: every model version with its lineage; the starter model for new users."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app import registry
from app.workbench import Workbench
from tabs.common import model_choices, user_errors


def models_frame(wb: Workbench) -> pd.DataFrame:
    models = registry.list_models(wb)
    names = {m.id: m.name for m in models}
    rows = [
        {"id": m.id, "name": m.name, "kind": m.kind, "parent": names.get(m.parent_id, ""),
         "run": m.run_id or "", "template": m.template,
         "path": m.adapter_path.split(",")[-1] if m.adapter_path else m.base_path}
        for m in models
    ]
    return pd.DataFrame(rows, columns=["id", "name", "kind", "parent", "run", "template", "path"])


def lineage_text(wb: Workbench, model_id: int | None) -> str:
    if not model_id:
        return ""
    lines = []
    for step in registry.lineage(wb, int(model_id)):
        line = f"- **{step['name']}** ({step['kind']})"
        if "run" in step:
            ds = ", ".join(d["name"] for d in step.get("datasets", []))
            line += f" ← run #{step['run']['id']} {step['run']['stage']} on {ds}"
        lines.append(line)
    return "\n".join(lines)


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Registry", id="registry") as tab:
        empty = not registry.list_models(wb)
        with gr.Group(visible=empty) as starter_box:
            gr.Markdown(
                "**No models yet.** Create the tiny starter model (trained here on the "
                "corpus in `data/`, about 10 s on a CPU) to try every tab, or register "
                "your own base model below."
            )
            starter = gr.Button("Create starter model", variant="primary")
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="qwen2.5-0.5b")
            path = gr.Textbox(label="Local folder or Hub id", placeholder="/models/Qwen2.5-0.5B")
            template = gr.Textbox(label="Template (optional)", placeholder="from the tokenizer")
            add = gr.Button("Register base model")
        status = gr.Markdown()
        table = gr.Dataframe(value=lambda: models_frame(wb), label="Models", interactive=False)
        pick = gr.Dropdown(model_choices(wb), label="Show lineage of")
        lineage = gr.Markdown()

        @user_errors
        def on_starter():
            mv = registry.create_starter_model(wb)
            return (f"Created **{mv.name}** ({mv.meta['starter']['params']:,} parameters).",
                    models_frame(wb), gr.update(visible=False))

        @user_errors
        def on_add(n, p, t):
            mv = registry.register_base_model(wb, n.strip(), p, t.strip() or None)
            return f"Registered **{mv.name}** (template {mv.template}).", models_frame(wb)

        starter.click(on_starter, None, [status, table, starter_box], api_name="create_starter")
        add.click(on_add, [name, path, template], [status, table], api_name="register_model")
        pick.change(user_errors(lambda i: lineage_text(wb, i)), pick, lineage, show_api=False)
        tab.select(lambda: (models_frame(wb), gr.update(visible=not registry.list_models(wb)),
                            gr.update(choices=model_choices(wb))),
                   None, [table, starter_box, pick], show_api=False)
    return tab
