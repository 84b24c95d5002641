"""Data tab: register datasets and look at what is stored."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from app.core.workbench import Workbench
from app.data import datasets
from app.train.overrides import parse_advanced
from tabs.common import user_errors

SAMPLE_SFT = Path(__file__).resolve().parent.parent / "data" / "samples" / "sft_starter.jsonl"


def datasets_frame(wb: Workbench) -> pd.DataFrame:
    rows = [
        {"id": d.id, "name": d.name, "kind": d.kind, "format": d.format, "rows": d.num_rows,
         "source": d.source, "sha256": d.sha256[:12]}
        for d in datasets.list_datasets(wb)
    ]
    return pd.DataFrame(rows, columns=["id", "name", "kind", "format", "rows", "source", "sha256"])


def _column_map(text: str) -> dict[str, str]:
    mapping = parse_advanced(text)
    return {str(k): str(v) for k, v in mapping.items()}


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Data", id="data") as tab:
        gr.Markdown("### Datasets\nRegister a JSONL, JSON, CSV or Parquet file. Every row is validated "
                    "before anything is stored.")
        with gr.Row():
            upload = gr.File(label="Dataset file", file_types=list(datasets.SUPPORTED_SUFFIXES))
            with gr.Column():
                name = gr.Textbox(label="Name", placeholder="my-sft-data")
                kind = gr.Dropdown(["sft", "dpo", "kto", "cpt"], value="sft", label="Used for")
                column_map = gr.Code(label="Column map (optional): expected name: column in your file",
                                     language="yaml", value="", interactive=True)
                with gr.Row():
                    preview_btn = gr.Button("Preview")
                    register = gr.Button("Register dataset", variant="primary")
                sample = gr.Button("Register the sample SFT dataset")
        status = gr.Markdown()
        preview = gr.JSON(label="Preview (first rows as they would be stored)", visible=False)
        table = gr.Dataframe(value=lambda: datasets_frame(wb), label="Registered datasets",
                             interactive=False)

        @user_errors
        def on_preview(file, ds_kind, mapping):
            if file is None:
                raise gr.Error("choose a file first")
            info = datasets.inspect_file(file, ds_kind, _column_map(mapping))
            head = f"{info['total']} rows · columns: {', '.join(info['columns'])}"
            verdict = (f"✅ valid {info['format']} data" if info["error"] is None
                       else f"❌ {info['error']}")
            return f"{head}  \n{verdict}", gr.update(value=info["preview"], visible=True)

        @user_errors
        def on_register(file, ds_name, ds_kind, mapping):
            if file is None:
                raise gr.Error("choose a file first")
            ds = datasets.register_file(wb, file, ds_name.strip(), ds_kind,
                                        column_map=_column_map(mapping))
            return f"Registered **{ds.name}**: {ds.num_rows} {ds.format} rows.", datasets_frame(wb)

        @user_errors
        def on_sample():
            ds = datasets.register_file(wb, SAMPLE_SFT, "sample-sft", "sft")
            return f"Registered **{ds.name}**: {ds.num_rows} {ds.format} rows.", datasets_frame(wb)

        preview_btn.click(on_preview, [upload, kind, column_map], [status, preview],
                          api_name="preview_dataset")
        register.click(on_register, [upload, name, kind, column_map], [status, table],
                       api_name="register_dataset")
        sample.click(on_sample, None, [status, table], api_name="register_sample")
        tab.select(lambda: datasets_frame(wb), None, table, show_api=False)
    return tab
