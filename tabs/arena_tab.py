"""Arena tab: the same prompt to two models, a vote, and votes → a DPO dataset."""

from __future__ import annotations

import gradio as gr

from app import arena, preference_export
from app.chat_engines import GenSettings
from app.workbench import Workbench
from tabs.common import model_choices, user_errors


def _chat(turns, side: str) -> list[dict]:
    msgs: list[dict] = []
    for t in turns:
        msgs.append({"role": "user", "content": t.messages[-1]["content"]})
        msgs.append({"role": "assistant", "content": t.answer_a if side == "a" else t.answer_b})
    return msgs


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Arena", id="arena") as tab:
        battle_id = gr.State(None)
        with gr.Row():
            model_a = gr.Dropdown(model_choices(wb), label="Model A")
            model_b = gr.Dropdown(model_choices(wb), label="Model B")
            max_tokens = gr.Slider(8, 512, value=64, step=8, label="Max new tokens")
            temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="Temperature")
        with gr.Row():
            chat_a = gr.Chatbot(type="messages", label="Model A", height=300)
            chat_b = gr.Chatbot(type="messages", label="Model B", height=300)
        with gr.Row():
            prompt = gr.Textbox(label="Your message", scale=4)
            send = gr.Button("Send", variant="primary", scale=1)
        with gr.Row():
            vote_buttons = {
                "a": gr.Button("👈 A is better"),
                "b": gr.Button("👉 B is better"),
                "tie": gr.Button("🤝 Tie"),
                "both_bad": gr.Button("👎 Both are bad"),
            }
            new_round = gr.Button("🔄 New battle")
        status = gr.Markdown()
        with gr.Accordion("Votes → DPO dataset", open=False):
            ds_name = gr.Textbox(label="Dataset name", value="arena-votes")
            build_ds = gr.Button("Build DPO dataset from votes")
            build_status = gr.Markdown()

        @user_errors
        def on_send(bid, a, b, text, n_tokens, temp):
            if a is None or b is None:
                raise gr.Error("choose two models")
            if bid is None:
                gen = GenSettings(temperature=float(temp), max_new_tokens=int(n_tokens))
                bid = arena.new_battle(wb, int(a), int(b), gen=gen).id
            arena.play_turn(wb, bid, text)
            turns = arena.turns(wb, bid)
            return bid, _chat(turns, "a"), _chat(turns, "b"), "", "Vote when you have read both answers."

        def on_vote(choice):
            @user_errors
            def handler(bid):
                if bid is None:
                    raise gr.Error("send a message first")
                arena.vote(wb, bid, choice)
                names = arena.reveal(wb, bid)
                return f"Vote saved. A was **{names['a']}**, B was **{names['b']}**."
            return handler

        def on_new():
            return None, [], [], ""

        @user_errors
        def on_build(name):
            ds = preference_export.build_dpo_dataset(wb, name.strip())
            return f"Built **{ds.name}** with {ds.num_rows} preference pairs."

        send.click(on_send, [battle_id, model_a, model_b, prompt, max_tokens, temperature],
                   [battle_id, chat_a, chat_b, prompt, status], api_name="arena_send")
        for choice, button in vote_buttons.items():
            button.click(on_vote(choice), battle_id, status, api_name=f"vote_{choice}")
        new_round.click(on_new, None, [battle_id, chat_a, chat_b, status], show_api=False)
        build_ds.click(on_build, ds_name, build_status, api_name="build_dpo_dataset")
        tab.select(lambda: (gr.update(choices=model_choices(wb)),) * 2, None, [model_a, model_b],
                   show_api=False)
    return tab
