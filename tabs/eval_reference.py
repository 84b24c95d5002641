"""The Evaluate tab's reference metrics: LLaMA-Factory's eval loss / perplexity or
BLEU-4 / ROUGE of a version on a dataset, as a background job."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.core.workbench import Workbench
from app.evals import reference
from tabs.common import UserError, dataset_choices, follow_job, model_choices, progress_html, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["id", "model", "dataset", "metric", "samples", "status", "loss", "perplexity", "bleu-4", "rouge-1",
           "rouge-2", "rouge-l"]


def results_frame(wb: Workbench) -> pd.DataFrame:
    rows = []
    for row in reference.list_reference_evals(wb):
        r = reference.reference_json(wb, row)
        m = r["metrics"]
        rows.append({"id": r["id"], "model": r["model"], "dataset": r["dataset"], "metric": r["metric"],
                     "samples": r["max_samples"], "status": r["status"],
                     **{k: round(m[k], 3) if k in m else None for k in COLUMNS[6:]}})
    return to_frame(rows, COLUMNS)


def build_reference(wb: Workbench) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The section. Returns its model and dataset pickers (to refresh when the tab opens)."""
    with gr.Accordion("Reference metrics (LLaMA-Factory): loss, perplexity, BLEU, ROUGE", open=False,
                      elem_id="eval-reference-section"):
        with gr.Row():
            version = gr.Dropdown(model_choices(wb), label="Local version", elem_id="eval-ref-model")
            data = gr.Dropdown(dataset_choices(wb), label="Dataset (SFT, or a CPT corpus for the loss)")
            metric = gr.Radio([("eval loss and perplexity", "loss"),
                               ("BLEU-4 and ROUGE of answers", "generation")], value="loss", label="Metric")
        with gr.Row():
            samples = gr.Number(label="Rows (at most)", value=200, precision=0, minimum=1)
            tokens = gr.Number(label="Max new tokens (BLEU/ROUGE)", value=128, precision=0, minimum=1)
            start = gr.Button("Measure", variant="primary")
            refresh = gr.Button("Refresh results")
        progress = gr.HTML()
        table = Table(value=lambda: results_frame(wb), headers=COLUMNS, label="Reference metrics",
                      interactive=False)

    @user_errors
    def on_start(model_id, dataset_id, kind, n, max_tokens):
        if model_id is None or dataset_id is None:
            raise UserError("choose a version and a dataset")
        row = reference.start_reference_eval(wb, int(model_id), int(dataset_id), kind or "loss",
                                             int(n or 200), int(max_tokens or 128))
        for view in follow_job(wb, row.job_id):
            yield progress_html(view), gr.skip()
        if view["status"] != "succeeded":
            raise UserError(f"the measurement {view['status']}: {view['error']}")
        yield progress_html(view), results_frame(wb)

    start.click(on_start, [version, data, metric, samples, tokens], [progress, table],
                api_name="reference_eval")
    refresh.click(lambda: results_frame(wb), None, table, api_name="reference_results")
    return version, data
