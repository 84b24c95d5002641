"""Data tab: register datasets and look at what is stored."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from app import datasets
from app.workbench import Workbench
from tabs.common import user_errors

SAMPLE_SFT = Path(__file__).resolve().parent.parent / "data" / "samples" / "sft_starter.jsonl"


def datasets_frame(wb: Workbench) -> pd.DataFrame:
    rows = [
        {"id": d.id, "name": d.name, "kind": d.kind, "format": d.format, "rows": d.num_rows,
         "source": d.source, "sha256": d.sha256[:12]}
        for d in datasets.list_datasets(wb)
    ]
    return pd.DataFrame(rows, columns=["id", "name", "kind", "format", "rows", "source", "sha256"])


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Data", id="data") as tab:
        gr.Markdown("### Datasets\nRegister a JSONL/JSON file. Rows are validated before anything is stored.")
        with gr.Row():
            upload = gr.File(label="Dataset file (.jsonl, .json)", file_types=[".jsonl", ".json"])
            with gr.Column():
                name = gr.Textbox(label="Name", placeholder="my-sft-data")
                kind = gr.Dropdown(["sft", "dpo", "kto", "cpt"], value="sft", label="Used for")
                register = gr.Button("Register dataset", variant="primary")
                sample = gr.Button("Register the sample SFT dataset")
        status = gr.Markdown()
        table = gr.Dataframe(value=lambda: datasets_frame(wb), label="Registered datasets",
                             interactive=False)

        @user_errors
        def on_register(file, ds_name, ds_kind):
            if file is None:
                raise gr.Error("choose a file first")
            ds = datasets.register_file(wb, file, ds_name.strip(), ds_kind)
            return f"Registered **{ds.name}**: {ds.num_rows} {ds.format} rows.", datasets_frame(wb)

        @user_errors
        def on_sample():
            ds = datasets.register_file(wb, SAMPLE_SFT, "sample-sft", "sft")
            return f"Registered **{ds.name}**: {ds.num_rows} {ds.format} rows.", datasets_frame(wb)

        register.click(on_register, [upload, name, kind], [status, table], api_name="register_dataset")
        sample.click(on_sample, None, [status, table], api_name="register_sample")
        tab.select(lambda: datasets_frame(wb), None, table, show_api=False)
    return tab
