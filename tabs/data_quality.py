"""Data tab sections: a dataset's quality report and clean-up, and the CPT corpus import."""

from __future__ import annotations

import gradio as gr

from app.core.workbench import Workbench
from app.data import corpus, quality_jobs
from tabs.common import UserError, dataset_choices, model_choices, progress_html, user_errors

PII_LABELS = {"email": "emails", "phone": "phone numbers", "credit_card": "card numbers", "iban": "IBANs",
              "ip_address": "IP addresses", "us_ssn": "US SSNs", "uk_nino": "UK NI numbers"}


def _n(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def report_markdown(r: dict) -> str:
    """The report's counts, one finding a line; the examples are in the JSON beside it."""
    lines = [f"**{r['name']}**: {_n(r['rows'], 'row')}"]
    lines.append(f"- exact duplicates: {r['exact_duplicates']['count']:,}")
    near = r["near_duplicates"]
    lines.append(f"- near-duplicates (similarity ≥ {near['threshold']}): {near['count']:,}")
    lines.append(f"- empty rows: {r['empty']['count']:,}")
    if r["over_long"] is None:
        lines.append("- over-long rows: pick a model to count tokens")
    else:
        t, long_rows = r["tokens"], r["over_long"]
        lines.append(f"- over-long rows (> {long_rows['max_tokens']:,} tokens): {long_rows['count']:,}"
                     f" · tokens: {t['total']:,} in all, {t['max']:,} at most, {t['mean']} on average")
    langs = ", ".join(f"{k} {v:,}" for k, v in r["languages"].items())
    lines.append(f"- languages: {langs}")
    found = [f"{PII_LABELS[k]} {v['matches']:,}" for k, v in r["pii"].items() if v["matches"]]
    lines.append(f"- personal data in {_n(r['pii_rows'], 'row')}: {', '.join(found)}" if found
                 else "- personal data: none found")
    return "\n".join(lines)


def clean_markdown(result: dict, parent: str) -> str:
    counts = result["dropped"].items()
    left = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts) or "nothing to change"
    return f"Wrote **{result['name']}** ({_n(result['rows'], 'row')}) from {parent}: {left}."


def corpus_markdown(info: dict) -> str:
    files = "\n".join(f"- {f['file']}: {_n(f['documents'], 'document')} → {_n(f['chunks'], 'chunk')}, "
                      f"{_n(f['tokens'], 'token')}" for f in info["files"])
    return f"**{_n(info['chunks'], 'chunk')}, {_n(info['tokens'], 'token')}**\n{files}"


def _paths(files, folder: str) -> list[str]:
    paths = [str(f) for f in (files or [])]
    if (folder or "").strip():
        paths.append(folder.strip())
    if not paths:
        raise UserError("upload files or give a folder")
    return paths


def _model(model_id) -> int:
    if model_id is None:
        raise UserError("pick the model whose tokenizer counts the tokens")
    return int(model_id)


