"""The Evaluate tab's loop report: a version's lineage round by round, its pass-rate plot,
and the zipped Markdown export."""

from __future__ import annotations

import gradio as gr

from app.core.workbench import Workbench
from app.evals import loop_report
from tabs.common import UserError, model_choices, user_errors


def build_loop_report(wb: Workbench) -> gr.Dropdown:
    """The section. Returns its model picker (to refresh when the tab opens)."""
    with gr.Accordion("Loop report: did each round make the model better?", open=False,
                      elem_id="eval-loop-section"):
        with gr.Row():
            version = gr.Dropdown(model_choices(wb), label="Version to report on", elem_id="eval-loop-model")
            show = gr.Button("Show loop report")
        table = gr.Markdown(elem_id="eval-loop-report")
        with gr.Row():
            plot = gr.Image(label="Pass rate over the lineage", type="filepath", visible=False)
            download = gr.File(label="Report (Markdown + plot, zipped)", visible=False)

    @user_errors
    def on_show(model_id):
        if model_id is None:
            raise UserError("choose a version first")
        report = loop_report.loop_report(wb, int(model_id))
        path = loop_report.export_loop_report(wb, int(model_id))
        png = loop_report.plot_png(report)
        image = gr.update(visible=False)
        if png:
            image_path = path.with_suffix(".png")
            image_path.write_bytes(png)
            image = gr.update(value=str(image_path), visible=True)
        return (loop_report.report_markdown(report, plot_name=None), image,
                gr.update(value=str(path), visible=True))

    show.click(on_show, version, [table, plot, download], api_name="loop_report")
    return version
