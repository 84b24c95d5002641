"""The Gradio UI: one module per tab, assembled here. UI wiring only."""

from __future__ import annotations

import gradio as gr

from app.workbench import Workbench


def build_ui(wb: Workbench) -> gr.Blocks:
    from tabs import arena_tab, data_tab, registry_tab, train_tab

    with gr.Blocks(title="Forgeloop") as demo:
        gr.Markdown("# Forgeloop\nData → Train → Arena → Registry, and round again.")
        with gr.Tabs():
            data_tab.build(wb)
            train_tab.build(wb)
            arena_tab.build(wb)
            registry_tab.build(wb)
    return demo
