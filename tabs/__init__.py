"""The Gradio UIs: the full workbench (one module per tab) and the arena-only voter app.
UI wiring only: every action is a function in app/."""

from __future__ import annotations

import gradio as gr

from app.core.workbench import Workbench
from tabs.common import UserError


def build_ui(wb: Workbench) -> gr.Blocks:
    from app.arena import preference_export
    from app.train import training
    from app.train.schedule import with_schedule
    from tabs import (
        arena_tab,
        chat_tab,
        data_annotate,
        data_tab,
        evaluate_tab,
        jobs_panel,
        registry_tab,
        train_tab,
    )
    from tabs.common import shortcuts_script, user_errors

    head = shortcuts_script(arena_tab.SHORTCUT_VIEW, data_annotate.SHORTCUT_VIEW)
    with gr.Blocks(title="Forgeloop", head=head, css=arena_tab.BATTLE_CSS) as demo:
        gr.Markdown("# Forgeloop\nData → Train → Arena → Registry, and round again.")
        # A first visit (no models yet) opens on the Registry's "Start here".
        from app.models.registry import list_models

        with gr.Tabs(selected=None if list_models(wb) else "registry") as tabs:
            data_tab.build(wb)
            _, train_form, reattach = train_tab.build(wb)

            def wire_train(button: gr.Button, dataset_state: gr.State) -> None:
                """"Train on these votes": open the Train tab pre-filled, the schedule sized
                for the number of examples."""

                @user_errors
                def prefill(dataset_id):
                    if dataset_id is None:
                        raise UserError("build a DPO or KTO dataset from the votes first")
                    recipes = training.load_recipes()  # here, not at start-up: a click needs them
                    req = with_schedule(wb, preference_export.suggest_vote_training(wb, int(dataset_id)))
                    return (gr.Tabs(selected="train"), *train_tab.prefill_updates(wb, recipes, req))

                button.click(prefill, dataset_state, [tabs, *train_tab.prefill_outputs(train_form)],
                             api_name="train_on_votes")

            arena_tab.build(wb, wire_train)
            chat_tab.build(wb)
            registry_tab.build(wb)
            evaluate_tab.build(wb)
        jobs_panel.build(wb)
        demo.load(reattach[0], None, reattach[1], show_api=False)
    return demo


def build_voter_app(wb: Workbench) -> gr.Blocks:
    """What voters reach through the share link: blind battles and (if allowed) the
    leaderboard. No training, registry, export or admin function exists in it."""
    from tabs import arena_tab

    with gr.Blocks(title="Forgeloop Arena", head=arena_tab.SHORTCUTS_JS, css=arena_tab.BATTLE_CSS) as demo:
        gr.Markdown("# Forgeloop Arena\nTwo anonymous models answer; vote for the better one. "
                    "Their names are revealed after your vote.")
        with gr.Tabs():
            with gr.Tab("Battle"):
                arena_tab.build_battle(wb, voter_mode=True)
            if wb.settings.voter_leaderboard:  # drawn when its tab opens, not after each vote of many
                with gr.Tab("Leaderboard") as board_tab:
                    arena_tab.build_leaderboard(wb, board_tab)
    return demo
