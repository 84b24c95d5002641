"""Small helpers shared by the tabs: choices for dropdowns and error display."""

from __future__ import annotations

import html
import inspect
import time
from collections.abc import Callable, Iterator
from functools import wraps

import gradio as gr

from app.core.errors import ForgeloopError
from app.core.jobs import FINISHED
from app.core.workbench import Workbench
from app.data.datasets import list_datasets
from app.models.registry import is_archived, list_models


def model_choices(wb: Workbench, include_archived: bool = False) -> list[tuple[str, int]]:
    """Models for a picker; archived ones only where they can be managed (the Registry tab)."""
    return [(f"{m.name} ({m.kind}{', archived' if is_archived(m) else ''})", m.id)
            for m in list_models(wb, include_archived)]


def dataset_choices(wb: Workbench, kind: str | None = None) -> list[tuple[str, int]]:
    return [(f"{d.name} · {d.kind} · {d.num_rows} rows", d.id) for d in list_datasets(wb, kind)]


def user_errors(fn: Callable) -> Callable:
    """Show a ForgeloopError as a Gradio error message instead of a stack trace
    (generators too: Gradio must still see a generator function to stream it)."""
    if inspect.isgeneratorfunction(fn):

        @wraps(fn)
        def streaming(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except ForgeloopError as e:
                raise gr.Error(str(e)) from e

        return streaming

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ForgeloopError as e:
            raise gr.Error(str(e)) from e

    return wrapper


def progress_html(view: dict) -> str:
    """The live progress bar of any job view (``JobRunner.view``, ``training.run_view``)."""
    pct = max(0.0, min(100.0, view["percent"]))
    eta = f" · ETA {view['eta']}" if view["status"] == "running" and view["eta"] else ""
    name = html.escape(str(view.get("name") or view.get("title") or f"job {view.get('job_id')}"))
    return (
        f"<div class='fl-progress' data-status='{view['status']}'>"
        f"<b>{name}</b> — <span class='fl-status'>{view['status']}</span> · "
        + (f"{html.escape(str(view['stage']))} · " if view.get("stage") else
           f"step {view['step']}/{view['total_steps']} · ")
        + f"{pct:.0f}%{eta}"
        f"<div style='background:#ddd;border-radius:4px;height:14px'>"
        f"<div style='background:#4a7;width:{pct:.1f}%;height:14px;border-radius:4px'></div>"
        f"</div></div>"
    )


def follow_job(wb: Workbench, job_id: int, every_s: float = 0.5) -> Iterator[dict]:
    """Views of a job while it runs, ending with its final view. Only the watching stops
    when the tab closes; the job goes on."""
    while True:
        view = wb.jobs.view(wb.jobs.get(job_id))
        yield view
        if view["status"] in FINISHED:
            return
        time.sleep(every_s)
