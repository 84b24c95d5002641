"""Data tab section: generate an SFT dataset with Self-Instruct from a teacher model."""

from __future__ import annotations

import gradio as gr

from app.core.workbench import Workbench
from app.datagen.self_instruct_jobs import resume_selfinstruct, start_selfinstruct
from tabs.common import model_choices, user_errors


def build(wb: Workbench) -> None:
    with gr.Accordion("Generate with Self-Instruct", open=False, elem_id="selfinstruct-section"):
        gr.Markdown("A teacher model writes new tasks from the hand-written seed tasks; tasks that "
                    "are too short or long, need images or code, or repeat a kept one (ROUGE-L > 0.7) "
                    "are dropped. The result is registered as an SFT dataset when the job ends.")
        with gr.Row():
            teacher = gr.Dropdown(model_choices(wb), label="Teacher model")
            name = gr.Textbox(label="Dataset name", placeholder="self-instruct-1")
            target = gr.Number(label="Rows to keep", value=100, precision=0, minimum=1)
        with gr.Row():
            start = gr.Button("Start Self-Instruct job")
            stopped = gr.Number(label="Stopped run (job id)", precision=0)
            resume = gr.Button("Resume it (answers already given are not asked again)")
        status = gr.Markdown()

        @user_errors
        def on_start(teacher_id, ds_name, rows):
            if teacher_id is None:
                raise gr.Error("choose a teacher model first")
            job = start_selfinstruct(wb, int(teacher_id), (ds_name or "").strip(), int(rows or 100))
            return f"Job {job.id} started: {job.title}. Follow it in the jobs panel."

        @user_errors
        def on_resume(job_id):
            if not job_id:  # the empty box reads as 0
                raise gr.Error("type the job id of a stopped Self-Instruct run")
            job = resume_selfinstruct(wb, int(job_id))
            return f"Job {job.id} queued again: {job.title}. Follow it in the jobs panel."

        start.click(on_start, [teacher, name, target], status, api_name="start_selfinstruct")
        resume.click(on_resume, stopped, status, api_name="resume_selfinstruct")
        teacher.focus(lambda: gr.update(choices=model_choices(wb)), None, teacher, show_api=False)
