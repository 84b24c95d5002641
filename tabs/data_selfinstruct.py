"""Data tab section: generate an SFT dataset with Self-Instruct from a teacher model."""

from __future__ import annotations

import html
import time
from pathlib import Path

import gradio as gr

from app.core.errors import InvalidInput
from app.core.workbench import Workbench
from app.datagen.self_instruct_jobs import (
    MAX_CONCURRENCY,
    resume_selfinstruct,
    selfinstruct_view,
    start_selfinstruct,
)
from app.inference.connection import check_connection
from tabs.common import FINISHED, UserError, connection_line, model_choices, progress_html, user_errors

MAX_SEED_UPLOAD = 5_000_000


def run_html(view: dict) -> str:
    """Progress, counts, rejections by reason and the newest kept tasks of a run."""
    counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in view["counts"].items() if v is not None)
    rejected = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in view["rejected"].items())
    sample = "".join(f"<li>{html.escape(t)}</li>" for t in view["sample"])
    error = f"<pre class='fl-error'>{html.escape(view['error'])}</pre>" if view.get("error") else ""
    return (progress_html(view)
            + f"<p class='fl-si-counts'>{html.escape(counts)}</p>"
            + (f"<p class='fl-si-rejected'>rejected: {html.escape(rejected)}</p>" if rejected else "")
            + (f"<p>Newest kept tasks:</p><ul class='fl-si-sample'>{sample}</ul>" if sample else "")
            + error)


def read_seed_file(path: str | None) -> str:
    if not path:
        return ""
    p = Path(path)
    if p.stat().st_size > MAX_SEED_UPLOAD:
        raise InvalidInput(f"{p.name} is larger than {MAX_SEED_UPLOAD // 1_000_000} MB")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{p.name} is not UTF-8 text (JSON lines or one task per line)") from e


def build(wb: Workbench) -> None:
    with gr.Accordion("Generate with Self-Instruct", open=False, elem_id="selfinstruct-section"):
        gr.Markdown("A teacher model writes new tasks from seed tasks; tasks that are too short or "
                    "long, need images or code, or repeat a kept one (ROUGE-L > 0.7) are dropped. "
                    "The result is registered as an SFT dataset when the job ends.")
        with gr.Row():
            teacher = gr.Dropdown(model_choices(wb), label="Teacher model")
            check = gr.Button("Test connection", scale=0)
        checked = gr.Markdown(elem_id="selfinstruct-check")
        with gr.Row():
            name = gr.Textbox(label="Dataset name", placeholder="self-instruct-1")
            target = gr.Number(label="Rows to keep", value=100, precision=0, minimum=1)
            rounds = gr.Number(label="Max teacher rounds (0: 4 × rows)", value=0, precision=0, minimum=0)
        with gr.Row():
            temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature")
            max_tokens = gr.Number(label="Max new tokens per answer", value=512, precision=0)
            seed = gr.Number(label="Seed", value=0, precision=0)
            concurrency = gr.Slider(1, MAX_CONCURRENCY, value=2, step=1, label="Teacher calls at once")
        with gr.Accordion("Seed tasks", open=False):
            shipped = gr.Checkbox(value=True, label="Use the shipped seed tasks (data/seed_tasks.jsonl)")
            pasted = gr.Textbox(label="Your seed tasks: JSON lines like the shipped ones, or one "
                                "instruction per line", lines=4)
            seed_file = gr.File(label="…or upload them (.jsonl / .txt)", file_types=[".jsonl", ".txt"],
                                type="filepath")
        with gr.Row():
            start = gr.Button("Start Self-Instruct job", variant="primary")
            job_id = gr.Number(label="Job id", precision=0)
            watch = gr.Button("Watch it")
            resume = gr.Button("Resume it (answers already given are not asked again)")
        status = gr.Markdown()
        live = gr.HTML(elem_id="selfinstruct-live")

        def follow(job_id_: int):
            while True:
                view = selfinstruct_view(wb, job_id_)
                yield run_html(view)
                if view["status"] in FINISHED:
                    return
                time.sleep(0.5)

        @user_errors
        def on_check(teacher_id):
            if teacher_id is None:
                raise UserError("choose a teacher model first")
            return connection_line(check_connection(wb, int(teacher_id)))

        @user_errors
        def on_start(teacher_id, ds_name, rows, max_rounds, temp, tokens, seed_, calls, use_shipped,
                     text, upload):
            if teacher_id is None:
                raise UserError("choose a teacher model first")
            seeds = "\n".join(t for t in ((text or "").strip(), read_seed_file(upload).strip()) if t)
            job = start_selfinstruct(wb, int(teacher_id), (ds_name or "").strip(), int(rows or 100),
                                     int(max_rounds or 0) or None, int(seed_ or 0), float(temp),
                                     int(tokens or 512), int(calls), seeds, bool(use_shipped))
            yield f"Job {job.id} started: {job.title}.", job.id, ""
            for page in follow(job.id):
                yield gr.skip(), gr.skip(), page

        @user_errors
        def on_watch(job_id_):
            if not job_id_:  # the empty box reads as 0
                raise UserError("type the job id of a Self-Instruct run")
            yield from follow(int(job_id_))

        @user_errors
        def on_resume(job_id_):
            if not job_id_:
                raise UserError("type the job id of a stopped Self-Instruct run")
            job = resume_selfinstruct(wb, int(job_id_))
            yield f"Job {job.id} resumed: {job.title}.", ""
            for page in follow(job.id):
                yield gr.skip(), page

        check.click(on_check, teacher, checked, api_name="check_teacher")
        start.click(on_start, [teacher, name, target, rounds, temperature, max_tokens, seed, concurrency,
                               shipped, pasted, seed_file], [status, job_id, live],
                    api_name="start_selfinstruct")
        watch.click(on_watch, job_id, live, api_name="selfinstruct_view")
        resume.click(on_resume, job_id, [status, live], api_name="resume_selfinstruct")
        teacher.focus(lambda: gr.update(choices=model_choices(wb)), None, teacher, show_api=False)
