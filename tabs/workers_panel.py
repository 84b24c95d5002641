"""Model workers panel (Registry and Arena): which local models are loaded where, their
memory and speed, and load / unload buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from app.core.workbench import Workbench
from app.inference import workers
from app.models.registry import list_models
from tabs.common import UserError, user_errors
from tabs.table import Table, to_frame

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["model", "state", "device", "backend", "threads", "memory (GiB)", "tokens/s", "answers",
           "idle (s)", "restarts", "last error"]


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.2f}" if value else ""


def _blank(value: object) -> object:
    return "" if value is None else value


def workers_frame(wb: Workbench) -> pd.DataFrame:
    rows = [{"model": w["model"], "state": w["state"], "device": w["device"], "backend": w["backend"],
             "threads": w["threads"] or "", "memory (GiB)": _gib(w["gpu_bytes"] or w["rss_bytes"]),
             "tokens/s": w["tokens_per_s"] or "", "answers": _blank(w["requests"]),
             "idle (s)": _blank(w["idle_s"]), "restarts": w["restarts"],
             "last error": ((w["last_error"] or "").strip().splitlines() or [""])[-1]}
            for w in workers.worker_status(wb)]
    return to_frame(rows, COLUMNS)


def local_models(wb: Workbench) -> list[tuple[str, int]]:
    return [(m.name, m.id) for m in list_models(wb) if m.kind not in ("ollama", "openai")]


def build(wb: Workbench, where: str, api: bool = True) -> gr.Dataframe:
    """The panel; ``where`` prefixes its element ids; ``api``: name its endpoints (once per
    UI: the Registry's)."""
    with gr.Accordion("Model workers (local models loaded for chat)", open=False,
                      elem_id=f"{where}-workers-panel") as box:
        gr.Markdown("Each local model answers from a worker process of its own. The least recently "
                    "used stops first when `max_workers` are running or memory runs short; an idle "
                    "one stops by itself after `worker_idle_minutes`.")
        frame = Table(value=lambda: workers_frame(wb), headers=COLUMNS, label="Workers", interactive=False,
                      elem_id=f"{where}-workers")
        with gr.Row():
            pick = gr.Dropdown(local_models(wb), label="Local model", elem_id=f"{where}-worker-model")
            load = gr.Button("Load", elem_id=f"{where}-worker-load")
            unload = gr.Button("Unload", elem_id=f"{where}-worker-unload")
            refresh = gr.Button("Refresh", elem_id=f"{where}-worker-refresh")
        note = gr.Markdown(elem_id=f"{where}-worker-note")

    def need(model_id) -> int:
        if model_id is None:
            raise UserError("choose a model first")
        return int(model_id)

    @user_errors
    def on_load(model_id):
        w = workers.load_model(wb, need(model_id))
        return f"**{w['model']}** is loaded ({w['device']}, {w['backend']}).", workers_frame(wb)

    @user_errors
    def on_unload(model_id):
        workers.unload_model(wb, need(model_id))
        return "Unloaded: its memory is free.", workers_frame(wb)

    def on_refresh():
        return workers_frame(wb), gr.update(choices=local_models(wb))

    load.click(on_load, pick, [note, frame], api_name="load_worker" if api else False)
    unload.click(on_unload, pick, [note, frame], api_name="unload_worker" if api else False)
    # Refresh leaves the picker alone (re-rendering an open dropdown loses the click).
    refresh.click(lambda: workers_frame(wb), None, frame, api_name="worker_status" if api else False)
    box.expand(on_refresh, None, [frame, pick], show_api=False)
    return frame
