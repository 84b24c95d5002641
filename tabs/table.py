"""``Table``: the workbench's read-only tables, a gr.Dataframe that costs nothing at start-up.

Gradio's Dataframe imports pandas' Styler in every postprocess, an empty value included, and
the Styler imports matplotlib.pyplot: half a second of start-up for tables that hold plain
rows. A callable value is also run once while the UI is built, although the page load runs it
again for every visitor.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr
from gradio.components.dataframe import DataframeData

if TYPE_CHECKING:
    import pandas as pd


class Table(gr.Dataframe):
    """A gr.Dataframe (drawn by the browser as one) for None, a pandas DataFrame, a list of
    rows or a {"headers", "data"} dict; other values take Gradio's own path."""

    is_template = True  # the browser draws it with Dataframe's component

    @staticmethod
    def get_load_fn_and_initial_value(value: Any, inputs: Any = None) -> tuple[Callable | None, Any]:
        """A callable value fills the table on page load only: built empty, the UI needs
        neither the query nor pandas."""
        return (value, None) if callable(value) else (None, value)

    def postprocess(self, value: Any) -> DataframeData:
        rows = _headers_and_rows(value)
        if rows is None:
            return super().postprocess(value)
        headers, data = rows
        headers = headers or self.headers
        if not data:
            return DataframeData(headers=headers, data=[], metadata=None)
        width = len(data[0])  # as Gradio does: headers cut or numbered to the first row's width
        headers = [*headers[:width], *[str(i) for i in range(len(headers) + 1, width + 1)]]
        metadata = value.get("metadata") if isinstance(value, dict) else None
        return DataframeData(headers=headers, data=data, metadata=metadata)


def _headers_and_rows(value: Any) -> tuple[list, list] | None:
    """The headers and rows of ``value`` as Gradio reads them; None for a value Gradio's
    postprocess should take. (A Styler can only exist once its module is loaded.)"""
    if "pandas.io.formats.style" in sys.modules:
        return None
    if value is None:
        return [], []
    pandas = sys.modules.get("pandas")  # likewise a DataFrame, once pandas is loaded
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return list(value.columns), [] if value.empty else value.to_dict(orient="split")["data"]
    if isinstance(value, dict):
        empty = len(value["data"]) == 0 if "data" in value else len(value) == 0
        return value.get("headers", []), [] if empty else value.get("data", [[]])
    if isinstance(value, list) and all(isinstance(row, list) for row in value):
        return [], [] if not value or not value[0] else value
    return None


def to_frame(rows: list, columns: list[str]) -> pd.DataFrame:
    """A DataFrame of ``rows`` (dicts or lists) under ``columns``; pandas is imported here, on
    first use, as it is not needed to start the app."""
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)
