"""Background jobs of every kind (training runs, starter builds, …) in one panel below the
tabs: a live progress bar, the log tail and cancel. A new job kind shows up here with no
UI code of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.core.workbench import Workbench
from tabs.common import UserError, progress_html, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

JOB_COLUMNS = ["id", "kind", "title", "status", "started", "finished"]


def jobs_frame(wb: Workbench) -> pd.DataFrame:
    rows = [{"id": j.id, "kind": j.kind, "title": j.title, "status": j.status,
             "started": f"{j.started_at:%Y-%m-%d %H:%M:%S}" if j.started_at else "",
             "finished": f"{j.finished_at:%Y-%m-%d %H:%M:%S}" if j.finished_at else ""}
            for j in wb.jobs.list(limit=50)]
    return to_frame(rows, JOB_COLUMNS)


def job_choices(wb: Workbench) -> list[tuple[str, int]]:
    return [(f"#{j.id} {j.kind}: {j.title} ({j.status})", j.id) for j in wb.jobs.list(limit=50)]


def build(wb: Workbench) -> None:
    with gr.Accordion("Background jobs", open=False):
        with gr.Row():
            watch = gr.Dropdown(job_choices(wb), label="Job", scale=4)
            cancel = gr.Button("Cancel job", variant="stop")
        progress = gr.HTML()
        log = gr.Textbox(label="Log tail", lines=6, max_lines=6, autoscroll=True)
        table = Table(value=lambda: jobs_frame(wb), headers=JOB_COLUMNS, label="Recent jobs",
                      interactive=False)
        timer = gr.Timer(2.0)

        def on_tick(job_id):
            if job_id is None:
                return gr.skip(), gr.skip(), jobs_frame(wb), gr.update(choices=job_choices(wb))
            view = wb.jobs.view(wb.jobs.get(int(job_id)))
            text = view["log"] + (f"\n\nERROR: {view['error']}" if view["error"] else "")
            return progress_html(view), text, jobs_frame(wb), gr.update(choices=job_choices(wb))

        @user_errors
        def on_cancel(job_id):
            if job_id is None:
                raise UserError("choose a job first")
            job = wb.jobs.cancel(int(job_id))
            return progress_html(wb.jobs.view(job)), gr.skip(), jobs_frame(wb), gr.skip()

        outs = [progress, log, table, watch]
        watch.change(on_tick, watch, outs, show_api=False)
        timer.tick(on_tick, watch, outs, show_api=False)
        cancel.click(on_cancel, watch, outs, api_name="cancel_job")
