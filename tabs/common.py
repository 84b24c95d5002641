"""Small helpers shared by the tabs: choices for dropdowns and error display."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

import gradio as gr

from app.core.errors import ForgeloopError
from app.core.workbench import Workbench
from app.data.datasets import list_datasets
from app.models.registry import list_models


def model_choices(wb: Workbench) -> list[tuple[str, int]]:
    return [(f"{m.name} ({m.kind})", m.id) for m in list_models(wb)]


def dataset_choices(wb: Workbench, kind: str | None = None) -> list[tuple[str, int]]:
    return [(f"{d.name} · {d.kind} · {d.num_rows} rows", d.id) for d in list_datasets(wb, kind)]


def user_errors(fn: Callable) -> Callable:
    """Show a ForgeloopError as a Gradio error message instead of a stack trace."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ForgeloopError as e:
            raise gr.Error(str(e)) from e

    return wrapper
