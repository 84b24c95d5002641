"""Data tab: register datasets and look at what is stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
import yaml

from app.assistant import service
from app.core.workbench import Workbench
from app.data import datasets
from app.train.overrides import parse_advanced
from app.train.quickstart import SAMPLE_NAME, SAMPLE_SFT
from tabs import data_annotate, data_browse, data_quality, data_selfinstruct
from tabs.common import UserError, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

DATASET_COLUMNS = ["id", "name", "kind", "format", "rows", "source", "sha256"]


def datasets_frame(wb: Workbench) -> pd.DataFrame:
    rows = [
        {"id": d.id, "name": d.name, "kind": d.kind, "format": d.format, "rows": d.num_rows,
         "source": d.source, "sha256": d.sha256[:12]}
        for d in datasets.list_datasets(wb)
    ]
    return to_frame(rows, DATASET_COLUMNS)


def _column_map(text: str) -> dict[str, str]:
    mapping = parse_advanced(text)
    return {str(k): str(v) for k, v in mapping.items()}


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'") + "`"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def notes_lines(notes: dict) -> list[str]:
    """What a user should know about stored rows (``inspect_file`` info or a Dataset's meta):
    duplicate rows, columns not stored, formula-like cells."""
    lines = []
    dups, dropped = notes.get("duplicates") or 0, notes.get("duplicates_dropped") or 0
    if dropped:
        lines.append(f"{_count(dropped, 'duplicate row')} dropped.")
    elif dups:
        lines.append(f"⚠️ {_count(dups, 'duplicate row')} (the same as an earlier row once stored); "
                     f"tick **Drop duplicates** to leave {'it' if dups == 1 else 'them'} out.")
    if notes.get("dropped_columns"):
        cols = ", ".join(_code(c) for c in notes["dropped_columns"])
        lines.append(f"Columns not stored (the format does not use them): {cols}.")
    cells = notes.get("formula_cells") or 0
    if cells:
        lines.append(f"⚠️ {_count(cells, 'cell')} start{'s' if cells == 1 else ''} with =, +, - or @: "
                     "a spreadsheet would run such cells as formulas.")
    return lines


def preview_message(info: dict) -> str:
    head = f"{info['total']} rows · columns: {', '.join(info['columns'])}"
    verdict = (f"✅ valid {info['format']} data" if info["error"] is None
               else f"❌ {info['error']}")
    return "  \n".join([head, verdict, *notes_lines(info)])


def registered_message(ds) -> str:
    head = f"Registered **{ds.name}**: {ds.num_rows} {ds.format} rows."
    return "  \n".join([head, *notes_lines(ds.meta or {})])


def name_for(file, name: str | None) -> str:
    """The name typed in, or else the uploaded file's stem."""
    name = (name or "").strip()
    return name or (datasets.default_name(file) if file else "")


def name_after_upload(file, name: str | None, filled: str) -> tuple[str, str]:
    """(name box, name filled in automatically) after an upload: an empty box, or one still
    holding the previous file's stem, gets the new file's stem; a typed name stays."""
    if (name or "").strip() in ("", filled):
        filled = datasets.default_name(file) if file else ""
        return filled, filled
    return name or "", filled


def detect_message(found: dict) -> str:
    if found["task"] == "unknown":
        return f"**Task not recognised.** {' '.join(found['reasons'])}"
    columns = ", ".join(f"{ours} ← `{theirs}`" for ours, theirs in found["column_map"].items())
    return (f"**Looks like {found['task']} data** (confidence {found['confidence']:.0%}): register it as "
            f"**{found['kind']}**; columns {columns}. {' '.join(found['reasons']).capitalize()}.")


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
                dedup = gr.Checkbox(label="Drop duplicates", value=False,
                                    info="leave out rows that repeat an earlier row exactly")
                with gr.Row():
                    detect_btn = gr.Button("Detect the task", elem_id="data-detect")
                    preview_btn = gr.Button("Preview")
                    register = gr.Button("Register dataset", variant="primary")
                sample = gr.Button("Register the sample SFT dataset")
        status = gr.Markdown()
        filled_name = gr.State("")
        preview = gr.JSON(label="Preview (first rows as they would be stored)", visible=False)
        table = Table(value=lambda: datasets_frame(wb), headers=DATASET_COLUMNS, label="Registered datasets",
                      interactive=False)

        @user_errors
        def on_preview(file, ds_kind, mapping, drop_dups):
            if file is None:
                raise UserError("choose a file first")
            info = datasets.inspect_file(file, ds_kind, _column_map(mapping), dedup=bool(drop_dups))
            return preview_message(info), gr.update(value=info["preview"], visible=True)

        @user_errors
        def on_register(file, ds_name, ds_kind, mapping, drop_dups):
            if file is None:
                raise UserError("choose a file first")
            ds = datasets.register_file(wb, file, name_for(file, ds_name), ds_kind,
                                        column_map=_column_map(mapping), dedup=bool(drop_dups))
            return registered_message(ds), datasets_frame(wb)

        @user_errors
        def on_detect(file, ds_kind, mapping):
            """The assistant's reading of the file: the kind to register it as and the column map."""
            if file is None:
                raise UserError("choose a file first")
            found = service.detect(wb, rows=datasets.read_rows(Path(file)))
            renamed = {ours: theirs for ours, theirs in found["column_map"].items() if ours != theirs}
            return (detect_message(found), gr.update(value=found["kind"] or ds_kind),
                    yaml.safe_dump(renamed, sort_keys=False) if renamed else mapping)

        @user_errors
        def on_sample():
            ds = datasets.register_file(wb, SAMPLE_SFT, SAMPLE_NAME, "sft")
            return registered_message(ds), datasets_frame(wb)

        upload.upload(name_after_upload, [upload, name, filled_name], [name, filled_name], show_api=False)
        detect_btn.click(on_detect, [upload, kind, column_map], [status, kind, column_map],
                         api_name="detect_task")
        preview_btn.click(on_preview, [upload, kind, column_map, dedup], [status, preview],
                          api_name="preview_dataset")
        register.click(on_register, [upload, name, kind, column_map, dedup], [status, table],
                       api_name="register_dataset")
        sample.click(on_sample, None, [status, table], api_name="register_sample")
        tab.select(lambda: datasets_frame(wb), None, table, show_api=False)
        data_browse.build(wb)
        data_selfinstruct.build(wb)
        data_quality.build(wb)
        data_annotate.build(wb)
    return tab
