"""Data tab's browser: page and search a dataset's rows, see its lineage, the runs that used
it and its quality counts; rename, delete or download it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import gradio as gr

from app.core.workbench import Workbench
from app.data import browse
from tabs.common import UserError, dataset_choices, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

PER_PAGE = 20


def view_markdown(v: dict) -> str:
    lines = [f"**{v['name']}** — {v['kind']} · {v['format']} · {v['rows']} rows · from {v['source']} · "
             f"created {v['created_at'][:16].replace('T', ' ')}"]
    if v["parents"]:
        lines.append("Made from: " + " ← ".join(p["name"] + ("" if p["present"] else " (deleted)")
                                                for p in v["parents"]))
    if v["children"]:
        lines.append("Versions made from it: " + ", ".join(c["name"] for c in v["children"]))
    lines.append("Used by runs: " + (", ".join(f"{r['name']} ({r['status']})" for r in v["runs"]) or "none"))
    if v["quality"]:
        counts = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in v["quality"].items())
        lines.append(f"Quality report: {counts}")
    return "\n\n".join(lines)


def rows_frame(page: dict) -> pd.DataFrame:
    return to_frame([{"row": r["row"], "data": json.dumps(r["data"], ensure_ascii=False)[:600]}
                     for r in page["rows"]], ["row", "data"])


def build(wb: Workbench) -> None:
    with gr.Accordion("Browse a dataset: rows, lineage, rename, delete, download", open=False,
                      elem_id="data-browse") as box:
        with gr.Row():
            pick = gr.Dropdown(dataset_choices(wb), label="Dataset to browse", scale=3,
                               elem_id="browse-dataset")
            query = gr.Textbox(label="Search the rows", scale=3, elem_id="browse-query")
            page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
            show = gr.Button("Show", elem_id="browse-show")
        about = gr.Markdown(elem_id="browse-about")
        found = gr.Markdown()
        table = Table(headers=["row", "data"], label="Rows", interactive=False, wrap=True,
                      elem_id="browse-rows")
        with gr.Row():
            new_name = gr.Textbox(label="New name", scale=2)
            rename = gr.Button("Rename")
            delete = gr.Button("Delete", variant="stop", elem_id="browse-delete")
            download = gr.DownloadButton("Download (JSON Lines)", elem_id="browse-download")
        status = gr.Markdown(elem_id="browse-status")

    def need(dataset_id) -> int:
        if dataset_id is None:
            raise UserError("choose a dataset first")
        return int(dataset_id)

    @user_errors
    def on_show(dataset_id, text, number):
        ds_id = need(dataset_id)
        rows = browse.browse_rows(wb, ds_id, text or "", max(1, int(number or 1)), PER_PAGE)
        shown = f"{rows['of']} rows"
        if (text or "").strip():
            shown = f"{rows['total']} of {shown} match"
        return (view_markdown(browse.dataset_view(wb, ds_id)),
                f"{shown} · page {rows['page']} of {rows['pages']}", rows_frame(rows),
                str(browse.dataset_file(wb, ds_id)))

    @user_errors
    def on_rename(dataset_id, name):
        ds = browse.rename_dataset(wb, need(dataset_id), name)
        return f"Renamed to **{ds.name}**.", gr.update(choices=dataset_choices(wb), value=ds.id)

    @user_errors
    def on_delete(dataset_id):
        ds_id = need(dataset_id)
        name = browse.dataset_view(wb, ds_id)["name"]
        browse.delete_dataset(wb, ds_id)
        return f"Deleted **{name}**.", gr.update(choices=dataset_choices(wb), value=None)

    box.expand(lambda: gr.update(choices=dataset_choices(wb)), None, pick, show_api=False)
    show.click(on_show, [pick, query, page], [about, found, table, download], api_name="browse_dataset")
    query.submit(on_show, [pick, query, page], [about, found, table, download], show_api=False)
    rename.click(on_rename, [pick, new_name], [status, pick], api_name="rename_dataset")
    delete.click(on_delete, pick, [status, pick], api_name="delete_dataset")