def build(wb: Workbench) -> None:
    """The sections, placed inside the Data tab where this is called."""
    with gr.Column(elem_id="quality-section"):
        gr.Markdown("### Quality report and clean-up\nDuplicates and near-duplicates, empty and over-long "
                    "rows, languages and personal data. Cleaning writes a new dataset; the original stays.")
        with gr.Row():
            ds = gr.Dropdown(dataset_choices(wb), label="Dataset", scale=3)
            model = gr.Dropdown(model_choices(wb), label="Count tokens with (optional)", scale=3)
            max_tokens = gr.Number(1024, label="Max tokens per row", precision=0, minimum=1)
            threshold = gr.Slider(0.5, 1.0, 0.85, step=0.01, label="Near-duplicate similarity")
            refresh = gr.Button("↻", scale=0)
        with gr.Row():
            report_btn = gr.Button("Quality report")
            latest_btn = gr.Button("Show the latest report of this dataset")
            job_id = gr.Number(None, label="Quality job", precision=0)
            cancel_btn = gr.Button("Cancel job", variant="stop", scale=0)
        progress = gr.HTML()
        summary = gr.Markdown()
        details = gr.JSON(label="Findings with examples", visible=False)
        timer = gr.Timer(1.0, active=False)  # runs while a job is followed
        with gr.Row():
            dedup_exact = gr.Checkbox(True, label="Drop exact duplicates")
            dedup_near = gr.Checkbox(True, label="Drop near-duplicates")
            drop_empty = gr.Checkbox(True, label="Drop empty rows (and over-long ones with a model)")
            pii_action = gr.Radio(["redact", "drop", "keep"], value="redact", label="Personal data")
            clean_name = gr.Textbox(label="New dataset name", placeholder="NAME-clean")
        clean_btn = gr.Button("Write a cleaned version", variant="primary")

    gr.Markdown("### CPT corpus import\n.txt, .md and .jsonl (a `text` column) documents, chunked by "
                "a model's tokens into a text dataset for continued pre-training.")
    with gr.Row():
        files = gr.File(label="Documents", file_count="multiple", file_types=list(corpus.SUFFIXES))
        with gr.Column():
            folder = gr.Textbox(label="…or a folder on the server")
            c_model = gr.Dropdown(model_choices(wb), label="Tokenizer of")
            with gr.Row():
                chunk = gr.Number(512, label="Chunk size (tokens)", precision=0, minimum=1)
                overlap = gr.Number(64, label="Overlap (tokens)", precision=0, minimum=0)
            c_name = gr.Textbox(label="Dataset name", placeholder="my-corpus")
            with gr.Row():
                c_preview_btn = gr.Button("Preview chunks")
                c_import_btn = gr.Button("Import corpus", variant="primary")
    c_status = gr.Markdown()
    c_preview = gr.JSON(label="First chunks", visible=False)

    def choices():
        return gr.update(choices=dataset_choices(wb)), gr.update(choices=model_choices(wb)), \
            gr.update(choices=model_choices(wb))

    @user_errors
    def on_report(dataset_id, model_id, limit, thr):
        if dataset_id is None:
            raise UserError("pick a dataset")
        model = None if model_id is None else int(model_id)
        job = quality_jobs.start_quality_report(wb, int(dataset_id), model, int(limit or 1024), float(thr))
        return f"Job {job.id} submitted: {job.title}; its progress shows below.", job.id

    @user_errors
    def on_clean(dataset_id, model_id, limit, thr, exact, near, empty, pii, name):
        if dataset_id is None:
            raise UserError("pick a dataset")
        model = None if model_id is None else int(model_id)
        job = quality_jobs.start_clean(wb, int(dataset_id), (name or "").strip() or None, bool(exact),
                                       bool(near), pii, bool(empty), model, int(limit or 1024), float(thr))
        return f"Job {job.id} submitted: {job.title}; its progress shows below.", job.id

    @user_errors
    def on_latest(dataset_id):
        if dataset_id is None:
            raise UserError("pick a dataset")
        return quality_jobs.latest_quality_report(wb, int(dataset_id))["job_id"]

    @user_errors
    def on_job(job):
        """The followed job's progress; its report or new dataset once it is done."""
        if not job:  # none yet (an empty box reads as 0)
            return "", gr.skip(), gr.skip(), gr.Timer(active=False), gr.skip()
        r = quality_jobs.quality_job_report(wb, int(job))
        bar = progress_html(wb.jobs.view(wb.jobs.get(int(job)), log_lines=0))
        if r["active"]:
            return bar, gr.skip(), gr.skip(), gr.Timer(active=True), gr.skip()
        if r["report"] is not None:
            return bar, report_markdown(r["report"]), gr.update(value=r["report"], visible=True), \
                gr.Timer(active=False), gr.skip()
        if r["result"] is not None:
            parent = wb.jobs.get(int(job)).params["dataset"]
            return bar, clean_markdown(r["result"], parent), gr.update(visible=False), \
                gr.Timer(active=False), gr.update(choices=dataset_choices(wb))
        return bar, f"Job {r['job_id']} {r['status']}: {r['error'] or ''}", gr.update(visible=False), \
            gr.Timer(active=False), gr.skip()

    def on_tick(job):
        """The timer's poll: a job gone meanwhile stops it rather than failing every second."""
        try:
            return on_job(job)
        except gr.Error as e:
            return "", str(e.message), gr.skip(), gr.Timer(active=False), gr.skip()

    @user_errors
    def on_cancel(job):
        if not job:
            raise UserError("no quality job is followed")
        wb.jobs.cancel(int(job))
        return on_job(job)

    @user_errors
    def on_corpus_preview(up, path, model_id, size, over):
        info = corpus.preview_corpus(wb, _paths(up, path), _model(model_id), int(size or 0), int(over or 0))
        return corpus_markdown(info), gr.update(value=info["preview"], visible=True)

    @user_errors
    def on_corpus_import(up, path, model_id, size, over, name):
        if not (name or "").strip():
            raise UserError("name the dataset")
        new = corpus.import_corpus(wb, _paths(up, path), name.strip(), _model(model_id), int(size or 0),
                                   int(over or 0))
        return (f"Imported **{new.name}**: {_n(new.num_rows, 'chunk')}, {_n(new.meta['tokens'], 'token')}.",
                gr.update(choices=dataset_choices(wb)))

    refresh.click(choices, None, [ds, model, c_model], show_api=False)
    settings = [ds, model, max_tokens, threshold]
    followed = [progress, summary, details, timer, ds]
    report_btn.click(on_report, settings, [summary, job_id], api_name="start_quality_report")
    clean_btn.click(on_clean, [*settings, dedup_exact, dedup_near, drop_empty, pii_action, clean_name],
                    [summary, job_id], api_name="start_clean")
    latest_btn.click(on_latest, ds, job_id, api_name="latest_quality_report")
    job_id.change(on_job, job_id, followed, api_name="quality_job_report")
    timer.tick(on_tick, job_id, followed, show_api=False)
    # Cancelling has its API already: cancel_job (jobs panel), POST /api/jobs/{id}/cancel.
    cancel_btn.click(on_cancel, job_id, followed, show_api=False)
    c_preview_btn.click(on_corpus_preview, [files, folder, c_model, chunk, overlap], [c_status, c_preview],
                        api_name="preview_corpus")
    c_import_btn.click(on_corpus_import, [files, folder, c_model, chunk, overlap, c_name], [c_status, ds],
                       api_name="import_corpus")
